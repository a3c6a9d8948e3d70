"""The hosts this app manages: their registration, heartbeats and snapshots, and the hardware commands.

A snapshot is what the worker read from the host (inventory, readiness, diagnosis, VMs), so
the pages never read hardware themselves; ``trees`` picks the host tree to read (the live
``/``, a ``--root`` capture, or the demo's kernel double).

May import: ``passthrough.host``, ``passthrough.errors``, ``passthrough.pci``,
``passthrough.readiness``, ``passthrough.diagnose``, ``passthrough.vms`` (what a snapshot
holds), ``passthrough.kerneldouble`` (the demo host) and ``passthrough.cli`` (the hardware
commands run the same code as the plain CLI). Nothing else of ``webui``.
"""
