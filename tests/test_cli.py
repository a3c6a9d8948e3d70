"""passthrough.cli in-process: the JSON contract, the tables, exit codes and error lines."""

import io
import json
import re

import pytest

from passthrough import cli
from tests.command_hosts import VM_WITHOUT_IOMMU, WORKSTATION

ADDRESS = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
HEX4 = re.compile(r"^[0-9a-f]{4}$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(argv, out=None):
    out = out if out is not None else io.StringIO()
    code = cli.main(argv, out=out)
    return code, out.getvalue()


def inventory_json(root):
    code, text = run(["inventory", "--root", str(root), "--format", "json"])
    assert code == 0
    return json.loads(text)


def test_inventory_json_has_every_documented_device_field_with_its_type(make_tree):
    data = inventory_json(make_tree(WORKSTATION))
    assert len(data["devices"]) == len(WORKSTATION.functions)
    for device in data["devices"]:
        assert ADDRESS.match(device["address"])
        assert HEX4.match(device["vendor_id"]) and HEX4.match(device["device_id"])
        assert re.match(r"^[0-9a-f]{6}$", device["class"])
        assert isinstance(device["vendor_name"], str)
        assert device["device_name"] is None or isinstance(device["device_name"], str)
        assert device["driver"] is None or isinstance(device["driver"], str)
        assert isinstance(device["iommu_group"], int)
        assert device["reset_methods"] is None or all(isinstance(method, str) for method in device["reset_methods"])
        assert device["boot_vga"] in (None, True, False)
        for key in ("sriov_totalvfs", "sriov_numvfs"):
            assert device[key] is None or isinstance(device[key], int)
        for key in ("physfn", "parent"):
            assert device[key] is None or ADDRESS.match(device[key])


def test_inventory_json_reports_the_gpu_as_the_kernel_shows_it(make_tree):
    gpu = next(
        device for device in inventory_json(make_tree(WORKSTATION))["devices"] if device["address"] == "0000:01:00.0"
    )
    assert (gpu["vendor_id"], gpu["device_id"], gpu["class"]) == ("10de", "1d01", "030000")
    assert gpu["device_name"] == "GP108 [GeForce GT 1030]"
    assert gpu["driver"] == "vfio-pci"
    assert gpu["iommu_group"] == 2
    assert gpu["reset_methods"] == ["flr", "bus"]
    assert gpu["boot_vga"] is False
    assert gpu["parent"] == "0000:00:01.0"
    # Absent facts are null: this GPU has no SR-IOV and is no VF.
    assert (gpu["sriov_totalvfs"], gpu["sriov_numvfs"], gpu["physfn"]) == (None, None, None)


def test_inventory_json_groups_carry_members_verdict_reasons_and_host_critical(make_tree):
    groups = {group["id"]: group for group in inventory_json(make_tree(WORKSTATION))["groups"]}
    assert sorted(groups) == [0, 1, 2, 3, 4, 5]
    gpu_group = groups[2]
    assert gpu_group["devices"] == ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"]
    assert gpu_group["viable"] is True
    assert gpu_group["host_critical"] == []
    assert all(isinstance(reason, str) and reason for reason in gpu_group["reasons"])
    assert groups[4]["viable"] is False
    assert groups[4]["host_critical"] == ["0000:02:00.0"]
    assert any("root filesystem" in reason for reason in groups[4]["reasons"])


def test_a_host_without_iommu_has_null_groups_and_no_group_list(make_tree):
    data = inventory_json(make_tree(VM_WITHOUT_IOMMU))
    assert [device["iommu_group"] for device in data["devices"]] == [None, None, None]
    assert data["groups"] == []


def test_inventory_table_shows_each_group_with_its_verdict_and_members(make_tree):
    code, text = run(["inventory", "--root", str(make_tree(WORKSTATION))])
    assert code == 0
    assert "IOMMU group 2: viable for passthrough" in text
    assert "IOMMU group 4: NOT viable" in text
    gpu_group = text.split("IOMMU group 2:")[1].split("IOMMU group 3:")[0]
    assert "0000:01:00.0" in gpu_group and "0000:01:00.1" in gpu_group
    gpu_row = next(line for line in gpu_group.splitlines() if line.strip().startswith("0000:01:00.0"))
    for cell in ("10de:1d01", "VGA compatible controller", "GeForce GT 1030", "vfio-pci", "flr,bus"):
        assert cell in gpu_row
    nvme_row = next(line for line in text.splitlines() if line.strip().startswith("0000:02:00.0"))
    assert "host-critical" in nvme_row
    assert text.rstrip().endswith("9 PCI functions in 6 IOMMU groups: 1 viable, 5 not viable.")


def test_inventory_table_columns_line_up_across_groups(make_tree):
    _, text = run(["inventory", "--root", str(make_tree(WORKSTATION))])
    rows = [line for line in text.splitlines() if line.startswith("  0000:")]
    driver_columns = {row.index(driver) for row in rows for driver in ("vfio-pci", "nvme ", "igb ") if driver in row}
    assert len(driver_columns) == 1


def test_inventory_table_says_why_there_are_no_groups(make_tree):
    code, text = run(["inventory", "--root", str(make_tree(VM_WITHOUT_IOMMU))])
    assert code == 0
    assert "No IOMMU groups" in text
    assert "manage.py readiness" in text
    assert "0000:00:02.0" in text  # the functions are still listed


def test_json_is_indented_for_a_terminal_and_one_line_for_a_pipe(make_tree):
    root = str(make_tree(VM_WITHOUT_IOMMU))
    _, piped = run(["inventory", "--root", root, "--format", "json"])
    _, shown = run(["inventory", "--root", root, "--format", "json"], out=Terminal())
    assert piped.count("\n") == 1
    assert shown.count("\n") > 20
    assert json.loads(piped) == json.loads(shown)


def test_root_defaults_to_passthrough_root_from_the_environment(make_tree, monkeypatch):
    root = make_tree(WORKSTATION)
    monkeypatch.setenv("PASSTHROUGH_ROOT", str(root))
    code, text = run(["inventory", "--format", "json"])
    assert code == 0
    assert json.loads(text)["root"] == str(root)


@pytest.mark.parametrize("command", ["inventory", "readiness"])
def test_a_missing_root_is_one_line_on_stderr_and_exit_code_2(command, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code, text = run([command, "--root", str(missing)])
    assert code == cli.EXIT_BAD_INPUT
    assert text == ""
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"manage.py {command}: error: {missing} does not exist.")
    assert "manage.py capture" in error  # the hint: what to give instead


def test_a_directory_that_is_not_a_host_tree_is_refused(tmp_path, capsys):
    (tmp_path / "etc").mkdir()
    code, _ = run(["inventory", "--root", str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "is not a host tree: it has neither sys/ nor proc/cpuinfo" in error


def test_an_unknown_format_is_an_argparse_error(make_tree, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["inventory", "--root", str(make_tree(WORKSTATION)), "--format", "xml"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_every_subcommand_has_help_and_is_listed_in_the_parser():
    parser = cli.build_parser()
    help_text = parser.format_help()
    for name, command in cli.SUBCOMMANDS.items():
        assert name in help_text
        assert command.help.endswith(".")


def readiness_json(root):
    code, text = run(["readiness", "--root", str(root), "--format", "json"])
    return code, json.loads(text)


def test_readiness_json_follows_the_documented_contract(make_tree):
    code, data = readiness_json(make_tree(VM_WITHOUT_IOMMU))
    assert isinstance(data["ready"], bool)
    assert data["checks"]
    for check in data["checks"]:
        assert isinstance(check["id"], str) and re.match(r"^[a-z][a-z0-9_]*$", check["id"])
        assert isinstance(check["title"], str) and isinstance(check["summary"], str)
        assert check["status"] in ("pass", "warn", "fail", "skip")
        assert all(isinstance(item["path"], str) and isinstance(item["value"], str) for item in check["evidence"])
        assert check["fix"] is None or isinstance(check["fix"], str)
    assert len({check["id"] for check in data["checks"]}) == len(data["checks"])


def test_readiness_exits_0_on_a_ready_host(make_tree):
    code, data = readiness_json(make_tree(WORKSTATION))
    assert (code, data["ready"]) == (cli.EXIT_OK, True)


def test_readiness_exits_1_on_a_vm_without_iommu_and_says_why(make_tree):
    code, data = readiness_json(make_tree(VM_WITHOUT_IOMMU))
    assert (code, data["ready"]) == (cli.EXIT_NOT_READY, False)
    iommu = next(check for check in data["checks"] if check["id"] == "iommu")
    assert iommu["status"] == "fail"
    assert iommu["fix"]
    assert {item["path"] for item in iommu["evidence"]} >= {"/sys/class/iommu"}


def test_readiness_table_gives_evidence_and_fix_under_each_failed_check(make_tree):
    code, text = run(["readiness", "--root", str(make_tree(VM_WITHOUT_IOMMU))])
    assert code == 1
    lines = text.splitlines()
    iommu_line = next(index for index, line in enumerate(lines) if line.startswith("FAIL  IOMMU present"))
    under = []
    for line in lines[iommu_line + 1 :]:
        if not line.startswith("      "):
            break
        under.append(line.strip())
    assert any(line.startswith("read: /sys/class/iommu") for line in under)
    assert any(line.startswith("fix:") for line in under)
    assert re.search(r"^Not ready for PCI passthrough: \d+ checks? failed \(.*iommu.*\)\.$", text, re.MULTILINE)


def test_readiness_table_of_a_ready_host_has_no_failure_and_says_ready(make_tree):
    code, text = run(["readiness", "--root", str(make_tree(WORKSTATION))])
    assert code == 0
    statuses = {line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "Ready"))}
    assert "PASS" in statuses and "FAIL" not in statuses
    assert text.rstrip().endswith("Ready for PCI passthrough.")


def test_capture_then_inventory_on_the_copy_reads_the_same_host(make_tree, tmp_path):
    source = make_tree(WORKSTATION)
    dest = tmp_path / "copy"
    code, text = run(["capture", str(dest), "--root", str(source)])
    assert code == 0
    assert text.startswith(f"Captured {source} into {dest}")
    assert "9 PCI functions, 6 IOMMU groups" in text
    original, copy = inventory_json(source), inventory_json(dest)
    assert copy["devices"] == original["devices"]
    assert copy["groups"] == original["groups"]
    assert copy["host_critical"] == original["host_critical"]


def test_capture_refuses_a_destination_that_is_not_empty_and_changes_nothing(make_tree, tmp_path, capsys):
    dest = tmp_path / "occupied"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    code, text = run(["capture", str(dest), "--root", str(make_tree(VM_WITHOUT_IOMMU))])
    assert code == 2
    assert text == ""
    assert "is not empty" in capsys.readouterr().err
    assert sorted(path.name for path in dest.iterdir()) == ["notes.txt"]


def test_capture_json_summarises_what_was_recorded(make_tree, tmp_path):
    code, text = run(["capture", str(tmp_path / "copy"), "--root", str(make_tree(WORKSTATION)), "--format", "json"])
    assert code == 0
    summary = json.loads(text)
    assert (summary["functions"], summary["groups"]) == (9, 6)
    assert summary["dest"] == str(tmp_path / "copy")


def test_functions_outside_every_group_are_listed_apart(make_tree):
    from passthrough.hosttrees.spec import FunctionSpec, HostSpec

    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:00.0", "8086", "3e30", "060000", iommu_group=0),
            FunctionSpec("0000:05:00.0", "1b21", "1142", "0c0330", driver="xhci_hcd"),  # no iommu_group link
        ]
    )
    _, text = run(["inventory", "--root", str(make_tree(spec))])
    apart = text.split("Not in any IOMMU group:")[1]
    assert "0000:05:00.0" in apart
    assert "0000:00:00.0" not in apart
