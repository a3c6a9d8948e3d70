"""What a fix needs to know about the host, read lazily: nothing is read when nothing was found.

The IOMMU vendor, the boot loader and the command line come from the same
:class:`~passthrough.readiness.facts.HostFacts` the readiness checks use, so a finding's fix
and the readiness page name the same files and commands.
"""

from __future__ import annotations

import re
from functools import cached_property

from passthrough.boot.loader import CmdlineEdit
from passthrough.host import HostTree
from passthrough.ops.modules import module_loaded
from passthrough.pci.console import framebuffers
from passthrough.pci.model import Inventory, PciFunction
from passthrough.pci.scan import scan
from passthrough.readiness.facts import HostFacts

_LINUX_VERSION = re.compile(r"Linux version (\d+)\.(\d+)")
_RELEASE = re.compile(r"^(\d+)\.(\d+)")
# What the kernel log says when a firmware framebuffer driver starts, newest kernels first.
_FRAMEBUFFER_LOG = (
    ("simpledrm", re.compile(r"simpledrm|simple-framebuffer.*\[drm\]")),
    ("simplefb", re.compile(r"simplefb|simple-framebuffer")),
    ("efifb", re.compile(r"efifb")),
    ("vesafb", re.compile(r"vesafb")),
)
# /sys/class/graphics/fbN/name of the firmware framebuffers.
_FRAMEBUFFER_NAMES = {
    "EFI VGA": "efifb",
    "VESA VGA": "vesafb",
    "simple": "simplefb",
    "simplefb": "simplefb",
    "simpledrmdrmfb": "simpledrm",
    "simpledrm": "simpledrm",
}


class HostContext:
    def __init__(
        self, tree: HostTree, log: list[str], inventory: Inventory | None = None, facts: HostFacts | None = None
    ) -> None:
        self.tree = tree
        self.facts = facts if facts is not None else HostFacts(tree)
        self.log = log
        self._inventory = inventory

    @cached_property
    def inventory(self) -> Inventory:
        return self._inventory if self._inventory is not None else scan(self.tree)

    def function(self, address: str | None) -> PciFunction | None:
        return self.inventory.device(address) if address else None

    def describe(self, address: str) -> str:
        """``0000:01:00.1 NVIDIA Corporation GK104 HDMI Audio Controller (snd_hda_intel)``."""
        function = self.function(address)
        if function is None:
            return address
        driver = f" ({function.driver})" if function.driver else " (no driver)"
        return f"{address} {function.label}{driver}"

    @property
    def vendor(self) -> str | None:
        """ "intel" or "amd": the IOMMU units', else the CPU's, else the log's (see HostFacts.vendor)."""
        return self.facts.vendor

    @cached_property
    def kernel_version(self) -> tuple[int, int] | None:
        release = self.tree.read("proc/sys/kernel/osrelease")
        found = _RELEASE.match(release or "")
        if found is None:
            found = next((match for line in self.log if (match := _LINUX_VERSION.search(line))), None)
        return (int(found.group(1)), int(found.group(2))) if found else None

    @cached_property
    def framebuffer(self) -> str | None:
        """The firmware framebuffer driver on this host: efifb, vesafb, simplefb or simpledrm; None if unseen."""
        for fb in framebuffers(self.tree):
            name = _FRAMEBUFFER_NAMES.get(self.tree.read(f"sys/class/graphics/{fb}/name") or "")
            if name:
                return name
        for name, pattern in _FRAMEBUFFER_LOG:
            if any(pattern.search(line) for line in self.log):
                return name
        return None

    def has_param(self, key: str, option: str | None = None) -> bool:
        cmdline = self.facts.cmdline
        return cmdline is not None and cmdline.has(key, option)

    def module_loaded(self, name: str) -> bool:
        return module_loaded(self.tree, name)

    def cmdline_plan(self, add: list[str], remove: list[str] | None = None) -> CmdlineEdit:
        return self.facts.cmdline_plan(add, remove or [])

    def change_cmdline(self, add: list[str], remove: list[str] | None = None) -> str:
        """The exact edit for this host's boot loader, in words (the readiness fixes say it the same way).

        When the running kernel and the boot loader's files both say so already, the edit is
        not the fix: the log is from an earlier boot, or the cause is elsewhere.
        """
        remove = remove or []
        plan = self.cmdline_plan(add, remove)
        running = all(self.has_param(*_split(word)) for word in add) and not any(
            self.has_param(*_split(word)) for word in remove
        )
        if running and plan.already_configured:
            wanted = " ".join(add) if add else "no " + " ".join(remove)
            return (
                f"This host already boots with {wanted} on its kernel command line: the log is from an earlier "
                "boot, or something else is the cause."
            )
        return plan.describe()


def _split(word: str) -> tuple[str, str | None]:
    name, equals, option = word.partition("=")
    return name, option if equals else None
