"""Read PCI and IOMMU-group listings as people paste them.

Forum posts, wikis and bug reports carry a host's PCI layout as text: the Arch wiki's
group loops, ``lspci -nnk``, ``lspci -tv``, and a few scripts' own formats. Each parser
here returns :class:`~passthrough.hosttrees.listed.ListedFunction` values, plain data where a fact the text does not
give is ``None``. Lines that are not part of the listing (shell prompts, commands,
``USB:`` lines) are skipped; a line that claims to be a listing line but cannot be read
raises :class:`ListingError` naming the line.

:mod:`passthrough.hosttrees.listing_hosts` turns what they return into a host tree's description
(:func:`build_host_spec`, with the bus topology a listing does not print); those names
stay importable from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from passthrough.errors import InvalidAddress, ListingError
from passthrough.hosttrees.listed import ListedFunction
from passthrough.hosttrees.listing_hosts import Topology, build_host_spec, infer_topology, merge_lspci  # noqa: F401 (re-exported)
from passthrough.pci import pciids
from passthrough.pci.address import PciAddress

_ADDRESS = r"(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"
_DEVICE_LINE = re.compile(
    rf"^(?P<address>{_ADDRESS})\s+(?P<class_name>[^:\[]+?)(?:\s*\[(?P<code>[0-9a-fA-F]{{4}})\])?:\s*(?P<rest>.*)$"
)
_PROG_IF = re.compile(r"\s*\(prog-if (?P<prog_if>[0-9a-fA-F]{2})(?: \[[^\]]*\])?\)$")
_REVISION = re.compile(r"\s*\(rev (?P<revision>[0-9a-fA-F]{2})\)$")
_IDS = re.compile(r"\s*\[(?P<vendor>[0-9a-fA-F]{4}):(?P<device>[0-9a-fA-F]{4})\]$")
_HINT = "Paste the output exactly as the command printed it, for example `lspci -nnk` or the Arch wiki's group loop."


# Single lines ------------------------------------------------------------------------
def parse_device_line(text: str, line: int | None = None) -> ListedFunction | None:
    """One `lspci` device line, with or without ``-nn``; None if ``text`` is not one.

    ``01:00.0 VGA compatible controller [0300]: NVIDIA Corporation GP108 [GeForce GT 1030] [10de:1d01] (rev a1)``
    """
    match = _DEVICE_LINE.match(text.strip())
    if not match:
        return None
    try:
        address = str(PciAddress.parse(match["address"]))
    except InvalidAddress:
        return None
    rest = match["rest"].strip()
    found = ListedFunction(address=address, class_name=match["class_name"].strip(), line=line)
    for pattern in (_PROG_IF, _REVISION, _IDS):
        tail = pattern.search(rest)
        if tail:
            rest = rest[: tail.start()].rstrip()
            for key, value in tail.groupdict().items():
                setattr(found, {"vendor": "vendor_id", "device": "device_id"}.get(key, key), value.lower())
    found.name = rest or None
    found.class_code = match["code"].lower() if match["code"] else class_code_of(found.class_name)
    return found


def class_code_of(class_name: str | None) -> str | None:
    """``"PCI bridge"`` -> ``"0604"``, through pci.ids' class table, as lspci names classes."""
    return _class_codes().get(class_name) if class_name else None


@lru_cache(maxsize=1)
def _class_codes() -> dict[str, str]:
    # lspci prints a subclass's name when pci.ids has one ("Serial bus controller" is both
    # class 0c and subclass 0c80), else the class's, whose subclass no name can tell. So
    # only subclass entries map back, the lowest code first. pciids has no public accessor
    # for its class table yet.
    codes: dict[str, str] = {}
    for code, name in sorted(pciids.load().class_table().items()):
        if len(code) == 4:
            codes.setdefault(name, code)
    return codes


