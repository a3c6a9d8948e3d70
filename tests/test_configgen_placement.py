"""Large BARs and NUMA pinning in the QEMU, libvirt and Proxmox configs (issue 13, parts 4 and 5).

On hwloc's captures of real servers: a Xeon Phi with an 8 GiB BAR on node 1 of two, a NEC
Vector Engine with a 64 GiB BAR on node 0. What each target writes is read back by the tool
that consumes it where one is installed: QEMU itself (the host bridge's pci-hole64-size and
the memory backend's host nodes over QMP), virt-xml-validate, and libvirtd's own translation
of the domain into a QEMU command line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from passthrough.configgen import Bar, ConfigError, PassedDevice, VmSpec, build_spec, generate
from passthrough.configgen.libvirt import QEMU_NS
from passthrough.configgen.qemu import arguments
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import virt_xml_validate
from tests.libvirtd_support import libvirt_uri_fixture  # noqa: F401
from tests.qemu_argv_support import script_argv
from tests.test_placement import VECTOR_ENGINES, XEON_PHI, hwloc_inventory, needs_hwloc

GIB = 1 << 30
PHI, MLX, ASPEED, NVME = "0000:83:00.0", "0000:82:00.0", "0000:05:00.0", "0000:00:02.0"
ENGINE = "0000:1d:00.0"


def options_of(argv: list[str], option: str) -> list[str]:
    return [value for flag, value in zip(argv, argv[1:], strict=False) if flag == option]


def conf_lines(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if line and not line.startswith("#"))


# -- large BARs ----------------------------------------------------------------------------------


@needs_hwloc
def test_an_8_gib_bar_opens_a_64_gib_window_in_each_linux_target():
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [PHI])
    qemu = generate(inventory, spec, "qemu")
    argv = script_argv(qemu.text)
    assert options_of(argv, "-global") == ["q35-pcihost.pci-hole64-size=64G"]
    assert options_of(argv, "-fw_cfg") == ["name=opt/ovmf/X-PciMmio64Mb,string=65536"]
    assert "BAR 0 of 0000:83:00.0 is 8 GiB" in qemu.notes["pci-hole64-size"]
    assert "65536 MiB" in qemu.notes["X-PciMmio64Mb"]
    domain = ET.fromstring(generate(inventory, spec, "libvirt").text.split("-->\n", 1)[1])
    hole = domain.find("devices/controller[@model='pcie-root']/pcihole64")
    assert hole is not None and (hole.get("unit"), hole.text) == ("KiB", str(64 * 1024 * 1024))
    qemu_args = [arg.get("value") for arg in domain.findall(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert qemu_args == ["-fw_cfg", "name=opt/ovmf/X-PciMmio64Mb,string=65536"]
    proxmox = generate(inventory, spec, "proxmox")
    assert conf_lines(proxmox.text)["args"] == (
        "-global q35-pcihost.pci-hole64-size=64G -fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=65536"
    )
    assert "Only root@pam may set args" in proxmox.notes["args:"]


@needs_hwloc
def test_a_64_gib_bar_gets_twice_the_next_power_of_two():
    inventory = hwloc_inventory(VECTOR_ENGINES)
    argv = script_argv(generate(inventory, build_spec(inventory, [ENGINE]), "qemu").text)
    assert options_of(argv, "-global") == ["q35-pcihost.pci-hole64-size=128G"]
    assert options_of(argv, "-fw_cfg") == ["name=opt/ovmf/X-PciMmio64Mb,string=131072"]


@needs_hwloc
def test_small_bars_leave_the_defaults_alone():
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [MLX])  # ConnectX-3: 1 MiB and 8 MiB
    text = generate(inventory, spec, "qemu").text
    assert "pci-hole64-size" not in text and "X-PciMmio64Mb" not in text
    assert "pcihole64" not in generate(inventory, spec, "libvirt").text
    assert "args" not in conf_lines(generate(inventory, spec, "proxmox").text)


@needs_hwloc
def test_seabios_on_i440fx_sizes_the_i440fx_hole_and_has_no_ovmf_setting():
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [PHI], machine="i440fx", firmware="seabios")
    argv = script_argv(generate(inventory, spec, "qemu").text)
    assert options_of(argv, "-global") == ["i440FX-pcihost.pci-hole64-size=64G"] and not options_of(argv, "-fw_cfg")
    domain = generate(inventory, spec, "libvirt").text
    assert '<controller type="pci" index="0" model="pci-root">' in domain and "fw_cfg" not in domain
    assert conf_lines(generate(inventory, spec, "proxmox").text)["args"] == "-global i440FX-pcihost.pci-hole64-size=64G"


def test_two_16_gib_cards_together_pass_the_default_window(make_tree):
    functions = [
        FunctionSpec(f"{bus:02x}:00.0", "10de", "2504", "030000", driver="vfio-pci", iommu_group=bus) for bus in (1, 2)
    ]
    inventory = scan(make_tree(HostSpec(functions=functions)))
    resizable = [Bar(1, 16 * GIB, True, True), Bar(3, 32 << 20, True, True)]
    spec = build_spec(inventory, ["01:00.0", "02:00.0"], bars={f.address: resizable for f in functions})
    argv = script_argv(generate(inventory, spec, "qemu").text)
    assert options_of(argv, "-global") == ["q35-pcihost.pci-hole64-size=128G"]
    note = generate(inventory, spec, "qemu").notes["pci-hole64-size"]
    assert "BAR 1 of 0000:01:00.0 is 16 GiB" in note and "add up to 32832 MiB" in note


def test_unread_bar_sizes_of_a_gpu_set_nothing_and_say_what_to_add(make_tree):
    inventory = scan(make_tree(HostSpec(functions=[FunctionSpec("01:00.0", "10de", "2204", "030000", iommu_group=1)])))
    spec = build_spec(inventory, ["01:00.0"])
    qemu = generate(inventory, spec, "qemu")
    assert "pci-hole64-size=" not in qemu.text
    assert "BAR sizes of 0000:01:00.0 were not read" in qemu.notes["pci-hole64-size"]
    assert "were not read" in generate(inventory, spec, "libvirt").notes["<pcihole64>"]
    assert "args: line" in generate(inventory, spec, "proxmox").notes["args:"]


@needs_hwloc
def test_a_snapshot_without_the_tree_still_carries_the_bar_sizes():
    # The web page builds configs from the stored inventory only.
    snapshot = Inventory.from_json(json.loads(json.dumps(hwloc_inventory(VECTOR_ENGINES).to_json())))
    spec = build_spec(snapshot, [ENGINE])
    assert spec.devices[0].bars[0].size == 64 * GIB
    assert "pci-hole64-size=128G" in generate(snapshot, spec, "qemu").text


# -- NUMA pinning --------------------------------------------------------------------------------


@needs_hwloc
def test_a_device_on_node_1_pins_vcpus_and_memory_there_in_each_linux_target():
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [PHI], vcpus=6, memory_mib=16384)
    assert (spec.numa_node, spec.numa_cpus) == (1, "8-15")
    qemu = generate(inventory, spec, "qemu")
    assert "\nexec taskset -c 8-15 qemu-system-x86_64 \\\n" in qemu.text
    argv = script_argv(qemu.text)
    assert options_of(argv, "-object") == ["memory-backend-ram,id=ram0,size=16384M,host-nodes=1,policy=preferred"]
    assert "memory-backend=ram0" in options_of(argv, "-machine")[0].split(",")
    assert "83:00.0 sits on NUMA node 1 of 2" in qemu.notes["taskset -c"]

    domain = ET.fromstring(generate(inventory, spec, "libvirt").text.split("-->\n", 1)[1])
    pins = [(pin.get("vcpu"), pin.get("cpuset")) for pin in domain.findall("cputune/vcpupin")]
    assert pins == [(str(vcpu), "8-15") for vcpu in range(6)]
    assert domain.find("cputune/emulatorpin").get("cpuset") == "8-15"
    memory = domain.find("numatune/memory")
    assert (memory.get("mode"), memory.get("nodeset")) == ("preferred", "1")

    conf = conf_lines(generate(inventory, spec, "proxmox").text)
    assert (conf["numa"], conf["affinity"]) == ("1", "8-15")
    assert conf["numa0"] == "cpus=0-5,hostnodes=1,memory=16384,policy=preferred"


@needs_hwloc
def test_hugepages_are_bound_to_the_node_too():
    inventory = hwloc_inventory(XEON_PHI)
    argv = script_argv(generate(inventory, build_spec(inventory, [PHI], hugepages=True), "qemu").text)
    assert options_of(argv, "-object") == [
        "memory-backend-file,id=ram0,size=8192M,mem-path=/dev/hugepages,prealloc=on,host-nodes=1,policy=preferred"
    ]


@needs_hwloc
def test_devices_on_two_nodes_are_not_pinned_and_the_notes_say_why():
    inventory = hwloc_inventory(XEON_PHI)
    spec = build_spec(inventory, [PHI, ASPEED])
    assert spec.numa_node is None
    for target in ("qemu", "libvirt", "proxmox"):
        config = generate(inventory, spec, target)
        assert "taskset" not in config.text and "cputune" not in config.text and "affinity" not in config.text
        assert config.notes["NUMA"].startswith("The devices sit on different NUMA nodes (node 0: 05:00.0; node 1:")


@needs_hwloc
def test_pinning_can_be_turned_off_and_a_one_node_host_never_pins(make_tree):
    inventory = hwloc_inventory(XEON_PHI)
    unpinned = build_spec(inventory, [PHI], numa_pin=False)
    assert unpinned.numa_node is None and "taskset" not in generate(inventory, unpinned, "qemu").text
    single = scan(make_tree(HostSpec(
        functions=[FunctionSpec("01:00.0", "10de", "1b06", "030000", iommu_group=1, numa_node=0)],
        files={"sys/devices/system/node/node0/cpulist": "0-15\n"},
    )))  # fmt: skip
    spec = build_spec(single, ["01:00.0"])
    assert spec.numa_node is None and spec.numa_why is None
    assert "NUMA" not in generate(single, spec, "qemu").notes


def test_a_hand_built_spec_with_a_broken_cpu_list_is_refused_and_a_loose_one_tidied(make_tree):
    inventory = scan(make_tree(HostSpec(functions=[FunctionSpec("01:00.0", "8086", "1533", "020000", iommu_group=1)])))
    with pytest.raises(ConfigError, match="is not a list of the CPUs of NUMA node 1"):
        VmSpec([PassedDevice("0000:01:00.0")], numa_node=1, numa_cpus="8-15; reboot").validate(inventory)
    with pytest.raises(ConfigError, match="is not a node number"):
        VmSpec([PassedDevice("0000:01:00.0")], numa_node=-1, numa_cpus="0-3").validate(inventory)
    spec = VmSpec([PassedDevice("0000:01:00.0")], numa_node=0, numa_cpus="3,0-2")
    spec.validate(inventory)
    assert spec.numa_cpus == "0-3"


# -- the consumers read it back ---------------------------------------------------------------------


def _this_host_node0() -> str:
    cpus = Path("/sys/devices/system/node/node0/cpulist")
    if not cpus.is_file():
        pytest.skip("this machine has no sys/devices/system/node/node0 to pin to")
    return cpus.read_text().strip()


def _two_node_host(make_tree, node0: str) -> Inventory:
    """A host whose node 0 is this machine's (so QEMU and libvirt can bind to it), with a Xeon Phi on it."""
    phi = FunctionSpec("83:00.0", "8086", "225c", "0b4000", driver="vfio-pci", iommu_group=1, numa_node=0,
                       extra={"resource": f"0x{1 << 40:016x} 0x{(1 << 40) + 8 * GIB - 1:016x} 0x000000000014220c\n"})  # fmt: skip
    files = {"sys/devices/system/node/node0/cpulist": node0 + "\n", "sys/devices/system/node/node1/cpulist": "1000\n"}
    return scan(make_tree(HostSpec(functions=[phi], files=files)))


