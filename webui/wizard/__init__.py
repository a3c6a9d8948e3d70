"""The pages a user sees: the setup wizard, groups, topology, devices, diagnosis, hosts and audit.

Pages read snapshots and create jobs; they never read or write hardware.

May import: ``webui.hosts``, ``webui.jobs``, ``webui.audit``, ``webui.accounts``,
``passthrough.pci``, ``passthrough.errors``, ``passthrough.ops`` (the interlock's verdicts
and wording, what a bind released, diffs; never an operation: those run in jobs),
``passthrough.configgen``, ``passthrough.topology``, ``passthrough.diagnose``,
``passthrough.vms`` (plans and their diffs) and ``passthrough.hosttrees`` (the demo's
published machines).
"""
