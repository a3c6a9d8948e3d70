"""The error every generator raises for a VM that cannot work as asked; below spec and safe."""

from __future__ import annotations

from passthrough.errors import PassthroughError


class ConfigError(PassthroughError):
    """The VM described cannot work as asked; nothing was generated."""

    code = "invalid_vm_config"


__all__ = ["ConfigError"]
