"""What a capture records besides sys/: proc files, host files, tool markers, the kernel log.

These are the files readiness and the host-critical checks read (see the shared layout):
the proc files, boot loader and initramfs configuration, modprobe and udev files, the
vfio and kvm lines of ``modules.dep``, and empty markers whose presence says a tool is
installed. Nothing outside these lists is copied; a link leading out of the source tree
is reported, not followed.
"""

from __future__ import annotations

import glob
import os

from passthrough.capture.recorder import Recorder, read_capped
from passthrough.capture.sysfs import MODULE_PREFIXES

PROC_LIMIT = 16 * 1024 * 1024  # /proc/interrupts of a 256-CPU host runs past a megabyte
HOST_FILE_LIMIT = 1024 * 1024

# fmt: off
PROC_FILES = (
    "proc/cpuinfo", "proc/cmdline", "proc/modules", "proc/interrupts", "proc/sys/kernel/osrelease", "proc/mounts",
    "proc/self/mountinfo", "proc/net/route", "proc/net/ipv6_route",
    "proc/sys/kernel/hostname",  # already in capture.json; kept so a capture of a capture knows its name
)
HOST_FILES = (
    "etc/default/grub", "etc/default/grub.d/*.cfg", "etc/kernel/cmdline", "etc/kernel/proxmox-boot-uuids",
    "etc/os-release", "usr/lib/os-release", "etc/modprobe.d/*.conf", "etc/modules", "etc/modules-load.d/*.conf",
    "etc/initramfs-tools/modules", "etc/initramfs-tools/initramfs.conf", "etc/dracut.conf", "etc/dracut.conf.d/*.conf",
    "etc/mkinitcpio.conf", "etc/udev/rules.d/*.rules", "boot/grub/grub.cfg", "boot/grub2/grub.cfg",
    "boot/efi/EFI/*/grub.cfg", "boot/loader/loader.conf", "boot/loader/entries/*.conf", "boot/efi/loader/loader.conf",
    "boot/efi/loader/entries/*.conf", "efi/loader/loader.conf", "efi/loader/entries/*.conf", "boot/refind_linux.conf",
    "boot/syslinux/syslinux.cfg", "boot/extlinux/extlinux.conf", "boot/syslinux/extlinux.conf", "boot/syslinux.cfg",
    "boot/extlinux.conf",
)
# Recorded as empty files: their presence says the tool is installed.
TOOL_MARKERS = (
    "usr/sbin/update-initramfs", "usr/bin/dracut", "usr/bin/mkinitcpio", "usr/sbin/update-grub",
    "usr/sbin/grub-mkconfig", "usr/sbin/grub2-mkconfig", "usr/bin/bootctl", "usr/sbin/proxmox-boot-tool",
    "usr/bin/kernel-install",
)
# fmt: on


class FileRecording(Recorder):
    def proc_files(self) -> None:
        for rel in PROC_FILES:
            if self.source.exists(rel):
                self.copy_file(rel, PROC_LIMIT)

    def host_files(self) -> None:
        for pattern in HOST_FILES:
            if "*" not in pattern:
                if self.source.exists(pattern):
                    self.host_file(pattern, HOST_FILE_LIMIT)
                continue
            top = pattern[: pattern.index("*")].rstrip("/")
            try:
                os.listdir(self._src(top))
            except FileNotFoundError:
                continue
            except OSError as error:  # /boot/efi is often readable by root only
                self.summary.skip(top, f"unlistable: {error.strerror or error}")
                continue
            for rel in sorted(glob.glob(pattern, root_dir=self.source.root)):
                self.host_file(rel, HOST_FILE_LIMIT)
        # Tool markers: presence says the tool is installed. Non-merged-/usr systems keep
        # some tools in /bin and /sbin; on merged ones those are links to usr/ and add nothing.
        tops = [top for top in ("bin", "sbin") if self.source.is_dir(top) and not os.path.islink(self._src(top))]
        for marker in TOOL_MARKERS:
            for rel in [marker] + [f"{top}/{os.path.basename(marker)}" for top in tops]:
                real = self.resolve(rel)
                if real is not None and os.path.exists(self._src(real)):
                    self.placeholder(rel)
        release = self.source.read("proc/sys/kernel/osrelease")
        if release and "/" not in release:
            modules = f"lib/modules/{release}"
            if self.source.exists(f"{modules}/modules.builtin"):
                self.host_file(f"{modules}/modules.builtin", PROC_LIMIT)
            self.modules_dep(f"{modules}/modules.dep")

    def host_file(self, rel: str, limit: int) -> None:
        """Copy a host file's content; a link to /dev/null (a masked file) is recorded empty."""
        real = self.resolve(rel)
        if real is None:
            self.summary.skip(rel, "links outside the captured host")
        elif real == "dev/null":
            self.placeholder(rel)
        elif not os.path.isfile(self._src(real)):
            self.summary.skip(rel, "not a regular file")
        else:
            self.copy_file(rel, limit, source_rel=real)

    def modules_dep(self, rel: str) -> None:
        """Only the vfio and kvm lines: they say whether those modules exist for this kernel."""
        real = self.resolve(rel)
        if real is None or not os.path.isfile(self._src(real)):
            return
        try:
            data, _ = read_capped(self._src(real), PROC_LIMIT)
        except OSError as error:
            self.summary.skip(rel, f"unreadable: {error.strerror or error}")
            return
        lines = [
            line
            for line in data.decode("utf-8", "replace").splitlines()
            if os.path.basename(line.split(":", 1)[0]).startswith(MODULE_PREFIXES)
        ]
        self.write(rel, "".join(line + "\n" for line in lines).encode())

    def kernel_log(self) -> None:
        lines = self.source.kernel_log()
        if lines is None:
            self.summary.skip("dmesg.txt", "the kernel log is unreadable (dmesg failed or kernel.dmesg_restrict)")
        else:
            self.write("dmesg.txt", "".join(line + "\n" for line in lines).encode())
