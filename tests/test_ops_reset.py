"""reset: the kernel's method or the user's, refusals in words, and the AMD reset bug."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from passthrough.inventory import scan
from passthrough.kerneldouble import KernelDouble, faults
from passthrough.ops import (
    FAILED,
    ROLLED_BACK,
    SUCCEEDED,
    DeviceInUse,
    ResetUnavailable,
    amd_reset_bug_family,
    bind_vfio,
    reset,
)
from tests.kernelhosts import GTX1080TI, threadripper, x570

GPU = GTX1080TI.address
METHOD = f"sys/bus/pci/devices/{GPU}/reset_method"
RX580, RADEON_VII = "0000:43:00.0", "0000:0d:00.0"


def host_with_methods(make_tree, methods, **kwargs) -> KernelDouble:
    spec = x570(**kwargs)
    spec.functions = [replace(f, reset_methods=methods) if f.address == GPU else f for f in spec.functions]
    kernel = KernelDouble(make_tree(spec))
    bind_vfio(kernel, GPU)
    kernel.writes.clear()
    return kernel


def names(result):
    return [step.name for step in result.steps]


def test_the_chosen_method_is_used_and_reset_method_put_back(make_tree):
    kernel = host_with_methods(make_tree, ["flr", "pm", "bus"])

    result = reset(kernel, GPU, method="pm")

    assert result.outcome == SUCCEEDED, result.error
    assert kernel.state.resets == [{"address": GPU, "method": "pm"}]
    assert names(result) == ["validate", "snapshot", "set_method", "reset", "restore_method"]
    assert kernel.read(METHOD) == "flr pm bus"
    assert [value for path, value in kernel.writes] == ["pm", "1", "flr pm bus"]
    assert result.state_after == result.state_before


def test_without_a_choice_the_kernel_takes_its_first_working_method(make_tree):
    kernel = host_with_methods(make_tree, ["flr", "bus"])
    kernel.inject(faults.reset_fails(GPU, "flr", errno.ENOTTY))  # FLR not possible now: the kernel moves on

    result = reset(kernel, GPU)

    assert result.outcome == SUCCEEDED
    assert names(result) == ["validate", "snapshot", "reset"]
    assert kernel.state.resets == [{"address": GPU, "method": "bus"}]
    assert "flr bus" in result.steps[-1].detail


def test_enotty_is_reported_as_a_reset_the_device_does_not_support(make_tree):
    kernel = host_with_methods(make_tree, ["flr", "pm", "bus"])
    kernel.inject(faults.reset_fails(GPU, "pm", errno.ENOTTY))

    result = reset(kernel, GPU, method="pm")

    assert result.outcome == ROLLED_BACK  # reset_method was changed for the attempt, and put back
    assert result.error["code"] == "reset_refused"
    assert result.error["errno"] == errno.ENOTTY
    assert "does not support this reset" in result.error["message"]
    assert "pm" in result.error["message"]
    assert kernel.read(METHOD) == "flr pm bus"


def test_einval_on_a_listed_method_is_explained(make_tree):
    kernel = host_with_methods(make_tree, ["flr", "bus"])
    kernel.inject(faults.reset_fails(GPU, "bus", errno.EINVAL))

    result = reset(kernel, GPU, method="bus")

    assert result.outcome == ROLLED_BACK
    assert (
        "does not accept method bus for this device — a listed method can still be refused" in (result.error["message"])
    )
    assert kernel.read(METHOD) == "flr bus"


def test_a_refused_reset_that_changed_nothing_is_failed_not_rolled_back(make_tree):
    kernel = host_with_methods(make_tree, ["bus"])
    kernel.inject(faults.reset_fails(GPU, "bus", errno.ENOTTY))

    result = reset(kernel, GPU)

    assert result.outcome == FAILED
    assert "any of its reset methods (bus)" in result.error["message"]


def test_a_device_under_its_native_driver_is_not_reset(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    with pytest.raises(DeviceInUse, match="driven by nouveau"):
        reset(kernel, GPU)
    assert kernel.writes == []


def test_a_device_without_a_driver_can_be_reset(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    kernel.write("sys/bus/pci/drivers/nouveau/unbind", GPU)
    assert reset(kernel, GPU).outcome == SUCCEEDED


def test_a_kernel_without_reset_method_resets_but_cannot_choose(make_tree):
    spec = x570()
    spec.functions = [replace(f, reset_methods=None, has_reset=True) if f.address == GPU else f for f in spec.functions]
    kernel = KernelDouble(make_tree(spec))
    bind_vfio(kernel, GPU)
    with pytest.raises(ResetUnavailable, match="5.15"):
        reset(kernel, GPU, method="flr")
    assert reset(kernel, GPU).outcome == SUCCEEDED


def test_a_device_with_every_method_disabled_says_how_to_get_them_back(make_tree):
    kernel = host_with_methods(make_tree, ["flr", "bus"])
    kernel.write(METHOD, "")
    with pytest.raises(ResetUnavailable) as caught:
        reset(kernel, GPU)
    assert "default" in caught.value.hint


# The AMD reset bug -----------------------------------------------------------------------
def test_polaris_and_vega_gpus_are_known_for_the_reset_bug(make_tree):
    inventory = scan(make_tree(threadripper()))
    assert amd_reset_bug_family(inventory.device(RX580)) == "Polaris 10"
    assert amd_reset_bug_family(inventory.device(RADEON_VII)) == "Vega 20"
    assert amd_reset_bug_family(inventory.device("0000:43:00.1")) is None  # its audio function resets fine
    navi22 = replace(inventory.device(RX580), device_id="73df")  # RX 6700 XT (ashtonian-kvm-aio)
    assert amd_reset_bug_family(navi22) is None


def test_resetting_a_polaris_gpu_warns_about_the_bus_reset(make_tree):
    kernel = KernelDouble(make_tree(threadripper()))
    bind_vfio(kernel, RX580)

    result = reset(kernel, RX580, method="bus")

    assert result.outcome == SUCCEEDED
    [warning] = result.warnings
    assert "Polaris 10" in warning
    assert "unusable until the host reboots" in warning
    assert "vendor-reset" in warning and "device_specific" in warning


def test_vendor_reset_is_recognised_by_device_specific_in_the_list(make_tree):
    spec = threadripper()
    spec.functions = [
        replace(f, reset_methods=["device_specific", "bus"]) if f.address == RX580 else f for f in spec.functions
    ]
    kernel = KernelDouble(make_tree(spec))
    bind_vfio(kernel, RX580)

    chosen_default = reset(kernel, RX580)
    chosen_bus = reset(kernel, RX580, method="bus")

    assert chosen_default.warnings == [
        "vendor-reset provides device_specific for this AMD Polaris 10 GPU; the kernel uses it first."
    ]
    assert kernel.state.resets[0] == {"address": RX580, "method": "device_specific"}
    assert "Prefer device_specific" in chosen_bus.warnings[0]
