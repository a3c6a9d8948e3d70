"""The hardware commands behind ``manage.py inventory | readiness | capture | vmconfig``.

They only read a host tree, so ``manage.py`` runs them through :func:`main` without
starting Django (whose start-up costs more than a whole scan); the Django management
commands in ``webui/hosts`` call the same :data:`SUBCOMMANDS`, so ``call_command`` and
``manage.py help`` see the same options.

To add a command: write ``add_<name>_arguments(parser)`` and ``run_<name>(args, out) -> int``
and list them in :data:`SUBCOMMANDS`. ``run`` writes whole lines to ``out``, returns the exit
code, and raises :class:`PassthroughError` for bad input, which :func:`main` turns into one
line on stderr and exit code 2. Import heavy modules inside ``run``: ``manage.py`` imports
this module for every command it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from passthrough.diagnose import report as diagnose_report
from passthrough.errors import PassthroughError

if TYPE_CHECKING:
    from passthrough.host import HostTree
    from passthrough.pci.model import Inventory, PciFunction
    from passthrough.readiness import Check

EXIT_OK = 0
EXIT_NOT_READY = 1
EXIT_BAD_INPUT = 2  # also what argparse exits with for an unknown option or format


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, TextIO], int]


def _add_root(parser: argparse.ArgumentParser, *, name: str = "--root") -> None:
    parser.add_argument(
        name,
        dest="root",
        metavar="DIR",
        default=os.environ.get("PASSTHROUGH_ROOT", "/"),
        help="host tree to read: / for this host, or a directory made by `capture` (default: $PASSTHROUGH_ROOT or /)",
    )


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table for people, json for scripts (the JSON is documented in the README)",
    )


def write_json(out: TextIO, data: Any) -> None:
    # Indented for a person at a terminal; one line otherwise, which the C encoder writes
    # three times faster (json only uses it without indent).
    indent = 2 if out.isatty() else None
    out.write(json.dumps(data, indent=indent) + "\n")


def _open_tree(root: str) -> HostTree:
    from passthrough.host import HostTree

    return HostTree.open(root)


# inventory ---------------------------------------------------------------------------


def add_inventory_arguments(parser: argparse.ArgumentParser) -> None:
    _add_root(parser)
    _add_format(parser)


def run_inventory(args: argparse.Namespace, out: TextIO) -> int:
    from passthrough.pci.scan import scan

    inventory = scan(_open_tree(args.root))
    if args.format == "json":
        write_json(out, inventory.to_json())
    else:
        out.write(format_inventory(inventory))
    return EXIT_OK


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _function_cells(function: PciFunction, inventory: Inventory) -> list[str]:
    ids = f"{function.vendor_id or '?'}:{function.device_id or '?'}"
    name = f"{function.vendor_name or ''} {function.device_name}".strip() if function.device_name else function.label
    if function.reset_methods is not None:
        reset = ",".join(function.reset_methods) or "none"
    else:
        reset = {True: "yes", False: "none", None: "?"}[function.has_reset]
    notes = []
    if function.address in inventory.host_critical:
        notes.append("host-critical")
    if function.boot_vga:
        notes.append("boot VGA")
    if function.physfn:
        notes.append(f"VF of {function.physfn}")
    elif function.sriov_totalvfs:
        notes.append(f"SR-IOV {function.sriov_numvfs or 0}/{function.sriov_totalvfs} VFs")
    return [
        function.address,
        ids,
        _shorten(function.class_name or function.class_code or "?", 28),
        _shorten(name, 56),
        function.driver or "-",
        reset,
        ", ".join(notes),
    ]


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def format_inventory(inventory: Inventory) -> str:
    """Groups with their verdict, reasons and members, aligned for a terminal."""
    header = ["ADDRESS", "IDS", "CLASS", "DEVICE", "DRIVER", "RESET", "NOTES"]
    cells = {function.address: _function_cells(function, inventory) for function in inventory.devices}
    # One set of column widths for the whole listing, so every group lines up.
    rendered = _table([header, *cells.values()])
    aligned = dict(zip(cells, rendered[1:], strict=True))
    lines = rendered[:1]

    for group in inventory.groups:
        verdict = "viable for passthrough" if group.viable else "NOT viable"
        lines += ["", f"IOMMU group {group.id}: {verdict}"]
        lines += [f"    - {reason}" for reason in group.reasons]
        lines += [aligned[address] for address in group.devices if address in aligned]

    ungrouped = [function.address for function in inventory.devices if function.iommu_group is None]
    if ungrouped and not inventory.groups:
        lines += [
            "",
            "No IOMMU groups under sys/kernel/iommu_groups: without an enabled IOMMU nothing can be passed through.",
            "Run `manage.py readiness` to see why and what to change.",
        ]
    elif ungrouped:
        lines += ["", "Not in any IOMMU group:"]
    lines += [aligned[address] for address in ungrouped]

    viable = sum(1 for group in inventory.groups if group.viable)
    lines += [
        "",
        f"{len(inventory.devices)} PCI functions in {len(inventory.groups)} IOMMU groups: "
        f"{viable} viable, {len(inventory.groups) - viable} not viable.",
    ]
    if not inventory.devices:
        lines[-1] = "No PCI functions found under sys/bus/pci/devices."
    return "\n".join(lines) + "\n"


# readiness ---------------------------------------------------------------------------


def add_readiness_arguments(parser: argparse.ArgumentParser) -> None:
    _add_root(parser)
    _add_format(parser)


def run_readiness(args: argparse.Namespace, out: TextIO) -> int:
    tree = _open_tree(args.root)  # bad input first, before importing the checks
    from passthrough import readiness

    if args.format == "json":
        report = readiness.report(tree)
        write_json(out, report)
        ready = bool(report["ready"])
    else:
        checks = readiness.run_checks(tree)
        ready = readiness.is_ready(checks)
        out.write(format_readiness(checks, ready, readiness.reasons(checks)))
    return EXIT_OK if ready else EXIT_NOT_READY


def format_readiness(checks: Sequence[Check], ready: bool, reasons: Sequence[str]) -> str:
    """One line per check; what was read and the fix under every check that did not pass."""
    width = max((len(check.title) for check in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{check.status.upper():<5} {check.title:<{width}}  {check.summary}")
        if check.status in ("fail", "warn"):
            lines += [f"      read: {item.path}: {item.value}" for item in check.evidence]
            if check.fix:
                lines.append(f"      fix:  {check.fix}")
    failed = [check.id for check in checks if check.status == "fail"]
    if ready:
        lines += ["", "Ready for PCI passthrough."]
    elif failed:
        lines += ["", f"Not ready for PCI passthrough: {_count(len(failed), 'check')} failed ({', '.join(failed)})."]
    else:
        lines += ["", "Not ready for PCI passthrough:", *(f"    {reason}" for reason in reasons)]
    return "\n".join(lines) + "\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# capture -----------------------------------------------------------------------------


def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dest", metavar="DEST", help="directory to write (missing or empty)")
    _add_root(parser)
    _add_format(parser)


def run_capture(args: argparse.Namespace, out: TextIO) -> int:
    from passthrough.capture.run import capture

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    summary = capture(_open_tree(args.root), args.dest, progress=progress)
    if args.format == "json":
        write_json(out, summary.to_json())
        return EXIT_OK
    lines = [
        f"Captured {summary.source} into {summary.dest} in {summary.seconds:.1f} s: {summary.functions} PCI functions, "
        f"{summary.groups} IOMMU groups, {summary.files} files, {summary.links} links.",
    ]
    if not summary.privileged:
        lines.append("Not run as root: config space beyond 64 bytes and the kernel log may be missing.")
    if summary.skipped:
        lines.append(f"Skipped {_count(len(summary.skipped), 'path')}:")
        lines += [f"    {skipped.path}: {skipped.reason}" for skipped in summary.skipped]
    lines.append(f"Read it back with: manage.py inventory --root {summary.dest}")
    out.write("\n".join(lines) + "\n")
    return EXIT_OK


# vmconfig ----------------------------------------------------------------------------
TARGET_NAMES = ("qemu", "libvirt", "proxmox", "vmware", "hyperv")  # passthrough.configgen.TARGETS, kept light here


def add_vmconfig_arguments(parser: argparse.ArgumentParser) -> None:
    _add_root(parser)
    parser.add_argument(
        "--device",
        dest="devices",
        metavar="ADDR",
        action="append",
        required=True,
        help="a function to pass (repeat); the rest of its IOMMU group and card is added",
    )
    parser.add_argument("--target", choices=TARGET_NAMES, required=True)
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: the configuration alone, ready to redirect into a file; json: with notes and host checks",
    )
    parser.add_argument("--name", default="passthrough-vm")
    parser.add_argument("--firmware", choices=("ovmf", "seabios"), default="ovmf")
    parser.add_argument("--machine", choices=("q35", "i440fx"), default="q35")
    parser.add_argument("--primary-gpu", action="store_true", help="the passed GPU is the VM's only display (x-vga)")
    parser.add_argument("--rom-file", metavar="PATH", help="a VBIOS file for the GPU (an absolute path on the host)")
    parser.add_argument(
        "--no-rombar", dest="rombar", action="store_false", help="hide the device's option ROM from the VM"
    )
    parser.add_argument("--memory", dest="memory_mib", type=int, default=8192, metavar="MIB")
    parser.add_argument("--vcpus", type=int, default=4)
    parser.add_argument("--hugepages", action="store_true")
    parser.add_argument("--hide-kvm", action="store_true", help="hide the hypervisor from old NVIDIA drivers (kvm=off)")
    parser.add_argument("--hv-vendor-id", metavar="TEXT", help="Hyper-V vendor id the guest sees (old NVIDIA drivers)")
    parser.add_argument("--proxmox-mapping", metavar="NAME", help="a Proxmox cluster resource mapping to use instead of addresses")  # fmt: skip
    numa = "where QEMU, libvirt and Proxmox pin vCPUs and memory: auto (the passed devices' NUMA node), off, or node N"
    parser.add_argument("--numa-pin", metavar="auto|off|N", default="auto", help=numa)


def run_vmconfig(args: argparse.Namespace, out: TextIO) -> int:
    from passthrough.configgen import build_spec, generate
    from passthrough.configgen.command import command_json, stderr_lines
    from passthrough.pci.scan import scan

    tree = _open_tree(args.root)
    inventory = scan(tree)
    spec = build_spec(
        inventory,
        args.devices,
        tree=tree,
        name=args.name,
        firmware=args.firmware,
        machine=args.machine,
        primary_gpu=args.primary_gpu,
        rom_file=args.rom_file,
        rombar=args.rombar,
        memory_mib=args.memory_mib,
        vcpus=args.vcpus,
        hugepages=args.hugepages,
        hide_kvm=args.hide_kvm,
        hv_vendor_id=args.hv_vendor_id,
        proxmox_mapping=args.proxmox_mapping,
        numa_pin=args.numa_pin,
    )
    config = generate(inventory, spec, args.target)
    if args.format == "json":
        write_json(out, command_json(spec, config, args.numa_pin))
        return EXIT_OK
    out.write(config.text if config.text.endswith("\n") else config.text + "\n")
    for line in stderr_lines(spec, config):
        print(line, file=sys.stderr)
    return EXIT_OK


SUBCOMMANDS: dict[str, Subcommand] = {
    command.name: command
    for command in (
        Subcommand(
            "inventory",
            "List every PCI function and IOMMU group, with each group's passthrough verdict.",
            add_inventory_arguments,
            run_inventory,
        ),
        Subcommand(
            "readiness",
            "Check whether this host can do PCI passthrough, and say how to fix what is missing. "
            "Exit code 0: ready, 1: not ready, 2: bad input.",
            add_readiness_arguments,
            run_readiness,
        ),
        Subcommand(
            "capture",
            "Record this host's PCI, IOMMU and boot facts into DEST, which every command reads back with --root DEST.",
            add_capture_arguments,
            run_capture,
        ),
        Subcommand(
            "vmconfig",
            "Generate the VM configuration that passes the given devices (and what must move with them) "
            "for QEMU, libvirt, Proxmox VE, VMware ESXi or Hyper-V.",
            add_vmconfig_arguments,
            run_vmconfig,
        ),
        Subcommand("diagnose", diagnose_report.HELP, diagnose_report.add_arguments, diagnose_report.run),
    )
}


def build_parser(prog: str = "manage.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Passthrough Wizard's hardware commands.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS.values():
        command.add_arguments(commands.add_parser(command.name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "manage.py", out: TextIO | None = None) -> int:
    """Run one hardware command; returns its exit code (argparse exits 2 itself on bad options)."""
    args = build_parser(prog).parse_args(argv)
    out = out or sys.stdout
    try:
        return SUBCOMMANDS[args.command].run(args, out)
    except PassthroughError as error:
        print(f"{prog} {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly, as cat and lspci do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
