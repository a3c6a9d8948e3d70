"""Checked against Proxmox VE: qemu-server's cfg2cmd hostpci tests and a real `qm showcmd`.

Each cfg2cmd case is a VM config (``.conf``) and the QEMU command Proxmox builds from it
(``.conf.cmd``). We put the same host devices in a tree, build our VmSpec from the case's
options, and compare our vfio-pci devices and our hostpci lines with theirs: the same host
functions, the same grouping of functions on guest slots, and the same ROM/x-vga options.

Deliberate differences, each written down where it applies:

* IMPOSSIBLE_SLOTS: the test configs use device numbers above 0x1f (``00:ff.1``, ``f0:43``),
  which PCI cannot address (5 bits); our address parser refuses them (tested below), so
  the comparison renames them with the slot's low five bits (``ff`` -> ``1f``), keeping
  bus, function and domain.
* PCIE_EVERYWHERE: on q35 we put every device behind a PCIe root port (pcie=1); the cases
  leave some on Proxmox's conventional pci.0 bridge. Bus names and guest slot numbers are
  never compared (ours: rpN/pcie.0/pci.0 at 0x10+; theirs: ich9-pcie-port-N, pci.0).
* ONE_DEVICE_ONE_SLOT: functions of one physical device that a case passes as separate
  entries (``d0:15.1`` and ``d0:15.2``) share one guest slot in ours, as on the real card.
* GROUP_COMPANIONS: our build_spec adds the other endpoints of a picked function's IOMMU
  group (vfio hands out whole groups); Proxmox binds the whole group to vfio-pci but passes
  only what is named.
* Options we do not model are not compared: ``driver=keep|vfio`` (we always expect vfio-pci,
  which the host requirements check), ``vendor-id``/``device-id`` overrides, ``mdev``
  (mediated devices are not passthrough of a host function), and hostpci numbering gaps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from passthrough.configgen import build_spec, generate
from passthrough.errors import InvalidAddress
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.address import PciAddress
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import MACHINES, PEERS, conf_value, hostpci_entries
from tests.qemu_argv_support import command_argv, guest_slot_partition, script_argv, vfio_devices

CASES_DIR = PEERS / "proxmox-qemu-server-cfg2cmd" / "cfg2cmd"

# The host PCI functions qemu-server's test runner mocks (see PROVENANCE.txt), with the
# groups it gives (01:00.* group 1, 07:10.* group 2). The others get a group each, as
# ACS-isolated functions do; classes follow the mocked ids or, where none is mocked, a NIC.
MOCKED = [
    "0000:00:43.1", "0000:00:f4.0", "0000:00:ff.1", "0000:0f:f2.0", "0000:d0:13.0", "0000:d0:15.1", "0000:d0:15.2",
    "0000:d0:17.0", "0000:f0:42.0", "0000:f0:43.0", "0000:f0:43.1", "1234:f0:43.1", "0000:01:00.4", "0000:01:00.5",
    "0000:01:00.6", "0000:07:10.0", "0000:07:10.1", "0000:07:10.4",
]  # fmt: skip
MAPPINGS = {"someNic": ["0000:07:10.0", "0000:07:10.1", "0000:07:10.4"], "someGpu": ["0000:01:00.4"]}


def real_address(text: str) -> str:
    """IMPOSSIBLE_SLOTS: ``00:ff.1`` -> ``0000:00:1f.1``; a possible address is only made full."""
    match = re.match(r"^(?:([0-9a-f]{4,}):)?([0-9a-f]{2}):([0-9a-f]{2})(?:\.([0-7]))?$", text)
    assert match, text
    domain, bus, slot, function = match.groups()
    slot = f"{int(slot, 16) & 0x1F:02x}"
    return f"{domain or '0000'}:{bus}:{slot}" + (f".{function}" if function is not None else "")


def mocked_host() -> HostSpec:
    functions = [
        FunctionSpec("0000:07:00.0", "8086", "1521", "020000", driver="igb", iommu_group=3, sriov_totalvfs=7)
    ]  # the PF of the 07:10.* VFs, which the mock leaves out of its lspci
    for number, address in enumerate(MOCKED):
        address = real_address(address)
        if address.startswith("0000:01:00."):
            vendor, device, class_code, group, physfn = "10de", "2231", "030200", 1, None
        elif address.startswith("0000:07:10."):
            vendor, device, class_code, group, physfn = "8086", "1520", "020000", 2, "0000:07:00.0"
        else:
            vendor, device, class_code, group, physfn = "8086", "10d3", "020000", 10 + number, None
        functions.append(
            FunctionSpec(address, vendor, device, class_code, driver="vfio-pci", iommu_group=group, physfn=physfn)
        )
    return HostSpec(functions=functions)


@dataclass
class Case:
    added: set[str] = field(default_factory=set)  # GROUP_COMPANIONS we add
    merged: list[set[str]] = field(default_factory=list)  # ONE_DEVICE_ONE_SLOT
    mdev_entries: set[str] = field(default_factory=set)  # hostpciN with mdev: not compared


CASES = {
    "q35-linux-hostpci": Case(merged=[{"0000:d0:15.1", "0000:d0:15.2"}]),
    "q35-linux-hostpci-driver-keep": Case(merged=[{"0000:d0:15.1", "0000:d0:15.2"}]),
    "q35-linux-hostpci-x-pci-overrides": Case(),
    "q35-linux-hostpci-multifunction": Case(),
    "q35-linux-hostpci-mapping": Case(added={"0000:07:10.4"}, mdev_entries={"hostpci1"}),
    "q35-win10-hostpci": Case(),
    "i440fx-win10-hostpci": Case(),
}
NOT_APPLICABLE = {
    "q35-linux-hostpci-template": "a template cannot be started, so Proxmox builds no vfio-pci device to compare",
    "i440fx-viommu-virtio": "vIOMMU only (an IOMMU inside the guest for nested assignment); no host device",
    "q35-viommu-intel": "vIOMMU only; no host device",
    "q35-viommu-intel-aw-bits": "vIOMMU only; no host device",
    "q35-viommu-intel-guest-phys-bits": "vIOMMU only; no host device",
    "q35-viommu-virtio": "vIOMMU only; no host device",
    "q35-viommu-virtio-aw-bits": "vIOMMU only; no host device",
    # The two expected-error cases refuse vIOMMU settings (Intel vIOMMU on i440fx, aw-bits
    # without a vIOMMU). VmSpec has no vIOMMU, so there is nothing to refuse; the rule they
    # share, "this needs q35", we apply to pcie=1: see test_pcie_on_i440fx_is_refused_like_proxmox.
    "i440fx-viommu-intel": "expected error about vIOMMU, which VmSpec does not offer",
    "q35-no-viommu-with-aw-bits": "expected error about vIOMMU aw-bits, which VmSpec does not offer",
}


def test_every_peer_case_is_compared_or_says_why_not():
    names = {path.name.removesuffix(".conf") for path in CASES_DIR.glob("*.conf")}
    assert names == set(CASES) | set(NOT_APPLICABLE)
    for name in NOT_APPLICABLE:
        conf = (CASES_DIR / f"{name}.conf").read_text()
        has_devices = bool(hostpci_entries(conf)) and (CASES_DIR / f"{name}.conf.cmd").exists()
        if has_devices:  # only the template has hostpci lines; its command must hold no vfio-pci device
            assert not vfio_devices(command_argv((CASES_DIR / f"{name}.conf.cmd").read_text()))


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> Inventory:
    from passthrough.hosttrees.tree import write_tree

    root = tmp_path_factory.mktemp("proxmox-mock")
    write_tree(mocked_host(), root)
    return scan(root)


def resolve(inventory: Inventory, entries: dict[str, dict[str, str]], case: Case) -> dict[str, list[str]]:
    """hostpciN -> the host functions Proxmox passes for it (mapping alternatives taken in order)."""
    used: set[str] = set()
    resolved = {}
    for name, options in entries.items():
        if name in case.mdev_entries:
            continue
        if "mapping" in options:
            free = [address for address in MAPPINGS[options["mapping"]] if address not in used]
            ids = [free[0]]
        else:
            ids = [real_address(part) for part in options["host"].split(";")]
        functions = []
        for id_ in ids:
            if id_.count(":") == 2 and "." in id_:
                functions.append(id_)
            else:  # bb:dd: every function of the device
                slot = PciAddress.parse(id_ + ".0").slot_key
                functions += [f.address for f in inventory.devices if f.pci_address.slot_key == slot]
        used.update(functions)
        resolved[name] = functions
    return resolved


def spec_for(inventory: Inventory, name: str, case: Case):
    conf = (CASES_DIR / f"{name}.conf").read_text()
    entries = hostpci_entries(conf)
    resolved = resolve(inventory, entries, case)
    picks = [address for functions in resolved.values() for address in functions]
    machine = "q35" if (conf_value(conf, "machine") or "").startswith("q35") else "i440fx"
    firmware = "ovmf" if conf_value(conf, "bios") == "ovmf" else "seabios"
    mapping = next((options["mapping"] for options in entries.values() if "mapping" in options), None)
    spec = build_spec(inventory, picks, machine=machine, firmware=firmware, proxmox_mapping=mapping)
    for entry, functions in resolved.items():
        if entries[entry].get("rombar") == "0":
            spec.device(functions[0]).rombar = False
    return spec, entries, resolved


@pytest.mark.parametrize("name", sorted(CASES))
def test_our_qemu_devices_match_what_proxmox_builds(inventory, name):
    case = CASES[name]
    spec, _, _ = spec_for(inventory, name, case)
    ours = vfio_devices(script_argv(generate(inventory, spec, "qemu").text))
    theirs = vfio_devices(command_argv((CASES_DIR / f"{name}.conf.cmd").read_text()), normalize=real_address)
    assert {device.host for device in ours} == {device.host for device in theirs} | case.added

    expected = guest_slot_partition(theirs)
    for together in case.merged:
        expected = {slot for slot in expected if not slot & together} | {frozenset(together)}
    expected |= {frozenset({address}) for address in case.added}
    assert guest_slot_partition(ours) == expected

    def flags(devices, option):
        return {device.host for device in devices if option in device.options}

    # A merged device's first function carries multifunction=on in ours (ONE_DEVICE_ONE_SLOT).
    assert flags(ours, "multifunction") == flags(theirs, "multifunction") | {min(t) for t in case.merged}
    for option in ("x-vga", "romfile"):
        assert flags(ours, option) == flags(theirs, option)
    assert {d.host for d in ours if d.options.get("rombar") == "0"} == {
        d.host for d in theirs if d.options.get("rombar") == "0"
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_our_hostpci_lines_match_the_case_config(inventory, name):
    case = CASES[name]
    spec, entries, resolved = spec_for(inventory, name, case)
    ours_text = generate(inventory, spec, "proxmox").text
    ours = hostpci_entries(ours_text)
    ours_resolved = resolve(inventory, ours, Case())

    def shape(entries_, resolved_):
        return {
            frozenset(resolved_[entry]): {
                k: v for k, v in entries_[entry].items() if k in ("rombar", "x-vga", "romfile")
            }
            for entry in resolved_
        }

    expected = shape(entries, resolved)
    for together in case.merged:
        parts = [key for key in expected if key & together]
        options = {}
        for key in parts:
            options.update(expected.pop(key))
        expected[frozenset(together)] = options
    for address in case.added:
        expected[frozenset({address})] = {}
    assert shape(ours, ours_resolved) == expected

    # Whole devices are written bb:dd as the case writes them.
    for entry, options in entries.items():
        whole = "host" in options and re.fullmatch(r"(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}", options["host"])
        if whole and len(resolved[entry]) > 1:
            assert real_address(options["host"]).removeprefix("0000:") in {o.get("host") for o in ours.values()}
    # The mapping name replaces the address of the first device, as in the case.
    mappings = [options["mapping"] for options in entries.values() if "mapping" in options]
    if mappings:
        assert ours["hostpci0"]["mapping"] == mappings[0]
    # q35 and OVMF are stated where the case states them.
    assert conf_value(ours_text, "machine") == ("q35" if spec.machine == "q35" else None)
    assert conf_value(ours_text, "bios") == ("ovmf" if spec.firmware == "ovmf" else None)


@pytest.mark.parametrize("address", ["00:ff.1", "00:f4.0", "0000:f0:43.0", "1234:f0:43.1", "0f:f2.0"])
def test_impossible_slots_from_the_test_configs_are_refused(address):
    with pytest.raises(InvalidAddress, match="PCI slots run from 00 to 1f"):
        PciAddress.parse(address)


def test_real_qm_showcmd_of_a_gt_1030_with_x_vga_under_ovmf(make_tree):
    # asokolsky's "duo": GT 1030 01:00.0 + audio 01:00.1 as hostpci0 (whole device, pcie=1, x-vga=1), OVMF.
    # Proxmox drops x-vga=on under OVMF, adds kvm=off for x-vga and sets -vga none; we do the same
    # with primary_gpu and hide_kvm.
    text = (PEERS / "asokolsky-homelab/extracted/proxmox__pcie-passthrough.block14.txt").read_text()
    theirs_argv = command_argv(text.split("\n", 1)[1].split("root@duo:~# qm monitor")[0])
    theirs = vfio_devices(theirs_argv)
    inventory = scan(make_tree(MACHINES["asokolsky-duo"].host_spec()))
    spec = build_spec(inventory, ["01:00.0"], primary_gpu=True, hide_kvm=True)
    ours_argv = script_argv(generate(inventory, spec, "qemu").text)
    ours = vfio_devices(ours_argv)
    assert [d.host for d in ours] == [d.host for d in theirs] == ["0000:01:00.0", "0000:01:00.1"]
    assert guest_slot_partition(ours) == guest_slot_partition(theirs)
    assert [(d.function, "multifunction" in d.options) for d in ours] == [
        (d.function, "multifunction" in d.options) for d in theirs
    ]
    assert not any("x-vga" in d.options for d in ours + theirs)

    def option(argv, flag):
        return [value for name, value in zip(argv, argv[1:], strict=False) if name == flag]

    assert "kvm=off" in option(theirs_argv, "-cpu")[0].split(",")
    assert "kvm=off" in option(ours_argv, "-cpu")[0].split(",")
    assert option(theirs_argv, "-vga") == option(ours_argv, "-vga") == ["none"]
    entry = hostpci_entries(generate(inventory, spec, "proxmox").text)["hostpci0"]
    assert entry == {"host": "01:00", "pcie": "1", "x-vga": "1"}
