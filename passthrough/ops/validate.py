"""Checks every operation makes before it writes anything.

Each parser takes what a Celery task or a shell command hands over (JSON primitives, so
anything at all) and returns a clean value or raises a :class:`PassthroughError` subclass
saying what was wrong, what was read and what to do. Nothing here writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from passthrough.errors import InvalidAddress
from passthrough.host import IOMMU_GROUPS, HostTree
from passthrough.ops.errors import (
    DeviceInUse,
    GroupNotViable,
    InvalidCount,
    InvalidDriverName,
    InvalidRequest,
    IommuOff,
    UnknownResetMethod,
)
from passthrough.pci.address import PciAddress
from passthrough.pci.model import Inventory, IommuGroup, PciFunction

# Reset methods the kernel knows (drivers/pci/pci.c, pci_reset_fn_methods), in its priority order.
RESET_METHODS = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")
# Kernel driver names: letters, digits, "_", "-" and "."; never a "/" that would leave sys/bus/pci/drivers.
_DRIVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_CONFIRMATION = 200


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def parse_address(value: Any) -> str:
    """A full ``dddd:bb:ss.f`` address, normalised to lower case."""
    if not isinstance(value, str):
        raise InvalidAddress(
            f"A PCI address must be text, not {type(value).__name__} ({_shown(value)}).",
            hint="Write it as domain:bus:slot.function in hex, for example 0000:01:00.0.",
        )
    if "\x00" in value or len(value) > 64:
        raise InvalidAddress(f"{_shown(value)} is not a PCI address.", hint="For example 0000:01:00.0.")
    return str(PciAddress.parse(value, require_domain=True))


def parse_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false, not {_shown(value)}.")
    return value


def parse_confirm(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_CONFIRMATION:
        raise InvalidRequest(
            f"The confirmation must be text of at most {_MAX_CONFIRMATION} characters, not {_shown(value)}."
        )
    return value.strip()


def parse_count(value: Any, *, name: str = "count") -> int:
    """A non-negative whole number: an int, or decimal digits as the shell hands them over."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value.strip()):
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidCount(f"The {name} must be a whole number, not {_shown(value)}.")
    if value < 0:
        raise InvalidCount(f"The {name} cannot be negative ({value}).")
    return value


