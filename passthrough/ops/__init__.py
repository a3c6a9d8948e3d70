"""Privileged operations: each validates against the live kernel, acts, verifies, and rolls back.

The public API the Celery tasks and the shell commands call, with JSON-able arguments:

* :func:`bind_vfio` / :func:`restore_driver`: a whole IOMMU group to vfio-pci and back;
* :func:`reset`: a function-level reset, by the kernel's choice or the user's;
* :func:`set_sriov_vfs`: how many VFs a PF exposes;
* :func:`check_action` / :func:`judge`: the one interlock all of them (and the pages)
  ask whether an action may touch a function, see :mod:`passthrough.ops.interlock`;
* persistence (``plan_*`` shows a diff and writes nothing, ``apply_*`` writes with a
  backup and returns how to undo, ``undo_*`` restores the backup).

Bad input raises a :class:`~passthrough.errors.PassthroughError` subclass before anything
is written; everything else returns an :class:`OperationResult`.

May import: ``passthrough.pci`` (the scan, verdicts and console reader), ``passthrough.boot``
(where binding at boot and the kernel command line go), ``passthrough.host`` and
``passthrough.errors``. Nothing from readiness, configgen, vms, diagnose, the host-tree
builders or Django: the worker's tasks and the shell commands call in, never the reverse.
"""

from passthrough.ops.bind import bind_vfio, restore_driver
from passthrough.ops.commands import CommandResult, RunCommand
from passthrough.ops.errors import (
    BootConfigUnsupported,
    ConfirmationRequired,
    DeviceInUse,
    FileChangedSinceApply,
    GroupNotViable,
    InvalidCount,
    InvalidDriverName,
    InvalidRequest,
    IommuOff,
    NeverAllowed,
    NotSriovCapable,
    OperationFailed,
    ResetRefused,
    ResetUnavailable,
    UnknownResetMethod,
    VerificationFailed,
    VfioUnavailable,
)
from passthrough.ops.files import FileChange, PersistencePlan
from passthrough.ops.interlock import Permission, Verdict, check_action, confirmation_phrase, judge
from passthrough.ops.persist import (
    apply_kernel_cmdline,
    apply_persist_binding,
    apply_rebuild_initramfs,
    apply_unpersist_binding,
    persisted_bindings,
    plan_kernel_cmdline,
    plan_persist_binding,
    plan_rebuild_initramfs,
    plan_unpersist_binding,
    undo_change,
    undo_kernel_cmdline,
    undo_persist_binding,
    undo_unpersist_binding,
)
from passthrough.ops.reset import amd_reset_bug_family, reset
from passthrough.ops.result import FAILED, OUTCOMES, ROLLED_BACK, SUCCEEDED, UNCHANGED, OperationResult, Step
from passthrough.ops.sriov import set_sriov_vfs
from passthrough.ops.validate import RESET_METHODS

__all__ = [
    "bind_vfio",
    "restore_driver",
    "reset",
    "set_sriov_vfs",
    "plan_persist_binding",
    "apply_persist_binding",
    "undo_persist_binding",
    "plan_unpersist_binding",
    "apply_unpersist_binding",
    "undo_unpersist_binding",
    "plan_kernel_cmdline",
    "apply_kernel_cmdline",
    "undo_kernel_cmdline",
    "plan_rebuild_initramfs",
    "apply_rebuild_initramfs",
    "undo_change",
    "persisted_bindings",
    "PersistencePlan",
    "FileChange",
    "amd_reset_bug_family",
    "confirmation_phrase",
    "check_action",
    "judge",
    "Permission",
    "Verdict",
    "RESET_METHODS",
    "OperationResult",
    "Step",
    "CommandResult",
    "RunCommand",
    "OUTCOMES",
    "SUCCEEDED",
    "UNCHANGED",
    "FAILED",
    "ROLLED_BACK",
    "BootConfigUnsupported",
    "ConfirmationRequired",
    "FileChangedSinceApply",
    "DeviceInUse",
    "GroupNotViable",
    "InvalidCount",
    "InvalidDriverName",
    "InvalidRequest",
    "IommuOff",
    "NeverAllowed",
    "NotSriovCapable",
    "OperationFailed",
    "ResetRefused",
    "ResetUnavailable",
    "UnknownResetMethod",
    "VerificationFailed",
    "VfioUnavailable",
]
