"""Choosing where a VM is pinned: automatic (the devices' node), off, or a node the user names.

On hwloc's captures of real servers, as in test_configgen_placement: two Xeon E5-2680 with a
Xeon Phi (83:00.0) on node 1, an ASPEED VGA (05:00.0) on node 0 and an NVMe (00:02.0) whose
firmware gives no node; four Xeon E7-4870 whose node CPU lists interleave.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from passthrough.configgen import TARGETS, ConfigError, build_spec, generate
from passthrough.configgen.command import command_json, stderr_lines
from passthrough.configgen.numa import OFF_WHY, parse_numa_pin
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.scan import scan
from tests.configgen_support import virt_xml_validate
from tests.qemu_argv_support import script_argv
from tests.test_configgen_placement import conf_lines, options_of
from tests.test_placement import FOUR_NODES, XEON_PHI, hwloc_host, hwloc_inventory, needs_hwloc

PHI, ASPEED, NVME = "0000:83:00.0", "0000:05:00.0", "0000:00:02.0"
QLOGIC = "0000:43:00.0"  # on node 2 of the four-node host
LINUX = ("qemu", "libvirt", "proxmox")
# Every trace pinning leaves in a target's text.
PIN_WORDS = ("taskset", "host-nodes", "memory-backend", "cputune", "vcpupin", "emulatorpin", "numatune",
             "numa:", "numa0", "affinity")  # fmt: skip


def domain_of(text: str) -> ET.Element:
    return ET.fromstring(text.split("-->\n", 1)[1])


def pinned_cpus(inventory, spec) -> dict[str, str]:
    """The CPU list each Linux target pins to, read from its text."""
    argv = script_argv(generate(inventory, spec, "qemu").text)
    domain = domain_of(generate(inventory, spec, "libvirt").text)
    conf = conf_lines(generate(inventory, spec, "proxmox").text)
    cpusets = {pin.get("cpuset") for pin in domain.findall("cputune/vcpupin")}
    assert len(cpusets) == 1 and domain.find("cputune/emulatorpin").get("cpuset") in cpusets
    assert argv[0:2] == ["taskset", "-c"]
    return {"qemu": argv[2], "libvirt": cpusets.pop(), "proxmox": conf["affinity"]}


# -- off -------------------------------------------------------------------------------------------


@needs_hwloc
@pytest.mark.parametrize("target", list(TARGETS))
def test_off_leaves_no_pinning_in_any_target_and_says_the_user_turned_it_off(target):
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [PHI], numa_pin="off")
    assert (spec.numa_node, spec.numa_cpus, spec.numa_warning) == (None, None, None)
    assert spec.numa_why == OFF_WHY and "turned off" in spec.numa_why
    config = generate(inventory, spec, target)
    body = config.text.split("-->\n", 1)[-1]  # libvirt's opening comment quotes nothing pinned either
    found = [word for word in PIN_WORDS if word in body]
    assert not found, found
    if target in LINUX:
        assert config.notes["NUMA"] == OFF_WHY
        assert not {"taskset -c", "host-nodes=", "<cputune>", "<numatune>", "numa0:", "affinity:"} & set(config.notes)


@needs_hwloc
def test_automatic_still_pins_to_the_devices_node_and_off_differs_from_it():
    inventory = hwloc_inventory(XEON_PHI)
    automatic = build_spec(inventory, [PHI])
    assert (automatic.numa_node, automatic.numa_cpus) == (1, "8-15")
    assert build_spec(inventory, [PHI], numa_pin="auto") == automatic
    assert pinned_cpus(inventory, automatic) == dict.fromkeys(LINUX, "8-15")
    off = build_spec(inventory, [PHI], numa_pin="off")
    for target in LINUX:
        assert generate(inventory, off, target).text != generate(inventory, automatic, target).text


# -- a node the user names ------------------------------------------------------------------------


@needs_hwloc
def test_a_chosen_node_pins_every_linux_target_to_its_cpus_from_the_tree():
    inventory = hwloc_inventory(FOUR_NODES)
    root = hwloc_host(FOUR_NODES)
    for node in range(4):
        kernel = (root / f"sys/devices/system/node/node{node}/cpulist").read_text().strip()
        spec = build_spec(inventory, [QLOGIC], numa_pin=node, vcpus=3)
        assert spec.numa_node == node and spec.numa_cpus == kernel  # the kernel's own short form
        assert pinned_cpus(inventory, spec) == dict.fromkeys(LINUX, kernel)
        argv = script_argv(generate(inventory, spec, "qemu").text)
        assert options_of(argv, "-object") == [
            f"memory-backend-ram,id=ram0,size=8192M,host-nodes={node},policy=preferred"
        ]
        memory = domain_of(generate(inventory, spec, "libvirt").text).find("numatune/memory")
        assert (memory.get("mode"), memory.get("nodeset")) == ("preferred", str(node))
        conf = conf_lines(generate(inventory, spec, "proxmox").text)
        assert conf["numa0"] == f"cpus=0-2,hostnodes={node},memory=8192,policy=preferred"
    # The interleaved lists are kept as the kernel wrote them, not widened into a range.
    assert build_spec(inventory, [QLOGIC], numa_pin="2").numa_cpus == "2,6,10,14,18,22,26,30,34,38"


@needs_hwloc
def test_choosing_the_devices_own_node_pins_there_without_a_warning():
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [PHI], numa_pin=1)
    assert (spec.numa_node, spec.numa_cpus, spec.numa_warning) == (1, "8-15", None)
    assert spec.numa_why == "You chose NUMA node 1 of 2 (CPUs 8-15); 83:00.0 sits there."
    for target in LINUX:
        config = generate(inventory, spec, target)
        assert "WARNING" not in config.text
        assert "Their DMA and interrupts then stay on one node." in " ".join(config.notes.values())


@needs_hwloc
def test_a_node_the_devices_do_not_sit_on_is_pinned_with_a_warning_on_the_cross_node_traffic():
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [PHI], numa_pin=0)
    assert (spec.numa_node, spec.numa_cpus) == (0, "0-7")
    warning = spec.numa_warning
    assert warning is not None and warning.startswith("Not the devices' node: 83:00.0 on node 1.")
    assert "between the sockets" in warning and "Choose automatic (node 1)" in warning
    assert pinned_cpus(inventory, spec) == dict.fromkeys(LINUX, "0-7")
    notes = {"qemu": "taskset -c", "libvirt": "<cputune>", "proxmox": "affinity:"}
    for target, note in notes.items():
        config = generate(inventory, spec, target)
        assert "NUMA WARNING: pinned to node 0 as asked. Not the devices' node: 83:00.0 on node 1." in config.text
        assert warning in config.notes[note] and "stay on one node" not in config.notes[note]
        assert stderr_lines(spec, config)[-1] == f"warning: pinned to NUMA node 0: {warning}"
        assert command_json(spec, config, "0")["numa"] == {
            "pin": 0, "node": 0, "cpus": "0-7", "why": spec.numa_why, "warning": warning,
        }  # fmt: skip
    # The warning sits in the opening comment: every target still reads as it did.
    assert script_argv(generate(inventory, spec, "qemu").text)[:3] == ["taskset", "-c", "0-7"]
    for target in ("vmware", "hyperv"):  # they pin nothing, so they warn of nothing
        config = generate(inventory, spec, target)
        assert "WARNING" not in config.text and command_json(spec, config, 0)["numa"] is None
        assert not any(line.startswith("warning:") for line in stderr_lines(spec, config))


@needs_hwloc
def test_devices_on_two_nodes_can_be_pinned_to_one_of_them_and_the_other_is_named():
    inventory = hwloc_inventory(XEON_PHI)
    assert build_spec(inventory, [PHI, ASPEED]).numa_node is None  # automatic: not pinned
    spec = build_spec(inventory, [PHI, ASPEED], numa_pin=1)
    assert spec.numa_node == 1 and spec.numa_why == "You chose NUMA node 1 of 2 (CPUs 8-15); 83:00.0 sits there."
    assert spec.numa_warning.startswith("Not the devices' node: 05:00.0 on node 0.")
    assert "Choose automatic" not in spec.numa_warning  # automatic would not pin at all


@needs_hwloc
def test_a_device_without_a_node_gets_a_warning_that_nearness_is_not_known():
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [NVME], numa_pin=1)
    assert spec.numa_node == 1 and "00:02.0 reports no node" in spec.numa_why
    assert spec.numa_warning == (
        "The firmware gives no NUMA node for 00:02.0, so whether node 1 is near it is not known; if it is not, "
        "its DMA and interrupts cross between the sockets."
    )


@needs_hwloc
def test_the_libvirt_domain_pinned_to_a_chosen_node_validates(tmp_path):
    inventory = hwloc_inventory(XEON_PHI)
    path = tmp_path / "domain.xml"
    path.write_text(generate(inventory, build_spec(inventory, [PHI], numa_pin=0, hugepages=True), "libvirt").text)
    result = virt_xml_validate(path)
    assert result.returncode == 0, result.stderr + result.stdout


# -- refused ---------------------------------------------------------------------------------------


@needs_hwloc
@pytest.mark.parametrize(
    ("pin", "message"),
    [
        (2, "NUMA node 2 is not one of this host's nodes (0, 1)."),
        ("7", "NUMA node 7 is not one of this host's nodes (0, 1)."),
        (-1, "NUMA node -1 is not a node number."),
        ("node1", "'node1' is not a NUMA pinning choice."),
        ("1; reboot", "'1; reboot' is not a NUMA pinning choice."),
        ("", "'' is not a NUMA pinning choice."),
    ],
)
def test_a_node_the_host_lacks_or_a_word_that_is_no_choice_is_refused(pin, message):
    with pytest.raises(ConfigError) as refused:
        build_spec(hwloc_inventory(XEON_PHI), [PHI], numa_pin=pin)
    assert str(refused.value).startswith(message)
    assert "auto" in (refused.value.hint or "")


def test_a_node_cannot_be_chosen_where_the_nodes_were_not_read(make_tree):
    inventory = scan(make_tree(HostSpec(functions=[FunctionSpec("01:00.0", "10de", "1b06", "030000", iommu_group=1)])))
    with pytest.raises(ConfigError, match="this host's NUMA nodes were not read"):
        build_spec(inventory, ["01:00.0"], numa_pin=0)
    assert build_spec(inventory, ["01:00.0"], numa_pin="off").numa_why == OFF_WHY


def test_a_memory_only_node_and_a_node_whose_cpu_list_cannot_be_read_are_refused(make_tree):
    files = {
        "sys/devices/system/node/node0/cpulist": "0-7\n",
        "sys/devices/system/node/node1/cpulist": "\n",  # memory only (CXL, HBM): left out by the scan
        "sys/devices/system/node/node2/cpulist": "8-\n",
    }
    inventory = scan(make_tree(HostSpec(
        functions=[FunctionSpec("01:00.0", "10de", "1b06", "030000", iommu_group=1, numa_node=0)], files=files,
    )))  # fmt: skip
    with pytest.raises(ConfigError, match=r"NUMA node 1 is not one of this host's nodes \(0, 2\)") as refused:
        build_spec(inventory, ["01:00.0"], numa_pin=1)
    assert "memory only" in refused.value.hint
    with pytest.raises(ConfigError, match=r"The CPU list of NUMA node 2 cannot be read \('8-'\)"):
        build_spec(inventory, ["01:00.0"], numa_pin=2)


def test_the_old_switch_still_means_automatic_and_off_never_node_1_and_node_0():
    assert parse_numa_pin(True) == "auto" and parse_numa_pin(False) == "off"
    assert parse_numa_pin(" Off ") == "off" and parse_numa_pin("3") == 3 and parse_numa_pin(0) == 0
