"""Releasing a boot GPU from the host's console and firmware framebuffer, and giving it back.

While efifb/simpledrm (or vesafb) keeps the boot GPU's memory mapped, vfio-pci cannot
claim it ("BAR 0: can't reserve") and the guest shows nothing; while fbcon is bound to a
native driver's framebuffer, unbinding that driver can hang. So the framebuffer console
is unbound (``vtconN/bind`` = 0) and the platform framebuffer driver lets go of its device
before the bind, and both are put back on rollback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from passthrough.host import HostTree
from passthrough.hostcritical import framebuffer_consoles_on
from passthrough.inventory import PciFunction
from passthrough.ops.result import Recorder

PLATFORM = "sys/devices/platform/"


@dataclass(frozen=True)
class ConsoleHolder:
    kind: str  # "vtconsole" or "framebuffer"
    name: str  # vtcon1, efi-framebuffer.0
    driver: str | None = None  # the platform driver holding a framebuffer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _firmware_framebuffers(tree: HostTree) -> list[str]:
    """Platform framebuffer devices (efi-framebuffer.0, simple-framebuffer.0) with a framebuffer or DRM card."""
    devices = []
    for class_dir in ("graphics", "drm"):
        for entry in sorted(tree.listdir(f"sys/class/{class_dir}")):
            if not tree.exists(f"sys/class/{class_dir}/{entry}/device"):
                continue
            device = tree.realpath(f"sys/class/{class_dir}/{entry}/device")
            if device.startswith(PLATFORM):
                devices.append(device[len(PLATFORM) :].split("/", 1)[0])
    return list(dict.fromkeys(devices))


def holders_of(tree: HostTree, function: PciFunction) -> tuple[list[ConsoleHolder], list[str]]:
    """What holds ``function`` for the host's console, and warnings about what cannot be released.

    A framebuffer console holds the function fbcon draws it on (see
    :func:`passthrough.hostcritical.framebuffer_consoles_on`); the VGA text console and the
    firmware framebuffers hold only the boot VGA device.
    """
    holders = [ConsoleHolder("vtconsole", vtcon) for vtcon in framebuffer_consoles_on(tree, function.address)]
    warnings = []
    if function.boot_vga:
        for vtcon in sorted(tree.listdir("sys/class/vtconsole")):
            name = tree.read(f"sys/class/vtconsole/{vtcon}/name") or ""
            if "VGA" in name and tree.read(f"sys/class/vtconsole/{vtcon}/bind") == "1":
                warnings.append(
                    f"The VGA text console ({vtcon}) stays on {function.address}; it cannot be unbound at run time. "
                    "Boot with video=vesafb:off,efifb:off or switch the firmware's primary display to free it."
                )
        for device in _firmware_framebuffers(tree):
            driver = tree.link_name(f"{PLATFORM}{device}/driver")
            if driver is not None:
                holders.append(ConsoleHolder("framebuffer", device, driver))
    return holders, warnings


def release(tree: HostTree, recorder: Recorder, holders: list[ConsoleHolder], done: list[ConsoleHolder]) -> None:
    """Unbind the console first, then the framebuffer under it; ``done`` collects what was released."""
    for holder in sorted(holders, key=lambda item: item.kind != "vtconsole"):
        if holder.kind == "vtconsole":
            with recorder.step("release_console", holder.name, "unbind the framebuffer console"):
                tree.write(f"sys/class/vtconsole/{holder.name}/bind", "0")
        else:
            with recorder.step("release_console", holder.name, f"unbind {holder.driver}"):
                tree.write(f"sys/bus/platform/drivers/{holder.driver}/unbind", holder.name)
        done.append(holder)


def give_back(tree: HostTree, recorder: Recorder, released: list[ConsoleHolder]) -> None:
    for holder in reversed(released):
        if holder.kind == "framebuffer":
            with recorder.step("restore_console", holder.name, f"bind {holder.driver} again"):
                tree.write(f"sys/bus/platform/drivers/{holder.driver}/bind", holder.name)
        else:
            with recorder.step("restore_console", holder.name, "bind the framebuffer console again"):
                tree.write(f"sys/class/vtconsole/{holder.name}/bind", "1")


def console_state(tree: HostTree, holders: list[ConsoleHolder]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for holder in holders:
        if holder.kind == "vtconsole":
            state[holder.name] = tree.read(f"sys/class/vtconsole/{holder.name}/bind")
        else:
            state[holder.name] = tree.link_name(f"{PLATFORM}{holder.name}/driver")
    return state
