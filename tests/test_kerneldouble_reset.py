"""The kernel double's resets: reset_method, the order the kernel tries methods in, and when a
bus reset answers ENOTTY (another function on the bus, no parent bridge, a bridge itself),
as Linux 6.1 does (tests/realkernel_guest/test_intel.py)."""

from __future__ import annotations

import errno

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.kerneldouble import KernelDouble, faults
from tests.kernelhosts import EDU, EDU_NEIGHBOUR, GTX1080TI, edu_and_e1000, sriov_host, x570
from tests.test_kerneldouble import DEVICES, PF0, refused

GPU = GTX1080TI.address
LONE = "0000:02:00.0"


def test_reset_follows_reset_method_and_skips_methods_that_answer_enotty(make_tree):
    kernel = KernelDouble(make_tree(lone_behind_a_bridge(["flr", "bus"])))
    kernel.inject(faults.reset_fails(LONE, "flr", errno.ENOTTY))
    kernel.write(f"{DEVICES}/{LONE}/reset", "1")
    assert kernel.state.resets == [{"address": LONE, "method": "bus"}]  # alone behind its bridge: bus works
    kernel.inject(faults.reset_fails(LONE, "bus", errno.EINVAL))
    assert refused(kernel, f"{DEVICES}/{LONE}/reset", "1") == errno.EINVAL
    assert refused(kernel, f"{DEVICES}/{LONE}/reset", "2") == errno.EINVAL


def lone_behind_a_bridge(methods: list[str], *, class_code: str = "020000") -> HostSpec:
    return HostSpec(
        functions=[
            FunctionSpec("0000:00:1c.0", "8086", "a110", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec(LONE, "8086", "10d3", class_code, iommu_group=2, parent="0000:00:1c.0", reset_methods=methods),
        ]
    )


def test_a_bus_reset_is_refused_while_another_function_shares_the_bus(make_tree):
    kernel = KernelDouble(make_tree(edu_and_e1000(["bus"])))
    assert refused(kernel, f"{DEVICES}/{EDU}/reset", "1") == errno.ENOTTY
    assert refused(kernel, f"{DEVICES}/{EDU_NEIGHBOUR}/reset", "1") == errno.ENOTTY
    assert kernel.state.resets == []


def test_a_refused_bus_reset_lets_the_kernel_try_the_next_method(make_tree):
    kernel = KernelDouble(make_tree(edu_and_e1000(["bus", "pm"])))
    kernel.write(f"{DEVICES}/{EDU}/reset", "1")
    assert kernel.state.resets == [{"address": EDU, "method": "pm"}]
    kernel.write(f"{DEVICES}/{EDU}/reset_method", "bus")  # bus alone: nothing left to try
    assert refused(kernel, f"{DEVICES}/{EDU}/reset", "1") == errno.ENOTTY


def test_a_gpu_with_its_audio_function_cannot_be_bus_reset(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    kernel.write("sys/bus/pci/drivers/nouveau/unbind", GPU)
    assert refused(kernel, f"{DEVICES}/{GPU}/reset", "1") == errno.ENOTTY  # 0b:00.1 shares bus 0b
    assert kernel.state.resets == []


def test_a_bus_reset_needs_a_parent_bridge_and_a_function_that_is_not_one(make_tree):
    on_root_bus = HostSpec(
        functions=[FunctionSpec("0000:00:02.0", "8086", "3e92", "030000", reset_methods=["bus", "pm"])]
    )
    kernel = KernelDouble(make_tree(on_root_bus))
    kernel.write(f"{DEVICES}/0000:00:02.0/reset", "1")
    assert kernel.state.resets == [{"address": "0000:00:02.0", "method": "pm"}]  # no bridge above: bus answers ENOTTY

    bridge = KernelDouble(make_tree(lone_behind_a_bridge(["bus"], class_code="060400")))
    assert refused(bridge, f"{DEVICES}/{LONE}/reset", "1") == errno.ENOTTY  # it has a subordinate bus

    alone = KernelDouble(make_tree(lone_behind_a_bridge(["bus"])))
    alone.write(f"{DEVICES}/{LONE}/reset", "1")
    assert alone.state.resets == [{"address": LONE, "method": "bus"}]


def test_reset_method_takes_listed_names_default_or_nothing(make_tree):
    kernel = KernelDouble(make_tree(sriov_host()))
    attribute = f"{DEVICES}/{PF0}/reset_method"
    kernel.write(attribute, "bus")
    assert kernel.read(attribute) == "bus"
    assert refused(kernel, attribute, "pm") == errno.EINVAL  # a real method, but not this device's
    assert refused(kernel, attribute, "reboot") == errno.EINVAL
    kernel.write(attribute, "default")
    assert kernel.read(attribute) == "flr bus"
    kernel.write(attribute, "")
    assert kernel.read(attribute) == ""
    assert refused(kernel, f"{DEVICES}/{PF0}/reset", "1") == errno.ENOTTY
