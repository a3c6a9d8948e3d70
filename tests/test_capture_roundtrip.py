"""capture(): a recorded host reads back, through --root, exactly as the host itself.

Built hosts with host-critical findings, real machines' sysfs trees from hwloc, and this
host when it shows PCI functions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from passthrough.capture.run import capture
from passthrough.host import HostTree
from passthrough.hosttrees.spec import HostSpec
from passthrough.pci.scan import scan
from tests.capture_hosts import (
    absolute_links,
    build_amd_server,
    extract_hwloc,
    listing,
    lspci,
    put_root_on_device_mapper,
    scanned,
    workstation,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def built_host(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> Callable[[str], Path]:
    """Source trees by name, each with host-critical findings the capture must keep."""

    def build(name: str) -> Path:
        if name == "amd":
            return build_amd_server(tmp_path / "amd")
        if name == "simpledrm-root-on-dm":
            on_dm = make_tree(workstation("simpledrm"))
            put_root_on_device_mapper(on_dm, "nvme0n1p2")
            return on_dm
        return make_tree(workstation(name))

    return build


EXPECTED_HOST_CRITICAL = {
    "efifb": {"0000:01:00.0", "0000:03:00.0", "0000:04:00.0"},
    "vgacon": {"0000:01:00.0", "0000:03:00.0", "0000:04:00.0"},
    "simpledrm-root-on-dm": {"0000:01:00.0", "0000:03:00.0", "0000:04:00.0"},
    "amd": {"0000:03:00.0", "0000:06:00.0", "10000:01:00.0"},
}


# Round trips over built hosts ----------------------------------------------------------
@pytest.mark.parametrize("host", sorted(EXPECTED_HOST_CRITICAL))
def test_a_captured_host_scans_exactly_like_its_source(
    built_host: Callable[[str], Path], tmp_path: Path, host: str
) -> None:
    source = built_host(host)
    before = scanned(source)
    assert set(before["host_critical"]) == EXPECTED_HOST_CRITICAL[host]  # the source really has the evidence
    assert before["groups"]

    capture(HostTree(source), tmp_path / "capture")

    assert scanned(tmp_path / "capture") == before


@pytest.mark.parametrize("host", sorted(EXPECTED_HOST_CRITICAL))
def test_a_captured_host_keeps_every_file_and_link_of_its_source(
    built_host: Callable[[str], Path], tmp_path: Path, host: str
) -> None:
    """Built trees hold only what a capture records, so nothing may be missing or differ."""
    source = built_host(host)
    capture(HostTree(source), tmp_path / "capture")

    recorded = listing(tmp_path / "capture")
    recorded.pop("capture.json")
    assert recorded == listing(source)


def readiness_report(root: Path | str) -> dict[str, Any]:
    readiness = pytest.importorskip("passthrough.readiness", reason="passthrough.readiness is not in this checkout")
    data = readiness.report(HostTree(root))
    data.pop("root")
    return data


@pytest.mark.parametrize("host", ["efifb", "amd"])
def test_a_captured_host_gets_the_same_readiness_report(
    built_host: Callable[[str], Path], tmp_path: Path, host: str
) -> None:
    source = built_host(host)
    expected = readiness_report(source)

    capture(HostTree(source), tmp_path / "capture")

    assert readiness_report(tmp_path / "capture") == expected


def test_a_capture_can_be_moved_and_still_reads_the_same(built_host: Callable[[str], Path], tmp_path: Path) -> None:
    capture(HostTree(built_host("amd")), tmp_path / "capture")
    expected = scanned(tmp_path / "capture")

    moved = tmp_path / "elsewhere" / "deeper" / "bug-1234"
    moved.parent.mkdir(parents=True)
    shutil.move(tmp_path / "capture", moved)

    assert scanned(moved) == expected
    assert set(expected["host_critical"]) == EXPECTED_HOST_CRITICAL["amd"]
    assert absolute_links(moved) == []


def test_a_capture_of_a_capture_is_the_same_tree(built_host: Callable[[str], Path], tmp_path: Path) -> None:
    capture(HostTree(built_host("simpledrm-root-on-dm")), tmp_path / "first")
    capture(HostTree(tmp_path / "first"), tmp_path / "second")

    first, second = listing(tmp_path / "first"), listing(tmp_path / "second")
    assert json.loads(second.pop("capture.json")[1])["hostname"] == "pve1"
    first.pop("capture.json")
    assert second == first


def test_iommu_units_resolve_to_the_same_places_as_in_the_source(
    built_host: Callable[[str], Path], tmp_path: Path
) -> None:
    for host in ("efifb", "amd"):
        source, dest = built_host(host), tmp_path / "captures" / host
        dest.parent.mkdir(exist_ok=True)
        capture(HostTree(source), dest)
        units = sorted(os.listdir(source / "sys/class/iommu"))
        assert units and sorted(os.listdir(dest / "sys/class/iommu")) == units
        for unit in units:
            where = HostTree(source).realpath(f"sys/class/iommu/{unit}")
            assert HostTree(dest).realpath(f"sys/class/iommu/{unit}") == where
            assert sorted(os.listdir(dest / where / "devices")) == sorted(os.listdir(source / where / "devices"))
    assert "/0000:00:00.2/iommu/ivhd0" in HostTree(tmp_path / "captures/amd").realpath("sys/class/iommu/ivhd0")


def test_lspci_prints_the_same_for_the_capture_as_for_the_source(
    built_host: Callable[[str], Path], tmp_path: Path
) -> None:
    (tmp_path / "captures").mkdir()
    for host in ("efifb", "amd"):
        source = built_host(host)
        capture(HostTree(source), tmp_path / "captures" / host)
        expected = lspci(source)
        assert "Kernel driver in use: vfio-pci" in expected or host == "amd"
        assert lspci(tmp_path / "captures" / host) == expected


# Real machines ---------------------------------------------------------------------------
@pytest.mark.parametrize("machine", ["32intel64-2p8co2t+8ve", "2pa-pcidomain32bits"])
def test_a_real_machines_sysfs_round_trips(tmp_path: Path, machine: str) -> None:
    """hwloc's captures of real sysfs trees (PLX switches and a PCI domain 10000 in a VM)."""
    source = extract_hwloc(machine, tmp_path / "source")
    before = scanned(source)
    assert len(before["devices"]) >= 2

    capture(HostTree(source), tmp_path / "capture")

    assert scanned(tmp_path / "capture") == before
    assert lspci(tmp_path / "capture") == lspci(source)
    assert absolute_links(tmp_path / "capture") == []
    for directory in ("sys/class/net", "sys/class/block"):
        entries = sorted(os.listdir(source / directory)) if (source / directory).is_dir() else []
        recorded = tmp_path / "capture" / directory
        assert sorted(os.listdir(recorded)) == entries if entries else not recorded.exists()
        for name in entries:  # each still resolves to its place under its PCI function
            relative = f"{directory}/{name}"
            assert HostTree(tmp_path / "capture").realpath(relative) == HostTree(source).realpath(relative)
            assert (tmp_path / "capture" / relative).is_dir() == (source / relative).is_dir()  # lo dangles in one


