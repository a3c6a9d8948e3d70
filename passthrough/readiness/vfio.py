"""vfio_modules and dev_vfio: can this kernel hand devices to user space through vfio?

A module is *loaded* (``/proc/modules``, or ``/sys/module/<name>/initstate``), *built in*
(``modules.builtin``, or ``/sys/module/<name>`` without ``initstate``), *available*
(``modules.dep``: ``modprobe`` can load it) or missing. A kernel without loadable-module
support has no ``/proc/modules``; there ``/sys/module`` alone is the whole truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from passthrough.boot.initramfs import early_load_edit, module_key, module_load_edit
from passthrough.evidence import Evidence
from passthrough.readiness.check import Check
from passthrough.readiness.facts import HostFacts

VFIO_MODULES = ("vfio", "vfio_iommu_type1", "vfio_pci")
LOADED, BUILTIN, AVAILABLE, MISSING = "loaded", "built in", "available", "missing"


def _names_from_paths(text: str) -> set[str]:
    """kernel/drivers/vfio/pci/vfio-pci.ko.zst: ... -> {"vfio_pci"} (the first path of each line)."""
    names = set()
    for line in text.splitlines():
        path = line.split(":", 1)[0].strip()
        if ".ko" in path:
            names.add(module_key(path.rsplit("/", 1)[-1].split(".ko", 1)[0]))
    return names


@dataclass
class ModuleReport:
    states: dict[str, str]  # module -> LOADED/BUILTIN/AVAILABLE/MISSING; empty when nothing was readable
    evidence: list[Evidence]
    missing_because: str | None  # why MISSING is certain, or None when it only means "not seen"


def module_states(facts: HostFacts) -> ModuleReport:
    tree = facts.tree
    evidence: list[Evidence] = []
    proc_modules = tree.read("proc/modules", limit=4 << 20)
    loaded = {module_key(line.split()[0]) for line in (proc_modules or "").splitlines() if line.split()}
    if proc_modules is not None:
        evidence.append(Evidence("/proc/modules", " ".join(sorted(loaded & set(VFIO_MODULES))) or "no vfio module"))
    sys_module = set(tree.listdir("sys/module")) if tree.is_dir("sys/module") else None
    osrelease = tree.read("proc/sys/kernel/osrelease")
    builtin = available = None
    if osrelease:
        base = f"lib/modules/{osrelease}"
        text = tree.read(f"{base}/modules.builtin", limit=8 << 20)
        builtin = None if text is None else _names_from_paths(text)
        text = tree.read(f"{base}/modules.dep", limit=32 << 20)
        available = None if text is None else _names_from_paths(text)
        for name, found in (("modules.builtin", builtin), ("modules.dep", available)):
            if found is not None:
                listed = " ".join(sorted(found & set(VFIO_MODULES))) or "no vfio module"
                evidence.append(Evidence(f"/{base}/{name}", listed))
    driver_bound = tree.is_dir("sys/bus/pci/drivers/vfio-pci")
    if driver_bound:
        evidence.append(Evidence("/sys/bus/pci/drivers/vfio-pci", "present"))
    if sys_module is not None:
        evidence.append(Evidence("/sys/module", " ".join(sorted(sys_module & set(VFIO_MODULES))) or "no vfio module"))
    if proc_modules is None and sys_module is None and builtin is None and available is None:
        return ModuleReport({}, evidence, None)

    states = {}
    for name in VFIO_MODULES:
        in_sys = sys_module is not None and name in sys_module
        if name in loaded or (in_sys and tree.exists(f"sys/module/{name}/initstate")):
            states[name] = LOADED
        elif (builtin and name in builtin) or in_sys:
            states[name] = BUILTIN
        elif driver_bound and name in ("vfio", "vfio_pci"):
            states[name] = LOADED  # the vfio-pci driver is registered, so both are in the kernel
        elif available and name in available:
            states[name] = AVAILABLE
        else:
            states[name] = MISSING
    if available is not None or builtin is not None:
        because = "not in modules.dep or modules.builtin"
    elif proc_modules is None and sys_module is not None:
        because = "it cannot load modules (no /proc/modules), and /sys/module lists none of these as built in"
    else:
        because = None  # not loaded, and without modules.dep nobody can say whether it is installed
    return ModuleReport(states, evidence, because)


def check_vfio_modules(facts: HostFacts) -> Check:
    title = "vfio modules"
    modules = module_states(facts)
    states, evidence = modules.states, modules.evidence
    if not states:
        return Check(
            "vfio_modules",
            title,
            "skip",
            "The tree has none of /proc/modules, /sys/module, modules.builtin and modules.dep to read.",
        )
    described = _describe(states)
    missing = [name for name, state in states.items() if state == MISSING]
    not_loaded = [name for name, state in states.items() if state in (AVAILABLE, MISSING)]
    if not not_loaded:
        return Check("vfio_modules", title, "pass", f"vfio is ready: {described}.", evidence)
    if missing and modules.missing_because:
        return Check(
            "vfio_modules",
            title,
            "fail",
            f"This kernel has no {', '.join(missing)}: {modules.missing_because}.",
            evidence,
            fix="Boot a kernel built with CONFIG_VFIO, CONFIG_VFIO_PCI and CONFIG_VFIO_IOMMU_TYPE1; the stock "
            "kernels of Debian, Ubuntu, Fedora, Arch and Proxmox VE have them as modules.",
        )
    fix, plan = _load_fix(facts, not_loaded)
    summary = f"Not every vfio module is loaded yet ({described})."
    if missing:
        summary = (
            f"Not every vfio module is loaded ({described}), and without modules.dep nobody can tell whether "
            f"{', '.join(missing)} is installed."
        )
    return Check("vfio_modules", title, "warn", summary, evidence, fix, plan)


def _describe(states: dict[str, str]) -> str:
    """{"vfio": "loaded", "vfio_pci": "loaded"} -> "vfio, vfio_pci loaded"."""
    by_state: dict[str, list[str]] = {}
    for name, state in states.items():
        by_state.setdefault(state, []).append(name)
    return "; ".join(f"{', '.join(names)} {state}" for state, names in by_state.items())


def _load_fix(facts: HostFacts, names: list[str]) -> tuple[str, dict[str, Any]]:
    modules = list(VFIO_MODULES)
    boot = module_load_edit(facts.tree, modules, facts.distro)
    early = early_load_edit(facts.tree, modules, facts.initramfs)
    parts = [f"Load them now: `modprobe -a {' '.join(names)}`."]
    if boot.changed:
        parts.append(f"Load them at every boot: {_lower_first(boot.describe())}")
    commands = [f"modprobe -a {' '.join(names)}"]
    if early is not None and early.changed and facts.initramfs.rebuild_command:
        parts.append(
            "Load them from the initramfs, before a GPU driver can claim the card: "
            f"{_lower_first(early.describe())}\nthen run `{facts.initramfs.rebuild_command}`."
        )
        commands.append(facts.initramfs.rebuild_command)
    elif early is None:
        parts.append("No initramfs generator was found, so early loading cannot be planned for this host.")
    plan = {
        "commands": commands,
        "edits": [edit.to_json() for edit in (boot, early) if edit is not None and edit.changed],
    }
    return "\n".join(parts), plan


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def check_dev_vfio(facts: HostFacts) -> Check:
    tree, title = facts.tree, "/dev/vfio"
    if not tree.is_live and not tree.is_dir("dev"):
        return Check(
            "dev_vfio", title, "skip", "The tree has no dev/ directory (the capture did not record /dev/vfio)."
        )
    names = sorted(tree.listdir("dev/vfio"))
    if "vfio" in names:
        groups = [name for name in names if name != "vfio"]
        detail = f"; group nodes {' '.join(groups)} belong to devices bound to vfio-pci" if groups else ""
        return Check(
            "dev_vfio",
            title,
            "pass",
            f"/dev/vfio/vfio exists{detail}.",
            [Evidence("/dev/vfio", " ".join(names))],
        )
    evidence = [Evidence("/dev/vfio", " ".join(names) if names else "missing")]
    state = module_states(facts).states.get("vfio")
    if state in (LOADED, BUILTIN):
        return Check(
            "dev_vfio",
            title,
            "fail",
            "vfio is loaded but /dev/vfio/vfio is missing: /dev is not a devtmpfs or the node was removed.",
            evidence,
            fix="Mount devtmpfs on /dev (the default of every distribution kernel) or recreate the node with "
            "`mknod /dev/vfio/vfio c 10 196`, then check that udev does not remove it.",
        )
    return Check(
        "dev_vfio",
        title,
        "warn",
        "/dev/vfio/vfio appears when the vfio module loads, and "
        + ("this kernel has no vfio." if state == MISSING else "it is not loaded."),
        evidence,
        fix="Boot a kernel with vfio (see the vfio_modules check)."
        if state == MISSING
        else "Load vfio (see the vfio_modules check): `modprobe vfio`.",
    )
