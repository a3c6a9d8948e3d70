"""Helpers for the configgen tests: host trees from real IOMMU listings, and parsers for what peers produce
(QEMU command lines are in tests/qemu_argv_support.py).

The parsers read the other side of each comparison (a QEMU argv from Proxmox or libvirt, a
domain XML someone ran, a Proxmox hostpci line) into plain values, so a test compares
host addresses, guest slots and options rather than text.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.address import PciAddress

PEERS = Path(__file__).parent / "data" / "peers"

# --------------------------------------------------------------------------------------
# Host trees from "IOMMU Group N bb:dd.f Class [cccc]: Name [vvvv:dddd]" listings.
_LINE = re.compile(
    r"^(?:IOMMU [Gg]roup (?P<group>\d+):?\s+)?\s*(?P<address>(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) "
    r".*?\[(?P<class>[0-9a-f]{4})\]: "
)
_GROUP_HEADER = re.compile(r"^IOMMU Group (\d+):$")
_IDS = re.compile(r"\[([0-9a-f]{4}):([0-9a-f]{4})\]")

DRIVERS = {"0300": "amdgpu", "0403": "snd_hda_intel", "0604": "pcieport", "0108": "nvme", "0200": "igb"}


def parse_listing(text: str) -> list[tuple[int, str, str, str, str]]:
    """(group, address, class, vendor, device) for every function line of a group listing."""
    rows = []
    group: int | None = None
    for line in text.splitlines():
        header = _GROUP_HEADER.match(line.strip())
        if header:
            group = int(header.group(1))
            continue
        match = _LINE.match(line.strip() if line.startswith("\t") else line)
        if not match:
            continue
        ids = _IDS.findall(line)
        if not ids:
            continue
        number = int(match.group("group")) if match.group("group") else group
        if number is None:
            continue
        vendor, device = ids[-1]
        rows.append((number, match.group("address"), match.group("class"), vendor, device))
    return rows


@dataclass
class Machine:
    """A real machine's IOMMU listing plus the bus topology we give it (the listings do not show it)."""

    name: str
    listing: str  # under PEERS
    parents: dict[int, str]  # secondary bus -> the bridge above it
    drivers: dict[str, str] = field(default_factory=dict)  # address -> driver, beside the class defaults
    only_first_listing: bool = False  # the file holds more than one listing; read up to the next prompt

    def host_spec(self) -> HostSpec:
        text = (PEERS / self.listing).read_text()
        if self.only_first_listing:
            text = text.split("$ lspci", 1)[0]
        functions = []
        for group, address, class_code, vendor, device in parse_listing(text):
            bus = PciAddress.parse(address).bus
            full = str(PciAddress.parse(address))
            functions.append(
                FunctionSpec(
                    full,
                    vendor,
                    device,
                    class_code + ("30" if class_code == "0c03" else "00"),
                    driver=self.drivers.get(full, DRIVERS.get(class_code)),
                    iommu_group=group,
                    parent=self.parents.get(bus),
                    boot_vga=False if class_code.startswith("03") else None,
                )
            )
        return HostSpec(functions=functions, iommu="amd" if "1022" in text else "intel")


