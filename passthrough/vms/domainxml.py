"""libvirt's domain XML as text: read what a domain holds, and change it where libvirt writes devices.

:func:`parse_domain` reads the machine, the PCI controllers, the guest slots in use (and
what sits on each bus, in words) and the host functions (``<hostdev type='pci'>`` and
``<interface type='hostdev'>``) of a domain. :func:`insert_devices`,
:func:`remove_hostdevs` and :func:`remove_controllers` change the text line by line, only
where libvirt itself puts such elements (a new controller after the last PCI controller,
hostdevs before the memballoon and what follows it), so a diff of before and after shows
the devices and nothing else; :func:`render` writes an element as libvirt does. A guest
address here is libvirt's: its bus is the ``index`` of the controller the device sits on
(``pcie-root`` and ``pci-root`` are 0), not the number the guest's firmware gives that bus.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.parsers import expat

from passthrough.pci.address import PciAddress
from passthrough.vms.model import VmError

ROOT_PORT = "pcie-root-port"
HOTPLUG_BRIDGE = "pci-bridge"
LAST_SLOT = 0x1F
MAX_INDEX = 255  # libvirt numbers PCI controllers (and so buses) up to 255
# Devices libvirt writes after the hostdevs inside <devices> (virDomainDefFormatInternal's order).
AFTER_HOSTDEVS = ("redirdev", "redirfilter", "hub", "watchdog", "memballoon", "rng", "nvram", "panic", "shmem",
                  "memory", "iommu", "vsock", "crypto")  # fmt: skip


@dataclass(frozen=True)
class Hostdev:
    """A host PCI function in a domain: a ``<hostdev type='pci'>``, or an ``<interface type='hostdev'>``."""

    host: str  # dddd:bb:ss.f on the host
    guest: str | None  # dddd:bb:ss.f in libvirt's numbering (bus = controller index)
    alias: str | None
    managed: bool
    multifunction: bool = False
    interface: bool = False  # a NIC function given as a network device (virsh detach-interface takes it out)


@dataclass(frozen=True)
class PciController:
    index: int
    model: str
    chassis: int | None = None
    port: int | None = None
    hotplug: bool = True  # <target hotplug='off'/> turns it off
    alias: str | None = None


@dataclass
class Domain:
    name: str
    uuid: str | None
    machine: str | None
    hostdevs: list[Hostdev] = field(default_factory=list)
    controllers: list[PciController] = field(default_factory=list)
    occupied: set[tuple[int, int]] = field(default_factory=set)  # (bus, slot) of every device with a PCI address
    occupants: dict[int, list[str]] = field(default_factory=dict)  # bus -> what sits on it, in words

    @property
    def q35(self) -> bool:
        return "q35" in (self.machine or "")

    @property
    def i440fx(self) -> bool:
        machine = self.machine or ""
        return "i440fx" in machine or machine == "pc" or (machine.startswith("pc-") and "q35" not in machine)

    def hostdev(self, address: str) -> Hostdev | None:
        return next((device for device in self.hostdevs if device.host == address), None)

    def free_ports(self) -> list[PciController]:
        """Root ports (q35) or hot-plug bridges (i440fx) with hotplug on and room for one more device."""
        buses = {bus for bus, _ in self.occupied}
        if self.q35:
            return [c for c in self.controllers if c.model == ROOT_PORT and c.hotplug and c.index not in buses]
        return [c for c in self.controllers if c.model == HOTPLUG_BRIDGE and c.hotplug and self.bridge_slots(c)]

    def controller(self, index: int) -> PciController | None:
        return next((c for c in self.controllers if c.index == index), None)

    def empty_root_ports(self) -> list[PciController]:
        """Root ports (q35) that no device's PCI address points at, lowest index first, hotplug on or off."""
        buses = {bus for bus, _ in self.occupied}
        ports = [c for c in self.controllers if c.model == ROOT_PORT and c.index not in buses] if self.q35 else []
        return sorted(ports, key=lambda port: port.index)

    def bridge_slots(self, bridge: PciController) -> list[int]:
        # Slot 0 of a pci-bridge is its SHPC's; libvirt never puts a device there.
        return [slot for slot in range(1, LAST_SLOT + 1) if (bridge.index, slot) not in self.occupied]


def _number(text: str | None, what: str) -> int:
    """A number as libvirt reads it (strtol base 0): 0x.. hex, 0.. octal, else decimal."""
    value = (text or "").strip().lower()
    try:
        if value.startswith("0x"):
            return int(value[2:], 16)
        return int(value[1:], 8) if value.startswith("0") and len(value) > 1 else int(value, 10)
    except ValueError:
        raise VmError(f"The domain XML has {what} {text!r}, which is not a number.") from None


