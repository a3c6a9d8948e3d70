"""Boot verification: every function bound to vfio-pci at boot is on vfio-pci in this boot, or why not.

Passthrough Wizard binds at boot by address (:mod:`passthrough.ops.persist`): a udev rule
sets ``driver_override`` when the function is added, and a ``softdep`` makes the native
driver's module load vfio-pci first, whose ``install`` hook sets the same override. Once
the override says vfio-pci, no other driver can take the function. So a function whose
override says vfio-pci while its native driver holds it lost the race at this boot: the
native driver bound before anything of ours ran. Three things let it, each read from the
host and named with its fix:

* the driver is built into the kernel (``lib/modules/<release>/modules.builtin``): it binds
  before any file under /etc is read;
* the initramfs is older than the binding's files: the native module loaded from the
  initramfs, which has no softdep and no install hook of ours yet;
* no softdep names the module the native driver comes from (it names another, or none):
  loading that module does not load vfio-pci first.

A function the wizard gave back after boot has its override cleared, and one whose
binding was written after this boot has none yet: neither is a lost binding, so neither
is a finding. An address that is bound at boot but absent from this boot (a card added or
moved shifts bus numbers) is one.
"""

from __future__ import annotations

import datetime
import glob
import os
import re
from dataclasses import dataclass, field
from functools import cached_property

from passthrough.boot.initramfs import InitramfsTool, detect_initramfs_tool, module_key
from passthrough.diagnose.finding import Finding
from passthrough.evidence import host_path
from passthrough.host import PCI_DEVICES, PCI_DRIVERS, HostTree
from passthrough.ops.modules import module_of
from passthrough.ops.persist import MODPROBE_FILE, RULES_FILE, persisted_bindings
from passthrough.ops.sysfs import VFIO
from passthrough.pci.model import Inventory, PciFunction
from passthrough.pci.scan import scan

BOOT_BINDING_LOST = "boot_binding_lost"
MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d")
_SOFTDEP = re.compile(r"^\s*softdep\s+(\S+)\s+(.*)$")
_INSTALL_VFIO = re.compile(r"^\s*install\s+vfio[-_]pci\b")
# Where each generator writes the image for kernel ``release`` (mkinitcpio names images by preset).
_IMAGES = {
    "initramfs-tools": ("boot/initrd.img-{release}",),
    "dracut": ("boot/initramfs-{release}.img", "boot/initrd-{release}"),
    "mkinitcpio": ("boot/initramfs-*.img",),
}


@dataclass
class Reason:
    """One reason the native driver won: in a few words (the summary), in full, its fix and what shows it."""

    short: str
    cause: str
    fix: str
    evidence: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


