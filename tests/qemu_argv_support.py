"""QEMU command lines for the configgen tests: argv parsed from scripts, .args files and
Proxmox's cfg2cmd output, and our generated script run against a fake qemu-system-x86_64.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from passthrough.pci.address import PciAddress


@dataclass(frozen=True)
class VfioDevice:
    host: str  # full address
    bus: str
    slot: int
    function: int
    options: dict[str, str]

    @property
    def guest_slot(self) -> tuple[str, int]:
        return (self.bus, self.slot)


def command_argv(text: str) -> list[str]:
    """argv of a shell command written with backslash continuations (Proxmox, libvirt .args, our script)."""
    joined = re.sub(r"\\\n", " ", text)
    return shlex.split(joined, comments=True)


def vfio_devices(
    argv: list[str], driver: str = "vfio-pci", normalize: Callable[[str], str] | None = None
) -> list[VfioDevice]:
    """Every ``-device vfio-pci,...`` (or ``pci-assign``) in argv, parsed; ``normalize`` rewrites host= first."""
    found = []
    for option, value in zip(argv, argv[1:], strict=False):
        if option != "-device" or not value.startswith(driver + ","):
            continue
        parts = value.split(",")[1:]
        options = dict(part.split("=", 1) if "=" in part else (part, "") for part in parts)
        if "host" not in options:
            continue  # an mdev (sysfsdev=) has no host function to compare
        slot_text, _, function_text = options.get("addr", "0").partition(".")
        found.append(
            VfioDevice(
                host=str(PciAddress.parse(normalize(options["host"]) if normalize else options["host"])),
                bus=options.get("bus", ""),
                slot=int(slot_text, 16),
                function=int(function_text, 16) if function_text else 0,
                options=options,
            )
        )
    return found


def guest_slot_partition(devices: list[VfioDevice]) -> set[frozenset[str]]:
    """Which host functions share a guest slot (the multifunction grouping), without the slot names."""
    slots: dict[tuple[str, int], set[str]] = {}
    for device in devices:
        slots.setdefault(device.guest_slot, set()).add(device.host)
    return {frozenset(hosts) for hosts in slots.values()}


def script_argv(script: str) -> list[str]:
    """The QEMU argv of our generated script: everything after ``exec``."""
    return command_argv(script.split("\nexec ", 1)[1])


@dataclass(frozen=True)
class ScriptRun:
    argv: list[str]  # what qemu-system-x86_64 received
    copied: list[str]  # cp's arguments (the OVMF VARS template and the VM's copy), or [] when not run


def run_qemu_script(text: str, workdir: Path, *extra: str) -> ScriptRun:
    """Check a generated QEMU script with ``sh -n`` and ``bash -n``, then run it with fake
    ``qemu-system-x86_64``, ``cp`` and ``mkdir`` first on PATH and ``extra`` as its arguments."""
    script = workdir / "vm.sh"
    script.write_text(text)
    for shell in ("sh", "bash"):
        checked = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{shell} -n: {checked.stderr}"
    fake_bin = workdir / "bin"
    fake_bin.mkdir()
    record, copied = workdir / "argv", workdir / "copied"
    _fake(fake_bin / "qemu-system-x86_64", f'#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done > {record}\n')
    _fake(fake_bin / "cp", f'#!/bin/sh\necho "$@" > {copied}\n')
    _fake(fake_bin / "mkdir", "#!/bin/sh\nexit 0\n")
    result = subprocess.run(
        ["sh", str(script), *extra],
        env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return ScriptRun(
        argv=record.read_bytes().decode().split("\0")[:-1],
        copied=copied.read_text().split() if copied.exists() else [],
    )


def _fake(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