def test_qemu_itself_takes_the_window_and_the_node_binding(make_tree):
    if shutil.which("qemu-system-x86_64") is None or shutil.which("taskset") is None:
        pytest.skip("needs qemu-system-x86_64 (Debian qemu-system-x86) and taskset (util-linux)")
    inventory = _two_node_host(make_tree, _this_host_node0())
    spec = build_spec(inventory, ["83:00.0"], memory_mib=256)
    lines, _ = arguments(spec)
    # What decides the window and the memory, under TCG: no KVM, no firmware and no vfio device needed.
    kept = [line for line in lines if line[0] in ("-machine", "-m", "-object", "-global", "-fw_cfg")]
    kept = [[line[0], line[1].replace("accel=kvm", "accel=tcg")] for line in kept]
    assert [line[0] for line in kept] == ["-machine", "-m", "-object", "-global", "-fw_cfg"]
    launcher = generate(inventory, spec, "qemu").text.split("\nexec ", 1)[1].split(" \\\n", 1)[0].split()
    assert launcher[:2] == ["taskset", "-c"]
    qmp = [
        {"execute": "qmp_capabilities"},
        {"execute": "qom-get", "arguments": {"path": "/machine/q35", "property": "pci-hole64-size"}},
        {"execute": "query-memdev"},
        {"execute": "quit"},
    ]
    done = subprocess.run(
        [*launcher, "-nodefaults", "-display", "none", "-S", "-qmp", "stdio", *(word for line in kept for word in line)],
        input="".join(json.dumps(command) + "\n" for command in qmp),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line)["return"] for line in done.stdout.splitlines() if '"return"' in line]
    assert answers[1] == 64 * GIB
    (memdev,) = answers[2]
    assert (memdev["host-nodes"], memdev["policy"], memdev["size"]) == ([0], "preferred", 256 << 20)


