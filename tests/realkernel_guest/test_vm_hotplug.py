"""Scenario vm: host functions on vfio-pci hot-plugged into a running QEMU VM and taken back.

The machine (tests/realkernel/scenarios.py, VM): Intel VT-d, an e1000e 00:03.0 in a group
of its own, and an HDA controller and an xHCI controller as functions .0 and .1 of slot 05
(one group). Inside, a nested QEMU (TCG, q35, three empty root ports, a QMP socket) runs
the same Debian kernel (tests/realkernel/nested.py: booted on the host and restored here
from the state saved at its ready line), so hot-plug and hot-unplug are answered by a real
Linux. Every change goes through `manage.py vm` (the job the web page
runs) and `manage.py device`; each phase is timed and printed. Every test gives the
functions back to their drivers.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from passthrough.host import HostTree
from passthrough.vms import qmp
from tests.realkernel.nested import NestedVm
from tests.realkernel_guest.support import device, driver, manage, wait_for_driver

pytestmark = pytest.mark.django_db(transaction=True)

E1000E, HDA, XHCI = "0000:00:03.0", "0000:00:05.0", "0000:00:05.1"
NATIVE = {E1000E: "e1000e", HDA: "snd_hda_intel", XHCI: "xhci_hcd"}
IDS = {E1000E: ("8086", "10d3"), HDA: ("8086", "293e"), XHCI: ("1b36", "000d")}
# TCG inside TCG: about a minute alone, and over four minutes while the machine running the
# guests also runs other test processes (seen: "nested Linux not ready after 240 s", with the
# nested kernel still silent). A deadline, never a sleep: a boot that works costs no more.
NESTED_BOOT_DEADLINE = 600.0


@pytest.fixture(scope="session", autouse=True)
def booting() -> Iterator[NestedVm]:
    """The nested VM, started before the test database is made, so its boot overlaps that."""
    # QEMU's vfio needs the type1 IOMMU backend; with no udev in the guest nothing loads it.
    subprocess.run(["modprobe", "vfio_iommu_type1"], check=True)
    folder = Path(tempfile.mkdtemp(prefix="nested-", dir="/tmp"))
    # Restored from the state the host saved at the nested Linux's ready line (nested.save_state);
    # booted here, the slow way, only when the host gave none.
    state = os.environ.get("GUEST_NESTED_STATE")
    with NestedVm(folder, ports=3, state=Path(state) if state else None) as vm:
        yield vm
        print("--- nested console (tail) ---\n" + vm.text()[-4000:])
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def nested(booting: NestedVm, request: pytest.FixtureRequest) -> NestedVm:
    # pytest dumps every thread's stack when a test runs past faulthandler_timeout (120 s in the
    # guests), and that dump, taken while the main thread runs on, has crashed the guest's
    # Python. The boot has its own deadline, NESTED_BOOT_DEADLINE: the dump waits.
    faulthandler.cancel_dump_traceback_later()
    seconds = booting.wait_ready(NESTED_BOOT_DEADLINE)
    how = "restored from the host's saved state, QEMU start to running" if booting.state else "QEMU start to its /init"
    print(f"phase: nested Linux up ({how}): {seconds:.1f} s")
    watchdog = float(request.config.getini("faulthandler_timeout") or 0)
    if watchdog > 0:
        faulthandler.dump_traceback_later(watchdog, file=sys.__stderr__)
    return booting


def vm_command(*argv: str) -> dict[str, Any]:
    """``manage.py vm ARGV --format json``: its job and result (also when the job failed), with the exit code."""
    ran = manage("vm", *argv, "--format", "json")
    if not ran.stdout:
        return {"error": ran.stderr, "exit": ran.code}
    return {**json.loads(ran.stdout), "exit": ran.code}


def timed(what: str, call: Any, *argv: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    done = call(*argv)
    seconds = time.monotonic() - started
    print(f"phase: {what}: {seconds:.2f} s")
    return done, seconds


def step_span(result: dict[str, Any], first: str, last: str) -> float:
    """Seconds from the start of the first ``first`` step to the end of the last ``last`` step."""
    steps = result["steps"]
    start = next(step["started"] for step in steps if step["name"] == first)
    end = [step["finished"] for step in steps if step["name"] == last][-1]
    return float(end - start)


def bound(*addresses: str) -> None:
    for address in addresses:
        wait_for_driver(address, NATIVE[address])
    done, _ = timed(f"device bind {addresses[0]}", device, "bind", addresses[0])
    assert done["job"]["state"] == "succeeded", done
    assert all(driver(address) == "vfio-pci" for address in addresses)


def given_back(*addresses: str) -> None:
    done = device("restore", addresses[0])
    assert done["job"]["state"] == "succeeded", done
    for address in addresses:
        wait_for_driver(address, NATIVE[address])


def test_the_nested_qemu_is_found_in_proc_with_its_machine_and_free_root_ports(nested):
    vms = {vm.id: vm for vm in qmp.read(HostTree("/")).vms}
    vm = vms[str(nested.socket)]
    assert (vm.name, vm.state, vm.free_ports, vm.hotplug, vm.devices) == ("nested", "running", 3, None, [])
    assert vm.machine is not None and vm.machine.startswith("pc-q35-")


def test_the_e1000e_is_hot_plugged_seen_by_query_pci_and_released_by_the_nested_linux(nested):
    reference = f"qemu:{nested.socket}"
    bound(E1000E)
    try:
        attached, seconds = timed("vm attach e1000e (command)", vm_command, "attach", reference, E1000E)
        assert attached["job"]["state"] == "succeeded", attached
        result = attached["result"]
        print(
            f"phase: attach, first device_add to query-pci listing it: {step_span(result, 'device_add', 'prove'):.2f} s"
        )
        [proof] = result["parameters"]["proof"]
        print(f"proof: {json.dumps(proof)}")
        assert proof["seen_by"] == "query-pci" and (proof["vendor"], proof["device"]) == IDS[E1000E], proof
        assert proof["id"] == "pw-00-03-0" and proof["guest"].endswith(":00.0"), proof
        held = qmp.read_live(str(nested.socket))
        assert [(item.id, item.host) for item in held.peripherals] == [("pw-00-03-0", E1000E)]
        assert result["undo"] == {"action": "vm_attach", "kind": "qemu", "vm": reference,
                                  "devices": [{"id": "pw-00-03-0", "host": E1000E}]}  # fmt: skip

        detached, seconds = timed("vm detach e1000e (command)", vm_command, "detach", reference, E1000E)
        assert detached["job"]["state"] == "succeeded", detached
        span = step_span(detached["result"], "device_del", "wait_deleted")
        print(f"phase: detach, device_del to DEVICE_DELETED: {span:.2f} s")
        assert qmp.read_live(str(nested.socket)).peripherals == []
    finally:
        given_back(E1000E)


def test_a_two_function_card_goes_onto_one_port_and_both_functions_come_back_together(nested):
    reference = f"qemu:{nested.socket}"
    bound(HDA, XHCI)
    try:
        attached, _ = timed("vm attach HDA+xHCI (command)", vm_command, "attach", reference, HDA)
        assert attached["job"]["state"] == "succeeded", attached
        result = attached["result"]
        assert sorted(result["targets"]) == [HDA, XHCI]
        print(
            f"phase: attach, first device_add to query-pci listing both: {step_span(result, 'device_add', 'prove'):.2f} s"
        )
        added = [step["target"] for step in result["steps"] if step["name"] == "device_add"]
        assert added == [XHCI, HDA], added  # function 0 last: the slot is announced when it arrives
        proof = {entry["host"]: entry for entry in result["parameters"]["proof"]}
        print(f"proof: {json.dumps(result['parameters']['proof'])}")
        assert {host: (entry["vendor"], entry["device"]) for host, entry in proof.items()} == {
            HDA: IDS[HDA],
            XHCI: IDS[XHCI],
        }
        assert proof[HDA]["port"] == proof[XHCI]["port"]
        assert proof[HDA]["guest"][:-1] == proof[XHCI]["guest"][:-1], proof  # one guest slot
        assert (proof[HDA]["guest"][-1], proof[XHCI]["guest"][-1]) == ("0", "1"), proof

        detached, _ = timed("vm detach xHCI, and HDA with it (command)", vm_command, "detach", reference, XHCI)
        assert detached["job"]["state"] == "succeeded", detached
        print(
            f"phase: detach, device_del to DEVICE_DELETED: {step_span(detached['result'], 'device_del', 'wait_deleted'):.2f} s"
        )
        assert sorted(detached["result"]["targets"]) == [HDA, XHCI]
        assert any("go too" in warning for warning in detached["result"]["warnings"]), detached["result"]
        assert qmp.read_live(str(nested.socket)).peripherals == []
    finally:
        given_back(HDA, XHCI)


def test_an_attach_job_is_undone_by_an_undo_job_which_hot_unplugs_what_it_added(nested):
    reference = f"qemu:{nested.socket}"
    bound(E1000E)
    try:
        attached = vm_command("attach", reference, E1000E)
        assert attached["job"]["state"] == "succeeded", attached
        undone, _ = timed("vm undo of the attach (command)", vm_command, "undo", str(attached["job"]["id"]))
        assert undone["job"]["state"] == "succeeded", undone
        assert undone["result"]["action"] == "vm_detach" and undone["result"]["targets"] == [E1000E], undone
        assert qmp.read_live(str(nested.socket)).peripherals == []
    finally:
        given_back(E1000E)


def test_a_function_qemu_refuses_half_way_is_rolled_back_and_the_vm_left_as_it_was(nested):
    """Function 1 goes in, then QEMU refuses function 0 (its id is taken): function 1 comes out again."""
    reference = f"qemu:{nested.socket}"
    asyncio.run(_qmp(nested.socket, "device_add", {"driver": "e1000e", "bus": "rp3", "id": "pw-00-05-0"}))
    bound(HDA, XHCI)
    try:
        before = qmp.read_live(str(nested.socket)).state()
        refused = vm_command("attach", reference, HDA)
        assert refused["job"]["state"] == "rolled_back", refused
        result = refused["result"]
        assert "Duplicate device ID 'pw-00-05-0'" in result["error"]["message"], result["error"]
        names = [(step["name"], step["target"], step["ok"]) for step in result["steps"]]
        print(f"refused: {result['error']['message']}\nsteps: {names}")
        assert ("device_add", XHCI, True) in names and ("device_add", HDA, False) in names, names
        assert ("rollback", XHCI, True) in names and ("wait_deleted", None, True) in names, names
        assert result["state_after"] == result["state_before"] == before
        assert qmp.read_live(str(nested.socket)).state() == before
    finally:
        given_back(HDA, XHCI)
        asyncio.run(_qmp(nested.socket, "device_del", {"id": "pw-00-05-0"}, wait_deleted=True))


async def _qmp(socket: Path, command: str, arguments: dict[str, Any], *, wait_deleted: bool = False) -> None:
    """One command through a QMP client of the test's own (the product is not connected meanwhile)."""
    from qemu.qmp import QMPClient

    client = QMPClient("test")
    await asyncio.wait_for(client.connect(str(socket)), 30)
    try:
        with client.listener("DEVICE_DELETED") as listener:
            await asyncio.wait_for(client.execute(command, arguments), 30)
            if wait_deleted:
                await asyncio.wait_for(listener.get(), 60)
    finally:
        await client.disconnect()
