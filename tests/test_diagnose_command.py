"""manage.py diagnose: exit 0 without findings, 1 with, 2 on bad input; its JSON contract and its table."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from passthrough.hosttrees.spec import HostSpec
from tests.test_diagnose import LOGS, QEMU_LOG, amd_proxmox, intel_debian_grub, log

MakeTree = Callable[[HostSpec], Path]
REPO = Path(__file__).resolve().parent.parent


def diagnose(*args: str) -> tuple[int, str]:
    """call_command("diagnose", ...): its exit code and what it printed."""
    out = io.StringIO()
    try:
        call_command("diagnose", *args, stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue() + str(error)
    return 0, out.getvalue()


def test_a_working_hosts_kernel_log_exits_0_and_says_nothing_was_found(make_tree: MakeTree) -> None:
    root = make_tree(intel_debian_grub(dmesg=log("clean-realkernel-debian-6.1-intel.log")))
    code, output = diagnose("--root", str(root))
    assert code == 0
    assert output == "No known passthrough failure in dmesg.\n"


def test_findings_exit_1_and_the_json_holds_the_contract(make_tree: MakeTree) -> None:
    spec = intel_debian_grub(dmesg=log("bar-reserve-vega8-cosminmocan.log"))
    spec.files = {**spec.files, QEMU_LOG: log("group-not-viable-64kramsystem-15.log")}
    code, output = diagnose("--root", str(make_tree(spec)), "--format", "json")
    assert code == 1
    data = json.loads(output.split("\n", 1)[0])
    assert [(item["id"], item["severity"], item["device"]) for item in data["findings"]] == [
        ("bar_reserve_conflict", "error", "0000:05:00.0"),
        ("group_not_viable", "error", "0000:01:00.0"),
    ]
    for finding in data["findings"]:
        assert {"id", "severity", "device", "summary", "evidence", "fix", "cause"} <= set(finding)
        assert isinstance(finding["evidence"], list) and finding["fix"] and finding["cause"]
    assert data["findings"][1]["evidence"] == log("group-not-viable-64kramsystem-15.log").splitlines()[:1]
    assert data["sources"] == ["dmesg", "/var/log/libvirt/qemu/win10.log"]


def test_logs_given_with_log_are_read_too(make_tree: MakeTree) -> None:
    root = make_tree(amd_proxmox(dmesg=log("clean-realkernel-debian-6.1-intel.log")))
    given = [str(LOGS / "reset-d3cold-kata-11708.log"), str(LOGS / "acs-override-truenas-170.log")]
    code, output = diagnose("--root", str(root), "--log", given[0], "--log", given[1], "--format", "json")
    data = json.loads(output.split("\n", 1)[0])
    assert code == 1
    assert [item["id"] for item in data["findings"]] == ["reset_d3cold", "acs_override"]
    assert data["findings"][0]["sources"] == [given[0]]
    assert "AMD Vega 10 GPU" in data["findings"][0]["fix"]


def test_the_table_gives_each_finding_its_lines_cause_and_fix(make_tree: MakeTree) -> None:
    root = make_tree(
        amd_proxmox(dmesg=log("dmar-fault-intel-i915ovmf-23.log") + log("bar-reserve-vega8-cosminmocan.log"))
    )
    code, output = diagnose("--root", str(root))
    assert code == 1
    lines = output.splitlines()
    assert lines[0] == "ERROR   bar_reserve_conflict  0000:05:00.0"
    assert "      read:  1 line(s) in dmesg" in lines
    assert "WARNING dmar_fault  0000:00:02.0" in lines
    assert "      read:  6 line(s) in dmesg" in lines
    assert any(line.startswith("      cause: ") for line in lines)
    assert any(line.startswith("      fix:   ") for line in lines)
    assert "             then run `proxmox-boot-tool refresh`, then reboot." in lines
    assert "2 finding(s) (1 error, 1 warning) in dmesg." in lines
    prose = [line for line in lines if line.startswith("      ") and "[" not in line]
    assert max(len(line) for line in prose) <= 13 + 110


def test_escape_sequences_in_a_log_do_not_reach_the_terminal(make_tree: MakeTree, tmp_path: Path) -> None:
    hostile = tmp_path / "vm.log"
    hostile.write_text("\x1b]0;owned\x07vfio 0000:01:00.0: failed to open /dev/vfio/1: Device or resource busy\n")
    code, output = diagnose("--root", str(make_tree(intel_debian_grub())), "--log", str(hostile))
    assert code == 1 and "\x1b" not in output and "\x07" not in output
    assert "?]0;owned?vfio 0000:01:00.0: failed to open" in output


def test_a_missing_log_file_is_bad_input(make_tree: MakeTree, tmp_path: Path) -> None:
    code, output = diagnose("--root", str(make_tree(intel_debian_grub())), "--log", str(tmp_path / "nope.log"))
    assert code == 2 and "nope.log is not a file" in output


def test_a_root_that_is_not_a_host_tree_is_bad_input(tmp_path: Path) -> None:
    code, output = diagnose("--root", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in output
    (tmp_path / "empty").mkdir()
    code, output = diagnose("--root", str(tmp_path / "empty"))
    assert code == 2 and "is not a host tree" in output


def test_nothing_readable_to_diagnose_is_bad_input(make_tree: MakeTree) -> None:
    code, output = diagnose("--root", str(make_tree(intel_debian_grub())))
    assert code == 2 and "There is no log to diagnose" in output


@pytest.mark.parametrize(
    ("logname", "expected"), [("clean-realkernel-debian-6.1-intel.log", 0), ("rmrr-hp-harvester-7340.log", 1)]
)
def test_manage_py_diagnose_exits_with_the_code_a_script_reads(
    make_tree: MakeTree, logname: str, expected: int
) -> None:
    root = make_tree(intel_debian_grub(dmesg=log(logname)))
    env = {key: value for key, value in os.environ.items() if key not in ("PASSTHROUGH_ROOT", "DJANGO_SETTINGS_MODULE")}
    result = subprocess.run(
        [sys.executable, "manage.py", "diagnose", "--root", str(root)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == expected, result.stderr
    assert ("rmrr_ineligible  0000:04:00.1" in result.stdout) == (expected == 1)
