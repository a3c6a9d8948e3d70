"""Virtual consoles in the double: binding a console driver (fbcon) to the terminals and back.

Below pci (a framebuffer registering on the boot VGA makes fbcon take the console, see
fbcon_takes_over) and console (releasing the boot GPU unbinds fbcon); imports only tree.
"""

from __future__ import annotations

import errno as errnos

from passthrough.host import HostTree
from passthrough.kerneldouble.tree import KernelRefused, write_file


def bind_vtconsole(tree: HostTree, vtcon_dir: str, value: str) -> None:
    try:
        bind = 1 if int(value.strip(), 0) else 0
    except ValueError:
        raise KernelRefused(errnos.EINVAL, f"{value!r} is not 0 or 1") from None
    name = tree.read(f"{vtcon_dir}/name") or ""
    write_file(tree, f"{vtcon_dir}/bind", f"{bind}\n")
    if not name.startswith("(M)"):
        return
    # A modular console (fbcon) gives its terminals back to the system driver (dummy, VGA+).
    parent = vtcon_dir.rsplit("/", 1)[0]
    modular_bound = any(
        (tree.read(f"{parent}/{other}/name") or "").startswith("(M)") and tree.read(f"{parent}/{other}/bind") == "1"
        for other in tree.listdir(parent)
    )
    for other in sorted(tree.listdir(parent)):
        if (tree.read(f"{parent}/{other}/name") or "").startswith("(S)"):
            write_file(tree, f"{parent}/{other}/bind", "0\n" if modular_bound else "1\n")
            break


def fbcon_takes_over(tree: HostTree) -> None:
    """A framebuffer registered on the boot VGA device (fbcon's primary): an unbound fbcon binds again.

    As the real kernel does (fbcon_fb_registered: the primary device's framebuffer is the
    one fbcon maps its consoles to, and fbcon, not bound, takes them over), even after
    ``vtconN/bind`` = 0 unbound it: a give-back that brings the native driver back gives
    the console back whether or not it writes the bind itself. Seen on a 6.1 kernel with
    bochs-drm (tests/realkernel_guest/test_gpus.py).
    """
    parent = "sys/devices/virtual/vtconsole"
    for vtcon in sorted(tree.listdir(parent)):
        name = tree.read(f"{parent}/{vtcon}/name") or ""
        if name == "(M) frame buffer device" and tree.read(f"{parent}/{vtcon}/bind") == "0":
            bind_vtconsole(tree, f"{parent}/{vtcon}", "1")
