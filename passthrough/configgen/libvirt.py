"""A libvirt domain XML with ``<hostdev>`` entries, valid for ``virt-xml-validate FILE domain``.

Only what passthrough needs is filled in (machine, firmware, CPU, memory, the hostdevs and
their PCIe root ports); ``virsh define`` accepts it as is, and ``virt-manager`` or
``virsh edit`` add the disk and network after.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from passthrough.configgen.hostcheck import comment_block
from passthrough.configgen.layout import device_summary, guest_slots
from passthrough.configgen.mmio import HOST_BRIDGES, OVMF_FW_CFG, unknown_note, window
from passthrough.configgen.numa import node_reason, warning_lines
from passthrough.configgen.safe import xml_comment_text, xml_value
from passthrough.configgen.spec import OVMF_CODE, OVMF_VARS, GeneratedConfig, HostRequirement, PassedDevice, VmSpec

if TYPE_CHECKING:
    from passthrough.pci.model import Inventory

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"
FIRST_SLOT = 0x10

ET.register_namespace("qemu", QEMU_NS)


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    """Every element of the domain is made here, so every value passes :func:`xml_value` once."""
    checked = {name: xml_value(value, f"<{tag} {name}=...> value") for name, value in attributes.items()}
    element = ET.SubElement(parent, tag, checked)
    if text is not None:
        element.text = xml_value(text, f"<{tag}> text")
    return element


def domain(spec: VmSpec, inventory: Inventory | None = None) -> tuple[ET.Element, dict[str, str]]:
    """The domain and a note per element that needs one; ``inventory`` only adds the note on unread BAR sizes."""
    notes: dict[str, str] = {}
    root = ET.Element("domain", {"type": "kvm"})
    _sub(root, "name", spec.name)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    if spec.hugepages:
        backing = _sub(root, "memoryBacking")
        _sub(backing, "hugepages")
        notes["<hugepages/>"] = (
            "Guest RAM from the host's huge pages: vfio pins all guest memory for DMA, and huge pages make the "
            "pinning and IOMMU mappings cheaper. Reserve them first (vm.nr_hugepages)."
        )
    _sub(root, "vcpu", str(spec.vcpus), placement="static")
    _numa(root, spec, notes)
    needed = window(spec)

    os_element = _sub(root, "os")
    _sub(os_element, "type", "hvm", arch="x86_64", machine="q35" if spec.machine == "q35" else "pc")
    if spec.firmware == "ovmf":
        _sub(os_element, "loader", OVMF_CODE, readonly="yes", type="pflash")
        _sub(os_element, "nvram", f"{NVRAM_DIR}/{spec.name}_VARS.fd", template=OVMF_VARS)
        notes["<loader type='pflash'>"] = (
            "UEFI firmware (OVMF, Debian package ovmf). libvirt copies the <nvram> template once, so the VM keeps "
            "its own UEFI variables. Modern GPUs boot through their UEFI ROM."
        )

    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.hv_vendor_id:
        # The vendor string lives in the Hyper-V CPUID leaves, which exist only with enlightenments on.
        hyperv = _sub(features, "hyperv")
        _sub(hyperv, "relaxed", state="on")
        _sub(hyperv, "vapic", state="on")
        _sub(hyperv, "spinlocks", state="on", retries="8191")
        _sub(hyperv, "vendor_id", state="on", value=spec.hv_vendor_id)
        notes["<vendor_id>"] = (
            "Replaces the Hyper-V vendor string 'Microsoft Hv' that Windows guests see with Hyper-V enlightenments "
            "(relaxed, vapic, spinlocks, turned on with it); NVIDIA drivers before 465 check it."
        )
    if spec.hide_kvm:
        kvm = _sub(features, "kvm")
        _sub(kvm, "hidden", state="on")
        notes["<hidden state='on'/>"] = (
            "Hides the KVM signature (QEMU's kvm=off). NVIDIA GeForce drivers before 465 stop with error 43 when "
            "they see a hypervisor; newer drivers do not need it."
        )
    _sub(root, "cpu", mode="host-passthrough", check="none")

    devices = _sub(root, "devices")
    _sub(devices, "emulator", "/usr/bin/qemu-system-x86_64")
    root_bus = _sub(
        devices, "controller", type="pci", index="0", model="pcie-root" if spec.machine == "q35" else "pci-root"
    )
    if needed is not None:
        _sub(root_bus, "pcihole64", str(needed.kib), unit="KiB")
        notes["<pcihole64>"] = (
            f"QEMU's window for 64-bit BARs on the root bus (libvirt writes it as {HOST_BRIDGES[spec.machine]}."
            f"pci-hole64-size): {needed.why}"
        )
    else:
        unread = unknown_note(inventory, spec) if inventory is not None else None
        if unread:
            notes["<pcihole64>"] = unread
    overrides: list[str] = []
    _hostdevs(spec, devices, overrides, notes)
    if spec.primary is not None:
        video = _sub(devices, "video")
        _sub(video, "model", type="none")
        notes["<model type='none'/>"] = "No emulated display: the passed GPU is the guest's screen."
    if needed is not None and spec.firmware == "ovmf":
        commandline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
        for value in ("-fw_cfg", f"name={OVMF_FW_CFG},string={needed.mib}"):
            ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", {"value": value})
        notes["X-PciMmio64Mb"] = (
            f"<qemu:commandline> hands OVMF the fw_cfg file {OVMF_FW_CFG}: a 64-bit PCI window of {needed.mib} MiB "
            "instead of its default. libvirt has no element for it (its <sysinfo type='fwcfg'> refuses names under "
            "opt/ovmf/), so it goes to QEMU directly, and libvirt marks the domain tainted (custom-argv). Without it "
            "OVMF leaves a large BAR unassigned and the guest driver fails."
        )
    if overrides:
        _x_vga_override(root, overrides)
        notes["x-vga"] = (
            "libvirt has no x-vga attribute; <qemu:override> sets QEMU's x-vga=on on the primary GPU, which SeaBIOS "
            "needs to reach the card's legacy VGA ROM. The host kernel needs CONFIG_VFIO_PCI_VGA (Debian has it)."
        )
    elif spec.primary is not None:
        notes["x-vga"] = (
            "Not set under OVMF: UEFI drives the card through the GOP driver in its ROM and never uses the legacy "
            "VGA ranges."
        )
    return root, notes


def _numa(root: ET.Element, spec: VmSpec, notes: dict[str, str]) -> None:
    """vCPUs, QEMU's own threads and guest memory on the NUMA node of the passed devices."""
    if spec.numa_node is None or spec.numa_cpus is None:
        if spec.numa_why:
            notes["NUMA"] = spec.numa_why
        return
    cputune = _sub(root, "cputune")
    for vcpu in range(spec.vcpus):
        _sub(cputune, "vcpupin", vcpu=str(vcpu), cpuset=spec.numa_cpus)
    _sub(cputune, "emulatorpin", cpuset=spec.numa_cpus)
    numatune = _sub(root, "numatune")
    _sub(numatune, "memory", mode="preferred", nodeset=str(spec.numa_node))
    notes["<cputune>"] = (
        f"Each vCPU (<vcpupin>) and QEMU's own threads (<emulatorpin>) run on the CPUs of NUMA node {spec.numa_node} "
        f"({spec.numa_cpus}), " + node_reason(spec)
    )
    notes["<numatune>"] = (
        f"Guest memory from NUMA node {spec.numa_node}; mode 'preferred' takes it from other nodes only once that "
        "node runs out, so the VM still starts on a node short of memory ('strict' would refuse to)."
    )


