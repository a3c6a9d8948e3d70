"""The interlock: one rule for bind, binding at boot, reset and SR-IOV, on real machines' layouts.

The host-critical functions need their addresses typed; the chipset, host bridges and
bridges are never touched whatever is typed; a reset touches its target alone (the kernel
bus-resets only a function alone on its bus, and the reset refuses the rest before the
interlock's confirmation is asked for). Every refusal leaves the tree byte-identical.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.kerneldouble import KernelDouble
from passthrough.ops import (
    SUCCEEDED,
    ConfirmationRequired,
    NeverAllowed,
    ResetUnavailable,
    bind_vfio,
    check_action,
    judge,
    reset,
    set_sriov_vfs,
)
from passthrough.ops.interlock import BIND, BIND_AT_BOOT, RESET, SET_SRIOV_VFS
from passthrough.ops.persist import apply_persist_binding, plan_persist_binding
from passthrough.pci.scan import scan
from tests.kernelhosts import GT710, GT710_AUDIO, I211, NVME, SRIOV_PORTS, sriov_host, tree_digest, x570

BOOT_GPU = GT710.address
LPC, SMBUS = "0000:00:14.3", "0000:00:14.0"
PORT0, PORT1 = SRIOV_PORTS[1].address, SRIOV_PORTS[2].address  # 82:00.0 and 82:00.1 behind 80:01.0


def without(spec: HostSpec, *addresses: str) -> HostSpec:
    """``spec`` without some functions (a GPU whose HDMI audio function is not exposed is alone on its bus)."""
    spec.functions = [function for function in spec.functions if function.address not in addresses]
    return spec


def with_changes(spec: HostSpec, **changes_by_address: dict) -> HostSpec:
    spec.functions = [
        replace(function, **changes_by_address[function.address])
        if function.address in changes_by_address
        else function
        for function in spec.functions
    ]
    return spec


def host(make_tree, spec: HostSpec) -> tuple[KernelDouble, dict[str, str]]:
    kernel = KernelDouble(make_tree(spec))
    return kernel, tree_digest(kernel.root)


def unchanged(kernel: KernelDouble, digest: dict[str, str]) -> None:
    assert kernel.writes == [] and kernel.commands == []
    assert tree_digest(kernel.root) == digest


def nic_host_with_the_default_route_on(address: str, **overrides: object) -> HostSpec:
    """The two 82576 ports; the host is reached through ``address`` (its management NIC)."""
    return sriov_host(net_devices={"enp130s0": address}, default_route="enp130s0", **overrides)


# Reset ------------------------------------------------------------------------------------
def test_reset_of_the_boot_gpu_under_the_console_is_refused_without_confirmation(make_tree):
    # The bug: no PCI driver, so nothing looked in use, but the efifb console draws on it.
    # The GT 710 lists only bus, so it is alone on its bus here (its HDMI audio not exposed):
    # with the audio function beside it the kernel would refuse the reset whatever is typed.
    spec = with_changes(without(x570(console="efifb"), GT710_AUDIO.address), **{BOOT_GPU: {"driver": None}})
    kernel, digest = host(make_tree, spec)

    for typed in (None, "yes", GT710.address[5:]):
        with pytest.raises(ConfirmationRequired) as caught:
            reset(kernel, BOOT_GPU, confirm=typed)

    error = caught.value
    assert "host-critical" in error.message and "firmware framebuffer" in error.message
    assert f"(“{GT710.address[5:]}”) is not the one asked for" in error.message
    assert error.expected == BOOT_GPU and f"type {BOOT_GPU}" in error.hint
    unchanged(kernel, digest)
    result = reset(kernel, BOOT_GPU, confirm=BOOT_GPU)
    assert result.outcome == SUCCEEDED, result.error
    assert result.parameters["confirmed"] == [BOOT_GPU]
    assert result.steps[0].detail.endswith(f"host-critical {BOOT_GPU} confirmed")
    assert kernel.state.resets == [{"address": BOOT_GPU, "method": "bus"}]


def test_the_boot_gpu_beside_its_audio_function_is_refused_by_the_kernels_rule_before_any_confirmation(make_tree):
    spec = with_changes(x570(console="efifb"), **{BOOT_GPU: {"driver": None}})
    kernel, digest = host(make_tree, spec)
    for typed in (None, BOOT_GPU):  # no confirmation makes the kernel reset a bus it shares
        with pytest.raises(ResetUnavailable, match=f"shares bus 0c with {BOOT_GPU[5:]}"):
            reset(kernel, BOOT_GPU, confirm=typed)
    unchanged(kernel, digest)


def test_pm_reset_of_the_lpc_bridge_is_refused_even_confirmed(make_tree):
    spec = with_changes(x570(), **{LPC: {"reset_methods": ["pm"]}})
    kernel, digest = host(make_tree, spec)

    with pytest.raises(NeverAllowed) as caught:
        reset(kernel, LPC, method="pm", confirm=LPC)

    assert caught.value.code == "never_allowed"
    assert caught.value.message == (
        "A pm reset of 00:14.3 (FCH LPC Bridge) is refused: "
        "00:14.3 (FCH LPC Bridge) is the chipset's LPC/ISA bridge; the host cannot run without it."
    )
    assert caught.value.hint.startswith("No confirmation overrides this.")
    unchanged(kernel, digest)


def test_the_smbus_controller_is_refused_as_the_chipset_not_as_a_device_to_unbind_first(make_tree):
    spec = with_changes(x570(), **{SMBUS: {"reset_methods": ["pm", "bus"]}})
    kernel, digest = host(make_tree, spec)
    with pytest.raises(NeverAllowed, match="SMBus controller; the host cannot run without it") as caught:
        reset(kernel, SMBUS, method="bus")
    assert "Bind it to vfio-pci" not in str(caught.value)
    unchanged(kernel, digest)


def test_a_bridge_is_never_reset_from_here(make_tree):
    kernel, digest = host(make_tree, with_changes(x570(), **{"0000:00:03.1": {"reset_methods": ["pm"]}}))
    with pytest.raises(NeverAllowed, match="is a PCI bridge; every device behind it depends on it"):
        reset(kernel, "0000:00:03.1", method="pm")
    unchanged(kernel, digest)


def test_bus_reset_refused_when_a_sibling_behind_the_bridge_is_host_critical(make_tree):
    # A dual-port NIC: port 1 goes to a VM, port 0 carries the host's default route.
    kernel = KernelDouble(make_tree(nic_host_with_the_default_route_on(PORT0)))
    bind_vfio(kernel, PORT1)
    kernel.writes.clear()
    kernel.commands.clear()
    digest = tree_digest(kernel.root)

    # The ports share bus 82: the kernel would refuse the bus reset, so port 0 is never at
    # stake, and typing its address changes nothing.
    for typed in (None, PORT0):
        with pytest.raises(ResetUnavailable) as caught:
            reset(kernel, PORT1, method="bus", confirm=typed)
        assert "82:00.0 (82576 Gigabit Network Connection) shares bus 82 with 82:00.1" in caught.value.message
        assert "must stay with the host, so this bus cannot be reset while the host runs" in caught.value.hint
    unchanged(kernel, digest)

    # The interlock judges a reset of port 1 by port 1 alone, whatever the method.
    inventory = scan(kernel)
    for method in ("bus", "flr", None):
        verdict = judge(inventory, RESET, [PORT1], method=method)
        assert verdict.touched == [PORT1] and verdict.critical == {} and verdict.reason() is None

    # The kernel's choice starts with flr, which resets port 1 alone: no confirmation is asked.
    assert reset(kernel, PORT1).outcome == SUCCEEDED
    assert reset(kernel, PORT1, method="flr").outcome == SUCCEEDED
    assert kernel.state.resets == [{"address": PORT1, "method": "flr"}] * 2


def test_bus_reset_refused_even_confirmed_when_the_smbus_shares_the_bus(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:1c.0", "8086", "a110", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec("0000:03:00.0", "10de", "1d01", "030000", driver="vfio-pci", iommu_group=2,
                         parent="0000:00:1c.0", reset_methods=["bus"]),
            FunctionSpec("0000:03:00.1", "8086", "a123", "0c0500", driver="i801_smbus", iommu_group=3,
                         parent="0000:00:1c.0"),
        ]
    )  # fmt: skip
    kernel, digest = host(make_tree, spec)
    with pytest.raises(ResetUnavailable) as caught:
        reset(kernel, "0000:03:00.0", method="bus", confirm="0000:03:00.1")
    assert "03:00.1 (" in caught.value.message and "shares bus 03 with 03:00.0" in caught.value.message
    assert "must stay with the host, so this bus cannot be reset while the host runs" in caught.value.hint
    assert "to a VM together with" not in caught.value.hint
    assert judge(scan(kernel), RESET, ["0000:03:00.0"], method="bus").touched == ["0000:03:00.0"]
    unchanged(kernel, digest)


# SR-IOV -----------------------------------------------------------------------------------
def test_changing_the_vfs_of_the_default_route_nics_pf_needs_confirmation(make_tree):
    kernel, digest = host(make_tree, nic_host_with_the_default_route_on(PORT1))
    with pytest.raises(ConfirmationRequired, match="carries the default route") as caught:
        set_sriov_vfs(kernel, PORT1, 4)
    assert caught.value.expected == PORT1
    assert caught.value.message.startswith("Changing the VF count of 82:00.1 (82576 Gigabit Network Connection)")
    unchanged(kernel, digest)

    result = set_sriov_vfs(kernel, PORT1, 4, confirm=PORT1)
    assert result.outcome == SUCCEEDED and result.parameters["confirmed"] == [PORT1]
    assert set_sriov_vfs(kernel, PORT0, 2).outcome == SUCCEEDED  # the other port is not the host's way in


def test_a_vf_the_host_is_reached_through_makes_the_count_change_host_critical(make_tree):
    kernel = KernelDouble(make_tree(sriov_host()))
    set_sriov_vfs(kernel, PORT1, 2)
    inventory = scan(kernel)
    vf = inventory.device(PORT1).virtfns[0]
    inventory.host_critical[vf] = ["it carries the default route (vmbr0 → enp130s0v0)"]

    verdict = judge(inventory, SET_SRIOV_VFS, [PORT1])

    assert verdict.touched == [PORT1, *inventory.device(PORT1).virtfns]
    assert verdict.confirm_phrase == vf
    assert f"{vf[5:]} (a VF of 82:00.1 that the change removes): it carries the default route" in verdict.reason()


# Binding now and at every boot ------------------------------------------------------------
def test_persist_of_a_host_critical_function_needs_confirmation_and_writes_nothing_without(make_tree):
    kernel, digest = host(make_tree, x570())
    with pytest.raises(ConfirmationRequired, match="at every boot touches host-critical functions"):
        apply_persist_binding(kernel, [I211.address])
    with pytest.raises(ConfirmationRequired):
        plan_persist_binding(kernel, [I211.address], confirm="yes")
    unchanged(kernel, digest)
    assert plan_persist_binding(kernel, [I211.address], confirm=I211.address).changes


def test_two_host_critical_groups_bound_at_boot_take_one_phrase_naming_both(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    with pytest.raises(ConfirmationRequired) as caught:
        plan_persist_binding(kernel, [I211.address, NVME.address], confirm=I211.address)
    both = f"{NVME.address} {I211.address}"
    assert caught.value.expected == both
    assert plan_persist_binding(kernel, [I211.address, NVME.address], confirm=both).changes


def test_binding_the_chipset_at_boot_is_refused_even_confirmed(make_tree):
    kernel, digest = host(make_tree, x570())
    with pytest.raises(NeverAllowed, match="at every boot is refused"):
        apply_persist_binding(kernel, [LPC], confirm=f"{SMBUS} {LPC}")
    unchanged(kernel, digest)


# The rule itself --------------------------------------------------------------------------
def test_the_same_function_gets_the_same_answer_for_every_action(make_tree):
    inventory = scan(make_tree(x570(console="efifb")))
    for action in (BIND, BIND_AT_BOOT, RESET):
        assert judge(inventory, action, [BOOT_GPU]).confirm_phrase == BOOT_GPU
        assert not judge(inventory, action, [LPC]).allowed
    assert judge(inventory, BIND, ["0000:00:01.1"]).never == [
        "00:01.1 (Starship/Matisse GPP Bridge) is a PCI bridge; every device behind it depends on it."
    ]
    assert judge(inventory, BIND, ["0000:00:01.0"]).never == [
        "00:01.0 (Starship/Matisse PCIe Dummy Host Bridge) is a host bridge; it belongs to the platform."
    ]


def test_an_ordinary_device_is_simply_allowed(make_tree):
    inventory = scan(make_tree(x570()))
    verdict = judge(inventory, RESET, ["0000:0b:00.0"], method="bus")
    assert verdict.allowed and verdict.reason() is None
    assert verdict.touched == ["0000:0b:00.0"]  # a reset, bus or not, resets the function alone
    permission = check_action(inventory, RESET, ["0000:0b:00.0"], "anything typed", method="bus")
    assert permission.confirmed == []
