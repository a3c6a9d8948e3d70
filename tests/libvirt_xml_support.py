"""Shared by the libvirt XML tests: the real domain XMLs they read and how a plan is made from one."""

from __future__ import annotations

import difflib
from pathlib import Path

from passthrough.host import HostTree
from passthrough.vms import libvirt
from passthrough.vms.model import VmInventory, VmSource
from passthrough.vms.validate import prepare

REALWORLD = Path("/work/shared/fixtures/realworld")
WIN10 = REALWORLD / "joe-p-vfio-headless/original/win10.xml"
BEAST = REALWORLD / "sirspudd-threadripper-1950x/extracted/post.block7.txt"
LIBVIRT_2016 = REALWORLD / "libvirt-2016-open-power-fork/qemuxml2argvdata"
RX580, RX580_AUDIO = "0000:43:00.0", "0000:43:00.1"
GPU, AUDIO, NIC = "0000:01:00.0", "0000:01:00.1", "0000:03:00.0"


def real(path: Path) -> str:
    return path.read_text()


def added_lines(before: str, after: str) -> list[str]:
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
    assert not [line for line in diff[2:] if line.startswith("-")], "a plan only adds lines"
    return [line[1:] for line in diff[2:] if line.startswith("+")]


def planned(make_tree, spec, text: str, addresses: list[str], state: str = "shut off", **options):
    tree = HostTree(make_tree(spec))
    vm = libvirt.vm_from_xml(text, state)
    prepared = prepare(tree, VmInventory([VmSource("libvirt", True, "test", [vm])]), vm.ref, addresses, **options)
    return vm, prepared, libvirt.plan_attach(vm, prepared)
