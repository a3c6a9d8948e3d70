"""A ROM file given to a VM: the worker hands over only a sane regular file inside a ROM directory.

On the kernel-double X570 node (a Proxmox VE node whose ``qm`` is the double's), through
:func:`passthrough.vms.give.attach`, the worker's entry point. The tree has an
``/etc/shadow`` of its own, and links in ``/usr/share/vgabios`` that lead to it; each way
of asking for a file outside the ROM directories is refused in its own words, and neither
the VM's config nor ``qm`` is touched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from passthrough.kerneldouble import KernelDouble
from passthrough.ops.errors import InvalidRequest
from passthrough.ops.result import SUCCEEDED
from passthrough.vms import give, libvirt
from passthrough.vms.give import Connection
from passthrough.vms.model import VmInventory, VmSource
from passthrough.vms.romfile import MAX_ROM_BYTES, RomFileRefused, require_rom_file, resolve
from passthrough.vms.validate import check, prepare
from tests.kernelhosts import GTX1080TI, GTX1080TI_AUDIO, x570
from tests.libvirtd_support import domain_xml
from tests.proxmox_support import conf_text

GPU, AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address
ROM = "/usr/share/vgabios/gtx1080ti.rom"
SHADOW = "root:$y$j9T$not-a-real-hash:19000:0:99999:7:::\n"


@pytest.fixture
def node(make_tree) -> KernelDouble:
    files = {"etc/hostname": "pve\n", "etc/shadow": SHADOW,
             "etc/pve/qemu-server/101.conf": conf_text("q35-win10-hostpci.conf")}  # fmt: skip
    root = Path(make_tree(x570(files=files)))
    vgabios, kvm = root / "usr/share/vgabios", root / "usr/share/kvm"
    vgabios.mkdir(parents=True)
    kvm.mkdir(parents=True)
    (vgabios / "gtx1080ti.rom").write_bytes(b"\x55\xaa" + bytes(128 * 1024 - 2))
    (kvm / "gtx1080ti.rom").symlink_to("../vgabios/gtx1080ti.rom")  # where qemu-server reads it: the same file
    (vgabios / "shadow.rom").symlink_to("/etc/shadow")  # absolute: /etc/shadow of the tree
    (vgabios / "up.rom").symlink_to("../../../../../../etc/shadow")  # more '..' than the tree is deep
    (vgabios / "etc").symlink_to("/etc")
    (vgabios / "roms").mkdir()
    (vgabios / "empty.rom").write_bytes(b"")
    with open(vgabios / "big.rom", "wb") as big:
        big.truncate(MAX_ROM_BYTES + 1)  # sparse: 16 MiB and a byte, written in no time
    (vgabios / "loop.rom").symlink_to("loop.rom")
    (vgabios / "elsewhere.rom").symlink_to("/usr/share/qemu/qboot.rom")  # on this machine perhaps, not in the tree
    (vgabios / "other.rom").write_bytes(b"\x55\xaa" + bytes(510))
    (kvm / "other.rom").symlink_to("/etc/shadow")  # what qemu-server would read for romfile=other.rom
    return KernelDouble(root)


def conf(node: KernelDouble) -> str:
    return Path(node.path("etc/pve/qemu-server/101.conf")).read_text()


def attach(node: KernelDouble, **options):
    return give.attach(node, "proxmox:101", [GPU], connection=Connection.for_tree(node), **options)


def qm_sets(node: KernelDouble) -> list[list[str]]:
    return [argv for argv in node.commands if argv[:2] == ["qm", "set"]]


REFUSED = {
    "/etc/shadow": "ROM file /etc/shadow is not in a directory the hypervisors read ROMs from (/usr/share/vgabios, "
    "/usr/share/kvm, /usr/share/qemu, /usr/share/seabios): the worker runs as root and the guest can read the whole "
    "file, so it gives a VM nothing from anywhere else.",
    "/usr/share/vgabios/shadow.rom": "ROM file /usr/share/vgabios/shadow.rom is a link to /etc/shadow, which is "
    "outside the directories the hypervisors read ROMs from (/usr/share/vgabios, /usr/share/kvm, /usr/share/qemu, "
    "/usr/share/seabios); the guest could read it, so it is refused.",
    "/usr/share/vgabios/up.rom": "ROM file /usr/share/vgabios/up.rom is a link to /etc/shadow, which is outside",
    "/usr/share/vgabios/etc/shadow": "ROM file /usr/share/vgabios/etc/shadow is a link to /etc/shadow, which is",
    "/usr/share/vgabios/../../../etc/shadow": "ROM file /usr/share/vgabios/../../../etc/shadow goes up a directory "
    "('..'): name the file by its own path.",
    "/usr/share/vgabios/roms": "ROM file /usr/share/vgabios/roms is a directory, not a ROM image.",
    "/usr/share/vgabios/big.rom": f"ROM file /usr/share/vgabios/big.rom is {MAX_ROM_BYTES + 1} bytes (16.0 MiB): an "
    "option ROM is at most a few MiB, and the wizard refuses anything over 16 MiB.",
    "/usr/share/vgabios/missing.rom": "ROM file /usr/share/vgabios/missing.rom does not exist on ",
    "/usr/share/vgabios/elsewhere.rom": "ROM file /usr/share/vgabios/elsewhere.rom does not exist on ",
    "/usr/share/vgabios/empty.rom": "ROM file /usr/share/vgabios/empty.rom is empty (0 bytes).",
    "/usr/share/vgabios/loop.rom": "ROM file /usr/share/vgabios/loop.rom goes through more than 40 links (a loop?).",
    "gtx1080ti.rom": "ROM file gtx1080ti.rom is not an absolute path.",
    "/usr/share/vgabios//gtx1080ti.rom": "is not written plainly: no '//', no '.' part, no '/' at the end.",
    "/usr/share/vgabios/a,b.rom": "holds a comma, a quote or a control character, which QEMU's option syntax cannot",
    "/usr/share/vgabios/a\nb.rom": "ROM file /usr/share/vgabios/a\\nb.rom holds a comma, a quote or a control",
    "/usr/share/vgabios/other.rom": "ROM file /usr/share/kvm/other.rom is a link to /etc/shadow, which is outside",
}


@pytest.mark.parametrize("path", list(REFUSED))
def test_the_worker_refuses_a_rom_outside_the_rom_directories_in_its_own_words_and_changes_nothing(node, path):
    before = conf(node)
    with pytest.raises(RomFileRefused) as refused:
        attach(node, rom_file=path)
    assert REFUSED[path] in refused.value.message
    assert refused.value.hint  # what to do: where to put the ROM, or what a ROM looks like
    assert conf(node) == before and not qm_sets(node)


def test_the_hint_says_where_to_put_the_rom(node):
    with pytest.raises(RomFileRefused) as refused:
        attach(node, rom_file="/root/gtx1080ti.rom")
    assert refused.value.hint == (
        "Copy the VBIOS image into /usr/share/vgabios as root (on Proxmox VE into /usr/share/kvm, the only place "
        "qemu-server reads romfile= from) and name it there, e.g. /usr/share/vgabios/gpu.rom."
    )


def test_a_missing_rom_names_the_tree_and_where_a_link_led(node):
    with pytest.raises(RomFileRefused) as refused:
        require_rom_file(node, "/usr/share/vgabios/elsewhere.rom")
    assert refused.value.message == (
        f"ROM file /usr/share/vgabios/elsewhere.rom does not exist on {node.root}: it leads to "
        "/usr/share/qemu/qboot.rom, and there is nothing at /usr/share/qemu."
    )


def test_links_are_followed_inside_the_tree_never_out_of_it(node):
    assert resolve(node, "/usr/share/vgabios/up.rom") == ("/etc/shadow", None)
    assert resolve(node, "/usr/share/kvm/gtx1080ti.rom") == (ROM, None)
    assert resolve(node, "/usr/share/vgabios/nothing/here.rom") == (
        "/usr/share/vgabios/nothing/here.rom",
        "/usr/share/vgabios/nothing",
    )
    assert os.path.realpath(node.path("usr/share/vgabios/shadow.rom")) == "/etc/shadow"  # what a naive check would see


def test_a_rom_in_vgabios_goes_into_proxmox_as_romfile_with_x_vga(node):
    result = attach(node, primary_gpu=True, rom_file=ROM)
    assert result.outcome == SUCCEEDED, result.error
    assert "hostpci2: 0b:00,pcie=1,x-vga=1,romfile=gtx1080ti.rom" in conf(node).splitlines()
    assert result.warnings == []  # /usr/share/kvm/gtx1080ti.rom is there (a link to the same file)
    assert result.targets == [GPU, AUDIO]


def test_a_rom_in_vgabios_goes_into_the_libvirt_xml_as_a_rom_element(node):
    vm = libvirt.vm_from_xml(domain_xml("win11"), "shut off")
    vms = VmInventory([VmSource("libvirt", True, "test", [vm])])
    after = libvirt.plan_attach(vm, prepare(node, vms, vm.ref, [GPU], primary_gpu=True, rom_file=ROM))
    assert after.count(f"<rom file='{ROM}'/>") == 1
    assert "x-vga" not in after  # planned for OVMF: the card's own UEFI driver needs no legacy VGA


def test_the_page_checks_only_how_the_path_is_written_the_worker_where_it_leads(node):
    from passthrough.pci.scan import scan

    vm = libvirt.vm_from_xml(domain_xml("win11"), "shut off")
    vms = VmInventory([VmSource("libvirt", True, "test", [vm])])
    assert check(scan(node), vms, vm.ref, [GPU], rom_file="/usr/share/vgabios/missing.rom").spec.device(GPU).rom_file
    with pytest.raises(RomFileRefused, match="is not in a directory the hypervisors read ROMs from"):
        check(scan(node), vms, vm.ref, [GPU], rom_file="/etc/shadow")


def test_a_plain_qemu_vm_takes_neither_option_and_primary_gpu_must_be_a_boolean(node):
    with pytest.raises(InvalidRequest, match="A ROM file is not given to a plain QEMU VM here"):
        give.refuse_options("qemu", rom_file=ROM)
    with pytest.raises(InvalidRequest, match=r"A primary GPU \(x-vga\) cannot be hot-plugged"):
        give.refuse_options("qemu", primary_gpu=True)
    give.refuse_options("libvirt", primary_gpu=True, rom_file=ROM)
    with pytest.raises(InvalidRequest, match="primary_gpu must be true or false, not 'yes'"):
        attach(node, primary_gpu="yes")