def root_port(parent: ET.Element, index: int, *, chassis: int, port: int, model_name: bool = False) -> ET.Element:
    """A guest ``pcie-root-port`` controller; ``model_name`` adds the ``<model name>`` that
    libvirt fills in itself at define time but asks for when the port is attached alone."""
    controller = _sub(parent, "controller", type="pci", index=str(index), model="pcie-root-port")
    if model_name:
        _sub(controller, "model", name="pcie-root-port")
    _sub(controller, "target", chassis=str(chassis), port=_hex(port, 2))
    return controller


def hostdev(
    parent: ET.Element,
    device: PassedDevice,
    *,
    bus: int,
    slot: int,
    function: int,
    multifunction: bool = False,
    alias: str | None = None,
) -> ET.Element:
    """One ``<hostdev>``: the host function in ``<source>``, its ROM choice, and its guest address."""
    host = device.pci_address
    element = _sub(parent, "hostdev", mode="subsystem", type="pci", managed="yes")
    _sub(element, "driver", name="vfio")
    source = _sub(element, "source")
    _sub(
        source,
        "address",
        domain=_hex(host.domain, 4),
        bus=_hex(host.bus, 2),
        slot=_hex(host.slot, 2),
        function=_hex(host.function, 1),
    )
    if alias is not None:
        _sub(element, "alias", name=alias)
    if device.rom_file:
        _sub(element, "rom", file=device.rom_file)
    elif not device.rombar:
        _sub(element, "rom", bar="off")
    guest = {
        "type": "pci",
        "domain": "0x0000",
        "bus": _hex(bus, 2),
        "slot": _hex(slot, 2),
        "function": _hex(function, 1),
    }
    if multifunction:
        guest["multifunction"] = "on"
    _sub(element, "address", **guest)
    return element


