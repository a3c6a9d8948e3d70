"""Checked against libvirt: its qemuxml2argv hostdev tests, and domain XMLs people ran on real machines.

libvirt's cases are a domain XML in and the QEMU argv libvirt builds (``.args``). We put the
same host functions in a tree, generate our libvirt XML and QEMU command for them, and
compare: the same ``<source>`` addresses, the same ``-device vfio-pci,host=`` functions.
Both their XML and ours must pass ``virt-xml-validate``.

Deliberate differences:

* PCI_ASSIGN: four cases expect ``-device pci-assign`` (legacy KVM device assignment, removed
  in Linux 4.12 and QEMU 2.12); we generate vfio-pci for the same host function.
* NET_HOSTDEV: ``<interface type='hostdev'>`` lets libvirt set a VF's MAC address, VLAN and
  802.1Qbg port before assigning it; we pass the function as a plain ``<hostdev>`` and leave
  network settings to the guest.
* Guest placement: their single device sits at pci.0 slot 0x3; ours at slot 0x10 (i440fx)
  or behind a root port (q35). Guest addresses are never compared.
* SEPARATE_SLOTS: most real XMLs put a GPU's VGA and audio functions on separate guest buses
  (virt-manager's default); ours keep them on one multifunction slot, as ashtonian's XML
  does. The test states both partitions.
* managed='no' (joe-p binds devices himself at boot): ours are managed='yes', and the host
  requirements ask for vfio-pci either way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from passthrough.configgen import build_spec, generate
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import MACHINES, PEERS, hostdev_partition, hostdevs, virt_xml_validate
from tests.qemu_argv_support import command_argv, guest_slot_partition, script_argv, vfio_devices

ARGV_DIR = PEERS / "libvirt-2016-open-power-fork" / "qemuxml2argvdata"
CASES = sorted(path.name.removeprefix("qemuxml2argv-").removesuffix(".xml") for path in ARGV_DIR.glob("*.xml"))


def case_host(sources: list[str], net: bool) -> HostSpec:
    """The case's host functions, each in its own group; the net cases are SR-IOV VFs of a NIC."""
    return HostSpec(
        functions=[
            FunctionSpec(address, "8086", "10ca" if net else "10d3", "020000", driver="vfio-pci", iommu_group=40 + n)
            for n, address in enumerate(sources)
        ]
    )


def test_all_eight_hostdev_cases_are_here():
    assert CASES == [
        "hostdev-pci-address",
        "hostdev-pci-address-device",
        "hostdev-vfio",
        "hostdev-vfio-multidomain",
        "net-hostdev",
        "net-hostdev-multidomain",
        "net-hostdev-vfio",
        "net-hostdev-vfio-multidomain",
    ]


@pytest.mark.parametrize("name", CASES)
def test_libvirt_case_same_sources_and_same_vfio_functions(make_tree, tmp_path, name):
    their_xml = (ARGV_DIR / f"qemuxml2argv-{name}.xml").read_text()
    their_args = command_argv((ARGV_DIR / f"qemuxml2argv-{name}.args").read_text())
    sources = [device.source for device in hostdevs(their_xml)]
    assert sources  # every case passes one host function
    # PCI_ASSIGN: the legacy cases name the function with pci-assign instead of vfio-pci.
    legacy = "vfio" not in name
    their_functions = [device.host for device in vfio_devices(their_args, "pci-assign" if legacy else "vfio-pci")]
    assert their_functions == sources

    inventory = scan(make_tree(case_host(sources, net=name.startswith("net-"))))
    spec = build_spec(inventory, sources, name="QEMUGuest", machine="i440fx", firmware="seabios")
    ours_xml = generate(inventory, spec, "libvirt").text
    assert [device.source for device in hostdevs(ours_xml)] == sources
    assert [device.host for device in vfio_devices(script_argv(generate(inventory, spec, "qemu").text))] == sources

    for label, text in (("theirs", their_xml), ("ours", ours_xml)):
        path = tmp_path / f"{label}.xml"
        path.write_text(text)
        result = virt_xml_validate(path)
        assert result.returncode == 0, f"{label}: {result.stderr}"


def test_decimal_source_attributes_read_as_libvirt_reads_them():
    # hostdev-vfio-multidomain writes bus='32' slot='15': decimal, so 0x20 and 0x0f, as its .args shows.
    (device,) = hostdevs((ARGV_DIR / "qemuxml2argv-hostdev-vfio-multidomain.xml").read_text())
    assert device.source == "55aa:20:0f.3"


