"""A Debian kernel for the guests: fetched with apt-get, unpacked, cached in .cache/realkernel/.

Nothing is installed into /boot: ``apt-get download`` fetches the package named by the
``linux-image-amd64`` metapackage (or ``PASSTHROUGH_TEST_KERNEL``), ``dpkg -x`` unpacks
it, ``busybox depmod`` writes modules.dep, and the uncompressed ``vmlinux`` is cut out of
``vmlinuz`` (Debian's kernels have CONFIG_PVH, so QEMU boots the ELF directly, which
saves the decompression at every boot). A second use finds it all in the cache.
"""

from __future__ import annotations

import fcntl
import lzma
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PASSTHROUGH_TEST_CACHE", REPO / ".cache" / "realkernel"))
XZ_MAGIC = b"\xfd7zXZ\x00"


class KernelUnavailable(Exception):
    """The kernel package cannot be had here (no apt, no network, no dpkg); the reason in words."""


@dataclass(frozen=True)
class Kernel:
    package: str  # linux-image-6.1.0-56-amd64
    version: str  # 6.1.0-56-amd64: the modules directory's name
    vmlinux: Path
    modules: Path  # .../lib/modules/<version>
    config: Path

    def module_path(self, name: str) -> Path | None:
        """The .ko file of module ``name`` (dashes and underscores alike), from modules.dep."""
        wanted = name.replace("-", "_")
        for line in (self.modules / "modules.dep").read_text().splitlines():
            path = line.split(":", 1)[0]
            if Path(path).name.split(".ko")[0].replace("-", "_") == wanted:
                return self.modules / path
        return None

    def dependencies(self, names: list[str]) -> list[Path]:
        """The .ko files of ``names`` and everything they depend on, each after its dependencies."""
        table: dict[str, list[str]] = {}
        for line in (self.modules / "modules.dep").read_text().splitlines():
            path, _, deps = line.partition(":")
            table[path] = deps.split()
        ordered: list[str] = []

        def visit(path: str) -> None:
            if path in ordered:
                return
            for dependency in table.get(path, []):
                visit(dependency)
            ordered.append(path)

        for name in names:
            found = self.module_path(name)
            if found is None:
                builtin = (self.modules / "modules.builtin").read_text()
                if re.search(rf"/{re.escape(name.replace('_', '[-_]'))}\.ko", builtin):
                    continue
                raise KernelUnavailable(f"module {name} is neither in modules.dep nor built in")
            visit(str(found.relative_to(self.modules)))
        return [self.modules / path for path in ordered]


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as error:
        raise KernelUnavailable(f"{argv[0]} is not installed") from error
    if done.returncode != 0:
        raise KernelUnavailable(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout


def package_name() -> str:
    """The kernel package to test on: PASSTHROUGH_TEST_KERNEL, or what linux-image-amd64 depends on."""
    chosen = os.environ.get("PASSTHROUGH_TEST_KERNEL")
    if chosen:
        return chosen
    for line in _run(["apt-cache", "depends", "linux-image-amd64"]).splitlines():
        found = re.match(r"\s*Depends:\s*(linux-image-[0-9][^\s]*-amd64)\s*$", line)
        if found:
            return found.group(1)
    raise KernelUnavailable("apt-cache names no kernel package for linux-image-amd64 (run apt-get update)")


def extract_vmlinux(vmlinuz: Path, target: Path) -> None:
    """Cut the XZ-compressed ELF out of a bzImage."""
    data = vmlinuz.read_bytes()
    start = data.find(XZ_MAGIC)
    while start != -1:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        except lzma.LZMAError:
            start = data.find(XZ_MAGIC, start + 1)
            continue
        if elf.startswith(b"\x7fELF"):
            partial = target.with_suffix(".partial")
            partial.write_bytes(elf)
            partial.replace(target)
            return
        start = data.find(XZ_MAGIC, start + 1)
    raise KernelUnavailable(f"{vmlinuz} holds no XZ-compressed ELF kernel")


def ensure_kernel() -> Kernel:
    """The cached kernel, fetched and prepared on first use (one process at a time)."""
    package = package_name()
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        home = CACHE / package
        ready = home / "ready"
        if not ready.exists():
            _prepare(package, home)
            ready.write_text("ok\n")
    version = package.removeprefix("linux-image-")
    tree = home / "tree"
    return Kernel(
        package=package,
        version=version,
        vmlinux=home / "vmlinux",
        modules=tree / "lib" / "modules" / version,
        config=tree / "boot" / f"config-{version}",
    )


def _prepare(package: str, home: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise KernelUnavailable("busybox is not installed (apt-get install busybox-static)")
    shutil.rmtree(home, ignore_errors=True)
    download = home / "download"
    download.mkdir(parents=True)
    # apt drops to the _apt user to download; a folder it may write avoids its warning.
    os.chmod(download, 0o777)
    _run(["apt-get", "download", "-q", package], cwd=download)
    debs = sorted(download.glob("*.deb"))
    if not debs:
        raise KernelUnavailable(f"apt-get download {package} left no .deb")
    tree = home / "tree"
    _run(["dpkg", "-x", str(debs[0]), str(tree)])
    version = package.removeprefix("linux-image-")
    _run([busybox, "depmod", "-b", str(tree), version])
    extract_vmlinux(tree / "boot" / f"vmlinuz-{version}", home / "vmlinux")
    for deb in debs:
        deb.unlink()
