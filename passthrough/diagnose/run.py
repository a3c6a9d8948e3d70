"""diagnose(): match every line, group matches into one finding per (id, device), then advise.

A log of a working host matches nothing and gives no finding. The same failure repeated
(a VM started ten times, a fault logged a thousand times) is one finding with its first
lines as evidence and the count in ``occurrences``.
"""

from __future__ import annotations

from passthrough.diagnose.advice import ADVICE
from passthrough.diagnose.bootcheck import check_boot_bindings
from passthrough.diagnose.context import HostContext
from passthrough.diagnose.finding import SEVERITIES, Diagnosis, Finding, LogLine
from passthrough.diagnose.logs import KERNEL_LOG, collect
from passthrough.diagnose.matchers import BY_ID, dmar_enabled_without_units, match_line
from passthrough.host import HostTree
from passthrough.pci.model import Inventory
from passthrough.readiness.facts import HostFacts


def find(lines: list[LogLine]) -> list[Finding]:
    """Findings from log lines alone, without cause or fix; in the order they first appear."""
    findings: dict[tuple[str, str | None], Finding] = {}
    for line in lines:
        match = match_line(line.text)
        if match is None:
            continue
        key = (match.id, match.device)
        finding = findings.get(key)
        if finding is None:
            matcher = BY_ID[match.id]
            summary = matcher.summary(match.device, match.details)
            finding = Finding(match.id, matcher.severity, match.device, summary, details=dict(match.details))
            findings[key] = finding
        finding.add(line)
    for source in dict.fromkeys(line.source for line in lines):
        text = [line.text for line in lines if line.source == source]
        silent = dmar_enabled_without_units(text)
        if not silent:
            continue
        finding = findings.setdefault(
            ("iommu_disabled_firmware", None),
            Finding(
                "iommu_disabled_firmware",
                "error",
                None,
                "The kernel turned the Intel IOMMU on (intel_iommu=on) but found no DMAR unit and made no IOMMU group.",
            ),
        )
        for line in lines:
            if line.source == source and line.text in silent:
                finding.add(line)
    return sorted(findings.values(), key=lambda item: SEVERITIES.index(item.severity))


def advise(findings: list[Finding], ctx: HostContext) -> None:
    for finding in findings:
        finding.cause, finding.fix = ADVICE[finding.id](finding, ctx)


def diagnose(
    tree: HostTree,
    logs: list[str] | None = None,
    *,
    inventory: Inventory | None = None,
    vm_logs: bool = True,
    facts: HostFacts | None = None,
) -> Diagnosis:
    """The findings of the kernel log, libvirt's VM logs in ``tree`` and the ``logs`` given by path.

    ``inventory`` saves a scan and ``facts`` a second read of the host (the kernel log above
    all: ``dmesg`` on the live host) when the caller has them. Raises
    :class:`~passthrough.diagnose.logs.UnreadableLog` for a given log that cannot be read.
    """
    host = facts if facts is not None else HostFacts(tree)
    collected = collect(tree, logs, vm_logs=vm_logs, kernel_log=lambda: host.kernel_log)
    findings = find(collected.lines)
    if findings:
        kernel_text = [line.text for line in collected.lines if line.source == KERNEL_LOG]
        advise(findings, HostContext(tree, kernel_text, inventory, host))
    # The host's state too, read with every diagnosis (so after each boot): bindings at boot it lost.
    findings += check_boot_bindings(tree, inventory)
    findings.sort(key=lambda item: SEVERITIES.index(item.severity))
    return Diagnosis(findings, collected.sources, collected.unreadable)