MACHINES = {
    "joe-p-x570": Machine(
        "joe-p-x570",
        "joe-p-vfio-headless/extracted/README.block2.txt",
        {
            0x01: "00:01.1",
            0x02: "00:01.2",
            0x03: "02:00.0",
            0x04: "03:01.0",
            0x05: "03:02.0",
            0x06: "03:03.0",
            0x07: "03:04.0",
            0x08: "03:08.0",
            0x09: "03:09.0",
            0x0A: "03:0a.0",
            0x0B: "00:03.1",
            0x0C: "00:03.2",
            0x0D: "00:07.1",
            0x0E: "00:08.1",
            0x0F: "00:08.2",
            0x10: "00:08.3",
        },
        {"0000:0b:00.0": "nvidia", "0000:0c:00.0": "nouveau"},
    ),
    "schplorg-t480": Machine(
        "schplorg-t480",
        "schplorg-vfio-t480/extracted/README.block5.txt",
        {
            0x03: "00:1c.0",
            0x04: "00:1d.0",
            0x05: "04:00.0",
            0x06: "05:00.0",
            0x07: "05:01.0",
            0x08: "07:00.0",
            0x09: "08:01.0",
            0x0A: "08:04.0",
        },
        {"0000:09:00.0": "vfio-pci", "0000:09:00.1": "vfio-pci", "0000:0a:00.0": "vfio-pci", "0000:00:02.0": "i915"},
    ),
    "sirspudd-x399": Machine(
        "sirspudd-x399",
        "sirspudd-threadripper-1950x/extracted/post.block4.txt",
        {
            0x01: "00:01.1",
            0x02: "01:00.2",
            0x03: "02:00.0",
            0x04: "02:01.0",
            0x05: "02:02.0",
            0x06: "02:03.0",
            0x07: "02:04.0",
            0x08: "02:09.0",
            0x09: "00:01.2",
            0x0A: "00:01.3",
            0x0B: "00:03.1",
            0x0C: "0b:00.0",
            0x0D: "0c:00.0",
            0x0E: "00:07.1",
            0x0F: "00:08.1",
            0x41: "40:01.1",
            0x42: "40:01.2",
            0x43: "40:03.1",
            0x44: "40:01.3",
            0x45: "40:07.1",
            0x46: "40:08.1",
        },
    ),
    "ashtonian-alder-lake": Machine(
        "ashtonian-alder-lake",
        "ashtonian-kvm-aio/output.sh.txt",
        {
            0x01: "00:01.0",
            0x02: "01:00.0",
            0x03: "02:00.0",
            0x04: "00:01.1",
            0x05: "00:06.0",
            0x06: "00:1a.0",
            0x08: "00:1c.2",
            0x09: "00:1c.3",
            0x0A: "00:1c.4",
            0x0B: "00:1d.0",
            0x0C: "0b:00.0",
            0x0D: "0c:00.0",
            0x41: "0c:03.0",
        },
        {"0000:00:02.0": "i915"},
        only_first_listing=True,
    ),
    "mapmanagement-b550": Machine(
        "mapmanagement-b550",
        "mapmanagement-gpu-passthrough/extracted/passthrough__pop_os__first_try.block3.txt",
        {
            0x01: "00:01.1",
            0x02: "00:01.2",
            0x03: "02:00.2",
            0x04: "03:00.0",
            0x05: "03:08.0",
            0x06: "00:03.1",
            0x07: "06:00.0",
            0x08: "07:00.0",
            0x09: "00:07.1",
            0x0A: "00:08.1",
        },
        {"0000:08:00.0": "vfio-pci", "0000:08:00.1": "vfio-pci"},
    ),
    "asokolsky-duo": Machine(
        "asokolsky-duo",
        "asokolsky-homelab/extracted/duo__iommu.block1.txt",
        {0x01: "00:01.0", 0x02: "00:1c.0", 0x03: "00:1c.5", 0x04: "00:1c.6", 0x05: "00:1d.0"},
        {"0000:01:00.0": "vfio-pci", "0000:01:00.1": "vfio-pci", "0000:00:02.0": "i915"},
    ),
}


# --------------------------------------------------------------------------------------
# libvirt domain XML.
def _number(text: str) -> int:
    # libvirt reads 0x-prefixed values as hex and bare values as decimal (bus='32' is 0x20).
    return int(text, 16) if text.lower().startswith("0x") else int(text)


@dataclass(frozen=True)
class Hostdev:
    source: str  # full host address
    guest: tuple[int, int, int, int] | None  # domain, bus, slot, function
    multifunction: bool
    rom_file: str | None
    rom_bar: str | None


def hostdevs(xml_text: str) -> list[Hostdev]:
    """PCI ``<hostdev>`` and ``<interface type='hostdev'>`` entries of a domain."""
    root = ET.fromstring(xml_text)
    found = []
    for element in root.iter():
        if element.tag not in ("hostdev", "interface") or element.get("type") not in ("pci", "hostdev"):
            continue
        source = element.find("source/address")
        if source is None:
            continue
        host = PciAddress(*(_number(source.get(key, "0")) for key in ("domain", "bus", "slot", "function")))
        guest_element = element.find("address")
        guest = None
        if guest_element is not None and guest_element.get("type") == "pci":
            guest = tuple(_number(guest_element.get(key, "0")) for key in ("domain", "bus", "slot", "function"))
        rom = element.find("rom")
        found.append(
            Hostdev(
                source=str(host),
                guest=guest,  # type: ignore[arg-type]
                multifunction=guest_element is not None and guest_element.get("multifunction") == "on",
                rom_file=rom.get("file") if rom is not None else None,
                rom_bar=rom.get("bar") if rom is not None else None,
            )
        )
    return found