def _address(element: ET.Element | None) -> str | None:
    if element is None or element.get("bus") is None:
        return None
    numbers = [_number(element.get(name, "0"), f"a PCI {name}") for name in ("domain", "bus", "slot", "function")]
    if numbers[2] > LAST_SLOT or numbers[3] > 7:
        raise VmError(f"The domain XML has a PCI address with slot {numbers[2]} function {numbers[3]}.")
    return str(PciAddress(*numbers))


def _root(text: str) -> ET.Element:
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise VmError("A domain XML with a DOCTYPE or entities is not read (libvirt never writes one).")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise VmError(f"The domain XML cannot be read: {error}.") from None
    if root.tag != "domain" or root.find("devices") is None:
        raise VmError("This XML is not a libvirt domain with a <devices> element.")
    return root


def _controller(element: ET.Element) -> PciController:
    target = element.find("target")
    attributes = target.attrib if target is not None else {}
    chassis, port = attributes.get("chassis"), attributes.get("port")
    return PciController(
        index=_number(element.get("index"), "a controller index"),
        model=element.get("model", ""),
        chassis=None if chassis is None else _number(chassis, "a chassis"),
        port=None if port is None else _number(port, "a port"),
        hotplug=attributes.get("hotplug") != "off",
        alias=_alias(element),
    )


def _alias(element: ET.Element) -> str | None:
    alias = element.find("alias")
    return alias.get("name") if alias is not None else None


def parse_domain(text: str) -> Domain:
    """The machine, PCI controllers, occupied guest slots and host functions of a domain XML."""
    root = _root(text)
    os_type = root.find("os/type")
    domain = Domain(
        name=(root.findtext("name") or "").strip(),
        uuid=(root.findtext("uuid") or "").strip() or None,
        machine=os_type.get("machine") if os_type is not None else None,
    )
    devices = root.find("devices")
    assert devices is not None  # _root checked it
    for device in devices:
        guest = device.find("address")
        if guest is not None and guest.get("type") == "pci":
            parsed = PciAddress.parse(str(_address(guest)))
            domain.occupied.add((parsed.bus, parsed.slot))
            domain.occupants.setdefault(parsed.bus, []).append(_what(device))
        if device.tag == "controller" and device.get("type") == "pci":
            domain.controllers.append(_controller(device))
        source = device.find("source/address")
        pci_hostdev = device.tag == "hostdev" and device.get("mode", "subsystem") == "subsystem"
        if (pci_hostdev and device.get("type") == "pci") or (
            device.tag == "interface" and device.get("type") == "hostdev"
        ):
            host = _address(source)
            if host is None or (device.tag == "interface" and source is not None and source.get("type") != "pci"):
                continue  # a USB or SCSI hostdev interface, or one without a source: no PCI function
            domain.hostdevs.append(Hostdev(
                host=host,
                guest=_address(guest) if guest is not None and guest.get("type") == "pci" else None,
                alias=_alias(device),
                managed=device.get("managed") == "yes",
                multifunction=guest is not None and guest.get("multifunction") == "on",
                interface=device.tag == "interface",
            ))  # fmt: skip
    return domain


def hostdev_words(address: str) -> str:
    return f"hostdev {address}"


def _what(device: ET.Element) -> str:
    """A device in a few words, to say what sits on a bus: 'hostdev 0000:03:00.0', 'disk vda', 'rng (virtio)'."""
    if device.tag == "hostdev" and device.find("source/address") is not None:
        return hostdev_words(_address(device.find("source/address")) or "(no PCI source)")
    if device.tag == "controller":
        return f"{device.get('model') or device.get('type')} controller index {device.get('index')}"
    target, model = device.find("target"), device.find("model")
    if device.tag == "disk" and target is not None and target.get("dev"):
        return f"disk {target.get('dev')}"
    kind = (model.get("type") if model is not None else None) or device.get("model") or device.get("type")
    return f"{device.tag} ({kind})" if kind else device.tag


def render(element: ET.Element, indent: str = "") -> list[str]:
    """``element`` as libvirt writes it: single quotes, two spaces a level, empty elements closed with '/>'."""
    assert not (element.text or "").strip(), "only elements without text are written here"
    attributes = "".join(f" {name}='{_quoted(value)}'" for name, value in element.attrib.items())
    children = list(element)
    if not children:
        return [f"{indent}<{element.tag}{attributes}/>"]
    inner = [line for child in children for line in render(child, indent + "  ")]
    return [f"{indent}<{element.tag}{attributes}>", *inner, f"{indent}</{element.tag}>"]


