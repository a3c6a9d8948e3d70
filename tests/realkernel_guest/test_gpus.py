"""Placeholder: written by the scenario owner."""
