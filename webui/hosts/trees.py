"""The host tree this process's worker acts on, from settings.

``PASSTHROUGH_ROOT`` picks the directory (``/`` on a real host, a captured tree for the
demo); ``PASSTHROUGH_KERNEL=double`` puts the kernel double in front of that tree, so
jobs change a demo or test tree the way the kernel would change ``/sys``. The double
refuses the live ``/``.
"""

from __future__ import annotations

from django.conf import settings

from passthrough.host import HostTree
from passthrough.vms.give import Connection


def vm_connection(tree: HostTree) -> Connection:
    """Where the worker looks for VMs (settings PASSTHROUGH_LIBVIRT_URI, PASSTHROUGH_QMP_SOCKETS)."""
    uri = settings.PASSTHROUGH_LIBVIRT_URI
    return Connection.for_tree(tree, None if uri == "none" else uri, settings.PASSTHROUGH_QMP_SOCKETS)


def worker_tree() -> HostTree:
    root = settings.PASSTHROUGH_ROOT
    if settings.PASSTHROUGH_KERNEL == "double":
        from passthrough.kerneldouble import KernelDouble

        return KernelDouble(root)
    return HostTree(root)
