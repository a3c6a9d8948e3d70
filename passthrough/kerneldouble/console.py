"""The boot console in the double: platform framebuffers (efifb, simpledrm) and vtconsoles.

Releasing a boot GPU means unbinding the framebuffer console (``vtconN/bind`` = 0) and the
firmware framebuffer's platform driver (``efi-framebuffer``, ``simpledrm``...); this models
both so the operations can be tested releasing them and putting them back.
"""

from __future__ import annotations

import errno as errnos

from passthrough.kerneldouble.pci import KernelRefused, PciCore, link, unlink, write_file

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
        try:
            bind = 1 if int(value.strip(), 0) else 0
        except ValueError:
            raise KernelRefused(errnos.EINVAL, f"{value!r} is not 0 or 1") from None
        name = self.tree.read(f"{vtcon_dir}/name") or ""
        write_file(self.tree, f"{vtcon_dir}/bind", f"{bind}\n")
        if not name.startswith("(M)"):
            return
        # A modular console (fbcon) gives its terminals back to the system driver (dummy, VGA+).
        parent = vtcon_dir.rsplit("/", 1)[0]
        modular_bound = any(
            (self.tree.read(f"{parent}/{other}/name") or "").startswith("(M)")
            and self.tree.read(f"{parent}/{other}/bind") == "1"
            for other in self.tree.listdir(parent)
        )
        for other in sorted(self.tree.listdir(parent)):
            if (self.tree.read(f"{parent}/{other}/name") or "").startswith("(S)"):
                write_file(self.tree, f"{parent}/{other}/bind", "0\n" if modular_bound else "1\n")
                break

    def fbcon_takes_over(self) -> None:
        """A framebuffer registered on the boot VGA device (fbcon's primary): an unbound fbcon binds again.

        As the real kernel does (fbcon_fb_registered: the primary device's framebuffer is the
        one fbcon maps its consoles to, and fbcon, not bound, takes them over), even after
        ``vtconN/bind`` = 0 unbound it: a give-back that brings the native driver back gives
        the console back whether or not it writes the bind itself. Seen on a 6.1 kernel with
        bochs-drm (tests/realkernel_guest/test_gpus.py).
        """
        parent = "sys/devices/virtual/vtconsole"
        for vtcon in sorted(self.tree.listdir(parent)):
            name = self.tree.read(f"{parent}/{vtcon}/name") or ""
            if name == "(M) frame buffer device" and self.tree.read(f"{parent}/{vtcon}/bind") == "0":
                self.bind_vtconsole(f"{parent}/{vtcon}", "1")
