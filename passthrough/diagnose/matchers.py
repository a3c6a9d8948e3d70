"""One matcher per finding id: which log lines mean what, and which PCI function they name.

Every pattern here was written against lines users posted (``tests/data/kernel_logs/``,
each file's source in its SOURCES.txt). A line names a function in the kernel's full form
(``vfio-pci 0000:01:00.0: ...``) or, in some messages, the short one (``Request device
[00:02.0]``, ``IO_PAGE_FAULT device=05:00.0``, QEMU's ``host=01:00.0``); both come out as
the full form. Short forms are read only where a message puts them, never from anywhere in
a line: a journal timestamp (``10:03:12.035211``) must not become a device.

``iommu_disabled_firmware`` is also found from the log as a whole (the kernel parsed
``intel_iommu=on`` yet registered no DMAR unit): see :func:`dmar_enabled_without_units`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from passthrough.errors import InvalidAddress
from passthrough.pci.address import PciAddress

FULL = r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
SHORT = r"[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
ANY = rf"(?:{FULL}|{SHORT})"
_FULL_IN_LINE = re.compile(rf"(?<![0-9a-fA-F:]){FULL}(?![0-9a-fA-F])")


@dataclass(frozen=True)
class Match:
    id: str
    device: str | None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Matcher:
    id: str
    severity: str
    patterns: tuple[re.Pattern[str], ...]
    summary: Callable[[str | None, dict[str, str]], str]

    def match(self, text: str) -> Match | None:
        for pattern in self.patterns:
            found = pattern.search(text)
            if found is None:
                continue
            values = {key: value for key, value in found.groupdict().items() if value is not None}
            named = values.pop("dev", None)
            device = canonical(named) if named else first_full_address(text)
            return Match(self.id, device, values)
        return None


def canonical(text: str) -> str | None:
    """``01:00.0`` or ``0000:01:00.0`` -> ``0000:01:00.0``; None for what is not an address."""
    try:
        return str(PciAddress.parse(text.strip()))
    except InvalidAddress:
        return None


def first_full_address(text: str) -> str | None:
    found = _FULL_IN_LINE.search(text)
    return canonical(found.group(0)) if found else None


def _on(device: str | None) -> str:
    return f" on {device}" if device else ""


def _compile(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


MATCHERS: tuple[Matcher, ...] = (
    Matcher(
        "bar_reserve_conflict",
        "error",
        _compile(
            r"BAR (?P<bar>\d+): can't reserve (?P<range>\[[^\]]*\])",
            r"BAR (?P<bar>\d+) (?P<range>\[[^\]]*\]): can't reserve",
        ),
        lambda device, d: (
            f"vfio-pci could not reserve BAR {d.get('bar', '?')} {d.get('range', '')}{_on(device)}: "
            "something on the host still holds that memory."
        ),
    ),
    Matcher(
        "rmrr_ineligible",
        "error",
        _compile(
            r"Device is ineligible for IOMMU domain attach due to platform RMRR requirement",
            r"Firmware has requested this device have a 1:1 IOMMU mapping",
        ),
        lambda device, d: (
            f"The firmware reserves memory for{_on(device) or ' this device'} (an RMRR), "
            "so the IOMMU will not give it to a VM."
        ),
    ),
    Matcher(
        "no_iommu_group",
        "error",
        _compile(
            rf"vfio(?: error:)? (?P<dev>{ANY}): no iommu_group found",
            r"no iommu_group found",
            r"No IOMMU group for device",
        ),
        lambda device, d: f"{device or 'The device'} is in no IOMMU group, so vfio cannot take it.",
    ),
    Matcher(
        "group_not_viable",
        "error",
        _compile(
            rf"vfio(?: error:)? (?P<dev>{ANY}): group (?P<group>\d+) is not viable",
            r"group (?P<group>\d+) is not viable",
            r"VFIO group is not viable",
        ),
        lambda device, d: (
            f"IOMMU group {d.get('group', '?')} is not viable: a function in it is still on a "
            f"host driver, so {device or 'the device'} cannot go to a VM."
        ),
    ),
    Matcher(
        "reset_d3cold",
        "error",
        _compile(
            r"Unable to change power state from D3cold to D0, device inaccessible",
            r"not ready (?P<waited>\d+)ms after (?P<after>[^;]+); giving up",
        ),
        lambda device, d: f"{device or 'A device'} did not come back from a reset or from D3cold (it reads as absent).",
    ),
    Matcher(
        "interrupt_remapping_off",
        "error",
        _compile(r"No interrupt remapping support"),
        lambda device, d: "vfio refused to assign a device: this host has no interrupt remapping.",
    ),
    Matcher(
        "iommu_disabled_firmware",
        "error",
        _compile(r"Your BIOS is broken; DMAR reported at address \S+ returns all ones"),
        lambda device, d: "The firmware's DMAR table is broken, so the kernel runs without the Intel IOMMU.",
    ),
    Matcher(
        "dmar_fault",
        "warning",
        _compile(
            rf"DMAR: ?\[DMA (?P<access>Read|Write)[^\]]*\] Request device \[(?P<dev>{ANY})\]",
            rf"IO_PAGE_FAULT device=(?P<dev>{ANY})",
            r"AMD-Vi: Event logged \[IO_PAGE_FAULT",
        ),
        lambda device, d: (
            f"The IOMMU blocked a DMA {d.get('access', 'access').lower()} by "
            f"{device or 'a device'} to an address it was not given."
        ),
    ),
    Matcher(
        "vfio_probe_failed",
        "error",
        _compile(
            rf"vfio-pci: probe of (?P<dev>{FULL}) failed with error (?P<errno>-?\d+)",
            rf"vfio-pci (?P<dev>{FULL}): probe with driver vfio-pci failed with error (?P<errno>-?\d+)",
        ),
        lambda device, d: f"vfio-pci failed to take {device or 'a device'} (error {d.get('errno', '?')}).",
    ),
    Matcher(
        "acs_override",
        "warning",
        _compile(r"PCIe ACS overrides enabled"),
        lambda device, d: (
            "The ACS override patch is on: the IOMMU groups are split by assumption, not by the hardware's isolation."
        ),
    ),
    Matcher(
        "device_in_use",
        "error",
        _compile(
            rf"vfio (?P<dev>{ANY}): failed to open /dev/vfio/(?P<group>\d+): Device or resource busy",
            rf"PCI device\s+(?P<dev>{FULL}) is in use by driver (?P<holder>[^,]+), domain (?P<domain>\S+)",
            r"vfio.*already in use",
        ),
        lambda device, d: (
            f"{device or 'The device'} is already in use"
            + (f" by {d['holder']} domain {d['domain']}" if "domain" in d else " by another VM or process")
            + "."
        ),
    ),
)

BY_ID = {matcher.id: matcher for matcher in MATCHERS}
# Lines that mention vfio or the IOMMU often; a cheap test before trying every pattern.
_WORTH_MATCHING = re.compile(
    r"BAR|RMRR|1:1 IOMMU|iommu_group|IOMMU group|viable|D3cold|giving up|remapping|DMAR|AMD-Vi|IO_PAGE_FAULT|"
    r"probe|ACS|busy|in use"
)


def match_line(text: str) -> Match | None:
    if not _WORTH_MATCHING.search(text):
        return None
    for matcher in MATCHERS:
        found = matcher.match(text)
        if found is not None:
            return found
    return None


# The whole-log signature of VT-d switched off in the firmware: ``intel_iommu=on`` makes the
# kernel print "DMAR: IOMMU enabled" whatever the firmware says; only a DMAR table gives units.
_DMAR_ENABLED = re.compile(r"DMAR: IOMMU enabled")
_DMAR_UNITS = re.compile(
    r"DMAR: Host address width|DMAR: DRHD base|DMAR: dmar\d|DMAR-IR:|Adding to iommu group|ACPI: DMAR"
)


def dmar_enabled_without_units(lines: Sequence[str]) -> list[str]:
    """The "DMAR: IOMMU enabled" lines of a log in which no DMAR unit or IOMMU group appears."""
    enabled = [line for line in lines if _DMAR_ENABLED.search(line)]
    if not enabled or any(_DMAR_UNITS.search(line) for line in lines):
        return []
    return enabled
