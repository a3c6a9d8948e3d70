"""Real Linux kernels under QEMU, with emulated Intel VT-d and AMD-Vi, for the suite.

``kernel`` fetches and caches a Debian kernel package; ``guest`` boots it with a chosen
IOMMU and PCI devices and runs a script inside (this machine's own userland, shared over
9p); ``scenarios`` names the machines and the guest-side tests each runs; the host-side
test module ``tests/test_realkernel.py`` reports every guest-side test as a test of its own.
"""
