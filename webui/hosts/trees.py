"""The host tree this process's worker acts on, from settings.

``PASSTHROUGH_ROOT`` picks the directory (``/`` on a real host, a captured tree for the
demo); ``PASSTHROUGH_KERNEL=double`` puts the kernel double in front of that tree, so
jobs change a demo or test tree the way the kernel would change ``/sys``. The double
refuses the live ``/``.
"""

from __future__ import annotations

from django.conf import settings

from passthrough.host import HostTree


def worker_tree() -> HostTree:
    root = settings.PASSTHROUGH_ROOT
    if settings.PASSTHROUGH_KERNEL == "double":
        from passthrough.kerneldouble import KernelDouble

        return KernelDouble(root)
    return HostTree(root)
