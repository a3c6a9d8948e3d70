"""manage.py's hardware commands as a user runs them (subprocesses) and through call_command."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from passthrough import cli
from tests.command_hosts import VM_WITHOUT_IOMMU, WORKSTATION

REPO = Path(__file__).resolve().parent.parent
COMMANDS_DIR = REPO / "webui" / "hosts" / "management" / "commands"


def manage(*args: str, python_options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PASSTHROUGH_ROOT", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run(
        [sys.executable, *python_options, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_manage_py_inventory_prints_the_json_contract(make_tree):
    result = manage("inventory", "--root", str(make_tree(WORKSTATION)), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert {"devices", "groups"} <= data.keys()
    gpu_group = next(group for group in data["groups"] if group["id"] == 2)
    assert gpu_group["viable"] is True
    assert {"id", "devices", "viable", "reasons", "host_critical"} <= gpu_group.keys()


def test_manage_py_inventory_table_mentions_the_verdicts(make_tree):
    result = manage("inventory", "--root", str(make_tree(WORKSTATION)))
    assert result.returncode == 0
    assert "IOMMU group 2: viable for passthrough" in result.stdout
    assert "IOMMU group 3: NOT viable" in result.stdout


def test_manage_py_inventory_does_not_start_django(make_tree):
    result = manage(
        "inventory", "--root", str(make_tree(WORKSTATION)), "--format", "json", python_options=("-X", "importtime")
    )
    assert result.returncode == 0
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "passthrough.pci.scan" in imported  # the probe sees imports at all
    assert not {name for name in imported if name.split(".")[0] in ("django", "celery", "webui")}


@pytest.mark.parametrize("command", ["inventory", "readiness", "capture"])
def test_a_missing_root_is_one_line_and_exit_code_2_without_traceback(command, tmp_path):
    missing = tmp_path / "nowhere"
    args = [command, "--root", str(missing)] + ([str(tmp_path / "dest")] if command == "capture" else [])
    result = manage(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"manage.py {command}: error: {missing} does not exist. "
        "Give --root a directory made by `manage.py capture`, or / for this host."
    ]
    assert not (tmp_path / "dest").exists()


def test_a_directory_that_is_not_a_host_tree_is_one_line_and_exit_code_2(tmp_path):
    (tmp_path / "home").mkdir()
    result = manage("inventory", "--root", str(tmp_path), "--format", "json")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "is not a host tree" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_format_is_refused_by_argparse_with_exit_code_2(make_tree):
    result = manage("inventory", "--root", str(make_tree(WORKSTATION)), "--format", "yaml")
    assert result.returncode == 2
    assert "usage: manage.py inventory" in result.stderr
    assert "invalid choice: 'yaml'" in result.stderr


def test_call_command_inventory_gives_the_same_json_as_manage_py(make_tree):
    root = str(make_tree(WORKSTATION))
    out = io.StringIO()
    call_command("inventory", root=root, format="json", stdout=out)
    assert json.loads(out.getvalue()) == json.loads(manage("inventory", "--root", root, "--format", "json").stdout)


def test_call_command_turns_bad_input_into_a_command_error_with_exit_code_2(tmp_path):
    with pytest.raises(CommandError) as error:
        call_command("inventory", root=str(tmp_path / "nowhere"), stdout=io.StringIO())
    assert error.value.returncode == 2
    assert "does not exist" in str(error.value)


def test_call_command_inventory_table_on_a_host_without_iommu(make_tree):
    out = io.StringIO()
    call_command("inventory", root=str(make_tree(VM_WITHOUT_IOMMU)), stdout=out)
    assert "No IOMMU groups" in out.getvalue()


def test_every_hardware_command_is_also_a_django_management_command():
    assert {path.stem for path in COMMANDS_DIR.glob("[!_]*.py")} >= set(cli.SUBCOMMANDS)


def test_manage_py_help_shows_the_hardware_commands_options():
    result = manage("help", "inventory")
    assert result.returncode == 0
    assert "--root DIR" in result.stdout
    assert "--format {table,json}" in result.stdout


def test_other_commands_still_go_through_django():
    result = manage("check")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_manage_py_readiness_exit_code_says_ready_or_not(make_tree):
    ready = manage("readiness", "--root", str(make_tree(WORKSTATION)), "--format", "json")
    not_ready = manage("readiness", "--root", str(make_tree(VM_WITHOUT_IOMMU)), "--format", "json")
    assert (ready.returncode, json.loads(ready.stdout)["ready"]) == (0, True)
    assert (not_ready.returncode, json.loads(not_ready.stdout)["ready"]) == (1, False)
    assert "Traceback" not in ready.stderr + not_ready.stderr


def test_call_command_readiness_on_a_host_that_is_not_ready_raises_with_exit_code_1(make_tree):
    out = io.StringIO()
    with pytest.raises(CommandError) as error:
        call_command("readiness", root=str(make_tree(VM_WITHOUT_IOMMU)), format="json", stdout=out)
    assert error.value.returncode == 1
    assert json.loads(out.getvalue())["ready"] is False  # the report is written before the error


def test_call_command_readiness_on_a_ready_host_returns_quietly(make_tree):
    out = io.StringIO()
    call_command("readiness", root=str(make_tree(WORKSTATION)), stdout=out)
    assert out.getvalue().rstrip().endswith("Ready for PCI passthrough.")


def test_manage_py_capture_writes_a_tree_that_inventory_reads_back(make_tree, tmp_path):
    source, dest = make_tree(WORKSTATION), tmp_path / "bugreport"
    captured = manage("capture", str(dest), "--root", str(source))
    assert captured.returncode == 0, captured.stderr
    assert "Traceback" not in captured.stderr
    assert f"manage.py inventory --root {dest}" in captured.stdout
    original = json.loads(manage("inventory", "--root", str(source), "--format", "json").stdout)
    copy = json.loads(manage("inventory", "--root", str(dest), "--format", "json").stdout)
    assert copy["groups"] == original["groups"]


def test_call_command_capture_takes_dest_as_a_positional_argument(make_tree, tmp_path):
    out = io.StringIO()
    call_command("capture", str(tmp_path / "copy"), root=str(make_tree(VM_WITHOUT_IOMMU)), stdout=out)
    assert (tmp_path / "copy" / "sys" / "bus" / "pci" / "devices" / "0000:00:02.0").exists()
    assert "3 PCI functions" in out.getvalue()
