"""``manage.py diagnose [--root DIR] [--log FILE ...] [--format table|json]``.

Exit code 0: no finding; 1: findings; 2: bad input (a missing ``--log`` file, a root that is
not a host tree, nothing readable to diagnose). JSON: ``{"findings": [{"id", "severity",
"device", "summary", "evidence": [...], "cause", "fix", "sources", "occurrences"}], "sources":
[...], "unreadable": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import textwrap
from typing import TextIO

from passthrough.diagnose.finding import Diagnosis, Finding
from passthrough.diagnose.logs import read_given_log
from passthrough.errors import PassthroughError
from passthrough.host import HostTree

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2
HELP = (
    "Name what went wrong with passthrough from the kernel log and the VM logs, with the fix for this host. "
    "Exit code 0: nothing found, 1: findings, 2: bad input."
)
INDENT = " " * 13
WIDTH = 110
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")


class NothingToDiagnose(PassthroughError):
    code = "nothing_to_diagnose"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        metavar="DIR",
        default=os.environ.get("PASSTHROUGH_ROOT", "/"),
        help="host tree to read: / for this host, or a directory made by `capture` (default: $PASSTHROUGH_ROOT or /)",
    )
    parser.add_argument(
        "--log",
        dest="logs",
        metavar="FILE",
        action="append",
        default=[],
        help="a kernel or VM log to read as well (repeat); libvirt's VM logs in the tree are read anyway",
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="table for people, json for scripts"
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Diagnose; raises :class:`PassthroughError` for bad input (the caller turns it into exit code 2)."""
    from passthrough.diagnose.run import diagnose

    for path in args.logs:
        read_given_log(path)  # every given log must be readable before anything is diagnosed
    tree = HostTree.open(args.root)
    diagnosis = diagnose(tree, list(args.logs))
    if not diagnosis.sources:
        raise NothingToDiagnose(
            "There is no log to diagnose: " + "; ".join(diagnosis.unreadable) + ".",
            hint="Run as root on the host, give a capture made as root, or name a log with --log.",
        )
    if args.format == "json":
        indent = 2 if out.isatty() else None
        out.write(json.dumps(diagnosis.to_json(), indent=indent) + "\n")
    else:
        out.write(format_table(diagnosis))
    return EXIT_FINDINGS if diagnosis.findings else EXIT_OK


def printable(text: str) -> str:
    """A log line made safe for a terminal: control characters (escape sequences) become '?'."""
    return _CONTROL.sub("?", text)


def _wrapped(label: str, text: str) -> list[str]:
    """A paragraph under a label, wrapped for a terminal; indented lines (file contents) stay as they are."""
    lines: list[str] = []
    for line in printable(text).splitlines() or [""]:
        if line.startswith(" "):
            lines.append(INDENT + line)
        else:
            lines += textwrap.wrap(line, WIDTH, initial_indent=INDENT, subsequent_indent=INDENT) or [INDENT]
    first = f"      {label:<7}"
    return [first + lines[0][len(INDENT) :], *lines[1:]]


def format_finding(finding: Finding) -> list[str]:
    lines = [f"{finding.severity.upper():<7} {finding.id}  {finding.device or '(no device)'}"]
    lines += _wrapped("", finding.summary)
    shown = len(finding.evidence)
    more = f", the first {shown} shown" if finding.occurrences > shown else ""
    lines.append(f"      {'read:':<7}{finding.occurrences} line(s) in {', '.join(finding.sources)}{more}")
    lines += [f"{INDENT}{printable(line)}" for line in finding.evidence]
    lines += _wrapped("cause:", finding.cause)
    lines += _wrapped("fix:", finding.fix)
    return lines


def format_table(diagnosis: Diagnosis) -> str:
    lines: list[str] = []
    for finding in diagnosis.findings:
        lines += format_finding(finding) + [""]
    read = ", ".join(diagnosis.sources)
    if diagnosis.findings:
        counts = {
            severity: sum(1 for item in diagnosis.findings if item.severity == severity)
            for severity in ("error", "warning", "info")
        }
        parts = [f"{count} {severity}{'s' if count != 1 else ''}" for severity, count in counts.items() if count]
        lines.append(f"{len(diagnosis.findings)} finding(s) ({', '.join(parts)}) in {read}.")
    else:
        lines.append(f"No known passthrough failure in {read}.")
    lines += [f"Not read: {printable(note)}" for note in diagnosis.unreadable]
    return "\n".join(lines) + "\n"
