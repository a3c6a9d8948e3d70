"""The initramfs generator of a host, and where modules go to load at boot.

vfio-pci must claim a GPU before its own driver does, so it has to load from the
initramfs: ``/etc/initramfs-tools/modules`` (Debian, Ubuntu, Proxmox VE),
``force_drivers+=`` in ``/etc/dracut.conf.d/*.conf`` (Fedora, RHEL, openSUSE) or
``MODULES=(...)`` in ``/etc/mkinitcpio.conf`` (Arch). Nothing here writes: edits are
:class:`~passthrough.boot.fileedit.FileEdit` plans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from passthrough.boot.distro import Distro, detect_distro, tool_path
from passthrough.boot.fileedit import FileEdit
from passthrough.evidence import Evidence, host_path
from passthrough.host import HostTree


@dataclass(frozen=True)
class _Generator:
    name: str
    tool: str
    configs: tuple[str, ...]
    rebuild_command: str
    modules_file: str
    family: str  # the family that uses it by default


GENERATORS = (
    _Generator(
        "initramfs-tools",
        "update-initramfs",
        ("etc/initramfs-tools/modules", "etc/initramfs-tools/initramfs.conf"),
        "update-initramfs -u -k all",
        "etc/initramfs-tools/modules",
        "debian",
    ),
    _Generator(
        "dracut",
        "dracut",
        ("etc/dracut.conf", "etc/dracut.conf.d"),
        "dracut -f --regenerate-all",
        "etc/dracut.conf.d/vfio.conf",
        "fedora",
    ),
    _Generator("mkinitcpio", "mkinitcpio", ("etc/mkinitcpio.conf",), "mkinitcpio -P", "etc/mkinitcpio.conf", "arch"),
)
_MKINITCPIO_MODULES = re.compile(r"^(\s*MODULES=)(\(([^)]*)\)|\"([^\"]*)\")(.*)$")
_DRACUT_DRIVERS = re.compile(r"^\s*(force_drivers|add_drivers)\+?=\s*[\"']([^\"']*)[\"']")


@dataclass
class InitramfsTool:
    name: str  # "initramfs-tools", "dracut", "mkinitcpio" or "unknown"
    rebuild_command: str | None  # "update-initramfs -u -k all"
    modules_file: str | None  # host path where modules for early load go
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.name != "unknown"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rebuild_command": self.rebuild_command,
            "modules_file": self.modules_file,
            "evidence": [item.to_json() for item in self.evidence],
        }


def detect_initramfs_tool(tree: HostTree, distro: Distro | None = None) -> InitramfsTool:
    """The installed generator; when several are, the one this distribution uses by default."""
    distro = distro or detect_distro(tree)
    preferred = sorted(GENERATORS, key=lambda generator: generator.family != distro.family)
    for generator in preferred:
        found = tool_path(tree, generator.tool)
        if found:
            return _tool(generator, [Evidence(host_path(found), "installed"), *_config_evidence(tree, generator)])
    for generator in preferred:
        evidence = _config_evidence(tree, generator)
        if evidence:
            return _tool(generator, evidence)
    return InitramfsTool("unknown", None, None, [])


def _tool(generator: _Generator, evidence: list[Evidence]) -> InitramfsTool:
    return InitramfsTool(generator.name, generator.rebuild_command, host_path(generator.modules_file), evidence)


def _config_evidence(tree: HostTree, generator: _Generator) -> list[Evidence]:
    evidence = []
    for config in generator.configs:
        if tree.is_dir(config):
            names = sorted(tree.listdir(config))
            if names:
                evidence.append(Evidence(host_path(config), " ".join(names)))
        elif tree.is_file(config):
            evidence.append(Evidence(host_path(config), "present"))
    return evidence


def module_key(name: str) -> str:
    return name.replace("-", "_")


def early_load_edit(tree: HostTree, modules: list[str], tool: InitramfsTool | None = None) -> FileEdit | None:
    """The edit that puts ``modules`` into this host's initramfs, loaded before other drivers.

    None when no generator is known. ``after == before`` when they are already there.
    """
    tool = tool or detect_initramfs_tool(tree)
    if tool.name == "initramfs-tools":
        return _append_missing_lines(tree, "etc/initramfs-tools/modules", modules, already=set())
    if tool.name == "dracut":
        return _dracut_edit(tree, modules)
    if tool.name == "mkinitcpio":
        return _mkinitcpio_edit(tree, modules)
    return None


def module_load_edit(tree: HostTree, modules: list[str], distro: Distro | None = None) -> FileEdit:
    """Load ``modules`` at every boot: ``/etc/modules`` on Debian and Proxmox VE,
    ``/etc/modules-load.d/vfio.conf`` elsewhere (systemd-modules-load reads both)."""
    distro = distro or detect_distro(tree)
    target = "etc/modules" if distro.family == "debian" else "etc/modules-load.d/vfio.conf"
    listed: set[str] = set()
    for relative in ["etc/modules", *(f"etc/modules-load.d/{name}" for name in tree.listdir("etc/modules-load.d"))]:
        if relative != target:
            listed |= _listed_modules(tree.read(relative, limit=1 << 20) or "")
    return _append_missing_lines(tree, target, modules, already=listed)


def _listed_modules(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            names.add(module_key(words[0]))
    return names


def read_raw(tree: HostTree, relative: str) -> str | None:
    """A file's text as it is (HostTree.read strips it; an edit must keep every character)."""
    data = tree.read_bytes(relative, limit=1 << 20)
    return None if data is None else data.decode("utf-8", "replace")