# Domain XMLs from real machines ------------------------------------------------------
def ashtonian_as_in_his_xml() -> HostSpec:
    # His macos.xml names 0b:00.0/.1 and 08:00.0, a later layout than his listing: the same RX 6700 XT
    # behind its Navi switch (GPU and audio in separate groups) and the Aquantia NIC (macOS drives it).
    return HostSpec(
        functions=[
            FunctionSpec("00:01.0", "8086", "460d", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec("00:1c.2", "8086", "7aba", "060400", driver="pcieport", iommu_group=14),
            FunctionSpec("08:00.0", "1d6a", "94c0", "020000", driver="atlantic", iommu_group=26, parent="00:1c.2"),
            FunctionSpec("09:00.0", "1002", "1478", "060400", driver="pcieport", iommu_group=19, parent="00:01.0"),
            FunctionSpec("0a:00.0", "1002", "1479", "060400", driver="pcieport", iommu_group=20, parent="09:00.0"),
            FunctionSpec("0b:00.0", "1002", "73df", "030000", driver="amdgpu", iommu_group=21, parent="0a:00.0"),
            FunctionSpec("0b:00.1", "1002", "ab28", "040300", driver="snd_hda_intel", iommu_group=22, parent="0a:00.0"),
        ]
    )


REAL_XMLS = {
    # name: (XML under PEERS, host tree, what we pick, build options)
    "joe-p": (
        "joe-p-vfio-headless/original/win10.xml",
        lambda: MACHINES["joe-p-x570"].host_spec(),
        ["0b:00.0", "0b:00.1", "07:00.0", "04:00.0", "0e:00.3", "01:00.0", "09:00.0"],
        {"rom_file": "/usr/share/vgabios/patched-firmware.rom"},
    ),
    "schplorg": (
        "schplorg-vfio-t480/original/etc__libvirt__qemu__win10-q35-GTX1060.xml",
        lambda: MACHINES["schplorg-t480"].host_spec(),
        ["09:00.0"],  # the audio and the enclosure's USB controller follow from group 14
        {},
    ),
    "sirspudd": (
        "sirspudd-threadripper-1950x/extracted/post.block7.txt",
        lambda: MACHINES["sirspudd-x399"].host_spec(),
        ["0a:00.0", "0d:00.0", "44:00.0", "42:00.0"],  # the Radeon VII's audio (group 21) follows
        {},
    ),
    "ashtonian": ("ashtonian-kvm-aio/macos.xml", ashtonian_as_in_his_xml, ["0b:00.0", "08:00.0"], {}),
    "mapmanagement": (
        "mapmanagement-gpu-passthrough/original/passthrough__pop_os__win10.xml",
        lambda: MACHINES["mapmanagement-b550"].host_spec(),
        ["08:00.0"],  # the Vega's audio sits in group 19 and follows
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_XMLS))
def test_real_domain_xml_validates(tmp_path, name):
    path = tmp_path / "theirs.xml"
    shutil.copyfile(PEERS / REAL_XMLS[name][0], path)
    result = virt_xml_validate(path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(REAL_XMLS))
def test_our_xml_carries_the_same_host_functions_as_theirs(make_tree, tmp_path, name):
    xml_path, host, picks, options = REAL_XMLS[name]
    theirs = hostdevs((PEERS / xml_path).read_text())
    inventory: Inventory = scan(make_tree(host()))
    spec = build_spec(inventory, picks, **options)
    text = generate(inventory, spec, "libvirt").text
    ours = hostdevs(text)
    assert sorted(device.source for device in ours) == sorted(device.source for device in theirs)
    # ROM files where they have them.
    assert {d.source: d.rom_file for d in ours if d.rom_file} == {d.source: d.rom_file for d in theirs if d.rom_file}
    path = tmp_path / "ours.xml"
    path.write_text(text)
    assert virt_xml_validate(path).returncode == 0

    # Our grouping: one guest slot per physical device, its functions together.
    by_device: dict[tuple[str, str], set[str]] = {}
    for device in ours:
        by_device.setdefault((device.source[:-2], ""), set()).add(device.source)
    assert hostdev_partition(ours) == {frozenset(functions) for functions in by_device.values()}
    if name == "ashtonian":  # his XML keeps the GPU's functions together too
        assert hostdev_partition(theirs) == hostdev_partition(ours)
    else:  # SEPARATE_SLOTS: every function on a guest bus of its own
        assert all(len(functions) == 1 for functions in hostdev_partition(theirs))


def test_our_qemu_command_for_ashtonian_keeps_the_card_on_one_slot_like_his_xml(make_tree):
    inventory = scan(make_tree(ashtonian_as_in_his_xml()))
    spec = build_spec(inventory, ["0b:00.0", "08:00.0"])
    ours = vfio_devices(script_argv(generate(inventory, spec, "qemu").text))
    theirs = hostdevs((PEERS / "ashtonian-kvm-aio/macos.xml").read_text())
    assert guest_slot_partition(ours) == hostdev_partition(theirs)
    assert {d.host for d in ours if "multifunction" in d.options} == {d.source for d in theirs if d.multifunction}


def test_peer_files_are_where_the_tests_expect():
    for xml_path, *_ in REAL_XMLS.values():
        assert (PEERS / xml_path).is_file()
        assert (PEERS / Path(xml_path).parts[0] / "PROVENANCE.txt").is_file()
