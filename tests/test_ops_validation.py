"""Bad input changes nothing and gets a specific error; the checks every operation makes first."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from passthrough.errors import InvalidAddress, PassthroughError, UnknownDevice
from passthrough.host import HostTree
from passthrough.kerneldouble import KernelDouble, faults
from passthrough.ops import (
    RESET_METHODS,
    SUCCEEDED,
    ConfirmationRequired,
    IommuOff,
    NeverAllowed,
    UnknownResetMethod,
    VfioUnavailable,
    bind_vfio,
    reset,
    restore_driver,
    set_sriov_vfs,
)
from passthrough.ops.commands import CommandResult
from passthrough.pci.address import normalize
from tests.kernelhosts import GT710, GTX1080TI, I211, SRIOV_PORTS, tree_digest, x570

GPU = GTX1080TI.address
PF = SRIOV_PORTS[1].address
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(),
    st.binary(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
FULL_ADDRESS = re.compile(
    r"^\s{0,8}[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]\s{0,8}$"
)  # longer input is refused as too long
DRIVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RUNS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def host(make_tree):
    """A host with the GPU group on vfio-pci and two VFs, so every operation has something to refuse."""
    spec = x570()
    spec.functions += SRIOV_PORTS
    root = make_tree(spec)
    kernel = KernelDouble(root)
    bind_vfio(kernel, GPU)
    set_sriov_vfs(kernel, PF, 2)
    kernel.writes.clear()
    kernel.commands.clear()
    return kernel, tree_digest(root)


def unchanged(host) -> None:
    kernel, digest = host
    assert kernel.writes == [] and kernel.commands == []
    assert tree_digest(kernel.root) == digest


def not_an_address(value) -> bool:
    return not (isinstance(value, str) and FULL_ADDRESS.match(value))


@RUNS
@given(address=ANYTHING.filter(not_an_address))
def test_any_address_that_is_not_a_full_address_is_refused(host, address):
    for operation in (bind_vfio, restore_driver, reset):
        with pytest.raises(InvalidAddress):
            operation(host[0], address)
    with pytest.raises(InvalidAddress):
        set_sriov_vfs(host[0], address, 1)
    unchanged(host)


@RUNS
@given(address=st.from_regex(FULL_ADDRESS, fullmatch=True))
def test_a_well_formed_address_of_no_device_is_refused(host, address):
    kernel = host[0]
    assume(not kernel.exists(f"sys/bus/pci/devices/{normalize(address)}"))
    for operation in (bind_vfio, restore_driver, reset):
        with pytest.raises(UnknownDevice, match="no PCI function"):
            operation(kernel, address)
    unchanged(host)


@RUNS
@given(
    count=ANYTHING.filter(
        lambda value: not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 8)
    )
)
def test_a_count_outside_zero_to_totalvfs_is_refused(host, count):
    # str.isdigit() also says yes to "¹" and "٣", which the shell never hands over and int() refuses.
    if isinstance(count, str) and re.fullmatch(r"[0-9]{1,6}", count.strip()) and int(count) <= 8:
        return  # digits the shell would pass are a valid count
    with pytest.raises(PassthroughError) as caught:
        set_sriov_vfs(host[0], PF, count)
    assert caught.value.code == "invalid_count"
    unchanged(host)


@RUNS
@given(
    method=ANYTHING.filter(
        lambda value: value is not None and not (isinstance(value, str) and value.strip() in RESET_METHODS)
    )
)
def test_any_reset_method_the_kernel_does_not_know_is_refused(host, method):
    with pytest.raises(PassthroughError) as caught:
        reset(host[0], GPU, method=method)
    assert caught.value.code == "unknown_reset_method"
    unchanged(host)


def test_a_method_the_kernel_knows_but_the_device_does_not_offer_is_refused(host):
    with pytest.raises(UnknownResetMethod, match="does not offer the flr reset; it offers bus"):
        reset(host[0], GPU, method="flr")
    unchanged(host)


@RUNS
@given(name=ANYTHING.filter(lambda value: value is not None and not (isinstance(value, str) and DRIVER.match(value))))
def test_a_previous_driver_that_is_not_a_driver_name_is_refused(host, name):
    with pytest.raises(PassthroughError) as caught:
        restore_driver(host[0], GPU, previous_drivers={GPU: name})
    assert caught.value.code == "invalid_driver_name"
    unchanged(host)


@RUNS
@given(payload=ANYTHING)
def test_other_parameters_of_the_wrong_type_are_refused(host, payload):
    kernel = host[0]
    if not isinstance(payload, bool):
        with pytest.raises(PassthroughError):
            bind_vfio(kernel, GT710.address, release_console=payload)
    if payload is not None and not isinstance(payload, dict):
        with pytest.raises(PassthroughError):
            restore_driver(kernel, GPU, previous_drivers=payload)
    if not (payload is None or isinstance(payload, str) and len(payload) <= 200):
        with pytest.raises(PassthroughError):
            bind_vfio(kernel, GT710.address, confirm=payload)
    unchanged(host)


def test_a_driver_name_cannot_climb_out_of_the_drivers_directory(host):
    with pytest.raises(PassthroughError, match="not a kernel driver name"):
        restore_driver(host[0], GPU, previous_drivers={GPU: "../../../../etc"})
    unchanged(host)


def test_the_short_address_form_is_refused_with_the_full_form_as_example(host):
    with pytest.raises(InvalidAddress) as caught:
        bind_vfio(host[0], "0b:00.0")
    assert "0000:01:00.0" in caught.value.hint
    unchanged(host)


def test_a_host_critical_member_needs_its_address_typed_as_confirmation(make_tree):
    kernel = KernelDouble(make_tree(x570(console="efifb")))
    for confirm in (None, "yes", "0000:0c:00.1"):
        with pytest.raises(ConfirmationRequired) as caught:
            bind_vfio(kernel, GT710.address, confirm=confirm)
    error = caught.value
    assert error.as_dict()["expected_confirmation"] == GT710.address
    assert f"type {GT710.address}" in error.hint
    assert "firmware framebuffer" in error.message
    assert kernel.writes == []
    assert bind_vfio(kernel, GT710.address, confirm=f" {GT710.address} ").outcome == SUCCEEDED


def test_the_nic_with_the_default_route_needs_confirmation(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    with pytest.raises(ConfirmationRequired, match="default route"):
        bind_vfio(kernel, I211.address)


def test_a_group_with_the_chipset_lpc_bridge_is_refused_even_with_confirmation(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    with pytest.raises(NeverAllowed, match="LPC/ISA bridge"):
        bind_vfio(kernel, "0000:00:14.0", confirm="0000:00:14.0")
    assert kernel.writes == []


def test_iommu_off_is_refused(make_tree):
    spec = x570(iommu=None)
    spec.functions = [replace(function, iommu_group=None) for function in spec.functions]
    kernel = KernelDouble(make_tree(spec))
    with pytest.raises(IommuOff) as caught:
        bind_vfio(kernel, GPU)
    assert "VT-d" in caught.value.hint
    assert kernel.writes == [] and kernel.commands == []


def test_missing_vfio_pci_is_loaded_through_run_command(make_tree):
    kernel = KernelDouble(make_tree(x570()))

    result = bind_vfio(kernel, GPU)

    assert result.outcome == SUCCEEDED
    assert kernel.commands == [["modprobe", "vfio-pci"], ["modprobe", "vfio_iommu_type1"]]
    assert [(step.name, step.target) for step in result.steps[2:4]] == [
        ("load_module", "vfio-pci"),
        ("load_module", "vfio_iommu_type1"),
    ]


def test_a_run_command_given_by_the_caller_is_the_one_used(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    calls = []

    def run(argv):
        calls.append(argv)
        return kernel.run_command(argv)

    bind_vfio(kernel, GPU, run_command=run)
    assert calls == [["modprobe", "vfio-pci"], ["modprobe", "vfio_iommu_type1"]]


def test_vfio_pci_that_cannot_be_loaded_stops_before_any_write(make_tree):
    kernel = KernelDouble(make_tree(x570()), faults=[faults.command_fails("modprobe vfio-pci")])
    with pytest.raises(VfioUnavailable, match="modprobe vfio-pci` exited with 1"):
        bind_vfio(kernel, GPU)
    assert kernel.writes == []


def test_vfio_iommu_type1_that_cannot_be_loaded_is_a_warning(make_tree):
    kernel = KernelDouble(make_tree(x570()), faults=[faults.command_fails("modprobe vfio_iommu_type1")])
    result = bind_vfio(kernel, GPU)
    assert result.outcome == SUCCEEDED
    assert any("vfio_iommu_type1 could not be loaded" in warning for warning in result.warnings)


def test_a_captured_tree_never_runs_the_hosts_modprobe(make_tree):
    tree = HostTree(make_tree(x570()))  # a plain tree: commands must not reach this machine
    with pytest.raises(VfioUnavailable, match="not the live host"):
        bind_vfio(tree, GPU)


def test_a_built_in_vfio_iommu_type1_is_not_loaded_again(make_tree):
    root = make_tree(
        x570(files={"lib/modules/6.8.12-4-pve/modules.builtin": "kernel/drivers/vfio/vfio_iommu_type1.ko\n"})
    )
    kernel = KernelDouble(root)
    bind_vfio(kernel, GPU)
    assert kernel.commands == [["modprobe", "vfio-pci"]]


def test_command_results_say_what_happened():
    assert CommandResult(["modprobe", "x"], 1, "", "modprobe: FATAL: Module x not found.\n").summary == (
        "`modprobe x` exited with 1: modprobe: FATAL: Module x not found."
    )