class BootFiles:
    """What the boot reads, read once per check: the kernel release, built-in modules, softdeps, images."""

    def __init__(self, tree: HostTree) -> None:
        self.tree = tree

    @cached_property
    def release(self) -> str | None:
        return self.tree.read("proc/sys/kernel/osrelease")

    @cached_property
    def builtin(self) -> dict[str, str]:
        """Built-in module (key) -> its modules.builtin line."""
        if not self.release:
            return {}
        text = self.tree.read(self.builtin_file, limit=4 << 20) or ""
        lines = (line.strip() for line in text.splitlines())
        return {module_key(line.rsplit("/", 1)[-1].removesuffix(".ko")): line for line in lines if line}

    @property
    def builtin_file(self) -> str:
        return f"lib/modules/{self.release}/modules.builtin"

    @cached_property
    def softdeps(self) -> dict[str, tuple[str, str]]:
        """Module (key) whose softdep loads vfio-pci first -> (the file, the line)."""
        found: dict[str, tuple[str, str]] = {}
        for relative, line in self._modprobe_lines():
            match = _SOFTDEP.match(line)
            if match is None:
                continue
            before, section = [], None
            for word in match.group(2).split():
                if word in ("pre:", "post:"):
                    section = word
                elif section == "pre:":
                    before.append(module_key(word))
            if "vfio_pci" in before:
                found.setdefault(module_key(match.group(1)), (relative, line.strip()))
        return found

    @cached_property
    def other_vfio_installs(self) -> list[tuple[str, str]]:
        """``install vfio-pci`` lines outside our file: modprobe runs one install command per module."""
        lines = self._modprobe_lines()
        return [(path, line.strip()) for path, line in lines if path != MODPROBE_FILE and _INSTALL_VFIO.match(line)]

    def _modprobe_lines(self) -> list[tuple[str, str]]:
        lines = []
        for directory in MODPROBE_DIRS:
            for name in sorted(self.tree.listdir(directory)):
                relative = f"{directory}/{name}"
                if name.endswith(".conf"):
                    text = self.tree.read(relative, limit=1 << 20) or ""
                    lines += [(relative, line) for line in text.splitlines() if not line.lstrip().startswith("#")]
        return lines

    @cached_property
    def tool(self) -> InitramfsTool:
        return detect_initramfs_tool(self.tree)

    @cached_property
    def written(self) -> tuple[str, float] | None:
        """The binding's newest file and its modification time."""
        times = [(relative, mtime) for relative in (RULES_FILE, MODPROBE_FILE) if (mtime := self.mtime(relative))]
        return max(times, key=lambda item: item[1]) if times else None

    @cached_property
    def images(self) -> list[tuple[str, float]]:
        """The initramfs images of the running kernel under boot/, with their modification times."""
        patterns = _IMAGES.get(self.tool.name) or tuple(p for ps in _IMAGES.values() for p in ps)
        found: dict[str, float] = {}
        for pattern in patterns:
            wanted = self.tree.path(pattern.format(release=self.release or "*"))
            for path in sorted(glob.glob(wanted)):
                relative = self.tree.relative(path)
                mtime = self.mtime(relative)
                if mtime is not None and "fallback" not in relative:
                    found[relative] = mtime
        return sorted(found.items())

    def mtime(self, relative: str) -> float | None:
        try:
            return os.stat(self.tree.path(relative)).st_mtime
        except OSError:
            return None


def check_boot_bindings(tree: HostTree, inventory: Inventory | None = None) -> list[Finding]:
    """A ``boot_binding_lost`` finding per address bound at boot that is not on vfio-pci in this boot."""
    bindings = persisted_bindings(tree)
    if not bindings:
        return []
    inventory = inventory if inventory is not None else scan(tree)
    files = BootFiles(tree)
    findings = []
    for address, noted in sorted(bindings.items()):
        function = inventory.device(address)
        if function is None:
            findings.append(_absent(address, noted))
        elif function.driver != VFIO and function.driver_override == VFIO:
            findings.append(_lost(tree, files, function, noted))
    return findings


def _rule_line(address: str) -> str:
    return f'{host_path(RULES_FILE)}: ACTION=="add", SUBSYSTEM=="pci", KERNEL=="{address}", ATTR{{driver_override}}="vfio-pci"'


def _absent(address: str, noted: str | None) -> Finding:
    was = f" (a function driven by {noted} when the binding was written)" if noted else ""
    finding = Finding(
        BOOT_BINDING_LOST,
        "warning",
        address,
        f"{address} is bound to vfio-pci at boot, but this boot has no PCI function at that address.",
        cause=(
            f"The binding at boot names {address}{was}, and no function sits there now. Bus numbers move when a "
            "card is added, removed or moved to another slot, or a firmware setting turns a slot or a controller "
            "on or off: the binding now holds nothing, and the card may be at another address on its host driver."
        ),
        fix=(
            f"Stop binding {address} at boot (the wizard's undo of that change, or `manage.py device unpersist "
            f"{address}`), then pass the card through at its new address and bind that at boot."
        ),
    )
    _evidence(finding, [_rule_line(address), f"{host_path(PCI_DEVICES)}/{address}: no such function"], [RULES_FILE])
    return finding