def parse_reset_method(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.strip() not in RESET_METHODS:
        raise UnknownResetMethod(
            f"{_shown(value)} is not a reset method the kernel knows.",
            hint=f"Choose one of {', '.join(RESET_METHODS)}, or leave it empty to let the kernel pick.",
        )
    return value.strip()


def parse_driver_name(value: Any) -> str:
    if not isinstance(value, str) or not _DRIVER_NAME.match(value):
        raise InvalidDriverName(
            f"{_shown(value)} is not a kernel driver name.",
            hint="Driver names are letters, digits, '_', '-' and '.', as listed in /sys/bus/pci/drivers.",
        )
    return value


def parse_previous_drivers(value: Any, members: list[str]) -> dict[str, str | None] | None:
    """``{address: driver or None}`` for functions of the group, or None when not given."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"previous_drivers must map addresses to driver names, not {_shown(value)}.")
    parsed: dict[str, str | None] = {}
    for key, driver in value.items():
        address = parse_address(key)
        if address not in members:
            raise InvalidRequest(
                f"previous_drivers names {address}, which is not in this IOMMU group ({', '.join(members)})."
            )
        parsed[address] = None if driver is None else parse_driver_name(driver)
    return parsed


def require_device(inventory: Inventory, address: str) -> PciFunction:
    return inventory.require(address)


def require_group(tree: HostTree, inventory: Inventory, function: PciFunction) -> IommuGroup:
    if not tree.listdir(IOMMU_GROUPS):
        raise IommuOff(
            "The IOMMU is off: the kernel made no IOMMU groups.",
            path=tree.path(IOMMU_GROUPS),
            hint="Enable VT-d (Intel) or AMD-Vi/IOMMU in the firmware setup, add intel_iommu=on on Intel, and reboot.",
        )
    group = inventory.group(function.iommu_group)
    if group is None:
        raise IommuOff(
            f"{function.address} has no IOMMU group, so vfio cannot isolate it.",
            path=tree.path(f"sys/bus/pci/devices/{function.address}/iommu_group"),
            hint="The IOMMU does not cover this device; check the firmware's IOMMU and ACS settings.",
        )
    return group


def require_endpoints(tree: HostTree, group: IommuGroup) -> list[str]:
    """The functions of ``group`` vfio-pci must take; a group of bridges alone has none to pass.

    Whether they may be taken is the interlock's to say (:func:`passthrough.ops.interlock.check_action`).
    """
    if not group.endpoints:
        raise GroupNotViable(
            f"IOMMU group {group.id} cannot be passed through: " + " ".join(group.reasons),
            path=tree.path(f"{IOMMU_GROUPS}/{group.id}/devices"),
            hint="Pick the device behind the bridge instead; its own group is the one to pass.",
        )
    return list(group.endpoints)


def group_openers(tree: HostTree, group: int) -> list[str]:
    """Processes holding the group open (a running VM), as "pid (comm)".

    QEMU opens ``/dev/vfio/<group>``, or with iommufd (Linux 6.6+) each device's
    ``/dev/vfio/devices/vfioN``, named in the function's ``vfio-dev`` directory.
    """
    wanted = {f"/dev/vfio/{group}"}
    for address in tree.listdir(f"{IOMMU_GROUPS}/{group}/devices"):
        wanted |= {f"/dev/vfio/devices/{name}" for name in tree.listdir(f"sys/bus/pci/devices/{address}/vfio-dev")}
    return _openers(tree, lambda target: target in wanted)


def sound_card_openers(tree: HostTree, address: str) -> list[str]:
    """Processes with a file of ``address``'s sound cards open (a sound server, a player), as "pid (comm)".

    Unbinding a sound driver waits in the kernel (snd_card_free, uninterruptibly) until every
    file of the card is closed: a bind would hang until PipeWire or PulseAudio let go.
    Open files are seen; a mapping whose file was closed is not (/proc/PID/maps is not read).
    """
    cards = [name[4:] for name in tree.listdir(f"sys/bus/pci/devices/{address}/sound") if name.startswith("card")]
    if not cards:
        return []
    node = re.compile(rf"/dev/snd/(controlC|hwC|midiC|pcmC)({'|'.join(map(re.escape, cards))})(D|$)")
    return _openers(tree, lambda target: node.match(target) is not None)


def _openers(tree: HostTree, matches: Callable[[str], bool]) -> list[str]:
    found = []
    for pid in tree.listdir("proc"):
        if not pid.isdigit():
            continue
        for fd in tree.listdir(f"proc/{pid}/fd"):
            target = tree.readlink(f"proc/{pid}/fd/{fd}")
            if target is not None and matches(target):
                found.append(f"{pid} ({tree.read(f'proc/{pid}/comm') or '?'})")
                break
    return sorted(found, key=lambda entry: int(entry.split()[0]))


def require_sound_cards_closed(tree: HostTree, addresses: list[str]) -> None:
    """Refuse to unbind a sound function while its card is open: the job would hang in the kernel."""
    for address in addresses:
        openers = sound_card_openers(tree, address)
        if openers:
            raise DeviceInUse(
                f"{address}'s sound card is open by {', '.join(openers)}: the kernel lets its sound driver go "
                "only once every file of the card is closed, so the bind would hang until then.",
                path=tree.path(f"sys/bus/pci/devices/{address}/sound"),
                hint="Stop what plays through it (a desktop's sound server: `systemctl --user stop pipewire "
                "pipewire-pulse wireplumber`, or `pulseaudio --kill`), or turn the card's profile off, then bind again.",
            )


def require_group_not_open(tree: HostTree, group: int | None, *, action: str) -> None:
    if group is None:
        return
    openers = group_openers(tree, group)
    if openers:
        raise DeviceInUse(
            f"IOMMU group {group} is open by {', '.join(openers)}, so {action} would pull the device out from under it.",
            path=tree.path(f"dev/vfio/{group}"),
            hint="Shut the virtual machine down first.",
        )
