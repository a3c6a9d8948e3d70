"""Releasing a boot GPU from the host's console and firmware framebuffer, and giving it back.

While efifb/simpledrm (or vesafb) keeps the boot GPU's memory mapped, vfio-pci cannot
claim it ("BAR 0: can't reserve") and the guest shows nothing; while fbcon is bound to a
native driver's framebuffer, unbinding that driver can hang. So the framebuffer console
is unbound (``vtconN/bind`` = 0) and the platform framebuffer driver lets go of its device
before the bind, and both are put back on rollback.

Giving the GPU back gives the console back too: the bind's states before and after say
what it released (:func:`released_by`), the give-back job carries that as
``{name: platform driver, or None for a vtconsole}`` (:func:`parse_released`), and
restore_driver binds each one again and checks it reads back bound.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from passthrough.host import HostTree
from passthrough.ops.errors import InvalidRequest, VerificationFailed
from passthrough.ops.result import Recorder
from passthrough.pci.console import PLATFORM, read_console
from passthrough.pci.model import PciFunction

# What a give-back may bind again: vtconsoles, and firmware framebuffers to their own drivers.
_VTCONSOLE = re.compile(r"vtcon[0-9]{1,3}")
_FIRMWARE_DEVICE = re.compile(r"(efi|vesa|simple)-framebuffer\.[0-9]{1,3}")
FRAMEBUFFER_DRIVERS = ("efi-framebuffer", "vesa-framebuffer", "simple-framebuffer", "simpledrm")


@dataclass(frozen=True)
class ConsoleHolder:
    kind: str  # "vtconsole" or "framebuffer"
    name: str  # vtcon1, efi-framebuffer.0
    driver: str | None = None  # the platform driver holding a framebuffer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def holders_of(tree: HostTree, function: PciFunction) -> tuple[list[ConsoleHolder], list[str]]:
    """What holds ``function`` for the host's console, and warnings about what cannot be released.

    Read by :func:`passthrough.pci.console.read_console`, the reader the host-critical
    verdict uses too: a framebuffer console holds the function fbcon draws it on; the VGA
    text console and the firmware framebuffers hold only the boot VGA device.
    """
    on = read_console(tree, function.address)
    holders = [ConsoleHolder("vtconsole", vtcon) for vtcon in on.fbcon]
    warnings = []
    if function.boot_vga:
        for vtcon in on.vga_text:
            warnings.append(
                f"The VGA text console ({vtcon}) stays on {function.address}; it cannot be unbound at run time. "
                "Boot with video=vesafb:off,efifb:off or switch the firmware's primary display to free it."
            )
        holders += [ConsoleHolder("framebuffer", device, driver) for device, driver in on.firmware_devices]
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


def give_back(
    tree: HostTree, recorder: Recorder, released: list[ConsoleHolder], done: list[ConsoleHolder] | None = None
) -> None:
    """Bind again what :func:`release` released, in reverse: the framebuffer, then the console on it."""
    for holder in reversed(released):
        if holder.kind == "framebuffer":
            with recorder.step("restore_console", holder.name, f"bind {holder.driver} again"):
                tree.write(f"sys/bus/platform/drivers/{holder.driver}/bind", holder.name)
        else:
            with recorder.step("restore_console", holder.name, "bind the framebuffer console again"):
                tree.write(f"sys/class/vtconsole/{holder.name}/bind", "1")
        if done is not None:
            done.append(holder)


def verify_given_back(tree: HostTree, recorder: Recorder, holders: list[ConsoleHolder]) -> None:
    """Each console reads bound again (``vtconN/bind`` = 1), each framebuffer is on its driver."""
    with recorder.step("verify_console", ", ".join(holder.name for holder in holders)) as step:
        for holder in holders:
            if holder.kind == "vtconsole":
                got = tree.read(f"sys/class/vtconsole/{holder.name}/bind")
                if got != "1":
                    raise VerificationFailed(
                        f"The host's console {holder.name} is not back: its bind reads {got or 'nothing'}, not 1.",
                        path=tree.path(f"sys/class/vtconsole/{holder.name}/bind"),
                        hint=f"As root: echo 1 > /sys/class/vtconsole/{holder.name}/bind",
                    )
            elif tree.link_name(f"{PLATFORM}{holder.name}/driver") != holder.driver:
                raise VerificationFailed(
                    f"The firmware framebuffer {holder.name} is not back on {holder.driver}.",
                    path=tree.path(f"{PLATFORM}{holder.name}/driver"),
                )
        step.detail = "the host's console is back: " + ", ".join(holder.name for holder in holders)


def released_by(state_before: Any, state_after: Any) -> dict[str, str | None]:
    """What a bind released, from its states: ``{vtconN: None, framebuffer device: its driver}``."""
    before = (state_before or {}).get("console") if isinstance(state_before, dict) else None
    after = (state_after or {}).get("console") if isinstance(state_after, dict) else None
    if not isinstance(before, dict) or not isinstance(after, dict):
        return {}
    released: dict[str, str | None] = {}
    for name, was in before.items():
        if _VTCONSOLE.fullmatch(name) and was == "1" and after.get(name) == "0":
            released[name] = None
        elif isinstance(was, str) and was in FRAMEBUFFER_DRIVERS and name in after and after[name] is None:
            released[name] = was
    return released


def parse_released(value: Any) -> list[ConsoleHolder]:
    """The consoles a bind released, as a give-back job carries them; refuses anything else."""
    if value is None:
        return []
    if not isinstance(value, dict) or len(value) > 16:
        raise InvalidRequest("released_console must map at most 16 vtconsoles and framebuffers to their drivers.")
    holders = []
    for name, driver in value.items():
        if isinstance(name, str) and _VTCONSOLE.fullmatch(name) and driver is None:
            holders.append(ConsoleHolder("vtconsole", name))
        elif isinstance(name, str) and _FIRMWARE_DEVICE.fullmatch(name) and driver in FRAMEBUFFER_DRIVERS:
            holders.append(ConsoleHolder("framebuffer", name, driver))
        else:
            raise InvalidRequest(
                f"released_console names {name!r} with {driver!r}: only a vtconsole (with null) or a firmware "
                f"framebuffer with one of {', '.join(FRAMEBUFFER_DRIVERS)} can be given back."
            )
    # In the order release() takes them, so give_back() binds the framebuffer before its console.
    return sorted(holders, key=lambda holder: holder.kind != "vtconsole")


def still_released(tree: HostTree, holders: list[ConsoleHolder]) -> tuple[list[ConsoleHolder], list[str]]:
    """Those of ``holders`` not bound again yet, and notes on those that can no longer be."""
    todo, notes = [], []
    for holder in holders:
        if holder.kind == "vtconsole":
            if not tree.exists(f"sys/class/vtconsole/{holder.name}/bind"):
                notes.append(f"{holder.name} is gone, so there is no console to bind again.")
            elif tree.read(f"sys/class/vtconsole/{holder.name}/bind") != "1":
                todo.append(holder)
        elif not tree.is_dir(f"{PLATFORM}{holder.name}"):
            # A native driver that takes the GPU removes the firmware framebuffer for good.
            notes.append(f"The firmware framebuffer {holder.name} is gone (a native driver replaces it).")
        elif tree.link_name(f"{PLATFORM}{holder.name}/driver") is None:
            todo.append(holder)
    return todo, notes


def console_state(tree: HostTree, holders: list[ConsoleHolder]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for holder in holders:
        if holder.kind == "vtconsole":
            state[holder.name] = tree.read(f"sys/class/vtconsole/{holder.name}/bind")
        else:
            state[holder.name] = tree.link_name(f"{PLATFORM}{holder.name}/driver")
    return state