def _lost(tree: HostTree, files: BootFiles, function: PciFunction, noted: str | None) -> Finding:
    address, driver = function.address, function.driver
    facts = [_rule_line(address), f"{host_path(PCI_DEVICES)}/{address}/driver_override: {VFIO}"]
    if driver is None:
        reasons = [_vfio_did_not_bind(tree, files, address)]
        summary = f"{address} is bound to vfio-pci at boot, but no driver has it in this boot: {reasons[0].short}."
    else:
        facts.append(f"{host_path(PCI_DEVICES)}/{address}/driver -> {driver}")
        reasons = _why_native_won(tree, files, function, noted)
        shown = "; ".join(reason.short for reason in reasons)
        summary = f"{address} is bound to vfio-pci at boot, but {driver} took it first in this boot: {shown}."
    finding = Finding(
        BOOT_BINDING_LOST,
        "error",
        address,
        summary,
        cause=" ".join(reason.cause for reason in reasons),
        fix="\n".join(reason.fix for reason in reasons),
        details={"driver": driver or "", "reasons": ",".join(reason.short for reason in reasons)},
    )
    sources = [RULES_FILE, f"{PCI_DEVICES}/{address}"]
    for reason in reasons:
        facts += reason.evidence
        sources += reason.sources
    _evidence(finding, facts, sources)
    return finding


def _evidence(finding: Finding, lines: list[str], sources: list[str]) -> None:
    finding.evidence = list(dict.fromkeys(lines))
    finding.sources = [host_path(source) for source in dict.fromkeys(sources)]
    finding.occurrences = len(finding.evidence)


def _why_native_won(tree: HostTree, files: BootFiles, function: PciFunction, noted: str | None) -> list[Reason]:
    driver = function.driver or ""
    module = module_of(tree, driver)
    key = module_key(module or driver)
    rebuild = files.tool.rebuild_command
    if key in files.builtin:
        return [_built_in(files, function, module or driver)]
    reasons = []
    stale = _stale_initramfs(files)
    if stale is not None:
        reasons.append(stale)
    if module is None:
        reasons.append(
            Reason(
                f"the module {driver} comes from is not known here",
                f"{driver} has no module link in /sys/bus/pci/drivers/{driver}, so no softdep could be checked.",
                f"`readlink /sys/bus/pci/drivers/{driver}/module` names its module; add `softdep MODULE pre: "
                f"vfio-pci` to {host_path(MODPROBE_FILE)}, {_then_rebuild(rebuild)}",
            )
        )
    elif key not in files.softdeps:
        reasons.append(_no_softdep(files, function, module, noted))
    if reasons:
        return reasons
    where, line = files.softdeps[key]
    return [
        Reason(
            "something loaded it before vfio-pci",
            f"The binding's files are in place, the initramfs is newer than them and {host_path(where)} has "
            f"`{line}`, yet {driver} bound first: something loads it earlier (a module list in /etc/modules or "
            "/etc/modules-load.d, an initramfs hook, or a driver that binds without modprobe).",
            f"`journalctl -b -k | grep -e {function.address} -e vfio` shows the order they bound in. Until then, "
            'the device page\'s "Pass through" moves it to vfio-pci in this boot.',
            [f"{host_path(where)}: {line}"],
            [where],
        )
    ]


def _then_rebuild(rebuild: str | None) -> str:
    step = f"run `{rebuild}`" if rebuild else "rebuild the initramfs with your distribution's tool"
    return f"then {step} and reboot."


def _built_in(files: BootFiles, function: PciFunction, module: str) -> Reason:
    driver, address = function.driver, function.address
    ids = f"{function.vendor_id}:{function.device_id}"
    if "vfio_pci" in files.builtin:
        fix = (
            f"vfio-pci is built into this kernel too, so it can claim the device by id from the kernel command "
            f"line: add vfio-pci.ids={ids} (it takes every device with the ids {ids}), update the boot loader "
            "and reboot."
        )
    else:
        fix = (
            f"No file can act before a built-in driver, and vfio-pci is a module here. Use a kernel that builds "
            f"{module} as a module (then the softdep applies), or pass {address} through after boot: the device "
            'page\'s "Pass through" moves it to vfio-pci.'
        )
    line = files.builtin[module_key(module)]
    return Reason(
        f"{driver} is built into the kernel",
        f"{driver} ({module}) is built into kernel {files.release}: it binds while the kernel starts, before "
        "udev rules, modprobe.d softdeps or the initramfs's modules run, so binding by address at boot cannot win.",
        fix,
        [f"{host_path(files.builtin_file)}: {line}"],
        [files.builtin_file],
    )