def test_virt_xml_validate_takes_the_pinned_large_bar_domain(make_tree, tmp_path):
    inventory = _two_node_host(make_tree, "0-3")
    path = tmp_path / "domain.xml"
    path.write_text(generate(inventory, build_spec(inventory, ["83:00.0"], hugepages=True), "libvirt").text)
    result = virt_xml_validate(path)
    assert result.returncode == 0, result.stderr + result.stdout


def test_libvirt_turns_the_domain_into_the_same_qemu_options(make_tree, tmp_path, libvirt_uri):
    inventory = _two_node_host(make_tree, _this_host_node0())
    spec = build_spec(inventory, ["83:00.0"], memory_mib=256, name=f"placement-{os.getpid()}")
    domain = ET.fromstring(generate(inventory, spec, "libvirt").text.split("-->\n", 1)[1])
    if not Path("/dev/kvm").exists():  # TCG: libvirt refuses host-passthrough without KVM
        domain.set("type", "qemu")
        domain.remove(domain.find("cpu"))
    path = tmp_path / "domain.xml"
    path.write_text(ET.tostring(domain, encoding="unicode"))
    done = subprocess.run(
        ["virsh", "-c", libvirt_uri, "domxml-to-native", "qemu-argv", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    argv = done.stdout
    assert "-global q35-pcihost.pci-hole64-size=67108864K" in argv
    assert "-fw_cfg name=opt/ovmf/X-PciMmio64Mb,string=65536" in argv
    backend = re.search(r"-object '?(\{[^ ]*memory-backend[^ ]*\})'?", argv)
    assert backend is not None, argv
    memory = json.loads(backend.group(1))
    assert (memory["host-nodes"], memory["policy"]) == ([0], "preferred")
