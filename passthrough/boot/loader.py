"""Which boot loader a host uses, where its kernel command line lives, and how to change it.

:func:`detect_bootloader` reads the tree for runtime evidence first (systemd-boot's
``LoaderInfo`` EFI variable, ``etc/kernel/proxmox-boot-uuids``) and configuration files
second. :func:`cmdline_edit` turns "add ``intel_iommu=on``" into the exact edit for this
host: the file's text before and after, and the command that applies it. It writes nothing.
The initramfs side lives in :mod:`passthrough.boot.initramfs` and is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passthrough.boot import cmdlinefiles as files
from passthrough.boot.cmdline import validate
from passthrough.boot.distro import PROXMOX_BOOT_UUIDS, Distro, detect_distro, tool_path
from passthrough.boot.fileedit import FileEdit
from passthrough.boot.initramfs import InitramfsTool, detect_initramfs_tool, early_load_edit, module_load_edit, read_raw
from passthrough.evidence import Evidence, host_path
from passthrough.host import HostTree

__all__ = [
    "Bootloader",
    "CmdlineEdit",
    "Distro",
    "InitramfsTool",
    "cmdline_edit",
    "detect_bootloader",
    "detect_distro",
    "detect_initramfs_tool",
    "early_load_edit",
    "module_load_edit",
]

# systemd-boot sets this EFI variable on every boot it performs.
LOADER_INFO = "sys/firmware/efi/efivars/LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
ENTRY_DIRS = ("boot/loader/entries", "boot/efi/loader/entries", "efi/loader/entries")
LOADER_CONFS = ("boot/loader/loader.conf", "boot/efi/loader/loader.conf", "efi/loader/loader.conf")
GRUB_DEFAULTS = "etc/default/grub"
GRUB_CFGS = ("boot/grub/grub.cfg", "boot/grub2/grub.cfg")
KERNEL_CMDLINE = "etc/kernel/cmdline"
REFIND_CONF = "boot/refind_linux.conf"
SYSLINUX_CONFS = (
    "boot/syslinux/syslinux.cfg",
    "boot/extlinux/extlinux.conf",
    "boot/syslinux/extlinux.conf",
    "boot/syslinux.cfg",
    "boot/extlinux.conf",
)
LABELS = {"grub": "GRUB", "systemd-boot": "systemd-boot", "refind": "rEFInd", "syslinux": "syslinux/extlinux"}


@dataclass
class Bootloader:
    name: str  # "grub", "systemd-boot", "refind", "syslinux" or "unknown"
    cmdline_format: str | None  # "grub", "kernel-cmdline", "loader-entry", "refind", "syslinux"
    cmdline_files: list[str]  # tree-relative paths that hold the command line
    apply_command: str | None  # what makes an edit take effect at the next boot; None: nothing needed
    distro: Distro
    managed_by: str | None = None  # "proxmox-boot-tool", "kernel-install", "kernelstub"
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.name != "unknown"

    @property
    def label(self) -> str:
        label = LABELS.get(self.name, "an unknown boot loader")
        return f"{label} (managed by {self.managed_by})" if self.managed_by else label

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "managed_by": self.managed_by,
            "cmdline_format": self.cmdline_format,
            "cmdline_files": [host_path(relative) for relative in self.cmdline_files],
            "apply_command": self.apply_command,
            "distro": {"id": self.distro.id, "family": self.distro.family, "proxmox": self.distro.proxmox},
            "evidence": [item.to_json() for item in self.evidence],
        }


def _loader_info(tree: HostTree) -> str | None:
    """The LoaderInfo variable: 4 attribute bytes, then UTF-16LE text ("systemd-boot 252.30").

    "present" when the file exists but holds no text (a capture may keep only its name).
    """
    if not tree.exists(LOADER_INFO):
        return None
    data = tree.read_bytes(LOADER_INFO, limit=512) or b""
    text = data[4:].decode("utf-16-le", "replace").split("\x00", 1)[0].strip() if len(data) >= 6 else ""
    return text or "present"


def _entries(tree: HostTree) -> list[str]:
    for directory in ENTRY_DIRS:
        names = sorted(name for name in tree.listdir(directory) if name.endswith(".conf"))
        if names:
            return [f"{directory}/{name}" for name in names]
    return []


def _first(tree: HostTree, candidates: tuple[str, ...]) -> str | None:
    return next((relative for relative in candidates if tree.is_file(relative)), None)


def detect_bootloader(tree: HostTree) -> Bootloader:
    distro = detect_distro(tree)
    evidence: list[Evidence] = []
    efi = tree.is_dir("sys/firmware/efi")
    loader_info = _loader_info(tree)
    if loader_info:
        evidence.append(Evidence(host_path(LOADER_INFO), loader_info))
    # Only systemd-boot sets LoaderInfo among the loaders detected here; its text names it.
    by_systemd_boot = loader_info is not None and (loader_info == "present" or loader_info.startswith("systemd-boot"))
    entries = _entries(tree)
    loader_conf = _first(tree, LOADER_CONFS)
    has_kernel_cmdline = tree.is_file(KERNEL_CMDLINE)
    grub_files = [relative for relative in (GRUB_DEFAULTS, *GRUB_CFGS) if tree.is_file(relative)]
    grub_tools = [
        found for tool in ("update-grub", "grub-mkconfig", "grub2-mkconfig") if (found := tool_path(tree, tool))
    ]

    if tree.exists(PROXMOX_BOOT_UUIDS):
        evidence.append(Evidence(host_path(PROXMOX_BOOT_UUIDS), tree.read(PROXMOX_BOOT_UUIDS) or ""))
        # proxmox-boot-tool keeps systemd-boot on UEFI ZFS installs and GRUB elsewhere;
        # either way it syncs the usual command-line file to every ESP on refresh.
        if efi and (has_kernel_cmdline or by_systemd_boot):
            _first_line(tree, KERNEL_CMDLINE, evidence)
            return Bootloader(
                "systemd-boot",
                "kernel-cmdline",
                [KERNEL_CMDLINE],
                "proxmox-boot-tool refresh",
                distro,
                "proxmox-boot-tool",
                evidence,
            )
        _grub_evidence(tree, grub_files, evidence)
        apply = "proxmox-boot-tool refresh"
        return Bootloader("grub", "grub", _grub_files(tree), apply, distro, "proxmox-boot-tool", evidence)

    if (
        by_systemd_boot
        or (loader_conf and (entries or has_kernel_cmdline))
        or (entries and not grub_files and not grub_tools)
    ):
        if loader_conf:
            evidence.append(Evidence(host_path(loader_conf), "present"))
        evidence += [Evidence(host_path(entry), _options_line(tree, entry)) for entry in entries]
        return _systemd_boot(tree, distro, entries, evidence)

    if grub_files or grub_tools:
        _grub_evidence(tree, grub_files, evidence)
        evidence += [Evidence(host_path(found), "installed") for found in grub_tools]
        if entries:  # Fedora's GRUB boots Boot Loader Specification entries (blscfg)
            evidence.append(Evidence(host_path(entries[0]), _options_line(tree, entries[0])))
        return Bootloader("grub", "grub", _grub_files(tree), _grub_apply(tree, distro), distro, None, evidence)

    if tree.is_file(REFIND_CONF):
        _first_line(tree, REFIND_CONF, evidence)
        return Bootloader("refind", "refind", [REFIND_CONF], None, distro, None, evidence)

    syslinux = _first(tree, SYSLINUX_CONFS)
    if syslinux:
        evidence.append(Evidence(host_path(syslinux), "present"))
        return Bootloader("syslinux", "syslinux", [syslinux], None, distro, None, evidence)

    return Bootloader("unknown", None, [], None, distro, None, evidence)


def _systemd_boot(tree: HostTree, distro: Distro, entries: list[str], evidence: list[Evidence]) -> Bootloader:
    if tree.is_file(KERNEL_CMDLINE):
        # kernel-install builds each new entry from /etc/kernel/cmdline; rebuild the running one.
        _first_line(tree, KERNEL_CMDLINE, evidence)
        apply = 'kernel-install add "$(uname -r)" "/lib/modules/$(uname -r)/vmlinuz"'
        return Bootloader("systemd-boot", "kernel-cmdline", [KERNEL_CMDLINE], apply, distro, "kernel-install", evidence)
    if distro.id == "pop":
        # Pop!_OS rewrites its entries from kernelstub's own configuration on every kernel update.
        return Bootloader("systemd-boot", "loader-entry", entries, "kernelstub", distro, "kernelstub", evidence)
    # Entries written by hand (Arch): systemd-boot reads them as they are at the next boot.
    return Bootloader("systemd-boot", "loader-entry", entries, None, distro, None, evidence)


def _first_line(tree: HostTree, relative: str, evidence: list[Evidence]) -> None:
    text = tree.read(relative)
    if text is not None:
        evidence.append(Evidence(host_path(relative), text.splitlines()[0] if text else ""))


def _grub_evidence(tree: HostTree, grub_files: list[str], evidence: list[Evidence]) -> None:
    evidence += [Evidence(host_path(relative), "present") for relative in grub_files if relative.startswith("boot/")]
    for relative in _grub_files(tree):
        for slot in files.grub_slots(relative, tree.read(relative) or ""):
            evidence.append(Evidence(host_path(relative), slot.render()))


def _options_line(tree: HostTree, relative: str) -> str:
    slots = files.entry_slots(relative, tree.read(relative) or "")
    return slots[-1].render() if slots else "no options line"


def _grub_files(tree: HostTree) -> list[str]:
    """/etc/default/grub, then /etc/default/grub.d/*.cfg in the order grub-mkconfig sources them."""
    extra = sorted(name for name in tree.listdir("etc/default/grub.d") if name.endswith(".cfg"))
    return [GRUB_DEFAULTS, *(f"etc/default/grub.d/{name}" for name in extra)]


def _grub_apply(tree: HostTree, distro: Distro) -> str:
    if distro.family == "debian" or (distro.family == "unknown" and tool_path(tree, "update-grub")):
        return "update-grub"
    if distro.family in ("fedora", "suse") or (
        distro.family == "unknown" and (tool_path(tree, "grub2-mkconfig") or tree.is_file(GRUB_CFGS[1]))
    ):
        return f"grub2-mkconfig -o {_grub2_cfg(tree, distro)}"
    return "grub-mkconfig -o /boot/grub/grub.cfg"


def _grub2_cfg(tree: HostTree, distro: Distro) -> str:
    # Before Fedora 34 a UEFI install read a full grub.cfg from the ESP; since then that file
    # is a stub that loads /boot/grub2/grub.cfg and must not be overwritten.
    esp_cfg = f"boot/efi/EFI/{distro.id}/grub.cfg"
    text = tree.read(esp_cfg) if distro.id and tree.is_dir("sys/firmware/efi") else None
    if text and "configfile" not in text and "menuentry" in text:
        return host_path(esp_cfg)
    return "/boot/grub2/grub.cfg"


# ---- planning an edit ---------------------------------------------------------------


@dataclass
class CmdlineEdit:
    """The plan for one change of the kernel command line on one host."""

    bootloader: Bootloader
    add: list[str]
    remove: list[str]
    edits: list[FileEdit]  # files whose text changes
    commands: list[str]  # to run after the edits, in order; then reboot
    edit_by_hand: bool = True  # False: the first command makes the edit itself (kernelstub)
    possible: bool = True
    reason: str | None = None  # why no exact plan exists
    notes: list[str] = field(default_factory=list)

    @property
    def already_configured(self) -> bool:
        """The files already say so; what is missing is applying them and rebooting."""
        return self.possible and not self.edits

    def describe(self) -> str:
        wanted = _wanted_words(self.add, self.remove)
        if not self.possible:
            return f"{wanted[0].upper()}{wanted[1:]} in your boot loader's configuration and reboot ({self.reason})."
        steps = self.commands + ["reboot"]
        runs = ", then ".join(f"`{command}`" if command != "reboot" else "reboot" for command in steps)
        if self.already_configured:
            files_named = ", ".join(host_path(name) for name in self.bootloader.cmdline_files)
            state = "has" if self.add else "lacks"
            return f"{files_named} already {state} this but the running kernel was not booted with it: run {runs}."
        changes = "\n".join(edit.describe() for edit in self.edits)
        if not self.edit_by_hand:
            return f"{wanted[0].upper()}{wanted[1:]}: run {runs}. It makes this change:\n{changes}"
        text = f"{wanted[0].upper()}{wanted[1:]}. {changes}\nthen run {runs}."
        return text + ("".join(f"\n{note}" for note in self.notes))

    def to_json(self) -> dict[str, Any]:
        return {
            "bootloader": self.bootloader.to_json(),
            "add": self.add,
            "remove": self.remove,
            "edits": [edit.to_json() for edit in self.edits],
            "commands": self.commands,
            "edit_by_hand": self.edit_by_hand,
            "possible": self.possible,
            "reason": self.reason,
            "already_configured": self.already_configured,
            "notes": self.notes,
            "text": self.describe(),
        }


def _wanted_words(add: list[str], remove: list[str]) -> str:
    parts = []
    if add:
        parts.append("add " + " ".join(add) + " to the kernel command line")
    if remove:
        parts.append("remove " + " ".join(remove) + (" from it" if add else " from the kernel command line"))
    return " and ".join(parts)


def cmdline_edit(
    tree: HostTree, add: list[str], remove: list[str], bootloader: Bootloader | None = None
) -> CmdlineEdit:
    """The exact edit that makes the next boot's command line carry ``add`` and none of ``remove``.

    ``add`` items are ``name=value`` (or a bare flag); one replaces another value of the same
    name. ``remove`` items are ``name`` (any value) or ``name=option``. Pure: nothing is written.
    """
    validate(add, "add")
    validate(remove, "remove")
    bootloader = bootloader or detect_bootloader(tree)
    plan = CmdlineEdit(bootloader, list(add), list(remove), [], [])
    texts = {relative: read_raw(tree, relative) for relative in bootloader.cmdline_files}
    slots: list[files.Slot] = []

    if bootloader.cmdline_format == "grub":
        slots = [slot for name in bootloader.cmdline_files for slot in files.grub_slots(name, texts[name] or "")]
        defaults = [slot for slot in slots if slot.variable == "GRUB_CMDLINE_LINUX_DEFAULT"] or slots
        if defaults:
            target = defaults[-1]
        else:
            target = files.new_grub_slot(GRUB_DEFAULTS, texts[GRUB_DEFAULTS] or "", "GRUB_CMDLINE_LINUX_DEFAULT")
        files.edit_group(slots, target, add, remove, grub=True)
        if texts.get(GRUB_DEFAULTS) is None:
            plan.notes.append(f"{host_path(GRUB_DEFAULTS)} was not found, so this plan creates it.")
    elif bootloader.cmdline_format is not None and bootloader.cmdline_files:
        for relative in bootloader.cmdline_files:
            for group, target in _groups(bootloader.cmdline_format, relative, texts[relative] or ""):
                files.edit_group(group, target, add, remove)
                slots += group
    elif bootloader.cmdline_format is not None:
        plan.possible = False
        plan.reason = f"{bootloader.label} is in use but no loader entry was found under " + ", ".join(
            host_path(directory) for directory in ENTRY_DIRS
        )
        return plan
    else:
        plan.possible = False
        plan.reason = "no GRUB, systemd-boot, rEFInd or syslinux configuration was found on this host"
        return plan

    for relative in dict.fromkeys(slot.path for slot in slots):
        before = texts.get(relative)
        after = files.render_file(before or "", [slot for slot in slots if slot.path == relative])
        if after != (before or ""):
            plan.edits.append(FileEdit(host_path(relative), before, after))
    plan.commands = _commands(tree, bootloader, plan, slots)
    return plan


def _groups(fmt: str, relative: str, text: str) -> list[tuple[list[files.Slot], files.Slot]]:
    """(slots of one boot, the slot new words go to) for each boot a file describes."""
    if fmt == "loader-entry":
        slots = files.entry_slots(relative, text)
        return [(slots, slots[-1] if slots else files.new_options_slot(relative, text))]
    if fmt == "kernel-cmdline":
        slots = files.plain_slots(relative, text)
        return [(slots, slots[-1])]
    per_boot = files.append_slots(relative, text) if fmt == "syslinux" else files.refind_slots(relative, text)
    return [([slot], slot) for slot in per_boot]


def _changed_words(slots: list[files.Slot]) -> tuple[list[str], list[str]]:
    """Words the edits add and drop, as written (kernelstub and grubby take words, not names)."""
    added: list[str] = []
    dropped: list[str] = []
    for slot in slots:
        added += [word for word in slot.words if word not in slot.original and word not in added]
        dropped += [word for word in slot.original if word not in slot.words and word not in dropped]
    return added, dropped


def _commands(tree: HostTree, bootloader: Bootloader, plan: CmdlineEdit, slots: list[files.Slot]) -> list[str]:
    added, dropped = _changed_words(slots)
    if bootloader.managed_by == "kernelstub":
        plan.edit_by_hand = False
        commands = [f'kernelstub -d "{" ".join(dropped)}"'] if dropped else []
        if added or not commands:
            commands.append(f'kernelstub -a "{" ".join(added or plan.add)}"')
        return commands
    commands = [bootloader.apply_command] if bootloader.apply_command else []
    if bootloader.name == "grub" and bootloader.distro.family == "fedora" and _entries(tree):
        # Fedora and RHEL boot Boot Loader Specification entries; grubby rewrites their
        # options lines, which grub2-mkconfig leaves alone on Fedora 40 and later.
        arguments = (f' --args="{" ".join(added or plan.add)}"' if plan.add else "") + (
            f' --remove-args="{" ".join(dropped)}"' if dropped else ""
        )
        if arguments:
            commands.append(f"grubby --update-kernel=ALL{arguments}")
    if not commands:
        plan.notes.append(f"{bootloader.label} reads the edited file at boot; no command is needed.")
    return commands