def _stale_initramfs(files: BootFiles) -> Reason | None:
    written = files.written
    stale = [(image, mtime) for image, mtime in files.images if written and mtime < written[1]]
    if written is None or not stale:
        return None
    image, mtime = stale[0]
    rebuild = files.tool.rebuild_command
    return Reason(
        "the initramfs was not rebuilt since the binding was written",
        f"{host_path(image)} was built on {_when(mtime)}, before {host_path(written[0])} was written on "
        f"{_when(written[1])}. The native module loads from the initramfs at boot, and that image has neither the "
        "softdep nor vfio-pci's install hook, so the native driver binds first.",
        f"Rebuild the initramfs: `{rebuild}`, then reboot."
        if rebuild
        else "Rebuild the initramfs with your distribution's tool, then reboot.",
        [
            f"{host_path(image)}: modified {_when(mtime)}",
            f"{host_path(written[0])}: modified {_when(written[1])}",
        ],
        [image, written[0]],
    )


def _no_softdep(files: BootFiles, function: PciFunction, module: str, noted: str | None) -> Reason:
    driver, address = function.driver, function.address
    ours = [(where, line) for where, line in files.softdeps.values() if where == MODPROBE_FILE]
    named = ", ".join(f"`{line}`" for _, line in ours)
    short = f"the softdep names another module ({named}), not {module}" if ours else f"no softdep names {module}"
    written_for = f" It was written when {noted} drove {address}." if noted and noted != driver else ""
    cause = (
        f"{driver} comes from the module {module}, and no softdep loads vfio-pci before {module}"
        + (f" ({host_path(MODPROBE_FILE)} has {named})" if ours else "")
        + f": when {module} loads early, vfio-pci's install hook has not set the override yet.{written_for}"
    )
    fix = (
        f"Bind it at boot again naming its driver: `manage.py device persist {address} --native-driver "
        f"{address}={driver}` writes `softdep {module} pre: vfio-pci`, {_then_rebuild(files.tool.rebuild_command)}"
    )
    evidence = [f"{host_path(where)}: {line}" for where, line in ours]
    return Reason(
        short, cause, fix, evidence or [f"{host_path(MODPROBE_FILE)}: no softdep for {module}"], [MODPROBE_FILE]
    )


def _vfio_did_not_bind(tree: HostTree, files: BootFiles, address: str) -> Reason:
    if tree.is_dir(f"{PCI_DRIVERS}/{VFIO}"):
        return Reason(
            "vfio-pci did not take it",
            "vfio-pci is loaded and the override names it, yet it did not bind: its probe failed.",
            "The kernel log says why (the Diagnose page's vfio_probe_failed finding, or "
            f"`journalctl -b -k | grep {address}`); then pass it through from the device page.",
        )
    others = files.other_vfio_installs
    evidence = [f"{host_path(where)}: {line}" for where, line in others]
    extra = (
        f" {', '.join(host_path(where) for where, _ in others)} has its own `install vfio-pci` line, and modprobe runs "
        "only one."
        if others
        else ""
    )
    return Reason(
        "vfio-pci is not loaded",
        f"The override names vfio-pci, but vfio-pci is not loaded, so no driver bound it.{extra}",
        "`modprobe vfio-pci` as root shows why it does not load; list it for the initramfs "
        f"({files.tool.modules_file or 'your initramfs generator'}) and {_then_rebuild(files.tool.rebuild_command)}",
        evidence or [f"{host_path(PCI_DRIVERS)}/{VFIO}: not loaded"],
        [where for where, _ in others],
    )


def _when(mtime: float) -> str:
    return datetime.datetime.fromtimestamp(mtime, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
