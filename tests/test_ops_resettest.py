"""The reset test on the kernel double: each listed method alone, what came back, reset_method put back,
and the reset operation's refusals (the interlock, bus resets the kernel refuses, a live driver, a VM)."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import pytest

from passthrough.hosttrees.spec import HostSpec
from passthrough.kerneldouble import KernelDouble, faults
from passthrough.ops import (
    FAILED,
    ROLLED_BACK,
    SUCCEEDED,
    ConfirmationRequired,
    DeviceInUse,
    NeverAllowed,
    ResetUnavailable,
    bind_vfio,
)
from passthrough.ops.resettest import answers, run_reset_test
from tests.kernelhosts import EDU, GTX1080TI, GTX1080TI_AUDIO, NVME, edu_and_e1000, threadripper, tree_digest, x570

GPU, GPU_AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address
METHOD = f"sys/bus/pci/devices/{GPU}/reset_method"
RX580, RX580_AUDIO = "0000:43:00.0", "0000:43:00.1"


def gpu_on_vfio(make_tree, methods: list[str], *, alone: bool = True, kernel=KernelDouble, **spec) -> KernelDouble:
    """The X570's GTX 1080 Ti listing ``methods``, bound to vfio-pci; ``alone``: its HDMI audio switched off."""
    host = x570(**spec)
    host.functions = [
        replace(f, reset_methods=methods) if f.address == GPU else f
        for f in host.functions
        if not (alone and f.address == GPU_AUDIO)
    ]
    double = kernel(make_tree(host))
    assert bind_vfio(double, GPU).outcome == SUCCEEDED
    double.writes.clear()
    return double


def outcomes(result) -> list[tuple[str, str]]:
    return [(item["method"], item["outcome"]) for item in result.parameters["methods"]]


