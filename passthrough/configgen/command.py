"""What ``manage.py vmconfig`` prints besides the configuration itself.

:mod:`passthrough.cli` parses the options and calls the generators; these say the rest:
the JSON object of ``--format json`` and, for ``--format text``, the lines on stderr (what
was added, what the host lacks, a NUMA node the devices do not sit on).
"""

from __future__ import annotations

from typing import Any

from passthrough.configgen.numa import PINNING_TARGETS, NumaPin, parse_numa_pin
from passthrough.configgen.safe import comment_text
from passthrough.configgen.spec import GeneratedConfig, VmSpec


def numa_json(spec: VmSpec, target: str, pin: NumaPin | str) -> dict[str, Any] | None:
    """``pin`` as asked (``"auto"``, ``"off"`` or a node number) and where the config pins the VM;
    None for a target that pins nothing."""
    if target not in PINNING_TARGETS:
        return None
    return {
        "pin": parse_numa_pin(pin),
        "node": spec.numa_node,
        "cpus": spec.numa_cpus,
        "why": spec.numa_why,
        "warning": spec.numa_warning,
    }


def command_json(spec: VmSpec, config: GeneratedConfig, pin: NumaPin | str) -> dict[str, Any]:
    return {
        **config.to_json(),
        "devices": [device.address for device in spec.devices],
        "numa": numa_json(spec, config.target, pin),
    }


def stderr_lines(spec: VmSpec, config: GeneratedConfig) -> list[str]:
    """One line each; names in them come from the host tree, so no escape sequence reaches the terminal."""
    lines = [
        f"added {device.address}: {comment_text(device.added_because)}"
        for device in spec.devices
        if device.added_because
    ]
    lines += [
        f"host not ready: {comment_text(requirement.text)}"
        for requirement in config.host_requirements
        if requirement.met is False
    ]
    if spec.numa_warning and config.target in PINNING_TARGETS:
        lines.append(f"warning: pinned to NUMA node {spec.numa_node}: {comment_text(spec.numa_warning)}")
    return lines
