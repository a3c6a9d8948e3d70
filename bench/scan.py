"""Benchmark: inventory scan of a synthetic 1,024-function host.

Prints, in one run:
  * scan(): the in-process time of passthrough.pci.scan.scan (median of N, after one warm-up);
  * the raw-read floor: a minimal loop doing the same system calls scan() does (list each
    function's directory, read the same attribute files, read the same links) and nothing
    else, with os.open/os.read like scan();
  * their ratio (target <= 1.5);
  * the whole `manage.py inventory --format json` command against `lspci -nnkD` on the same
    tree, each as a fresh process (median of N; target <= 5x lspci);
  * for the record, the same command through Django's own management framework
    (`django-admin inventory`), which pays for Django's start-up.

Usage: .venv/bin/python bench/scan.py [--runs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.synthetic import build_synthetic_host  # noqa: E402
from passthrough.host import HostTree  # noqa: E402
from passthrough.hosttrees.tree import write_tree  # noqa: E402
from passthrough.pci import pciids  # noqa: E402
from passthrough.pci.address import is_address  # noqa: E402
from passthrough.pci.hostcritical import find_host_critical  # noqa: E402
from passthrough.pci.scan import ID_ATTRIBUTES, scan  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def raw_read_floor(root: str) -> int:
    """The same files and links scan() touches, read with no parsing at all."""
    devices = f"{root}/sys/bus/pci/devices"
    reads = 0
    for name in os.listdir(devices):
        if not is_address(name):
            continue
        base = f"{devices}/{name}/"
        present = os.listdir(base)
        for attribute in ID_ATTRIBUTES:
            _read(base + attribute)
        reads += len(ID_ATTRIBUTES)
        for link in ("driver", "iommu_group", "physfn"):
            if link in present:
                _readlink(base + link)
                reads += 1
        for attribute in (
            "driver_override",
            "reset_method",
            "boot_vga",
            "sriov_totalvfs",
            "sriov_numvfs",
            "current_link_speed",
            "current_link_width",
            "max_link_speed",
            "max_link_width",
            "numa_node",
        ):
            if attribute in present:
                _read(base + attribute)
                reads += 1
        for entry in present:
            if entry.startswith("virtfn"):
                _readlink(base + entry)
                reads += 1
        _readlink(f"{devices}/{name}")
        reads += 1
    return reads


def _median_ms(function, runs: int) -> float:
    function()  # warm-up: page cache and pci.ids
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _command_ms(argv: list[str], runs: int, env: dict[str, str] | None = None) -> tuple[float, int]:
    samples, size = [], 0
    for index in range(runs + 1):
        started = time.perf_counter()
        result = subprocess.run(argv, capture_output=True, env=env, cwd=REPO, check=False)
        elapsed = (time.perf_counter() - started) * 1000
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode()[-400:]}")
        if index:  # the first run warms caches
            samples.append(elapsed)
        size = len(result.stdout)
    return statistics.median(samples), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", help="build the tree here and keep it")
    args = parser.parse_args()

    workdir = args.keep or tempfile.mkdtemp(prefix="pw-bench-")
    root = os.path.join(workdir, "host") if not args.keep else args.keep
    if not os.path.exists(f"{root}/sys/bus/pci/devices"):
        write_tree(build_synthetic_host(1024), root)
    tree = HostTree(root)
    inventory = scan(tree)
    print(f"tree: {root}")
    print(
        f"host: {len(inventory.devices)} functions, {len(inventory.groups)} IOMMU groups, "
        f"{sum(1 for f in inventory.devices if f.physfn)} VFs, host-critical {sorted(inventory.host_critical)}"
    )

    scan_ms = _median_ms(lambda: scan(tree), args.runs)
    floor_ms = _median_ms(lambda: raw_read_floor(root), args.runs)
    critical_ms = _median_ms(lambda: find_host_critical(tree, inventory.devices), args.runs)
    print(f"pci.ids: {pciids.load().source}")
    print(f"scan():             {scan_ms:8.1f} ms  (median of {args.runs})")
    print(f"raw-read floor:     {floor_ms:8.1f} ms  ({raw_read_floor(root)} reads/readlinks + 1 listdir per function)")
    print(f"  of which host-critical reads in scan(): {critical_ms:.1f} ms")
    print(f"scan / floor:       {scan_ms / floor_ms:8.2f}x  (target <= 1.5x)")

    lspci = shutil.which("lspci")
    python = sys.executable
    command = [python, "manage.py", "inventory", "--root", root, "--format", "json"]
    if not os.path.exists(os.path.join(REPO, "manage.py")):
        print("manage.py not found: skipping the whole-command comparison")
        return
    inventory_ms, json_bytes = _command_ms(command, args.runs)
    print(f"manage.py inventory --format json: {inventory_ms:8.1f} ms  ({json_bytes} bytes of JSON)")
    if lspci:
        lspci_ms, _ = _command_ms(
            [lspci, "-nnkD", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci"], args.runs
        )
        print(f"lspci -nnkD:                       {lspci_ms:8.1f} ms")
        print(f"inventory / lspci:  {inventory_ms / lspci_ms:8.2f}x  (target <= 5x)")
    else:
        print("lspci not installed (apt-get install pciutils): no comparison")
    django_admin = os.path.join(os.path.dirname(python), "django-admin")
    if os.path.exists(django_admin):
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="webui.settings", PYTHONPATH=REPO)
        try:
            full_ms, _ = _command_ms(
                [django_admin, "inventory", "--root", root, "--format", "json"], max(3, args.runs // 3), env
            )
            print(f"django-admin inventory (Django start-up paid): {full_ms:8.1f} ms")
        except SystemExit as error:
            print(f"django-admin inventory: not measured ({error})")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
