"""The boot console in the double: platform framebuffers (efifb, simpledrm) and vtconsoles.

Releasing a boot GPU means unbinding the framebuffer console (``vtconN/bind`` = 0) and the
firmware framebuffer's platform driver (``efi-framebuffer``, ``simpledrm``...); this models
both so the operations can be tested releasing them and putting them back.
"""

from __future__ import annotations

import errno as errnos

from passthrough.kerneldouble.pci import KernelRefused, PciCore, link, unlink, write_file
from passthrough.kerneldouble.vtconsole import bind_vtconsole

PLATFORM = "sys/devices/platform"
PLATFORM_DRIVERS = "sys/bus/platform/drivers"
# Platform device name (without its ".0") -> the driver that binds it.
FRAMEBUFFER_DRIVERS = {
    "efi-framebuffer": "efi-framebuffer",
    "vesa-framebuffer": "vesa-framebuffer",
    "simple-framebuffer": "simple-framebuffer",
}


class Console:
    def __init__(self, core: PciCore) -> None:
        self.core = core
        self.tree = core.tree

    def driver_for(self, device: str) -> str | None:
        """The platform driver that matches ``device``: simpledrm when it draws through DRM."""
        base = device.rsplit(".", 1)[0]
        driver = FRAMEBUFFER_DRIVERS.get(base)
        if base == "simple-framebuffer" and self.tree.is_dir(f"{PLATFORM}/{device}/drm"):
            return "simpledrm"
        return driver

    def complete(self) -> None:
        """Give firmware framebuffers the driver links a booted kernel has (captures omit them)."""
        for device in sorted(self.tree.listdir(PLATFORM)):
            driver = self.driver_for(device)
            if driver is None or self.tree.exists(f"{PLATFORM}/{device}/driver"):
                continue
            for name in ("bind", "unbind"):
                if not self.tree.exists(f"{PLATFORM_DRIVERS}/{driver}/{name}"):
                    write_file(self.tree, f"{PLATFORM_DRIVERS}/{driver}/{name}", "")
            link(self.tree, f"sys/bus/platform/devices/{device}", f"{PLATFORM}/{device}")
            link(self.tree, f"{PLATFORM}/{device}/driver", f"{PLATFORM_DRIVERS}/{driver}")
            link(self.tree, f"{PLATFORM_DRIVERS}/{driver}/{device}", f"{PLATFORM}/{device}")

    def unbind(self, driver: str, value: str) -> None:
        device = value.strip()
        if not device or not self.tree.is_dir(f"{PLATFORM}/{device}"):
            raise KernelRefused(errnos.ENODEV, f"no platform device {device!r}")
        if self.tree.link_name(f"{PLATFORM}/{device}/driver") != driver:
            raise KernelRefused(errnos.ENODEV, f"{device} is not bound to {driver}")
        unlink(self.tree, f"{PLATFORM}/{device}/driver")
        unlink(self.tree, f"{PLATFORM_DRIVERS}/{driver}/{device}")
        self.core.stash_class_devices(f"{PLATFORM}/{device}", driver)

    def bind(self, driver: str, value: str) -> None:
        device = value.strip()
        if not device or not self.tree.is_dir(f"{PLATFORM}/{device}"):
            raise KernelRefused(errnos.ENODEV, f"no platform device {device!r}")
        if self.tree.exists(f"{PLATFORM}/{device}/driver"):
            raise KernelRefused(errnos.EBUSY, f"{device} already has a driver")
        if self.driver_for(device) != driver and not self._held_back_by(device, driver):
            raise KernelRefused(errnos.ENODEV, f"{driver} does not match {device}")
        link(self.tree, f"{PLATFORM}/{device}/driver", f"{PLATFORM_DRIVERS}/{driver}")
        link(self.tree, f"{PLATFORM_DRIVERS}/{driver}/{device}", f"{PLATFORM}/{device}")
        self.core.restore_class_devices(f"{PLATFORM}/{device}", driver)

    def _held_back_by(self, device: str, driver: str) -> bool:
        # simpledrm's DRM directory leaves with it, so after an unbind the name alone decides.
        return any(
            entry["device"] == f"{PLATFORM}/{device}" and entry["driver"] == driver for entry in self.core.state.stash
        )

    def bind_vtconsole(self, vtcon_dir: str, value: str) -> None:
        bind_vtconsole(self.tree, vtcon_dir, value)
