"""The kernel command line: parse it as the kernel does and edit its words.

The kernel splits ``/proc/cmdline`` at spaces outside double quotes
(``vfio-pci.ids="1002:aaf8,1002:687f"`` is one parameter), treats ``-`` and ``_`` in a
parameter name as the same character (``vfio-pci.ids`` is ``vfio_pci.ids``) and hands
everything after a lone ``--`` to init. Boot-loader files hold the same words, so the
editors in :mod:`passthrough.boot.cmdlinefiles` edit them with :func:`edit_words`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from passthrough.errors import PassthroughError

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# Characters that would change meaning inside a GRUB shell string, a loader entry or
# refind_linux.conf's quoted field; a parameter we add must not contain them.
_UNSAFE = set("\"'\\`$;&|<>(){}\n\r\t ")


class InvalidKernelParameter(PassthroughError):
    code = "invalid_kernel_parameter"


@dataclass(frozen=True)
class Param:
    raw: str  # as written, quotes included: vfio-pci.ids="1002:aaf8,1002:687f"
    name: str
    value: str | None  # surrounding quotes removed; None for a bare word such as "quiet"

    @property
    def key(self) -> str:
        """The name as the kernel compares it: dashes and underscores are one character."""
        return normalize_name(self.name)

    @property
    def options(self) -> list[str]:
        """Comma-separated options of the value (``intel_iommu=on,sm_on`` -> on, sm_on)."""
        return [] if self.value is None else [option for option in self.value.split(",") if option]


def normalize_name(name: str) -> str:
    return name.replace("-", "_")


def split_words(text: str) -> list[str]:
    """Split at whitespace outside double quotes, keeping each word's quotes."""
    words: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        words.append("".join(current))
    return words


def parse_param(word: str) -> Param:
    name, equals, value = word.partition("=")
    if not equals:
        return Param(raw=word, name=word.strip('"'), value=None)
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    return Param(raw=word, name=name.strip('"'), value=value)


@dataclass
class KernelCmdline:
    text: str
    params: list[Param] = field(default_factory=list)  # for the kernel: the words before "--"
    init_args: list[str] = field(default_factory=list)  # after "--": the kernel passes them to init

    @classmethod
    def parse(cls, text: str) -> KernelCmdline:
        words = split_words(text)
        if "--" in words:
            cut = words.index("--")
            words, init_args = words[:cut], words[cut + 1 :]
        else:
            init_args = []
        return cls(text=text.strip(), params=[parse_param(word) for word in words], init_args=init_args)

    def find(self, name: str) -> list[Param]:
        key = normalize_name(name)
        return [param for param in self.params if param.key == key]

    def has(self, name: str, option: str | None = None) -> bool:
        """Whether ``name`` is given; with ``option``, whether its value carries that option."""
        return any(param_matches(param, name if option is None else f"{name}={option}") for param in self.params)

    def value(self, name: str) -> str | None:
        """The value the kernel uses: for most parameters the last one given wins."""
        found = self.find(name)
        return found[-1].value if found else None


def param_matches(param: Param, spec: str) -> bool:
    """``spec`` is ``name`` (any value) or ``name=option`` (the value holds that option)."""
    name, equals, wanted = spec.partition("=")
    if param.key != normalize_name(name):
        return False
    if not equals:
        return True
    return param.value == wanted or wanted in param.options


def validate(specs: list[str], what: str) -> list[str]:
    """Reject anything that is not one plain ``name`` or ``name=value`` word."""
    for spec in specs:
        name = spec.partition("=")[0]
        if not spec or not _NAME.match(name):
            raise InvalidKernelParameter(
                f"{spec!r} is not a kernel parameter to {what}: a name of letters, digits, '_', '-' and '.' "
                "must come before any '='.",
                hint="Give parameters as name or name=value, e.g. intel_iommu=on.",
            )
        unsafe = sorted(set(spec) & _UNSAFE)
        if unsafe:
            raise InvalidKernelParameter(
                f"{spec!r} contains {''.join(unsafe)!r}, which would break the boot-loader file it is written into.",
                hint="Give one parameter per item, without spaces or quotes.",
            )
    return specs


def edit_words(words: list[str], add: list[str], remove: list[str]) -> list[str]:
    """Remove every word matching a ``remove`` spec, then set each ``add`` parameter.

    An added ``name=value`` replaces, in place, a word of the same name with another value
    (``intel_iommu=off`` becomes ``intel_iommu=on``); a word already present stays as it is.
    """
    result = [word for word in words if not any(param_matches(parse_param(word), spec) for spec in remove)]
    for spec in add:
        wanted = parse_param(spec)
        same_name = [index for index, word in enumerate(result) if parse_param(word).key == wanted.key]
        if any(parse_param(result[index]).value == wanted.value for index in same_name):
            continue
        if same_name:
            result[same_name[0]] = spec
            result = [word for index, word in enumerate(result) if index not in same_name[1:]]
        else:
            result.append(spec)
    return result


def contains_all(words: list[str], add: list[str], remove: list[str]) -> bool:
    """Whether ``words`` already hold every ``add`` parameter and no ``remove`` match."""
    return edit_words(words, add, remove) == words
