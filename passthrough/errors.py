"""Errors a user can act on: what was wrong, what was read, what to do."""

from __future__ import annotations


class PassthroughError(Exception):
    """Base class. ``message`` says what is wrong, ``path`` what was read, ``hint`` what to do."""

    code = "error"

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.hint = hint

    def __str__(self) -> str:
        parts = [self.message]
        if self.path:
            parts.append(f"(read {self.path})")
        if self.hint:
            parts.append(self.hint)
        return " ".join(parts)

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "path": self.path, "hint": self.hint}


class NotAHostTree(PassthroughError):
    code = "not_a_host_tree"


class InvalidAddress(PassthroughError):
    code = "invalid_address"


class ListingError(PassthroughError):
    """A pasted listing (lspci, an IOMMU group loop) that cannot be read; the message names the line."""

    code = "bad_listing"


class UnknownDevice(PassthroughError):
    code = "unknown_device"


class SysfsWriteError(PassthroughError):
    """A write to a kernel attribute failed; ``errno`` is what the kernel answered."""

    code = "sysfs_write_failed"

    def __init__(
        self, message: str, *, path: str | None = None, hint: str | None = None, errno: int | None = None
    ) -> None:
        super().__init__(message, path=path, hint=hint)
        self.errno = errno
