"""Diagnose: name what went wrong from the kernel's and the VM's own log lines, with the fix for this host.

- ``finding``: the plain data, :class:`~passthrough.diagnose.finding.Finding` (a stable id, a
  severity, the PCI function a line names, the verbatim evidence, the cause and the fix) and
  :class:`~passthrough.diagnose.finding.LogLine` (a line and the log it came from);
- ``logs``: the lines to read: the kernel log (:meth:`HostTree.kernel_log`), the VM logs
  libvirt keeps under ``var/log/libvirt/qemu/`` and any log file given by path;
- ``matchers``: one matcher per finding id, each built from lines users posted (the tests
  keep those logs in ``tests/data/kernel_logs/`` with their sources);
- ``context``: what a fix needs to know about the host (IOMMU vendor, boot loader, kernel,
  framebuffer, the inventory), read lazily and only when something was found;
- ``advice``: the cause in words and the fix for this host, per finding id;
- ``bootcheck``: ``boot_binding_lost``, from the host's state rather than a log: an address
  bound to vfio-pci at boot that this boot did not give it, and why (read with every diagnosis);
- ``run``: :func:`~passthrough.diagnose.run.diagnose`, which groups matching lines into one
  finding per (id, device), and adds bootcheck's;
- ``report``: ``manage.py diagnose``: its options, its table and its JSON.

May import: ``passthrough.pci``, ``passthrough.boot`` (where a kernel parameter goes),
``passthrough.readiness.facts`` (the IOMMU vendor and boot facts readiness reads too),
``passthrough.ops.reset`` (the AMD reset-bug table), ``passthrough.ops.persist``,
``passthrough.ops.modules`` and ``passthrough.ops.sysfs`` (what binds at boot, and a driver's
module), ``passthrough.host``,
``passthrough.errors`` and ``passthrough.evidence``. Nothing from ``webui`` or Django.
"""