def _device(text: str, number: int, where: str, line: str) -> ListedFunction:
    found = parse_device_line(text, number)
    if found is None:
        raise ListingError(
            f"Line {number} of {where} does not hold an lspci device line: {line.strip()[:100]!r}.", hint=_HINT
        )
    return found


# Group listings -------------------------------------------------------------------------
_ONE_LINE = re.compile(r"^IOMMU [Gg]roup (?P<group>\d+) (?P<device>\S.*)$")
_GROUP_HEADER = re.compile(r"^IOMMU [Gg]roup (?P<group>\d+):\s*$")
_DMAR_UNIT = re.compile(r"^IOMMU: (?P<unit>\S+)\s*$")
_DMAR_GROUP = re.compile(r"^\s+IOMMU Group: (?P<group>\d+)\s*$")
_DMAR_DEVICE = re.compile(rf"^\s+Group Device: (?P<address>{_ADDRESS}) - (?P<text>.*)$")
_IOMMU_SH = re.compile(
    rf"^(?:Group (?P<group>\d+):)?\t+\[(?P<vendor>[0-9a-fA-F]{{4}}):(?P<device>[0-9a-fA-F]{{4}})\]\s+"
    rf"(?P<reset>\[R\]\s+)?(?P<address>{_ADDRESS})\s+(?P<class_name>\S.*?)\s{{2,}}(?P<name>\S.*?)\s*$"
)


def parse_arch_one_line(text: str) -> list[ListedFunction]:
    """The Arch wiki loop ``printf 'IOMMU Group %s ' "$n"; lspci -nns ...``: one function per line.

    The glob sorts groups as text (10 before 2); "Group" and "group" both occur.
    """
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _ONE_LINE.match(line.strip())
        if match:
            function = _device(match["device"], number, "the group listing", line)
            function.iommu_group = int(match["group"])
            found.append(function)
    return _unique(found)


def parse_arch_grouped(text: str) -> list[ListedFunction]:
    """``IOMMU Group N:`` then the group's functions, indented, with or without a domain."""
    found, group = [], None
    for number, line in enumerate(text.splitlines(), 1):
        header = _GROUP_HEADER.match(line.strip())
        if header:
            group = int(header["group"])
        elif group is not None and line[:1] in ("\t", " ") and line.strip():
            function = _device(line, number, "the group listing", line)
            function.iommu_group = group
            found.append(function)
        elif line.strip():
            group = None  # a prompt or other text ends the listing
    return _unique(found)


