"""The reset test job's call into passthrough.ops.resettest, with the job's saved arguments (see runner.OPERATIONS)."""

from __future__ import annotations

from passthrough.host import HostTree
from passthrough.ops.resettest import run_reset_test
from passthrough.ops.result import OperationResult, Progress
from webui.jobs.models import Job


def reset_test(tree: HostTree, job: Job, progress: Progress) -> OperationResult:
    return run_reset_test(tree, job.targets[0], confirm=job.parameters.get("confirm"), progress=progress)