def test_each_listed_method_is_tried_alone_then_reset_method_is_put_back(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr", "pm", "bus"])

    result = run_reset_test(kernel, GPU)

    assert result.outcome == SUCCEEDED, result.error
    assert outcomes(result) == [("flr", "worked"), ("pm", "worked"), ("bus", "worked")]
    assert kernel.state.resets == [{"address": GPU, "method": m} for m in ("flr", "pm", "bus")]
    assert [value for _, value in kernel.writes] == ["flr", "1", "pm", "1", "bus", "1", "flr pm bus"]
    assert kernel.read(METHOD) == "flr pm bus"
    assert result.state_after == result.state_before
    assert kernel.link_name(f"sys/bus/pci/devices/{GPU}/driver") == "vfio-pci"
    assert [step.detail for step in result.steps if step.name == "tested"][0] == (
        "flr: worked: the function came back: its config space answers"
    )


def test_a_single_method_is_not_written_to_reset_method_and_nothing_needs_putting_back(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr"])

    result = run_reset_test(kernel, GPU)

    assert outcomes(result) == [("flr", "worked")]
    assert [path.rsplit("/", 1)[-1] for path, _ in kernel.writes] == ["reset"]


def test_a_method_the_kernel_refuses_is_recorded_as_failed_with_its_errno_in_words(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr", "pm", "bus"])
    kernel.inject(faults.reset_fails(GPU, "flr", errno.ENOTTY), faults.reset_fails(GPU, "pm", errno.EIO))

    result = run_reset_test(kernel, GPU)

    assert result.outcome == SUCCEEDED
    assert outcomes(result) == [("flr", "failed"), ("pm", "failed"), ("bus", "worked")]
    flr, pm, _ = result.parameters["methods"]
    assert flr["errno"] == "ENOTTY" and "ENOTTY: the device does not support this" in flr["detail"]
    assert pm["errno"] == "EIO" and "EIO: an I/O error from the device" in pm["detail"]
    assert kernel.read(METHOD) == "flr pm bus"


def test_when_no_method_works_the_test_still_ends_and_says_so(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr"])
    kernel.inject(faults.reset_fails(GPU, "flr", errno.ENOTTY))

    result = run_reset_test(kernel, GPU)

    assert result.outcome == SUCCEEDED and outcomes(result) == [("flr", "failed")]
    assert any("No reset method worked" in warning for warning in result.warnings)


def test_a_bus_reset_the_kernel_would_refuse_is_not_tried_and_says_why(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr", "bus"], alone=False)  # its HDMI audio shares bus 0b

    result = run_reset_test(kernel, GPU)

    assert outcomes(result) == [("flr", "worked"), ("bus", "not_tried")]
    assert "0b:00.1" in result.parameters["methods"][1]["detail"]
    assert "ENOTTY" in result.parameters["methods"][1]["detail"]
    assert "bus" not in [value for _, value in kernel.writes]
    assert kernel.read(METHOD) == "flr bus"


class DropsOffTheBus(KernelDouble):
    """The kernel double with a function that does not come back from one reset method: after it,
    its config space reads all ones, as a GPU with the reset bug's does after a bus reset."""

    lost_after = "pm"

    def write(self, relative: str, value: str) -> None:
        super().write(relative, value)
        if relative.endswith("/reset") and self.state.resets[-1]["method"] == self.lost_after:
            Path(self.path(relative)).with_name("config").write_bytes(b"\xff" * 64)


def test_a_function_that_does_not_come_back_stops_the_test_and_fails_it_with_reset_method_put_back(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr", "pm", "bus"], kernel=DropsOffTheBus)

    result = run_reset_test(kernel, GPU)

    assert result.outcome == FAILED
    assert outcomes(result) == [("flr", "worked"), ("pm", "did_not_come_back"), ("bus", "not_tried")]
    assert "reads all ones (vendor ffff)" in result.parameters["methods"][1]["detail"]
    assert "did not come back after the pm reset" in result.error["message"]
    assert "Power the host off" in result.error["hint"]
    assert kernel.read(METHOD) == "flr pm bus"
    assert result.state_before["answers"] and not result.state_after["answers"]
    assert kernel.state.resets == [{"address": GPU, "method": m} for m in ("flr", "pm")]


def test_reset_method_is_put_back_when_the_test_is_interrupted(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr", "pm"])
    kernel.inject(faults.write_fails(METHOD, errno.EBUSY, value="flr pm", times=1))  # the first put-back fails

    result = run_reset_test(kernel, GPU)

    assert result.outcome == ROLLED_BACK, result.error
    assert kernel.read(METHOD) == "flr pm"
    assert [step.name for step in result.steps].count("restore_method") == 2


def test_answers_reads_the_vendor_id_from_config_space_and_the_power_state(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr"])
    device = Path(kernel.path(f"sys/bus/pci/devices/{GPU}"))
    assert answers(kernel, GPU, "10de") is None
    assert answers(kernel, GPU, "1002") == "its config space reads vendor 10de, not 1002"
    (device / "power_state").write_text("D3cold\n")
    assert answers(kernel, GPU, "10de") == "it is in power state D3cold, not D0"
    (device / "power_state").write_text("D3hot\n")
    (device / "power").mkdir()
    (device / "power" / "runtime_status").write_text("suspended\n")
    assert answers(kernel, GPU, "10de") is None  # vfio-pci suspended the idle function
    (device / "config").write_bytes(b"")
    assert answers(kernel, GPU, "10de") == "its config space cannot be read"


# The reset operation's refusals, before anything is written ----------------------------------
def unchanged(kernel: KernelDouble, call) -> Exception:
    before = tree_digest(kernel.root)
    with pytest.raises(Exception) as refused:
        call()
    assert tree_digest(kernel.root) == before and kernel.writes == []
    return refused.value


def test_a_function_on_its_host_driver_is_refused(make_tree):
    host = x570()
    host.functions = [replace(f, reset_methods=["flr", "bus"]) if f.address == GPU else f for f in host.functions]
    kernel = KernelDouble(make_tree(host))
    refused = unchanged(kernel, lambda: run_reset_test(kernel, GPU))
    assert isinstance(refused, DeviceInUse) and "driven by nouveau" in refused.message


def test_the_chipset_and_a_host_critical_function_are_refused_by_the_interlock(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    assert isinstance(unchanged(kernel, lambda: run_reset_test(kernel, "0000:00:14.0")), NeverAllowed)
    refused = unchanged(kernel, lambda: run_reset_test(kernel, NVME.address))  # the root filesystem's controller
    assert isinstance(refused, ConfirmationRequired) and NVME.address in str(refused)


def test_a_function_that_lists_only_a_bus_reset_it_cannot_have_is_refused(make_tree):
    kernel = KernelDouble(make_tree(edu_and_e1000(["bus"])))
    refused = unchanged(kernel, lambda: run_reset_test(kernel, EDU))
    assert isinstance(refused, ResetUnavailable) and "will refuse a bus reset" in refused.message


def test_a_group_a_vm_holds_open_is_refused(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr"])
    group = GTX1080TI.iommu_group
    os.makedirs(f"{kernel.root}/proc/777/fd")
    os.symlink(f"/dev/vfio/{group}", f"{kernel.root}/proc/777/fd/30")
    refused = unchanged(kernel, lambda: run_reset_test(kernel, GPU))
    assert isinstance(refused, DeviceInUse) and "777" in refused.message


def test_a_kernel_without_reset_method_or_with_every_method_off_is_refused(make_tree):
    host = x570()
    host.functions = [replace(f, reset_methods=None, has_reset=True) if f.address == GPU else f for f in host.functions]
    kernel = KernelDouble(make_tree(host))
    bind_vfio(kernel, GPU)
    kernel.writes.clear()
    assert "Linux 5.15" in unchanged(kernel, lambda: run_reset_test(kernel, GPU)).message
    off = gpu_on_vfio(make_tree, [])
    assert "every reset method disabled" in unchanged(off, lambda: run_reset_test(off, GPU)).message


def test_a_function_that_does_not_answer_before_the_test_is_refused(make_tree):
    kernel = gpu_on_vfio(make_tree, ["flr"])
    Path(kernel.path(f"sys/bus/pci/devices/{GPU}/config")).write_bytes(b"\xff" * 64)
    refused = unchanged(kernel, lambda: run_reset_test(kernel, GPU))
    assert isinstance(refused, ResetUnavailable) and "does not answer before any reset" in refused.message


# The AMD reset bug ----------------------------------------------------------------------
def rx580(make_tree, methods: list[str], modules: tuple[str, ...]) -> KernelDouble:
    """sirspudd's RX 580 (Polaris 10, 1002:67df), its HDMI audio switched off so it is alone on its bus."""
    spec: HostSpec = threadripper(modules=modules)
    spec.functions = [
        replace(f, reset_methods=methods) if f.address == RX580 else f
        for f in spec.functions
        if f.address != RX580_AUDIO
    ]
    kernel = KernelDouble(make_tree(spec))
    assert bind_vfio(kernel, RX580).outcome == SUCCEEDED
    kernel.writes.clear()
    return kernel


def test_on_an_amd_gpu_with_the_reset_bug_only_vendor_resets_method_is_tried(make_tree):
    kernel = rx580(make_tree, ["device_specific", "bus"], ("kvm_amd", "kvm", "vendor_reset"))

    result = run_reset_test(kernel, RX580)

    assert outcomes(result) == [("device_specific", "worked"), ("bus", "not_tried")]
    assert "AMD Polaris 10 GPU" in result.parameters["methods"][1]["detail"]
    assert result.parameters["amd_reset_bug"] == {"family": "Polaris 10", "vendor_reset_loaded": True}
    assert kernel.state.resets == [{"address": RX580, "method": "device_specific"}]
    assert kernel.read(f"sys/bus/pci/devices/{RX580}/reset_method") == "device_specific bus"


def test_without_vendor_reset_the_gpu_is_flagged_and_no_reset_is_risked(make_tree):
    kernel = rx580(make_tree, ["bus"], ("kvm_amd", "kvm"))

    result = run_reset_test(kernel, RX580)

    assert result.outcome == SUCCEEDED and outcomes(result) == [("bus", "not_tried")]
    assert kernel.state.resets == [] and kernel.writes == []
    assert result.parameters["amd_reset_bug"]["vendor_reset_loaded"] is False
    assert any("vendor_reset is not loaded" in warning for warning in result.warnings)
