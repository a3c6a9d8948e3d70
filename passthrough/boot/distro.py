"""Which Linux distribution a host runs, as far as its boot tooling is concerned.

The fix for a missing kernel parameter or module differs by family: Debian, Ubuntu and
Proxmox VE run ``update-grub`` and ``update-initramfs`` and load modules from
``/etc/modules``; Fedora and RHEL run ``grub2-mkconfig`` and dracut; Arch runs
``grub-mkconfig`` and mkinitcpio. ``/etc/os-release`` names the distribution; the tools
installed under ``/usr/sbin``/``/usr/bin`` (``/sbin``, ``/bin`` on unmerged systems) fill in
when it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passthrough.evidence import Evidence, host_path
from passthrough.host import HostTree

FAMILIES = {
    "debian": ("debian", "ubuntu", "pop", "linuxmint", "raspbian", "kali", "elementary", "zorin", "neon", "pureos"),
    "fedora": ("fedora", "rhel", "centos", "rocky", "almalinux", "ol", "nobara", "ultramarine", "amzn"),
    "arch": ("arch", "manjaro", "endeavouros", "garuda", "cachyos", "artix", "archarm"),
    "suse": ("opensuse", "opensuse-leap", "opensuse-tumbleweed", "sles", "suse"),
}
TOOL_DIRS = ("usr/sbin", "usr/bin", "sbin", "bin")
PROXMOX_BOOT_UUIDS = "etc/kernel/proxmox-boot-uuids"


@dataclass(frozen=True)
class Distro:
    id: str | None  # os-release ID ("debian", "pop", "fedora"); None when unknown
    pretty_name: str | None
    family: str  # "debian", "fedora" (Fedora/RHEL and rebuilds), "arch", "suse" or "unknown"
    proxmox: bool
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.proxmox:
            return "Proxmox VE"
        return self.pretty_name or self.id or "an unknown distribution"


def tool_path(tree: HostTree, name: str) -> str | None:
    """Where ``name`` is installed in the tree (``usr/sbin/update-grub``), or None."""
    for directory in TOOL_DIRS:
        relative = f"{directory}/{name}"
        if tree.exists(relative):
            return relative
    return None


def read_os_release(tree: HostTree) -> tuple[str | None, dict[str, str]]:
    for relative in ("etc/os-release", "usr/lib/os-release"):
        text = tree.read(relative)
        if text is not None:
            return relative, parse_os_release(text)
    return None, {}


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if equals and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    return values


def detect_distro(tree: HostTree) -> Distro:
    relative, values = read_os_release(tree)
    evidence = []
    if relative is not None:
        shown = " ".join(f"{key}={values[key]}" for key in ("ID", "ID_LIKE", "VERSION_ID") if key in values)
        evidence.append(Evidence(host_path(relative), shown))
    distro_id = values.get("ID", "").lower() or None
    family = _family(distro_id, values.get("ID_LIKE", "").lower().split())
    if family == "unknown":
        family = _family_from_tools(tree, evidence)
    proxmox = _is_proxmox(tree, evidence)
    if proxmox:
        family = "debian"  # Proxmox VE is Debian with its own kernel and boot tool
    return Distro(distro_id, values.get("PRETTY_NAME"), family, proxmox, evidence)


def _family(distro_id: str | None, id_like: list[str]) -> str:
    for candidate in [distro_id, *id_like]:
        for family, members in FAMILIES.items():
            if candidate in members:
                return family
    return "unknown"


def _family_from_tools(tree: HostTree, evidence: list[Evidence]) -> str:
    for tool, family in (
        ("update-grub", "debian"),
        ("update-initramfs", "debian"),
        ("mkinitcpio", "arch"),
        ("grub2-mkconfig", "fedora"),
    ):
        found = tool_path(tree, tool)
        if found:
            evidence.append(Evidence(host_path(found), "installed"))
            return family
    return "unknown"


def _is_proxmox(tree: HostTree, evidence: list[Evidence]) -> bool:
    osrelease = tree.read("proc/sys/kernel/osrelease")
    marker = tool_path(tree, "proxmox-boot-tool")
    if marker:
        evidence.append(Evidence(host_path(marker), "installed"))
    if osrelease and osrelease.endswith("-pve"):
        evidence.append(Evidence("/proc/sys/kernel/osrelease", osrelease))
    return bool(marker or tree.exists(PROXMOX_BOOT_UUIDS) or (osrelease and osrelease.endswith("-pve")))
