"""How a host boots: its distribution, boot loader, kernel command line and initramfs.

- ``distro``: which distribution the host runs and where its tools live.
- ``cmdline``: the kernel command line as words and parameters, and its validation.
- ``cmdlinefiles``: where each boot loader's files keep the command line, and their edits.
- ``initramfs``: which initramfs tool the host uses and how a module is loaded early.
- ``fileedit``: a planned edit of one host file, shown as a diff before it is made.
- ``loader``: which boot loader the host uses and the plan to change its command line.

May import: ``passthrough.host``, ``passthrough.evidence``, ``passthrough.errors``.
Nothing else in ``passthrough`` (readiness, ops, capture) is imported from here.
"""
