"""What guest-side tests share: the live tree, sysfs reads, the device command, waiting for drivers."""

from __future__ import annotations

import json
import time
from io import StringIO
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError

PCI = Path("/sys/bus/pci/devices")


def driver(address: str) -> str | None:
    link = PCI / address / "driver"
    return link.resolve().name if link.exists() else None


def group(address: str) -> int:
    return int((PCI / address / "iommu_group").resolve().name)


def wait_for_driver(address: str, wanted: str | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while driver(address) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"{address} is on {driver(address)}, not {wanted}, after {timeout} s")
        time.sleep(0.1)


def device(*argv: str) -> dict[str, Any]:
    """``manage.py device ARGV --format json``, in this process: the job summary and result, or the error."""
    out, err = StringIO(), StringIO()
    try:
        call_command("device", *argv, "--format", "json", stdout=out, stderr=err)
    except CommandError as error:
        return {"error": str(error), "stderr": err.getvalue()}
    return json.loads(out.getvalue())


def dmesg_since(mark: int) -> str:
    """What the kernel logged after ``mark`` (a length of /dev/kmsg-free dmesg text from :func:`dmesg_mark`)."""
    return _dmesg()[mark:]


def dmesg_mark() -> int:
    return len(_dmesg())


def _dmesg() -> str:
    import subprocess

    return subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