def _append_missing_lines(tree: HostTree, relative: str, modules: list[str], already: set[str]) -> FileEdit:
    before = read_raw(tree, relative)
    present = _listed_modules(before or "") | already
    missing = [name for name in modules if module_key(name) not in present]
    after = before or ""
    if missing:
        if after and not after.endswith("\n"):
            after += "\n"
        after += "".join(f"{name}\n" for name in missing)
    return FileEdit(host_path(relative), before, after)


def _dracut_edit(tree: HostTree, modules: list[str]) -> FileEdit:
    forced: set[str] = set()
    configs = ["etc/dracut.conf", *(f"etc/dracut.conf.d/{name}" for name in sorted(tree.listdir("etc/dracut.conf.d")))]
    for relative in configs:
        for line in (read_raw(tree, relative) or "").splitlines():
            match = _DRACUT_DRIVERS.match(line)
            # add_drivers only copies a module into the image; force_drivers also loads it early.
            if match and match.group(1) == "force_drivers":
                forced |= {module_key(name) for name in match.group(2).split()}
    relative = "etc/dracut.conf.d/vfio.conf"
    before = read_raw(tree, relative)
    missing = [name for name in modules if module_key(name) not in forced]
    after = before or ""
    if missing:
        if after and not after.endswith("\n"):
            after += "\n"
        # dracut requires the spaces inside the quotes of a += value.
        after += f'force_drivers+=" {" ".join(missing)} "\n'
    return FileEdit(host_path(relative), before, after)


def _mkinitcpio_edit(tree: HostTree, modules: list[str]) -> FileEdit:
    relative = "etc/mkinitcpio.conf"
    before = read_raw(tree, relative)
    lines = (before or "").split("\n")
    for index, line in enumerate(lines):
        match = _MKINITCPIO_MODULES.match(line)
        if not match:
            continue
        head, _, in_parens, in_quotes, tail = match.groups()
        words = (in_parens if in_parens is not None else in_quotes).split()
        missing = [name for name in modules if module_key(name) not in {module_key(word) for word in words}]
        if not missing:
            return FileEdit(host_path(relative), before, before or "")
        # vfio modules first, so they load before a GPU driver listed in the same array.
        lines[index] = f"{head}({' '.join(missing + words)}){tail}"
        return FileEdit(host_path(relative), before, "\n".join(lines))
    after = (before or "") + ("" if not before or before.endswith("\n") else "\n") + f"MODULES=({' '.join(modules)})\n"
    return FileEdit(host_path(relative), before, after)
