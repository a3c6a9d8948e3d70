"""`manage.py vmconfig --numa-pin auto|off|N` on hwloc's capture of a real two-socket Xeon server.

The Xeon Phi 83:00.0 sits on node 1 (CPUs 8-15) of two; node 0 has CPUs 0-7.
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.test_configgen_numa_pin import LINUX, PIN_WORDS
from tests.test_placement import XEON_PHI, hwloc_host, needs_hwloc
from tests.test_vmconfig_command import vmconfig

pytestmark = needs_hwloc


def phi(*args: str):
    return vmconfig("--root", str(hwloc_host(XEON_PHI)), "--device", "83:00.0", *args)


@pytest.mark.parametrize("target", LINUX)
def test_off_writes_no_pinning_and_the_json_says_it_was_turned_off(target):
    text = phi("--target", target, "--numa-pin", "off")
    assert text.returncode == 0, text.stderr
    body = text.stdout.split("-->\n", 1)[-1]
    assert not [word for word in PIN_WORDS if word in body]
    data = json.loads(phi("--target", target, "--numa-pin", "off", "--format", "json").stdout)
    assert data["numa"]["pin"] == "off" and data["numa"]["node"] is None and data["numa"]["cpus"] is None
    assert "turned off" in data["numa"]["why"] and "turned off" in data["notes"]["NUMA"]


def test_the_default_is_automatic_and_the_json_keeps_its_old_fields():
    default = json.loads(phi("--target", "qemu", "--format", "json").stdout)
    assert default == json.loads(phi("--target", "qemu", "--format", "json", "--numa-pin", "auto").stdout)
    assert {"target", "text", "filename", "media_type", "notes", "host_requirements", "ready", "devices"} < set(default)
    assert default["numa"] == {
        "pin": "auto", "node": 1, "cpus": "8-15", "why": "83:00.0 sits on NUMA node 1 of 2 (CPUs 8-15).", "warning": None,
    }  # fmt: skip
    assert "\nexec taskset -c 8-15 qemu-system-x86_64 \\\n" in default["text"]


def test_a_chosen_node_pins_to_its_cpus_and_warns_on_stderr_that_the_device_is_elsewhere():
    result = phi("--target", "libvirt", "--numa-pin", "0")
    assert result.returncode == 0, result.stderr
    assert (
        '<vcpupin vcpu="0" cpuset="0-7" />' in result.stdout
        and '<memory mode="preferred" nodeset="0" />' in result.stdout
    )
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: pinned to NUMA node 0: Not the devices' node: 83:00.0 on node 1.")
    assert "between the sockets" in warnings[0]
    data = json.loads(phi("--target", "proxmox", "--numa-pin", "0", "--format", "json").stdout)
    assert (data["numa"]["pin"], data["numa"]["node"], data["numa"]["cpus"]) == (0, 0, "0-7")
    assert data["numa"]["warning"].startswith("Not the devices' node")
    assert "affinity: 0-7" in data["text"].splitlines()


def test_choosing_the_devices_own_node_gives_no_warning():
    result = phi("--target", "qemu", "--numa-pin", "1")
    assert result.returncode == 0 and "taskset -c 8-15" in result.stdout
    assert "warning:" not in result.stderr


def test_vmware_and_hyperv_pin_nothing_so_their_json_has_no_numa():
    for target in ("vmware", "hyperv"):
        data = json.loads(phi("--target", target, "--numa-pin", "0", "--format", "json").stdout)
        assert data["numa"] is None


@pytest.mark.parametrize(
    ("pin", "message"),
    [
        ("2", "manage.py vmconfig: error: NUMA node 2 is not one of this host's nodes (0, 1). Choose one of 0, 1,"),
        ("node1", "manage.py vmconfig: error: 'node1' is not a NUMA pinning choice. Give auto"),
        ("-1", "manage.py vmconfig: error: '-1' is not a NUMA pinning choice."),
    ],
)
def test_a_bad_node_is_one_clear_line_and_exit_2(pin, message):
    result = phi("--target", "qemu", f"--numa-pin={pin}")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_call_command_takes_the_same_option_and_refuses_a_bad_node_with_exit_code_2():
    out = io.StringIO()
    call_command(
        "vmconfig", root=str(hwloc_host(XEON_PHI)), devices=["83:00.0"], target="qemu", numa_pin="0", stdout=out
    )
    assert "exec taskset -c 0-7 qemu-system-x86_64" in out.getvalue()
    with pytest.raises(CommandError) as refused:
        call_command(
            "vmconfig", root=str(hwloc_host(XEON_PHI)), devices=["83:00.0"], target="qemu", numa_pin="5", stdout=out
        )
    assert refused.value.returncode == 2 and "NUMA node 5 is not one of this host's nodes (0, 1)" in str(refused.value)
