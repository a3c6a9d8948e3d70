"""Errors of the privileged operations, each with a stable ``code`` the UI and audit keep.

Bad input raises one of these before anything is written. Failures while acting are
recorded in the :class:`~passthrough.ops.result.OperationResult` as ``error`` (the same
``as_dict()``), with the outcome saying whether the rollback put everything back.
"""

from __future__ import annotations

from typing import Any

from passthrough.errors import PassthroughError


class InvalidRequest(PassthroughError):
    """A parameter of the wrong type or outside its range (counts, flags, names)."""

    code = "invalid_request"


class InvalidDriverName(InvalidRequest):
    code = "invalid_driver_name"


class InvalidCount(InvalidRequest):
    code = "invalid_count"


class UnknownResetMethod(InvalidRequest):
    code = "unknown_reset_method"


class IommuOff(PassthroughError):
    code = "iommu_off"


class GroupNotViable(PassthroughError):
    code = "group_not_viable"


class NeverAllowed(PassthroughError):
    """A function of the platform itself (chipset, host bridge, bridge): no confirmation overrides it."""

    code = "never_allowed"


class ConfirmationRequired(PassthroughError):
    """A host-critical member; the request must carry the exact confirmation text."""

    code = "confirmation_required"

    def __init__(self, message: str, *, expected: str, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, path=path, hint=hint)
        self.expected = expected

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "expected_confirmation": self.expected}


class VfioUnavailable(PassthroughError):
    code = "vfio_unavailable"


class DeviceInUse(PassthroughError):
    """A driver other than vfio-pci holds the function, or a process has its group open."""

    code = "device_in_use"


class ResetUnavailable(PassthroughError):
    code = "reset_unavailable"


class NotSriovCapable(PassthroughError):
    code = "not_sriov_capable"


class OperationFailed(PassthroughError):
    """The kernel refused a step while acting; ``errno`` is what it answered, if anything."""

    code = "operation_failed"

    def __init__(
        self, message: str, *, path: str | None = None, hint: str | None = None, errno: int | None = None
    ) -> None:
        super().__init__(message, path=path, hint=hint)
        self.errno = errno

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "errno": self.errno}


class VerificationFailed(OperationFailed):
    code = "verification_failed"


class ResetRefused(OperationFailed):
    code = "reset_refused"


class Interrupted(OperationFailed):
    """Something other than the kernel stopped the operation (a time limit, a bug)."""

    code = "interrupted"


class FileChangedSinceApply(PassthroughError):
    code = "file_changed_since_apply"


class BootConfigUnsupported(PassthroughError):
    code = "boot_config_unsupported"
