"""Plain QEMU VMs through QMP (passthrough.vms.qmp), against real QEMU processes the tests start.

Each QEMU runs TCG with no guest OS and is killed at the end of its test. This machine has
no IOMMU, so QEMU itself refuses vfio-pci ("no iommu_group found"): the hot-plug that
succeeds is proven inside the real-kernel guests (tests/realkernel_guest/test_vm_hotplug.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from passthrough.host import PCI_DEVICES, HostTree
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.ops.errors import InvalidRequest
from passthrough.ops.result import OperationResult, Recorder
from passthrough.vms import qmp
from passthrough.vms.model import Vm, VmError, VmInventory, VmSource
from passthrough.vms.qmpwire import Found, QemuRefused, Session, monitor_sockets, session, unplug

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(
    QEMU is None, reason="qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
)

Start = Callable[..., str]


@pytest.fixture
def start_qemu() -> Iterator[Start]:
    """start_qemu(name, *arguments, machine="q35", monitor="qmp") -> the QMP socket's path, once it listens."""
    folder = tempfile.mkdtemp(prefix="pwqmp-", dir="/tmp")  # a socket path must fit in 108 bytes
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *arguments: str, machine: str = "q35", monitor: str = "qmp") -> str:
        socket = f"{folder}/{name}.qmp"
        if monitor == "qmp":
            where = ["-qmp", f"unix:{socket},server=on,wait=off"]
        else:  # the long form: a socket chardev and a control-mode monitor on it
            where = [
                "-chardev",
                f"socket,id=mon0,path={socket},server=on,wait=off",
                "-mon",
                "chardev=mon0,mode=control",
            ]
        assert QEMU is not None
        process = subprocess.Popen(
            [QEMU, "-M", machine, "-accel", "tcg", "-m", "64", "-nodefaults", "-no-user-config", "-display", "none",
             "-name", name, *where, *arguments],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        processes.append(process)
        deadline = time.monotonic() + 30
        while not listening(socket):  # QEMU binds the socket (the file appears) a moment before it listens
            if process.poll() is not None:
                raise AssertionError(f"QEMU exited: {process.stderr.read().decode() if process.stderr else ''}")
            assert time.monotonic() < deadline, "QEMU made no QMP socket in 30 s"
            time.sleep(0.02)
        return socket

    yield start
    for process in processes:
        process.kill()
        process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def listening(path: str) -> bool:
    """A unix socket at ``path`` accepts connections (/proc/net/unix flags it __SO_ACCEPTCON)."""
    table = HostTree("/").read("proc/net/unix", limit=1 << 24) or ""
    return any(line.split()[3:4] == ["00010000"] and line.endswith(" " + path) for line in table.splitlines())


def live_vm(socket: str) -> Vm:
    source = qmp.read(HostTree("/"), [socket])
    return next(vm for vm in source.vms if vm.id == socket)


def test_a_qemu_started_with_a_qmp_socket_is_found_in_proc_with_its_name_and_machine(start_qemu):
    short = start_qemu("pw-short", "-device", "pcie-root-port,id=rp1,chassis=1")
    long = start_qemu("pw-long", monitor="chardev")
    found = {vm.id: vm for vm in qmp.read(HostTree("/")).vms}  # no socket named: /proc alone
    assert short in found and long in found, found
    assert found[short].name == "pw-short" and found[long].name == "pw-long"
    assert found[short].kind == "qemu" and found[short].ref == f"qemu:{short}"
    assert found[short].machine == "pc-q35-7.2" or found[short].machine.startswith("pc-q35-"), found[short]
    assert found[short].state == "running" and found[short].devices == []
    assert found[short].hotplug is None and found[short].free_ports == 1
    assert "pid " in found[short].detail and "no saved configuration" in found[short].detail


def test_free_root_ports_come_from_qtree_before_the_firmware_numbered_anything(start_qemu):
    socket = start_qemu(
        "pw-ports", "-S",  # paused before the firmware: query-pci sees no bus behind a root port yet
        "-device", "pcie-root-port,id=rp1,chassis=1,slot=1", "-device", "pcie-root-port,id=rp2,chassis=2,slot=2",
        "-device", "e1000e,bus=rp1,id=nic0",
    )  # fmt: skip
    look = qmp.read_live(socket)
    ports = {port.bus: port for port in look.ports}
    assert [occupant.id for occupant in ports["rp1"].occupants] == ["nic0"] and not ports["rp1"].free
    assert ports["rp2"].occupants == [] and ports["rp2"].free
    vm = live_vm(socket)
    assert vm.free_ports == 1 and vm.hotplug is None and vm.state == "paused"
    assert "QMP status prelaunch" in vm.detail


def test_a_q35_vm_without_spare_root_ports_and_an_i440fx_vm_without_a_bridge_say_why_nothing_hot_plugs(start_qemu):
    q35 = live_vm(start_qemu("pw-full", "-device", "pcie-root-port,id=rp1,chassis=1", "-device", "e1000e,bus=rp1"))
    assert q35.free_ports == 0
    assert q35.hotplug is not None and "all 1 of its hot-pluggable root ports are taken" in q35.hotplug
    assert "QEMU cannot add root ports to a running machine" in q35.hotplug
    pc = live_vm(start_qemu("pw-pc", machine="pc"))
    assert pc.machine is not None and "i440fx" in pc.machine
    assert pc.hotplug is not None and "has no PCIe root ports" in pc.hotplug and "pci-bridge" in pc.hotplug
    bridged = live_vm(start_qemu("pw-bridged", "-device", "pci-bridge,id=pb1,chassis_nr=1", machine="pc"))
    assert bridged.hotplug is None and bridged.free_ports == 1


def test_a_socket_another_client_holds_reads_as_unknown_with_the_reason(start_qemu):
    socket = start_qemu("pw-held")

    with Session(socket, 5):  # another client, holding the monitor
        held = qmp.inspect(Found(socket, "pw-held"), timeout=1)
    assert held.state == "unknown"
    assert held.hotplug == f"QEMU did not answer on {socket} within 1 s."
    assert "one client per QMP monitor" in held.detail
    assert live_vm(socket).state == "running"  # once that client has gone, it answers
    gone = live_vm("/tmp/pw-no-such.qmp")
    assert gone.state == "unknown" and "there is no such socket" in (gone.hotplug or "")


def test_libvirts_processes_are_left_out_and_qemus_option_syntax_is_read():
    libvirt = ["-name", "guest=win11,debug-threads=on", "-chardev", "socket,id=charmonitor,fd=31,server=on,wait=off",
               "-mon", "chardev=charmonitor,id=monitor,mode=control"]  # fmt: skip
    assert monitor_sockets(libvirt) is None
    assert monitor_sockets(["-qmp", "unix:/run/a,,b.qmp,server,nowait"]) == ["/run/a,b.qmp"]
    assert monitor_sockets(["--qmp", "unix:vm.qmp,server=on"], cwd="/srv/vm") == ["/srv/vm/vm.qmp"]
    assert monitor_sockets(["-qmp", "unix:/run/client.qmp"]) == []  # QEMU connects out: nothing to open
    assert monitor_sockets(["-chardev", "socket,id=m,path=/run/h.sock,server=on", "-mon", "m"]) == []  # readline


# Attach and detach ------------------------------------------------------------------------
def _live_function() -> tuple[str, str, str, str] | None:
    """A PCI function of this machine with no IOMMU group: QEMU's vfio-pci will look for one and refuse."""
    live = HostTree("/")
    for address in sorted(live.listdir(PCI_DEVICES)):
        base = f"{PCI_DEVICES}/{address}"
        klass = (live.read(f"{base}/class") or "")[2:]
        if not live.exists(f"{base}/iommu_group") and klass[:4] not in ("0600", "0604"):
            return address, (live.read(f"{base}/vendor") or "")[2:], (live.read(f"{base}/device") or "")[2:], klass
    return None


@pytest.fixture
def vfio_tree(make_tree) -> Callable[[str], tuple[HostTree, str]]:
    """A host tree where one of this machine's own functions sits on vfio-pci in a group of its own."""
    found = _live_function()
    if found is None:
        pytest.skip("no PCI function without an IOMMU group on this machine")
    address, vendor, device, klass = found

    def build(driver: str = "vfio-pci") -> tuple[HostTree, str]:
        function = FunctionSpec(address, vendor, device, klass, driver=driver, iommu_group=7)
        return HostTree(make_tree(HostSpec(functions=[function], modules=("kvm_intel", "kvm", "vfio_pci")))), address

    return build


def test_qemus_own_refusal_of_a_vfio_function_is_reported_and_the_vm_is_left_as_it_was(start_qemu, vfio_tree):
    tree, address = vfio_tree()
    socket = start_qemu("pw-attach", "-device", "pcie-root-port,id=rp1,chassis=1")
    vms = VmInventory([qmp.read(tree, [socket])])
    result = qmp.attach(tree, vms, f"qemu:{socket}", [address])
    assert result.outcome == "rolled_back", result
    assert result.error is not None and result.error["code"] == "qemu_refused"
    assert result.error["message"].startswith("QEMU refused device_add: vfio ")
    assert "no iommu_group found" in result.error["message"], result.error
    assert result.state_after == result.state_before == {"devices": [], "free_ports": 1}
    assert [(step.name, step.ok) for step in result.steps] == [("validate", True), ("device_add", False)]
    assert result.undo is None
    look = qmp.read_live(socket)
    assert look.peripherals == [] and [port.free for port in look.ports] == [True]


def test_a_function_not_on_vfio_is_refused_with_the_way_to_bind_it_and_config_only_is_refused(start_qemu, vfio_tree):
    socket = start_qemu("pw-notvfio", "-device", "pcie-root-port,id=rp1,chassis=1")
    tree, address = vfio_tree("virtio-pci")
    vms = VmInventory([qmp.read(tree, [socket])])
    with pytest.raises(qmp.NotOnVfio) as refused:
        qmp.attach(tree, vms, f"qemu:{socket}", [address])
    assert "is on virtio-pci, not vfio-pci" in refused.value.message and "no managed mode" in refused.value.message
    assert refused.value.hint == (
        f"Bind it to vfio-pci first: step 4 of the wizard, or `manage.py device bind {address}`."
    )
    tree, address = vfio_tree()
    with pytest.raises(qmp.CannotHotplug, match="has no saved configuration to change"):
        qmp.attach(tree, vms, f"qemu:{socket}", [address], live=False)
    with pytest.raises(qmp.CannotHotplug, match=r"A primary GPU \(x-vga\) cannot be hot-plugged"):
        qmp.attach(tree, vms, f"qemu:{socket}", [address], primary_gpu=True)
    assert qmp.read_live(socket).peripherals == []


def test_detaching_a_function_the_vm_does_not_have_is_refused(start_qemu, vfio_tree):
    tree, address = vfio_tree()
    socket = start_qemu("pw-detach", "-device", "pcie-root-port,id=rp1,chassis=1")
    vms = VmInventory([qmp.read(tree, [socket])])
    with pytest.raises(qmp.DeviceNotInVm) as refused:
        qmp.detach(tree, vms, f"qemu:{socket}", [address])
    assert refused.value.message == f"qemu:{socket} does not have {address}; it has no host function."


def test_a_guest_that_never_acknowledges_the_unplug_fails_in_words_and_the_request_stays_pending(start_qemu):
    socket = start_qemu("pw-unplug", "-device", "pcie-root-port,id=rp1,chassis=1")

    session(socket, 5, lambda qemu: qemu.run("device_add", {"driver": "e1000e", "bus": "rp1", "id": "nic1"}))
    recorder = Recorder(OperationResult("test"), None)
    started = time.monotonic()
    with pytest.raises(VmError) as refused:
        session(socket, 5, lambda monitor: unplug(recorder, [("nic1", "e1000e", "rp1", 0, 0)], 0.5, "x", monitor))
    assert time.monotonic() - started < 5
    assert refused.value.message.startswith("The guest did not release e1000e (nic1) within 0.5 s:")
    assert "a guest OS must acknowledge a hot-unplug" in refused.value.message
    assert "The request stays pending in QEMU" in refused.value.message
    assert [(step.name, step.ok) for step in recorder.result.steps] == [("x", True), ("wait_deleted", False)]
    ports = {port.bus: port for port in qmp.read_live(socket).ports}
    assert [occupant.id for occupant in ports["rp1"].occupants] == ["nic1"]


def test_a_cards_functions_go_on_one_free_port_function_0_last_and_too_few_ports_are_refused(make_tree):
    from passthrough.configgen.layout import guest_slots
    from passthrough.vms.qmpwire import Occupant, Port
    from passthrough.vms.validate import prepare
    from tests.kernelhosts import GTX1080TI, GTX1080TI_AUDIO, x570

    spec = x570()
    for function in spec.functions:
        if function.address in (GTX1080TI.address, GTX1080TI_AUDIO.address):
            function.driver = "vfio-pci"
    tree = HostTree(make_tree(spec))
    vm = Vm("qemu", "/run/gaming.qmp", "gaming", "running", machine="pc-q35-7.2", free_ports=1)
    cards = guest_slots(
        prepare(tree, VmInventory([VmSource("qemu", True, "t", [vm])]), vm.ref, [GTX1080TI.address]).spec
    )
    taken = Port("rp1", "pcie-root-port", True, [Occupant("nic0", "e1000e", 0, 0)])
    placed = qmp.place([taken, Port("rp2", "pcie-root-port", True, [])], cards, None, vm.ref)
    assert [item.commands() for item in placed] == [[
        {"driver": "vfio-pci", "host": "0000:0b:00.1", "id": "pw-0b-00-1", "bus": "rp2", "addr": "00.1"},
        {"driver": "vfio-pci", "host": "0000:0b:00.0", "id": "pw-0b-00-0", "bus": "rp2", "addr": "00.0",
         "multifunction": "on"},
    ]]  # fmt: skip
    with pytest.raises(qmp.CannotHotplug, match="Nothing can be hot-plugged into qemu:/run/gaming.qmp: it is full"):
        qmp.place([taken], cards, "it is full", vm.ref)
    hidden = Port("rp3", "pcie-root-port", False, [])  # hotplug=off
    with pytest.raises(qmp.CannotHotplug, match="Nothing can be hot-plugged"):
        qmp.place([hidden], cards, "no port", vm.ref)


def test_qemus_errors_come_back_in_its_own_words(start_qemu):
    socket = start_qemu("pw-words")

    with pytest.raises(QemuRefused, match=r"^QEMU refused device_del: Device 'nope' not found$"):
        session(socket, 5, lambda qemu: qemu.run("device_del", {"id": "nope"}))
    assert Path(socket).exists()


def test_undoing_an_attach_whose_devices_are_gone_changes_nothing_and_a_foreign_record_is_refused(
    start_qemu, vfio_tree
):
    tree, address = vfio_tree()
    socket = start_qemu("pw-undo", "-device", "pcie-root-port,id=rp1,chassis=1")
    record = {
        "action": "vm_attach",
        "kind": "qemu",
        "vm": f"qemu:{socket}",
        "devices": [{"id": "pw-x", "host": address}],
    }
    result = qmp.undo(tree, record)
    assert result.outcome == "unchanged" and result.targets == [address]
    assert result.warnings == [f"qemu:{socket} no longer has what that attach added: nothing to undo."]
    assert result.state_before == result.state_after == {"devices": [], "free_ports": 1}
    with pytest.raises(InvalidRequest, match="not the undo record of an attach or detach of a plain QEMU VM"):
        qmp.undo(tree, {**record, "vm": "libvirt:win11"})
    with pytest.raises(InvalidRequest):
        qmp.undo(tree, {**record, "action": "vm_define"})


def test_the_port_a_detach_frees_is_where_the_next_attach_goes_cycle_after_cycle(start_qemu):
    """QEMU cannot add root ports to a running machine, so none pile up; what matters is that a port
    freed by a detach is found free again. Native PCIe hot-plug (ACPI hot-plug off) lets QEMU
    finish an unplug from a slot no guest ever powered at once, so no guest OS is needed; an
    e1000e stands for the vfio-pci device this host (no IOMMU) cannot give."""
    from passthrough.configgen.layout import GuestSlot
    from passthrough.configgen.spec import PassedDevice

    socket = start_qemu(
        "pw-cycles", "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off",
        "-device", "pcie-root-port,id=rp1,chassis=1", "-device", "pcie-root-port,id=rp2,chassis=2",
        "-device", "pcie-root-port,id=rp3,chassis=3", "-device", "e1000e,bus=rp1,id=nic1",
        "-device", "e1000e,bus=rp3,id=nic3",
    )  # fmt: skip
    card = [GuestSlot(0, [(PassedDevice("0000:03:00.0"), 0)])]
    recorder = Recorder(OperationResult("test"), None)
    for _ in range(3):
        look = qmp.read_live(socket)
        assert look.free_ports == 1
        (placed,) = qmp.place(look.ports, card, qmp.why_not_hotplug(look), "pw-cycles")
        assert (placed.bus, placed.slot) == ("rp2", 0)
        arguments = placed.commands()[0] | {"driver": "e1000e", "id": "nic2"}
        del arguments["host"]
        session(socket, 5, lambda qemu, arguments=arguments: qemu.run("device_add", arguments))
        full = qmp.read_live(socket)
        assert full.free_ports == 0
        with pytest.raises(qmp.CannotHotplug, match="all 3 of its hot-pluggable root ports are taken"):
            qmp.place(full.ports, card, qmp.why_not_hotplug(full), "pw-cycles")
        session(socket, 5, lambda qemu: unplug(recorder, [("nic2", "e1000e", "rp2", 0, 0)], 5, "device_del", qemu))
    assert [port.bus for port in qmp.read_live(socket).ports if port.free] == ["rp2"]
