"""Passthrough Wizard's hardware model: reads a Linux host's PCI and IOMMU state.

Plain Python, no Django. Everything reads through :class:`passthrough.host.HostTree`,
so the same code runs on the live system (root ``/``) and on a captured tree.
"""