def _quoted(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;").replace('"', "&quot;")


def device_xml(element: ET.Element) -> str:
    return "\n".join(render(element)) + "\n"


@dataclass(frozen=True)
class _Span:
    tag: str
    attributes: dict[str, str]
    first: int  # 0-based line numbers, inclusive
    last: int


def _spans(text: str) -> tuple[list[_Span], int]:
    """The top-level elements of <devices> with their lines, and the line of </devices>."""
    parser = expat.ParserCreate()
    stack: list[tuple[str, dict[str, str], int]] = []
    spans: list[_Span] = []
    close: list[int] = []

    def start(name: str, attributes: dict[str, str]) -> None:
        stack.append((name, attributes, parser.CurrentLineNumber - 1))

    def end(name: str) -> None:
        tag, attributes, first = stack.pop()
        if len(stack) == 2 and stack[1][0] == "devices":
            spans.append(_Span(tag, attributes, first, parser.CurrentLineNumber - 1))
        elif len(stack) == 1 and tag == "devices":
            close.append(parser.CurrentLineNumber - 1)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(text, True)
    except expat.ExpatError as error:
        raise VmError(f"The domain XML cannot be read: {error}.") from None
    lines = text.splitlines()
    bounds = [(span.first, span.last) for span in spans] + [(close[0], close[0])] if close else []
    if (
        not close
        or lines[close[0]].strip() != "</devices>"
        or any(not lines[span.first].lstrip().startswith(f"<{span.tag}") for span in spans)
        or any(a[1] >= b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    ):
        raise VmError("The domain XML does not hold one device per line range as libvirt writes it, so no diff "
                      "can be made from it.", hint="Read it from libvirt (virsh dumpxml --inactive).")  # fmt: skip
    return spans, close[0]


def insert_devices(text: str, controllers: list[ET.Element], hostdevs: list[ET.Element]) -> str:
    """``text`` with ``controllers`` after its last PCI controller and ``hostdevs`` after its last hostdev."""
    spans, close = _spans(text)
    lines = text.splitlines(keepends=True)
    pci = [s for s in spans if s.tag == "controller" and s.attributes.get("type") == "pci"]
    controllers_at = pci or [s for s in spans if s.tag == "controller"]
    held = [s for s in spans if s.tag == "hostdev"]
    later = [s for s in spans if s.tag in AFTER_HOSTDEVS]
    hostdev_line = held[-1].last + 1 if held else later[0].first if later else close
    controller_line = controllers_at[-1].last + 1 if controllers_at else hostdev_line
    closing = lines[close]
    indent = closing[: len(closing) - len(closing.lstrip())] + "  "
    if spans:
        first = lines[spans[0].first]
        indent = first[: len(first) - len(first.lstrip())]
    new: dict[int, list[str]] = {controller_line: [], hostdev_line: []}
    new[controller_line] += [line + "\n" for element in controllers for line in render(element, indent)]
    new[hostdev_line] += [line + "\n" for element in hostdevs for line in render(element, indent)]
    out: list[str] = []
    for number, line in enumerate(lines):
        out += new.get(number, [])
        out.append(line)
    return "".join(out)


def remove_controllers(text: str, indexes: list[int]) -> str:
    """``text`` without the lines of the PCI controllers whose index is in ``indexes``."""
    lines = text.splitlines(keepends=True)
    drop: set[int] = set()
    for span in _spans(text)[0]:
        pci = span.tag == "controller" and span.attributes.get("type") == "pci"
        if pci and _number(span.attributes.get("index"), "a controller index") in indexes:
            drop.update(range(span.first, span.last + 1))
    return "".join(line for number, line in enumerate(lines) if number not in drop)


def remove_hostdevs(text: str, addresses: list[str]) -> str:
    """``text`` without the lines of the PCI hostdevs whose host function is in ``addresses``."""
    lines = text.splitlines(keepends=True)
    drop: set[int] = set()
    for span in _spans(text)[0]:
        if span.tag == "hostdev" and span.attributes.get("type") == "pci":
            source = _address(ET.fromstring("".join(lines[span.first : span.last + 1])).find("source/address"))
            if source in addresses:
                drop.update(range(span.first, span.last + 1))
    return "".join(line for number, line in enumerate(lines) if number not in drop)