def parse_dmar_tree(text: str) -> list[ListedFunction]:
    """EthanZHF's ``list_iommu_tree.sh``: ``IOMMU: dmarN`` / ``IOMMU Group: G`` / ``Group Device: BDF - lspci -nn text``.

    It walks each unit's devices and prints a group once per member, so functions repeat.
    """
    found, unit, group = [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        if match := _DMAR_UNIT.match(line):
            unit, group = match["unit"], None
        elif match := _DMAR_GROUP.match(line):
            group = int(match["group"])
        elif match := _DMAR_DEVICE.match(line):
            function = _device(f"{match['address']} {match['text']}", number, "the IOMMU tree", line)
            function.iommu_group, function.iommu_unit = group, unit
            found.append(function)
    return _unique(found)


def parse_iommu_sh(text: str) -> list[ListedFunction]:
    """The r15ch13 gist ``iommu.sh``: ``Group N:\\t[vvvv:dddd] [R] BB:DD.F  <class>  <device name>``.

    Further members of a group follow on lines that start with tabs; ``[R]`` marks a
    function with a reset; ``USB:`` lines (devices on a USB controller) are skipped.
    Class names map back to class codes through pci.ids.
    """
    found, group = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("USB:"):
            continue
        match = _IOMMU_SH.match(line)
        if not match:
            if line.strip() and not line.startswith("\t"):
                group = None
            continue
        if match["group"] is not None:
            group = int(match["group"])
        class_name = match["class_name"].strip()
        found.append(
            ListedFunction(
                address=str(PciAddress.parse(match["address"])),
                class_code=class_code_of(class_name),
                class_name=class_name,
                vendor_id=match["vendor"].lower(),
                device_id=match["device"].lower(),
                name=match["name"],
                iommu_group=group,
                has_reset=match["reset"] is not None,
                line=number,
            )
        )
    return _unique(found)


def parse_groups(text: str) -> list[ListedFunction]:
    """Whichever group-listing format ``text`` is in; :class:`ListingError` if none."""
    parsers: list[Callable[[str], list[ListedFunction]]] = [
        parse_arch_one_line,
        parse_arch_grouped,
        parse_dmar_tree,
        parse_iommu_sh,
        parse_lspci,  # `lspci -v` prints "IOMMU group N" among the flags
    ]
    best: list[ListedFunction] = []
    errors: list[ListingError] = []
    for parser in parsers:
        try:
            found = [function for function in parser(text) if function.iommu_group is not None]
        except ListingError as error:  # a line of another format, or a real fault of this one
            errors.append(error)
            continue
        if len(found) > len(best):
            best = found
    if not best and errors:
        raise errors[0]
    if not best:
        raise ListingError(
            "No IOMMU group listing found in the text.",
            hint="Paste the output of the Arch wiki's IOMMU group loop (`for d in /sys/kernel/iommu_groups/*/devices/*`).",
        )
    return best


def _unique(functions: list[ListedFunction]) -> list[ListedFunction]:
    """One entry per address, the first, completed by later ones (``lspci -nnk`` pasted
    with ``lspci -v``). A function listed in two groups is an error, not a choice."""
    seen: dict[str, ListedFunction] = {}
    for function in functions:
        first = seen.setdefault(function.address, function)
        if first is function:
            continue
        if None not in (first.iommu_group, function.iommu_group) and first.iommu_group != function.iommu_group:
            raise ListingError(
                f"{function.address} is listed in group {first.iommu_group} (line {first.line}) "
                f"and in group {function.iommu_group} (line {function.line}).",
                hint="A function belongs to exactly one IOMMU group; paste one listing from one boot.",
            )
        for key, value in vars(function).items():
            if getattr(first, key) in (None, []) and value not in (None, []):
                setattr(first, key, value)
    return sorted(seen.values(), key=lambda function: function.pci_address)


# lspci ------------------------------------------------------------------------------
_SUBSYSTEM = re.compile(
    r"^Subsystem:\s*(?P<name>.*?)(?:\s*\[(?P<vendor>[0-9a-fA-F]{4}):(?P<device>[0-9a-fA-F]{4})\])?$"
)
_FLAGS_GROUP = re.compile(r"\bIOMMU group (?P<group>\d+)\b")
_BUS_NUMBERS = re.compile(r"^Bus: primary=[0-9a-fA-F]{2}, secondary=(?P<secondary>[0-9a-fA-F]{2}),")


def parse_lspci(text: str) -> list[ListedFunction]:
    """`lspci` with any of ``-nn``, ``-k``, ``-q``, ``-v``, ``-vvv``: device lines and their indented details.

    Reads the subsystem ids, "Kernel driver in use", "Kernel modules", the "IOMMU group"
    that ``-v`` prints among the flags, and a bridge's secondary bus from ``-vvv``.
    """
    found: list[ListedFunction] = []
    current: ListedFunction | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line[0] not in " \t":
            current = parse_device_line(line, number)
            if current is not None:
                found.append(current)
            continue
        if current is not None:
            _read_detail(current, line.strip())
    return _unique(found)


def _read_detail(function: ListedFunction, detail: str) -> None:
    if match := _SUBSYSTEM.match(detail):
        if match["vendor"]:
            function.subsystem_vendor_id, function.subsystem_device_id = (
                match["vendor"].lower(),
                match["device"].lower(),
            )
    elif detail.startswith("Kernel driver in use:"):
        function.driver = detail.split(":", 1)[1].strip() or None
    elif detail.startswith("Kernel modules:"):
        function.modules = [name.strip() for name in detail.split(":", 1)[1].split(",") if name.strip()]
    elif detail.startswith("Flags:") and (match := _FLAGS_GROUP.search(detail)):
        function.iommu_group = int(match["group"])
    elif match := _BUS_NUMBERS.match(detail):
        function.secondary_bus = int(match["secondary"], 16)


# lspci -t ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeNode:
    """A function's place in `lspci -t`: the bridge it hangs under and, for a bridge, the bus it opens."""

    address: str
    parent: str | None  # None on a root bus
    secondary_bus: int | None = None
    name: str | None = None


_ROOT_BUS = re.compile(r"\[(?P<domain>[0-9a-fA-F]{4,8}):(?P<bus>[0-9a-fA-F]{2})\]-")
_TREE_DEVICE = re.compile(r"(?P<slot>[0-9a-fA-F]{2})\.(?P<function>[0-7])")
_TREE_BRIDGE = re.compile(r"-\[(?P<secondary>[0-9a-fA-F]{2})(?:-[0-9a-fA-F]{2})?\]--")


def parse_lspci_tree(text: str) -> list[TreeNode]:
    """`lspci -t` or ``-tv``: where each function hangs.

    lspci draws a bus's functions from one column: the first after ``--`` (alone) or
    ``+-`` (first of several), the others on later lines with ``+-`` or ``\\-`` in that
    same column. A bridge prints ``-[SS]--`` or ``-[SS-EE]--`` before its bus.
    """
    nodes: list[TreeNode] = []
    columns: dict[int, tuple[int, int, str | None]] = {}  # column -> (domain, bus, bridge)
    for line in text.splitlines():
        start = len(line) - len(line.lstrip(" |"))
        head = line[start:]
        if head[:2] in ("+-", "\\-"):
            if head[2:3] == "[":
                _tree_root(line, start + 2, nodes, columns)
            elif start in columns:
                _tree_device(line, start + 2, columns[start], nodes, columns)
        elif head.startswith("-+-["):
            _tree_root(line, start + 3, nodes, columns)
        elif head.startswith("-["):
            _tree_root(line, start + 1, nodes, columns)
    return nodes


def _tree_root(line: str, at: int, nodes: list[TreeNode], columns: dict[int, tuple[int, int, str | None]]) -> None:
    match = _ROOT_BUS.match(line, at)
    if match:
        _tree_bus(line, match.end(), (int(match["domain"], 16), int(match["bus"], 16), None), nodes, columns)


def _tree_bus(
    line: str,
    at: int,
    bus: tuple[int, int, str | None],
    nodes: list[TreeNode],
    columns: dict[int, tuple[int, int, str | None]],
) -> None:
    if line[at : at + 2] == "--":
        _tree_device(line, at + 2, bus, nodes, columns)
    elif line[at : at + 2] == "+-":
        columns[at] = bus
        _tree_device(line, at + 2, bus, nodes, columns)


def _tree_device(
    line: str,
    at: int,
    bus: tuple[int, int, str | None],
    nodes: list[TreeNode],
    columns: dict[int, tuple[int, int, str | None]],
) -> None:
    match = _TREE_DEVICE.match(line, at)
    if not match:
        return
    domain, number, parent = bus
    address = f"{domain:04x}:{number:02x}:{match['slot'].lower()}.{match['function']}"
    bridge = _TREE_BRIDGE.match(line, match.end())
    if bridge is None:
        nodes.append(TreeNode(address, parent, None, line[match.end() :].strip() or None))
        return
    secondary = int(bridge["secondary"], 16)
    nodes.append(TreeNode(address, parent, secondary))
    _tree_bus(line, bridge.end(), (domain, secondary, address), nodes, columns)
