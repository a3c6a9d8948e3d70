"""How a host's PCI functions are read and judged.

Each module imports only those above it in this list (type-only imports count):

* ``address``: PCI addresses (``dddd:bb:ss.f``), and which function a sysfs entry sits on;
* ``pciids``: vendor, device and class names from pci.ids (the shipped copy is in
  ``passthrough/data``, beside this package);
* ``model``: the plain data, :class:`~passthrough.pci.model.PciFunction`,
  :class:`~passthrough.pci.model.IommuGroup`, :class:`~passthrough.pci.model.Inventory`,
  and their JSON contract;
* ``console``: the one reader of which console and framebuffers sit on which function,
  for the host-critical verdict and for what a bind releases (:mod:`passthrough.ops.console`);
* ``isolation``: group verdicts and the chipset rule the interlock applies too;
  ``hostcritical``: the functions whose loss strands the host; both judge the model and
  neither reads the scan;
* ``scan``: reads ``sys/bus/pci/devices`` into an Inventory and asks both judges.

May import: ``passthrough.host`` and ``passthrough.errors`` (and ``passthrough.evidence``,
should a finding need it);
never ``ops``, ``readiness``, ``configgen``, ``topology``, the host-tree builders or Django.
Nothing is re-exported here: import from the module that holds the name.
"""
