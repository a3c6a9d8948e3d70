"""All five targets for every viable GPU group of every machine in the real-world catalogue.

``passthrough.hosttrees.realworld`` builds each machine from the listings its owner published; for
each IOMMU group that is viable and holds a display function we pick its display functions,
as a user would, and generate every target: the same functions come out of each, the
libvirt file validates, and the location paths follow the topology.
"""

from __future__ import annotations

import re
import tempfile
import xml.etree.ElementTree as ET

import pytest

from passthrough.configgen import TARGETS, build_spec, generate
from passthrough.configgen.hyperv import location_path
from passthrough.hosttrees import realworld
from passthrough.hosttrees.tree import write_tree
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import hostdevs, hostpci_entries, virt_xml_validate
from tests.qemu_argv_support import script_argv, vfio_devices


def viable_gpu_groups(inventory: Inventory) -> list[list[str]]:
    """For each viable group holding a display function: its display functions (what a user picks)."""
    picks = []
    for group in inventory.groups:
        displays = [address for address in group.endpoints if inventory.device(address).is_display]
        if group.viable and displays:
            picks.append(displays)
    return picks


def _cases() -> list[tuple[str, list[str]]]:
    cases = []
    for name, machine in realworld.MACHINES.items():
        with tempfile.TemporaryDirectory() as root:
            cases += [(name, picks) for picks in viable_gpu_groups(scan(write_tree(machine(), root)))]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def inventories(tmp_path_factory) -> dict[str, Inventory]:
    found = {}
    for name in {name for name, _ in CASES}:
        root = tmp_path_factory.mktemp(name)
        write_tree(realworld.MACHINES[name](), root)
        found[name] = scan(root)
    return found


def test_the_catalogue_has_gpu_groups_to_generate_for():
    machines = {name for name, _ in CASES}
    assert len(machines) >= 10 and len(CASES) >= len(machines)
    # prometheus/procfs' fixture is an E810 NIC with VFs and no GPU at all.
    assert "prometheus-e810" not in machines


@pytest.mark.parametrize("name, picks", CASES, ids=[f"{name}-{picks[0][5:]}" for name, picks in CASES])
def test_all_five_targets_generate_for_the_gpu_group(inventories, tmp_path, name, picks):
    inventory = inventories[name]
    primary = any((inventory.device(address).class_code or "").startswith("0300") for address in picks)
    spec = build_spec(inventory, picks, name="gpu-vm", primary_gpu=primary, hide_kvm=True)
    passed = [device.address for device in spec.devices]
    assert set(picks) <= set(passed)
    configs = {target: generate(inventory, spec, target) for target in TARGETS}

    assert [d.host for d in vfio_devices(script_argv(configs["qemu"].text))] == passed

    xml_path = tmp_path / configs["libvirt"].filename
    xml_path.write_text(configs["libvirt"].text)
    assert [device.source for device in hostdevs(configs["libvirt"].text)] == passed
    result = virt_xml_validate(xml_path)
    assert result.returncode == 0, result.stderr
    ET.fromstring(configs["libvirt"].text)

    entries = hostpci_entries(configs["proxmox"].text)
    named = " ".join(options["host"] for options in entries.values())
    for address in passed:
        short = address[5:]
        assert short in named or short[:-2] in named.split()

    vmx_ids = re.findall(r'^pciPassthru\d+\.id = "([^"]+)"$', configs["vmware"].text, re.MULTILINE)
    assert vmx_ids == passed

    paths = re.findall(r"^\$LocationPath = '([^']*)'$", configs["hyperv"].text, re.MULTILINE)
    assert paths == [location_path(inventory.device(address)) for address in passed]
    assert all(path.startswith("PCIROOT(") for path in paths)

    for config in configs.values():
        assert config.host_requirements[0].id == "iommu" and config.host_requirements[0].met is True
        assert "Host requirements" in config.text
