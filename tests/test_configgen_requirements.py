"""What the host needs for a config to work, and whether this host has it now."""

from __future__ import annotations

import pytest

from passthrough.configgen import TARGETS, build_spec, generate
from passthrough.pci.scan import scan
from tests.configgen_support import desktop

COMMENT = {"qemu": "#", "libvirt": "", "proxmox": "#", "vmware": "#", "hyperv": "#"}


def requirements(inventory, target, addresses=("01:00.0",), **options):
    config = generate(inventory, build_spec(inventory, list(addresses), **options), target)
    return config, {requirement.id: requirement for requirement in config.host_requirements}


def test_a_ready_host_meets_every_checkable_requirement(make_tree):
    inventory = scan(make_tree(desktop()))
    for target in ("qemu", "libvirt", "proxmox"):
        config, found = requirements(inventory, target)
        assert found["iommu"].met is True
        assert found["group:2"].met is True
        assert found["vfio:0000:01:00.0"].met is True and found["vfio:0000:01:00.1"].met is True
        assert config.ready


def test_functions_on_their_host_drivers_are_missing_requirements(make_tree):
    inventory = scan(make_tree(desktop(gpu_driver="nvidia", audio_driver=None)))
    config, found = requirements(inventory, "qemu")
    assert found["vfio:0000:01:00.0"].met is False
    assert found["vfio:0000:01:00.0"].evidence == "It is on nvidia now."
    assert found["vfio:0000:01:00.1"].evidence == "It has no driver now."
    assert not config.ready
    _, found = requirements(inventory, "libvirt")
    assert "managed='yes'" in found["vfio:0000:01:00.0"].evidence


def test_without_an_iommu_linux_targets_fail_and_others_cannot_tell(make_tree):
    inventory = scan(make_tree(desktop(iommu=False)))
    for target in ("qemu", "libvirt", "proxmox"):
        config, found = requirements(inventory, target)
        assert found["iommu"].met is False
        assert "iommu_groups is empty" in found["iommu"].evidence
        assert not config.ready
    for target in ("vmware", "hyperv"):
        config, found = requirements(inventory, target)
        assert found["iommu"].met is None
        assert config.ready  # nothing is known to be missing for a hypervisor that replaces Linux


def test_a_group_held_by_the_host_console_is_not_viable(make_tree):
    spec = desktop()
    spec.function("00:02.0").boot_vga = False
    spec.function("01:00.0").boot_vga = True
    spec.console = "efifb"
    inventory = scan(make_tree(spec))
    config, found = requirements(inventory, "proxmox")
    assert found["group:2"].met is False
    assert "host-critical" in found["group:2"].evidence
    assert "[MISSING] IOMMU group 2" in config.text


def test_what_the_inventory_cannot_see_is_listed_to_check(make_tree):
    inventory = scan(make_tree(desktop()))
    _, found = requirements(inventory, "qemu", hugepages=True, memory_mib=8192, rom_file="/roms/gp102.rom")
    assert found["hugepages"].met is None and "4096" in found["hugepages"].text
    assert found["ovmf"].met is None
    assert found["rom:0000:01:00.0"].met is None
    _, found = requirements(inventory, "proxmox", firmware="ovmf")
    assert "ovmf" not in found  # Proxmox ships its own OVMF
    _, found = requirements(inventory, "vmware")
    assert found["esxi-passthrough"].met is None
    _, found = requirements(inventory, "hyperv")
    assert found["dda"].met is None


@pytest.mark.parametrize("target", TARGETS)
def test_every_output_opens_with_its_requirements_in_its_comment_syntax(make_tree, target):
    inventory = scan(make_tree(desktop(gpu_driver="nvidia")))
    config = generate(inventory, build_spec(inventory, ["01:00.0"]), target)
    lines = config.text.splitlines()
    start = next(index for index, line in enumerate(lines) if "Host requirements" in line)
    block = lines[start : start + 2 + 2 * len(config.host_requirements)]
    for requirement in config.host_requirements:
        assert any(requirement.text in line for line in block)
        assert any(requirement.evidence in line for line in block)
    if COMMENT[target]:
        assert all(line.startswith(COMMENT[target]) for line in block)
    else:
        assert config.text.startswith("<!--") and config.text.index("-->") > config.text.index(block[-1])
    data = config.to_json()
    assert data["ready"] is config.ready
    assert data["host_requirements"][0]["id"] == "iommu"
    assert data["target"] == target and data["text"] == config.text
