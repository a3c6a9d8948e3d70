"""The libvirt target: hostdevs that keep a card's functions together, valid for virt-xml-validate."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from passthrough.configgen import PassedDevice, VmSpec, build_spec, generate
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import desktop_with_quad_nic, hostdev_partition, hostdevs, virt_xml_validate

QEMU_NS = "{http://libvirt.org/schemas/domain/qemu/1.0}"


@pytest.fixture
def inventory(make_tree) -> Inventory:
    return scan(make_tree(desktop_with_quad_nic()))


def domain_xml(inventory: Inventory, addresses: list[str], **options) -> str:
    return generate(inventory, build_spec(inventory, addresses, **options), "libvirt").text


def test_hostdevs_name_the_host_functions_in_subsystem_managed_mode(inventory):
    root = ET.fromstring(domain_xml(inventory, ["01:00.0"]))
    elements = root.findall("devices/hostdev")
    assert [(e.get("mode"), e.get("type"), e.get("managed")) for e in elements] == [("subsystem", "pci", "yes")] * 2
    assert elements[0].find("driver").get("name") == "vfio"
    assert elements[1].find("source/address").attrib == {
        "domain": "0x0000",
        "bus": "0x01",
        "slot": "0x00",
        "function": "0x1",
    }


def test_functions_of_one_card_share_a_guest_slot_behind_their_own_root_port(inventory):
    text = domain_xml(inventory, ["01:00.0", "03:00.0"])
    root = ET.fromstring(text)
    ports = root.findall("devices/controller[@model='pcie-root-port']")
    assert [port.get("index") for port in ports] == ["1", "2"]
    devices = hostdevs(text)
    assert hostdev_partition(devices) == {frozenset({"0000:01:00.0", "0000:01:00.1"}), frozenset({"0000:03:00.0"})}
    gpu, audio, nic = devices
    assert gpu.guest == (0, 1, 0, 0) and gpu.multifunction
    assert audio.guest == (0, 1, 0, 1) and not audio.multifunction
    assert nic.guest == (0, 2, 0, 0) and not nic.multifunction


def test_skipped_function_numbers_are_kept_in_the_guest(inventory):
    devices = hostdevs(domain_xml(inventory, ["04:00.0", "04:00.3"]))
    assert [(device.source, device.guest[3]) for device in devices] == [("0000:04:00.0", 0), ("0000:04:00.3", 3)]


def test_a_lone_function_other_than_0_takes_function_0_in_the_guest(inventory):
    (nic,) = hostdevs(generate(inventory, VmSpec(devices=[PassedDevice("0000:04:00.2")]), "libvirt").text)
    assert nic.source == "0000:04:00.2" and nic.guest[3] == 0 and not nic.multifunction


def test_rom_file_and_rom_bar_off(inventory):
    gpu, audio = hostdevs(domain_xml(inventory, ["01:00.0"], rom_file="/usr/share/vgabios/gp102.rom"))
    assert gpu.rom_file == "/usr/share/vgabios/gp102.rom" and audio.rom_file is None
    gpu, _ = hostdevs(domain_xml(inventory, ["01:00.0"], rombar=False))
    assert gpu.rom_bar == "off"


def test_ovmf_loader_and_per_vm_nvram(inventory):
    root = ET.fromstring(domain_xml(inventory, ["01:00.0"], name="win10"))
    loader = root.find("os/loader")
    assert loader.attrib == {"readonly": "yes", "type": "pflash"}
    assert loader.text == "/usr/share/OVMF/OVMF_CODE_4M.fd"
    nvram = root.find("os/nvram")
    assert nvram.text == "/var/lib/libvirt/qemu/nvram/win10_VARS.fd"
    assert nvram.get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"
    assert root.find("os/type").get("machine") == "q35"
    seabios = ET.fromstring(domain_xml(inventory, ["01:00.0"], firmware="seabios"))
    assert seabios.find("os/loader") is None


def test_hidden_kvm_and_hyperv_vendor_id(inventory):
    root = ET.fromstring(domain_xml(inventory, ["01:00.0"], hide_kvm=True, hv_vendor_id="1234567890ab"))
    assert root.find("features/kvm/hidden").attrib == {"state": "on"}
    assert root.find("features/hyperv/vendor_id").attrib == {"state": "on", "value": "1234567890ab"}
    assert [element.tag for element in root.find("features/hyperv")] == ["relaxed", "vapic", "spinlocks", "vendor_id"]
    plain = ET.fromstring(domain_xml(inventory, ["01:00.0"]))
    assert plain.find("features/kvm") is None and plain.find("features/hyperv") is None


def test_hugepages_memory_backing(inventory):
    root = ET.fromstring(domain_xml(inventory, ["01:00.0"], hugepages=True, memory_mib=4096))
    assert root.find("memoryBacking/hugepages") is not None
    assert (root.find("memory").text, root.find("memory").get("unit")) == ("4096", "MiB")


def test_primary_gpu_under_seabios_sets_x_vga_through_a_qemu_override(inventory):
    root = ET.fromstring(domain_xml(inventory, ["01:00.0"], primary_gpu=True, firmware="seabios"))
    alias = root.find("devices/hostdev/alias").get("name")
    assert alias.startswith("ua-")
    device = root.find(f"{QEMU_NS}override/{QEMU_NS}device")
    assert device.get("alias") == alias
    assert device.find(f"{QEMU_NS}frontend/{QEMU_NS}property").attrib == {
        "name": "x-vga",
        "type": "bool",
        "value": "true",
    }
    assert root.find("devices/video/model").get("type") == "none"
    ovmf = ET.fromstring(domain_xml(inventory, ["01:00.0"], primary_gpu=True))
    assert ovmf.find(f"{QEMU_NS}override") is None
    assert ovmf.find("devices/video/model").get("type") == "none"


def test_i440fx_puts_the_card_on_the_root_bus_as_one_multifunction_slot(inventory):
    text = domain_xml(inventory, ["01:00.0"], machine="i440fx", firmware="seabios")
    root = ET.fromstring(text)
    assert root.find("os/type").get("machine") == "pc"
    assert root.find("devices/controller").get("model") == "pci-root"
    assert not root.findall("devices/controller[@model='pcie-root-port']")
    gpu, audio = hostdevs(text)
    assert gpu.guest == (0, 0, 0x10, 0) and audio.guest == (0, 0, 0x10, 1) and gpu.multifunction


def test_header_comment_holds_the_requirements_and_stays_a_valid_comment(make_tree):
    spec = desktop_with_quad_nic()
    spec.function("01:00.0").driver = "nvidia"
    inventory = scan(make_tree(spec))
    text = generate(inventory, build_spec(inventory, ["01:00.0"]), "libvirt").text
    comment = text.split("-->", 1)[0]
    assert comment.startswith("<!--") and "--" not in comment[4:]
    assert "[MISSING] 0000:01:00.0 is bound to vfio-pci." in comment
    assert "managed='yes'" in comment
    ET.fromstring(text)


COMBINATIONS = [
    dict(zip(("firmware", "machine", "primary_gpu", "hide_kvm", "hugepages", "rom"), values, strict=True))
    for values in itertools.product(
        ("ovmf", "seabios"), ("q35", "i440fx"), (False, True), (False, True), (False,), (None,)
    )
] + [
    {"firmware": "ovmf", "machine": "q35", "primary_gpu": True, "hide_kvm": True, "hugepages": True, "rom": "file"},
    {"firmware": "seabios", "machine": "q35", "primary_gpu": True, "hide_kvm": False, "hugepages": True, "rom": "off"},
    {
        "firmware": "seabios",
        "machine": "i440fx",
        "primary_gpu": False,
        "hide_kvm": True,
        "hugepages": True,
        "rom": "off",
    },
]


@pytest.mark.parametrize("combination", COMBINATIONS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_every_option_combination_validates(inventory, tmp_path, combination):
    options = dict(combination)
    rom = options.pop("rom")
    if rom == "file":
        options["rom_file"] = "/usr/share/vgabios/gp102.rom"
    elif rom == "off":
        options["rombar"] = False
        options["rom_device"] = "04:00.1"
    if options["hide_kvm"]:
        options["hv_vendor_id"] = "whatever"
    path = tmp_path / "domain.xml"
    path.write_text(domain_xml(inventory, ["01:00.0", "03:00.0", "04:00.1", "04:00.2"], **options))
    result = virt_xml_validate(path)
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_validator_rejects_a_broken_hostdev(inventory, tmp_path):
    # Proof that the validation above can fail: a hostdev without its source is not a domain.
    root = ET.fromstring(domain_xml(inventory, ["03:00.0"]))
    hostdev = root.find("devices/hostdev")
    hostdev.remove(hostdev.find("source"))
    path = tmp_path / "broken.xml"
    path.write_text(ET.tostring(root, encoding="unicode"))
    assert virt_xml_validate(path).returncode != 0
