"""The VM jobs' calls into passthrough.vms, with the job's saved arguments (see runner.OPERATIONS)."""

from __future__ import annotations

from typing import Any

from passthrough.host import HostTree
from passthrough.ops.result import OperationResult, Progress
from passthrough.vms import give
from webui.hosts.trees import vm_connection
from webui.jobs.models import Job


def undo(tree: HostTree, record: Any, force: bool, progress: Progress) -> OperationResult:
    return give.undo(tree, record, connection=vm_connection(tree), force=force, progress=progress)


def attach(tree: HostTree, job: Job, progress: Progress) -> OperationResult:
    parameters = job.parameters
    return give.attach(
        tree,
        parameters.get("vm"),
        list(job.targets),
        connection=vm_connection(tree),
        live=parameters.get("live"),
        confirm=parameters.get("confirm"),
        fingerprint=parameters.get("fingerprint"),
        primary_gpu=parameters.get("primary_gpu", False),
        rom_file=parameters.get("rom_file"),
        progress=progress,
    )


def detach(tree: HostTree, job: Job, progress: Progress) -> OperationResult:
    parameters = job.parameters
    return give.detach(
        tree,
        parameters.get("vm"),
        list(job.targets),
        connection=vm_connection(tree),
        live=parameters.get("live"),
        progress=progress,
    )


def define(tree: HostTree, job: Job, progress: Progress) -> OperationResult:
    parameters = job.parameters
    return give.define_with(
        tree,
        list(job.targets),
        name=parameters.get("name") or "passthrough-vm",
        memory_mib=parameters.get("memory_mib") or 8192,
        vcpus=parameters.get("vcpus") or 4,
        connection=vm_connection(tree),
        progress=progress,
    )