def hostdev_partition(devices: list[Hostdev]) -> set[frozenset[str]]:
    slots: dict[tuple[int, int, int], set[str]] = {}
    for device in devices:
        key = device.guest[:3] if device.guest else ("auto", device.source)  # type: ignore[assignment]
        slots.setdefault(key, set()).add(device.source)
    return {frozenset(hosts) for hosts in slots.values()}


def virt_xml_validate(path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate needs Debian's libvirt-clients and libxml2-utils")
    return subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, timeout=60, check=False
    )


# --------------------------------------------------------------------------------------
# Proxmox VE property strings.
def hostpci_entries(conf: str) -> dict[str, dict[str, str]]:
    """``{"hostpci0": {"host": "01:00", "pcie": "1"}}`` from a VM config (the default key is ``host``)."""
    entries = {}
    for line in conf.splitlines():
        match = re.match(r"^(hostpci\d+):\s*(.+)$", line)
        if not match:
            continue
        options = {}
        for part in match.group(2).split(","):
            key, sep, value = part.partition("=")
            if sep:
                options[key] = value
            else:
                options["host"] = key
        entries[match.group(1)] = options
    return entries


def conf_value(conf: str, key: str) -> str | None:
    for line in conf.splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    return None


# --------------------------------------------------------------------------------------
# A small desktop: iGPU for the host, a GTX 1080 Ti with its HDMI audio behind root port 00:01.0.
def desktop(
    *,
    gpu_driver: str | None = "vfio-pci",
    audio_driver: str | None = "vfio-pci",
    iommu: bool = True,
    gpu_class: str = "030000",
) -> HostSpec:
    def group(number: int) -> int | None:
        return number if iommu else None

    functions = [
        FunctionSpec("00:00.0", "8086", "3ec2", "060000", iommu_group=group(1)),
        FunctionSpec("00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=group(2)),
        FunctionSpec(
            "01:00.0",
            "10de",
            "1b06",
            gpu_class,
            driver=gpu_driver,
            iommu_group=group(2),
            parent="00:01.0",
            boot_vga=False,
        ),
        FunctionSpec("01:00.1", "10de", "10ef", "040300", driver=audio_driver, iommu_group=group(2), parent="00:01.0"),
        FunctionSpec("00:02.0", "8086", "3e92", "030000", driver="i915", iommu_group=group(0), boot_vga=True),
        FunctionSpec("00:14.0", "8086", "a2af", "0c0330", driver="xhci_hcd", iommu_group=group(3)),
        FunctionSpec("00:17.0", "8086", "a282", "010601", driver="ahci", iommu_group=group(4)),
        FunctionSpec("00:1c.0", "8086", "a290", "060400", driver="pcieport", iommu_group=group(6)),
        FunctionSpec("03:00.0", "8086", "1539", "020000", driver="igb", iommu_group=group(7), parent="00:1c.0"),
        FunctionSpec("00:1f.0", "8086", "a2c9", "060100", iommu_group=group(5)),
        FunctionSpec("00:1f.4", "8086", "a2a3", "0c0500", driver="i801_smbus", iommu_group=group(5)),
    ]
    return HostSpec(functions=functions, iommu="intel" if iommu else None)


def desktop_with_quad_nic(**options: object) -> HostSpec:
    """The desktop plus an I350 quad-port NIC whose four functions each have their own group (ACS)."""
    spec = desktop(**options)  # type: ignore[arg-type]
    spec.functions.append(FunctionSpec("00:1c.4", "8086", "a294", "060400", driver="pcieport", iommu_group=8))
    for function in range(4):
        spec.functions.append(
            FunctionSpec(
                f"04:00.{function}", "8086", "1521", "020000", driver="igb", iommu_group=10 + function, parent="00:1c.4"
            )
        )
    return spec