# The live host -----------------------------------------------------------------------------
live_pci = pytest.mark.skipif(
    not os.listdir("/sys/bus/pci/devices") if os.path.isdir("/sys/bus/pci/devices") else True,
    reason="this machine shows no PCI functions in /sys (a container?)",
)


@live_pci
def test_capturing_this_host_reads_back_as_this_host(tmp_path: Path) -> None:
    live = scanned("/")
    started = time.monotonic()

    summary = capture(HostTree("/"), tmp_path / "capture")

    assert time.monotonic() - started < 30
    recorded = scanned(tmp_path / "capture")
    assert [d["address"] for d in recorded["devices"]] == [d["address"] for d in live["devices"]]
    assert recorded == live
    assert summary.functions == len(live["devices"])
    assert absolute_links(tmp_path / "capture") == []
    assert lspci(tmp_path / "capture") == subprocess.run(["lspci", "-nnkD"], capture_output=True, text=True).stdout
    assert readiness_report(tmp_path / "capture") == readiness_report("/")


@live_pci
def test_capturing_this_host_keeps_its_host_critical_findings(tmp_path: Path) -> None:
    live = scan(HostTree("/"))
    if not live.host_critical:
        pytest.skip("this host has no host-critical PCI function (no PCI root disk or default route)")

    capture(HostTree("/"), tmp_path / "capture")

    assert scan(HostTree(tmp_path / "capture")).host_critical == live.host_critical


def _interpreter_for_nobody() -> str | None:
    """A Python >= 3.11 that the user nobody may run (the venv's may live under /root)."""
    if os.geteuid() != 0 or not shutil.which("runuser"):
        return None
    for candidate in (sys.executable, "/usr/bin/python3"):
        check = subprocess.run(
            ["runuser", "-u", "nobody", "--", candidate, "-c", "import sys; assert sys.version_info >= (3, 11)"],
            capture_output=True,
            timeout=30,
        )
        if check.returncode == 0:
            return candidate
    return None


@live_pci
def test_an_unprivileged_capture_of_this_host_completes_with_what_it_can_read() -> None:
    python = _interpreter_for_nobody()
    if python is None:
        pytest.skip("needs root, runuser and a Python 3.11 the user nobody can run")
    code = "import sys; from passthrough.capture.run import capture; from passthrough.host import HostTree; " + (
        "capture(HostTree('/'), sys.argv[1])"
    )
    with tempfile.TemporaryDirectory() as shared:  # pytest's tmp_path is closed to other users
        os.chmod(shared, 0o777)
        dest = Path(shared) / "capture"
        result = subprocess.run(
            ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={REPO}", "PYTHONDONTWRITEBYTECODE=1"]
            + [python, "-c", code, str(dest)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr

        summary = json.loads((dest / "capture.json").read_text())
        assert summary["privileged"] is False
        first = scan(HostTree("/")).devices[0].address
        assert (dest / "sys/bus/pci/devices" / first / "config").stat().st_size == 64  # what non-root may read
        assert [d["address"] for d in scanned(dest)["devices"]] == [d["address"] for d in scanned("/")["devices"]]
