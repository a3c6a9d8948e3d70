"""passthrough.vms.validate: what every attach refuses before it changes a VM, whatever its kind."""

from __future__ import annotations

import pytest

from passthrough.errors import InvalidAddress, UnknownDevice
from passthrough.ops.errors import ConfirmationRequired, GroupNotViable, InvalidRequest, IommuOff, NeverAllowed
from passthrough.pci.scan import scan
from passthrough.vms.model import (
    ConfigChanged,
    DeviceHeldElsewhere,
    HeldDevice,
    UnknownVm,
    Vm,
    VmInventory,
    VmSource,
)
from passthrough.vms.validate import check, prepare
from tests.configgen_support import desktop, desktop_with_quad_nic

GPU, AUDIO, NIC = "0000:01:00.0", "0000:01:00.1", "0000:03:00.0"


def vms(*extra: Vm) -> VmInventory:
    win11 = Vm("libvirt", "win11", "win11", "shut off", machine="pc-q35-7.2", config="<domain/>")
    router = Vm("proxmox", "101", "router", "running", machine="pc", config="name: router\n")
    return VmInventory([VmSource("libvirt", True, "test", [win11, *extra]), VmSource("proxmox", True, "t", [router])])


@pytest.fixture
def tree(make_tree):
    from passthrough.host import HostTree

    return HostTree(make_tree(desktop_with_quad_nic()))


def test_the_gpu_goes_with_its_audio_function_into_a_q35_vm(tree):
    prepared = prepare(tree, vms(), "win11", ["01:00.0"])
    assert prepared.vm.ref == "libvirt:win11"
    assert prepared.addresses == [GPU, AUDIO]
    assert prepared.picked == [GPU]
    assert prepared.spec.machine == "q35" and prepared.spec.name == "win11"
    assert "same physical device" in (prepared.spec.device(AUDIO).added_because or "")


def test_an_i440fx_vm_gets_a_pc_spec_and_a_vm_is_found_by_vmid_or_name(tree):
    assert prepare(tree, vms(), "101", [NIC]).spec.machine == "i440fx"
    assert prepare(tree, vms(), "router", [NIC]).vm.ref == "proxmox:101"


def test_a_function_another_vm_holds_is_refused_naming_that_vm(tree):
    other = Vm("libvirt", "gaming", "gaming", "running", machine="q35", devices=[HeldDevice(AUDIO, live=True)])
    with pytest.raises(DeviceHeldElsewhere) as refused:
        prepare(tree, vms(other), "win11", [GPU])
    assert "libvirt:gaming (running), which is running with it" in refused.value.message
    assert "01:00.1" in refused.value.message


def test_the_vm_that_already_has_it_is_not_refused(tree):
    mine = Vm("libvirt", "gaming", "gaming", "shut off", machine="q35", devices=[HeldDevice(GPU), HeldDevice(AUDIO)])
    assert prepare(tree, vms(mine), "gaming", [GPU]).addresses == [GPU, AUDIO]


def test_an_unknown_or_ambiguous_vm_is_named_with_the_vms_there_are(tree):
    with pytest.raises(UnknownVm) as unknown:
        prepare(tree, vms(), "win10", [GPU])
    assert "No VM on this host is called 'win10'" in unknown.value.message
    assert "libvirt:win11" in (unknown.value.hint or "") and "proxmox:101" in (unknown.value.hint or "")
    twin = Vm("qemu", "/run/win11.qmp", "win11", "running", machine="q35")
    with pytest.raises(UnknownVm) as ambiguous:
        prepare(tree, vms(twin), "win11", [GPU])
    assert "2 VMs are called 'win11'" in ambiguous.value.message
    with pytest.raises(UnknownVm, match="There is no proxmox VM '102'"):
        prepare(tree, vms(), "proxmox:102", [GPU])


def test_bad_addresses_and_lists_are_refused_before_anything(tree):
    with pytest.raises(InvalidAddress):
        prepare(tree, vms(), "win11", ["01:00"])
    with pytest.raises(UnknownDevice):
        prepare(tree, vms(), "win11", ["0000:09:00.0"])
    with pytest.raises(InvalidRequest, match="at least one"):
        prepare(tree, vms(), "win11", [])
    with pytest.raises(InvalidRequest, match="at least one"):
        prepare(tree, vms(), "win11", "01:00.0")
    with pytest.raises(InvalidRequest, match="Name the VM"):
        prepare(tree, vms(), 7, [GPU])


def test_a_host_critical_function_needs_its_confirmation_and_the_chipset_never_goes(make_tree):
    from passthrough.host import HostTree

    tree = HostTree(make_tree(desktop()))
    with pytest.raises(NeverAllowed, match="Giving .* to a VM is refused"):
        prepare(tree, vms(), "win11", ["00:1f.4"])
    inventory = scan(tree)
    inventory.host_critical[GPU] = ["it drives the host's console"]
    with pytest.raises(ConfirmationRequired) as asked:
        check(inventory, vms(), "win11", [GPU])
    assert asked.value.expected == f"{AUDIO} {GPU}" or asked.value.expected == GPU
    assert check(inventory, vms(), "win11", [GPU], confirm=asked.value.expected).confirmed == [GPU]


def test_iommu_off_and_a_group_of_bridges_alone_are_refused(make_tree):
    from passthrough.host import HostTree

    with pytest.raises(IommuOff, match="IOMMU is off"):
        prepare(HostTree(make_tree(desktop(iommu=False))), vms(), "win11", [GPU])
    with pytest.raises(GroupNotViable):
        check(scan(make_tree(desktop())), vms(), "win11", ["00:1c.0"])


def test_a_config_changed_since_the_diff_is_refused(tree):
    fingerprint = vms().find("win11").fingerprint
    assert prepare(tree, vms(), "win11", [GPU], fingerprint=fingerprint).vm.name == "win11"
    with pytest.raises(ConfigChanged, match="changed since the diff"):
        prepare(tree, vms(), "win11", [GPU], fingerprint="0" * 16)


def test_the_vm_model_round_trips_through_json():
    inventory = vms(Vm("qemu", "/run/a.qmp", "a", "running", devices=[HeldDevice(NIC, "0000:01:00.0", False, True)]))
    again = VmInventory.from_json(inventory.to_json())
    assert again == inventory
    assert again.find("qemu:/run/a.qmp").holds(NIC).live


def test_a_vm_name_the_generators_would_refuse_does_not_stop_an_attach(tree):
    spaced = Vm("libvirt", "Windows 11 (gaming)", "Windows 11 (gaming)", "shut off", machine="q35")
    prepared = prepare(tree, vms(spaced), "libvirt:Windows 11 (gaming)", [GPU])
    assert prepared.vm is spaced and prepared.spec.name == "Windows-11-gaming"
