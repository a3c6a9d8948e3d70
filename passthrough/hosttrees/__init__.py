"""Host trees built from descriptions, for the demo, the benchmarks and the tests.

Imports run one way, top to bottom:

- ``realworld``: the published machines in ``passthrough/data/realworld/`` as host specs.
- ``ttar``: the ttar archive format of one of those sources.
- ``listings``: parsers for pasted ``lspci`` and IOMMU-group listings.
- ``listing_hosts``: from parsed listings to a host spec (bus topology inferred).
- ``listed``: :class:`~passthrough.hosttrees.listed.ListedFunction`, what parsers return.
- ``tree``: :func:`~passthrough.hosttrees.tree.write_tree`, a spec laid out in the sysfs layout.
- ``surroundings``: what a tree holds beside its PCI functions (proc, disks, net, consoles).
- ``spec``: :class:`~passthrough.hosttrees.spec.HostSpec` and ``FunctionSpec``, plain data.
- ``files``: writing a file and a relative link.

May import: ``passthrough.pci`` (addresses, pci.ids names) and ``passthrough.errors``.
Nothing here reads a host: ``passthrough.kerneldouble`` and the tests build on it.
"""
