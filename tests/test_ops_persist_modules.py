"""Binding at boot: a softdep names the module a native driver comes from, never the driver.

modprobe takes module names: ``softdep xhci_hcd pre: vfio-pci`` does nothing, because the
xhci_hcd PCI driver comes from the xhci_pci module. An RTX 20-series card has four
functions, and two of them (USB-C on xhci_hcd, UCSI on nvidia-gpu) are such drivers.
"""

from __future__ import annotations

import os
import re

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.kerneldouble import KernelDouble
from passthrough.ops.modules import module_of
from passthrough.ops.persist import MODPROBE_FILE, apply_persist_binding, plan_persist_binding

# An RTX 2070 SUPER (TU104) with its HDMI audio, USB 3.1 host and USB Type-C UCSI functions.
BRIDGE = FunctionSpec("0000:00:01.1", "1022", "1483", "060400", driver="pcieport", iommu_group=1)
RTX2070S = [
    FunctionSpec("0000:0a:00.0", "10de", "1e84", "030000", driver="nouveau", iommu_group=20, parent=BRIDGE.address),
    FunctionSpec("0000:0a:00.1", "10de", "10f8", "040300", driver="snd_hda_intel", iommu_group=20, parent=BRIDGE.address),
    FunctionSpec("0000:0a:00.2", "10de", "1ad8", "0c0330", driver="xhci_hcd", iommu_group=20, parent=BRIDGE.address),
    FunctionSpec("0000:0a:00.3", "10de", "1ad9", "0c8000", driver="nvidia-gpu", iommu_group=20, parent=BRIDGE.address),
]  # fmt: skip
GPU = RTX2070S[0].address
AS_ON_A_HOST = {
    "nouveau": "nouveau",
    "snd_hda_intel": "snd_hda_intel",
    "xhci_hcd": "xhci_pci",
    "nvidia-gpu": "i2c_nvidia_gpu",
}


def softdeps(text: str) -> list[str]:
    return re.findall(r"^\+?softdep (\S+) pre: vfio-pci$", text, re.MULTILINE)


def test_the_softdep_names_each_drivers_module_as_its_module_link_says(make_tree):
    kernel = KernelDouble(make_tree(HostSpec(functions=[BRIDGE, *RTX2070S], driver_modules=AS_ON_A_HOST)))

    plan = plan_persist_binding(kernel, GPU)

    assert softdeps(plan.diff) == ["i2c_nvidia_gpu", "nouveau", "snd_hda_intel", "xhci_pci"]
    assert "softdep xhci_hcd" not in plan.diff and "softdep nvidia-gpu" not in plan.diff


def test_a_capture_without_module_links_gets_the_modules_of_known_drivers(make_tree):
    kernel = KernelDouble(make_tree(HostSpec(functions=[BRIDGE, *RTX2070S])))
    assert not os.path.lexists(f"{kernel.root}/sys/bus/pci/drivers/xhci_hcd/module")

    result = apply_persist_binding(kernel, [GPU])

    with open(f"{kernel.root}/{MODPROBE_FILE}") as handle:
        assert softdeps(handle.read()) == ["i2c_nvidia_gpu", "nouveau", "snd_hda_intel", "xhci_pci"]
    assert not any("module of" in note for note in result.warnings)


def test_qemus_bochs_display_softdeps_the_bochs_module(make_tree):
    vga = FunctionSpec("0000:00:02.0", "1234", "1111", "030000", driver="bochs-drm", iommu_group=3)
    kernel = KernelDouble(make_tree(HostSpec(functions=[vga])))

    plan = plan_persist_binding(kernel, vga.address)

    assert softdeps(plan.diff) == ["bochs"]


def test_a_driver_whose_module_is_not_known_gets_no_softdep_and_a_note_saying_so(make_tree):
    card = FunctionSpec("0000:00:03.0", "1b36", "000d", "0c0330", driver="acme_hcd", iommu_group=4)
    kernel = KernelDouble(make_tree(HostSpec(functions=[card])))

    plan = plan_persist_binding(kernel, card.address)

    assert softdeps(plan.diff) == []
    assert "install vfio-pci for a in 0000:00:03.0;" in plan.diff  # the binding itself is still written
    (note,) = [note for note in plan.notes if "acme_hcd" in note]
    assert "module of acme_hcd" in note and "0000:00:03.0" in note and "no softdep" in note


def test_the_module_link_wins_for_a_driver_no_table_knows(make_tree):
    card = FunctionSpec("0000:00:03.0", "1b36", "000d", "0c0330", driver="acme_hcd", iommu_group=4)
    kernel = KernelDouble(make_tree(HostSpec(functions=[card], driver_modules={"acme_hcd": "acme_pci"})))

    assert module_of(kernel, "acme_hcd") == "acme_pci"
    assert softdeps(plan_persist_binding(kernel, card.address).diff) == ["acme_pci"]


def test_a_loaded_module_named_like_the_driver_is_taken(make_tree):
    card = FunctionSpec("0000:00:03.0", "1a03", "2000", "030000", driver="aspeed-vga", iommu_group=4)
    kernel = KernelDouble(make_tree(HostSpec(functions=[card], modules=("kvm_intel", "kvm", "aspeed_vga"))))

    assert module_of(kernel, "aspeed-vga") == "aspeed_vga"


def test_a_module_link_with_a_name_modprobe_would_misread_is_not_used(make_tree):
    card = FunctionSpec("0000:00:03.0", "1b36", "000d", "0c0330", driver="acme_hcd", iommu_group=4)
    kernel = KernelDouble(make_tree(HostSpec(functions=[card])))
    hostile = "../../../../module/acme pre: vfio-pci\ninstall vfio-pci id"
    os.symlink(hostile, f"{kernel.root}/sys/bus/pci/drivers/acme_hcd/module")

    plan = plan_persist_binding(kernel, card.address)

    assert module_of(kernel, "acme_hcd") is None
    assert softdeps(plan.diff) == [] and "install vfio-pci id" not in plan.diff
