"""How a host is recorded: ``manage.py capture`` writes a host tree that ``--root`` reads back.

Imports run one way, top to bottom:

- ``run``: :func:`~passthrough.capture.run.capture`, the staging directory and its rename.
- ``files``, ``sysfs``: what is recorded, area by area (host files, kernel log; PCI, IOMMU,
  net, block, console), as mixins of the recorder.
- ``recorder``: how one path is copied (capped reads, relative links, skipped paths).
- ``summary``: what was recorded (``capture.json``), filled in by everything above it.

May import: ``passthrough.host``, ``passthrough.errors``, ``passthrough.pci`` (address
forms) and ``passthrough.boot`` (where systemd-boot's LoaderInfo lives).
"""