def _hostdevs(spec: VmSpec, devices: ET.Element, overrides: list[str], notes: dict[str, str]) -> None:
    slots = guest_slots(spec)
    for slot in slots:
        if spec.uses_pcie:
            index = slot.index + 1
            root_port(devices, index, chassis=index, port=FIRST_SLOT + slot.index)
            bus, guest_slot = index, 0
        else:
            bus, guest_slot = 0, FIRST_SLOT + slot.index
        for device, guest_function in slot.functions:
            alias = None
            if device.x_vga and spec.firmware == "seabios":
                alias = f"ua-hostdev{len(overrides)}"
                overrides.append(alias)
            hostdev(
                devices,
                device,
                bus=bus,
                slot=guest_slot,
                function=guest_function,
                multifunction=slot.multifunction and guest_function == 0,
                alias=alias,
            )
    notes["<hostdev managed='yes'>"] = (
        "libvirt detaches the function from its host driver when the VM starts and gives it back after; "
        "<source><address> is the function on this host, the second <address> its place in the guest."
    )
    if spec.uses_pcie:
        notes["pcie-root-port"] = "One PCIe root port per passed device, so each sits on its own PCIe link."
    if any(slot.multifunction for slot in slots):
        notes["multifunction='on'"] = (
            "The functions of one card share one guest slot with their function numbers, as on the real card."
        )
    if any(device.rom_file for device in spec.devices):
        notes["<rom file>"] = "The option ROM the guest runs instead of the card's own (a dumped or patched ROM)."
    if any(not device.rombar for device in spec.devices):
        notes["<rom bar='off'/>"] = "Hides the device's ROM BAR from the guest; some cards hang when it is read."


def _x_vga_override(root: ET.Element, aliases: list[str]) -> None:
    override = ET.SubElement(root, f"{{{QEMU_NS}}}override")
    for alias in aliases:
        device = ET.SubElement(override, f"{{{QEMU_NS}}}device", {"alias": alias})
        frontend = ET.SubElement(device, f"{{{QEMU_NS}}}frontend")
        ET.SubElement(frontend, f"{{{QEMU_NS}}}property", {"name": "x-vga", "type": "bool", "value": "true"})


def _comment(lines: list[str]) -> str:
    body = "\n".join(xml_comment_text(line) for line in lines)
    return f"<!--\n{body}\n-->"


def generate(inventory: Inventory, spec: VmSpec, requirements: list[HostRequirement]) -> GeneratedConfig:
    root, notes = domain(spec, inventory)
    ET.indent(root, space="  ")
    warning = warning_lines(spec)
    header = [
        f"{spec.name}: libvirt domain with PCI passthrough, generated by Passthrough Wizard.",
        f"Define it with: virsh define {spec.name}.xml   (then add a disk with virt-manager or virsh edit)",
        "",
        "Devices passed:",
        *(f"  {line}" for line in device_summary(inventory, spec)),
        "",
        *(warning + [""] if warning else []),
        *comment_block(requirements, inventory.root),
    ]
    body = ET.tostring(root, encoding="unicode")
    text = _comment(header) + "\n" + body + "\n"
    return GeneratedConfig(
        target="libvirt",
        text=text,
        filename=f"{spec.name}.xml",
        media_type="application/xml",
        notes=notes,
        host_requirements=requirements,
    )
