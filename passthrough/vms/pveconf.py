"""A Proxmox VE VM config (``/etc/pve/qemu-server/<vmid>.conf``) read and planned as qemu-server does.

The file is sections of ``key: value`` lines: the VM's current config first, then
``[PENDING]`` (changes waiting for the next start, with ``delete: a,!b`` for removals),
``[special:cloudinit]``, and one ``[name]`` section per snapshot. qemu-server's
``write_vm_config`` writes ``#`` description lines first and every key in sorted order,
so a planned line goes where qemu-server will put it and the diff shows only that line.

``hostpciN`` values are property strings (``PVE::QemuServer::PCI``): the first item is
``host`` (``bb:dd``, ``bb:dd.f`` or ``dddd:bb:dd.f``, ``;``-separated for several) unless
it is ``mapping=NAME``, a cluster resource mapping from ``/etc/pve/mapping/pci.cfg``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CONF_DIR = "etc/pve/qemu-server"
MAPPING_FILE = "etc/pve/mapping/pci.cfg"
MAX_CONF_BYTES = 1024 * 1024  # pmxcfs keeps no file larger than 1 MiB
HOSTPCI = re.compile(r"^hostpci(\d+)$")
_KEY_LINE = re.compile(r"^([a-z][a-z_\-]*\d*):\s*(.+?)\s*$")
_PENDING = re.compile(r"^\[PENDING\]\s*$", re.IGNORECASE)
_SPECIAL = re.compile(r"^\[special:(cloudinit|fleecing)\]\s*$", re.IGNORECASE)
_SNAPSHOT = re.compile(r"^\[([a-z][a-z0-9_\-]+)\]\s*$", re.IGNORECASE)
_ANY_SECTION = re.compile(r"^\[([^\]]*)\]\s*$")
# qemu-server's $PCIRE: the domain is optional, the function too (then every function of the device).
PCI_ID = re.compile(r"^(?:([0-9a-f]{4,}):)?([0-9a-f]{2}):([0-9a-f]{2})(?:\.([0-9a-f]))?$")


@dataclass
class Section:
    kind: str  # main, pending, special, snapshot, unknown
    name: str
    start: int  # index of its first line (the header for all but main)
    end: int  # index after its last line
    values: dict[str, str] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)  # key -> line index


@dataclass
class PveConf:
    lines: list[str]
    sections: list[Section]

    @property
    def main(self) -> dict[str, str]:
        return self.sections[0].values

    def section(self, kind: str) -> Section | None:
        return next((section for section in self.sections if section.kind == kind), None)

    @property
    def pending(self) -> dict[str, str]:
        section = self.section("pending")
        return {} if section is None else {key: value for key, value in section.values.items() if key != "delete"}

    @property
    def pending_delete(self) -> list[str]:
        section = self.section("pending")
        return parse_delete(section.values.get("delete", "")) if section is not None else []

    @property
    def snapshots(self) -> list[str]:
        return [section.name for section in self.sections if section.kind == "snapshot"]

    def effective(self, key: str) -> str | None:
        """The value the next start uses: a pending change, a pending removal, or the current value."""
        if key in self.pending:
            return self.pending[key]
        if key in self.pending_delete:
            return None
        return self.main.get(key)

    def hostpci_keys(self) -> list[str]:
        """Every hostpciN the main or pending section names (a pending one still takes its index)."""
        keys = set(self.main) | set(self.pending)
        return sorted((key for key in keys if HOSTPCI.match(key)), key=lambda key: int(key[7:]))


def parse_delete(value: str) -> list[str]:
    """``delete: hostpci0,!scsi1``: the keys (``!`` forces) a pending removal names."""
    return [entry.lstrip("!") for entry in re.split(r"[,;\s]+", value.strip()) if entry.lstrip("!")]


def parse(text: str) -> PveConf:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    sections = [Section("main", "", 0, len(lines))]
    for index, line in enumerate(lines):
        header = _header(line)
        if header is not None:
            sections[-1].end = index
            sections.append(Section(header[0], header[1], index, len(lines)))
            continue
        match = _KEY_LINE.match(line)
        if match and sections[-1].kind != "unknown":
            sections[-1].values[match.group(1)] = match.group(2)
            sections[-1].key_lines[match.group(1)] = index
    return PveConf(lines=lines, sections=sections)


def _header(line: str) -> tuple[str, str] | None:
    if _PENDING.match(line):
        return ("pending", "PENDING")
    special = _SPECIAL.match(line)
    if special:
        return ("special", special.group(1))
    snapshot = _SNAPSHOT.match(line)
    if snapshot:
        return ("snapshot", snapshot.group(1))
    other = _ANY_SECTION.match(line)
    return ("unknown", other.group(1)) if other else None


def insert(text: str, kind: str, entries: dict[str, str]) -> str:
    """``text`` with ``key: value`` lines added to the main or pending section where qemu-server sorts them."""
    conf = parse(text)
    lines = list(conf.lines)
    section = conf.section(kind)
    if section is None:  # a new [PENDING] goes right after the main section, as write_vm_config orders them
        at = conf.sections[1].start if len(conf.sections) > 1 else len(lines)
        block = ["[PENDING]", *(f"{key}: {entries[key]}" for key in sorted(entries))]
        if at == len(lines):
            lines += ["", *block]
        else:
            lines[at:at] = [*block, ""]
        return "\n".join(lines) + "\n"
    for key in sorted(entries, reverse=True):
        lines.insert(_position(section, key), f"{key}: {entries[key]}")
    return "\n".join(lines) + "\n"


def _position(section: Section, key: str) -> int:
    later = [index for existing, index in section.key_lines.items() if existing > key]
    if later:
        return min(later)
    if section.key_lines:
        return max(section.key_lines.values()) + 1
    return section.start + 1 if section.kind != "main" else section.end


def machine_type(value: str | None) -> str:
    """The machine's type: ``q35``, ``pc-q35-8.1``, ``pc``…; qemu-server's default without a line is ``pc`` (i440fx)."""
    for item in (value or "").split(","):
        key, _, rest = item.partition("=")
        if not rest and key:
            return key.strip()
        if key == "type" and rest:
            return rest.strip()
    return "pc"


def property_string(value: str, default_key: str) -> dict[str, str]:
    """``01:00,pcie=1,x-vga=1`` as ``{"host": "01:00", "pcie": "1", "x-vga": "1"}``."""
    options: dict[str, str] = {}
    for item in value.split(","):
        key, equals, rest = item.partition("=")
        if equals:
            options[key.strip()] = rest.strip()
        elif item.strip():
            options[default_key] = item.strip()
    return options


@dataclass
class HostpciEntry:
    key: str  # hostpci0
    value: str
    options: dict[str, str]
    ids: list[str]  # host PCI ids as written (bb:dd, bb:dd.f, dddd:bb:dd.f), or a mapping's path
    functions: list[str]  # the full addresses they name on this host
    note: str | None = None  # why some or all of them could not be named


def expand(pci_id: str, functions: list[str]) -> list[str]:
    """The functions a hostpci id names on the host: one, or every function of ``bb:dd``."""
    match = PCI_ID.match(pci_id.strip().lower())
    if not match:
        return []
    domain, bus, slot, function = match.groups()
    base = f"{domain or '0000'}:{bus}:{slot}"
    if function is not None:
        return [f"{base}.{function}"] if f"{base}.{function}" in functions else []
    return [name for name in functions if name.startswith(base + ".")]


def hostpci_entry(
    key: str, value: str, functions: list[str], mappings: dict[str, list[list[str]]] | None
) -> HostpciEntry:
    options = property_string(value, "host")
    if "mapping" in options and "host" not in options:
        return _mapped(key, value, options, functions, mappings)
    ids = [pci_id for pci_id in options.get("host", "").split(";") if pci_id]
    found = [address for pci_id in ids for address in expand(pci_id, functions)]
    missing = [pci_id for pci_id in ids if not expand(pci_id, functions)]
    note = f"{key} names {', '.join(missing)}, which this host does not have" if missing else None
    if not ids:
        note = f"{key} names no host device ({value!r})"
    return HostpciEntry(key, value, options, ids, found, note)


def _mapped(
    key: str, value: str, options: dict[str, str], functions: list[str], mappings: dict[str, list[list[str]]] | None
) -> HostpciEntry:
    name = options["mapping"]
    if mappings is None:
        why = f"{key} uses the cluster mapping {name!r}, and there is no /{MAPPING_FILE} to resolve it"
        return HostpciEntry(key, value, options, [], [], why)
    if name not in mappings:
        why = f"{key} uses the cluster mapping {name!r}, which /{MAPPING_FILE} does not define"
        return HostpciEntry(key, value, options, [], [], why)
    alternatives = mappings[name]
    if not alternatives:
        why = f"{key} uses the cluster mapping {name!r}, which maps no device on this node"
        return HostpciEntry(key, value, options, [], [], why)
    if len(alternatives) > 1:
        shown = " or ".join(";".join(paths) for paths in alternatives)
        why = f"{key} uses the cluster mapping {name!r}: qemu-server picks one of {shown} when the VM starts"
        return HostpciEntry(key, value, options, [], [], why)
    paths = alternatives[0]
    found = [address for path in paths for address in expand(path, functions)]
    note = None if found else f"{key} uses the cluster mapping {name!r} for {';'.join(paths)}, not on this host"
    return HostpciEntry(key, value, options, paths, found, note)
