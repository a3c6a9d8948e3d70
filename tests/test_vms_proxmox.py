"""Proxmox VE VMs: real configs read as qemu-server reads them, planned, attached, detached and undone.

The changes go through ``qm set``, answered by the kernel double's qm (a double of
qemu-server's, since no Proxmox node runs here; see passthrough/kerneldouble/qm.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from passthrough.configgen import build_spec
from passthrough.host import HostTree
from passthrough.kerneldouble import Fault, KernelDouble
from passthrough.ops.errors import InvalidRequest
from passthrough.pci.scan import scan
from passthrough.vms import proxmox
from passthrough.vms.model import ConfigChanged, DeviceHeldElsewhere, HeldDevice, UnknownVm, VmError, VmInventory
from passthrough.vms.validate import Prepared, prepare
from tests.kernelhosts import GTX1080TI, GTX1080TI_AUDIO, sriov_host, x570
from tests.proxmox_support import (
    CFG2CMD,
    REAL_CONFS,
    RUNNER_VMID,
    command_line,
    conf_text,
    runner_node,
    start,
    vfio_hosts,
)

GPU, AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address
MACHINES = {"i440fx-win10-hostpci.conf": "pc", "i440fx-viommu-virtio.conf": "pc", "q35-viommu-virtio.conf": "q35",
            "plain.conf": "pc", "sections.conf": "pc", "snapshots.conf": "pc-i440fx-9.1"}  # fmt: skip
NAMES = {"plain.conf": "apache", "sections.conf": "deb1223", "snapshots.conf": "win-machine-ver"}


def read_one(root: Path, vmid: str = RUNNER_VMID):
    source = proxmox.read(HostTree(root))
    assert source.available, source.detail
    return next(vm for vm in source.vms if vm.id == vmid)


# Reading real configs -----------------------------------------------------------------
@pytest.mark.parametrize("conf", REAL_CONFS, ids=lambda path: path.name)
def test_every_real_conf_reads_with_its_machine_name_and_devices(tmp_path, conf):
    vm = read_one(runner_node(tmp_path, {RUNNER_VMID: conf.read_text()}))
    assert vm.ref == "proxmox:8006" and vm.state == "stopped" and vm.config == conf.read_text()
    assert vm.machine == MACHINES.get(conf.name, "q35")  # no machine line: qemu-server's i440fx "pc"
    assert vm.name == NAMES.get(conf.name, "vm-8006")
    assert all(device.config and not device.live for device in vm.devices)
    if conf in CFG2CMD and "mapping" not in conf.name and "template" not in conf.name:
        # what the VM holds is what qemu-server passes to QEMU for that config (a template's
        # command line, which only backups run, leaves its hostpci devices out)
        assert sorted(device.host for device in vm.devices) == sorted(vfio_hosts(command_line(conf)))


@pytest.mark.parametrize("conf", CFG2CMD, ids=lambda path: path.name)
def test_a_running_vm_holds_live_what_its_qemu_command_line_passes(tmp_path, conf):
    root = runner_node(tmp_path, {RUNNER_VMID: conf.read_text()})
    start(root, RUNNER_VMID, command_line(conf))
    vm = read_one(root)
    assert vm.state == "running"
    assert sorted(device.host for device in vm.devices if device.live) == sorted(vfio_hosts(command_line(conf)))


def test_bus_and_slot_is_every_function_of_the_device_and_a_domain_is_kept(tmp_path):
    vm = read_one(runner_node(tmp_path, {RUNNER_VMID: conf_text("q35-linux-hostpci-multifunction.conf")}))
    assert [(device.host, device.alias) for device in vm.devices] == [
        ("0000:f0:43.0", "hostpci0"), ("0000:f0:43.1", "hostpci0"), ("1234:f0:43.1", "hostpci1"),
    ]  # fmt: skip


def test_guest_addresses_come_from_the_root_bus_only(tmp_path):
    """On i440fx pci.0 is the root bus; on q35 qemu-server's pci.0 is a bridge, whose bus number is the firmware's."""
    for name, guest in (("i440fx-win10-hostpci.conf", "0000:00:10.0"), ("q35-linux-hostpci.conf", None)):
        conf = next(path for path in CFG2CMD if path.name == name)
        root = runner_node(tmp_path / name, {RUNNER_VMID: conf.read_text()})
        start(root, RUNNER_VMID, command_line(conf))
        assert read_one(root).devices[0].guest == guest


def test_a_cluster_mapping_is_resolved_from_pci_cfg_or_said_to_be_one(tmp_path):
    text = conf_text("q35-linux-hostpci-mapping.conf")
    vm = read_one(runner_node(tmp_path / "a", {RUNNER_VMID: text}))
    assert vm.devices == []  # several maps on one node: qemu-server picks one when the VM starts
    assert "picks one of 0000:07:10.0 or 0000:07:10.1 or 0000:07:10.4" in vm.detail
    single = runner_node(tmp_path / "b", {RUNNER_VMID: text}, mappings=False)
    (single / "etc/pve/mapping").mkdir(parents=True)
    (single / "etc/pve/mapping/pci.cfg").write_text("someNic\n\tmap node=localhost,path=0000:07:10.4,id=8086:1520\n")
    assert [(device.host, device.alias) for device in read_one(single).devices] == [("0000:07:10.4", "hostpci0")]
    unresolved = read_one(runner_node(tmp_path / "c", {RUNNER_VMID: text}, mappings=False))
    assert "uses the cluster mapping 'someNic', and there is no /etc/pve/mapping/pci.cfg" in unresolved.detail


def test_snapshots_and_the_cloudinit_section_are_not_the_vm(tmp_path):
    snapshots = read_one(runner_node(tmp_path / "a", {RUNNER_VMID: conf_text("snapshots.conf")}))
    assert snapshots.machine == "pc-i440fx-9.1"  # its snapshots say pc-q35-5.1 and pc-i440fx-5.2
    sections = read_one(runner_node(tmp_path / "b", {RUNNER_VMID: conf_text("sections.conf")}))
    assert sections.name == "deb1223"  # [special:cloudinit] says deb122


def test_a_host_without_etc_pve_is_not_a_proxmox_node(make_tree):
    source = proxmox.read(HostTree(make_tree(x570())))
    assert (source.available, source.detail) == (False, "not a Proxmox VE node (no /etc/pve/qemu-server)")


# A kernel-double X570 node: 101 is q35 (hostpci0, 1 and 4 used), 102 "apache" is i440fx --------
@pytest.fixture
def node(make_tree) -> KernelDouble:
    files = {"etc/hostname": "pve\n", "etc/pve/qemu-server/101.conf": conf_text("q35-win10-hostpci.conf"),
             "etc/pve/qemu-server/102.conf": conf_text("plain.conf")}  # fmt: skip
    return KernelDouble(make_tree(x570(files=files)))


def conf_of(tree: HostTree, vmid: str) -> str:
    return Path(tree.path(f"etc/pve/qemu-server/{vmid}.conf")).read_text()


def vms_on(tree: HostTree) -> VmInventory:
    return VmInventory([proxmox.read(tree)])


def planned(tree: HostTree, reference: str, addresses: list[str], **options) -> tuple[str, str]:
    vms = vms_on(tree)
    vm = vms.find(reference)
    return str(vm.config), proxmox.plan_attach(vm, prepare(tree, vms, reference, addresses, **options))


def added_lines(before: str, after: str) -> list[str]:
    old = before.splitlines()
    return [line for line in after.splitlines() if line not in old]


def test_a_gpu_and_its_audio_are_one_hostpci_at_the_lowest_free_index_with_pcie_on_q35(node):
    before, after = planned(node, "proxmox:101", [GPU])
    assert added_lines(before, after) == ["hostpci2: 0b:00,pcie=1"]
    assert after.splitlines()[6:9] == ["hostpci1: f0:43.0,pcie=1", "hostpci2: 0b:00,pcie=1", "hostpci4: 00:43.1,pcie=1"]
    _, primary = planned(node, "proxmox:101", [AUDIO], primary_gpu=True)
    assert added_lines(before, primary) == ["hostpci2: 0b:00,pcie=1,x-vga=1"]


def test_i440fx_gets_no_pcie_and_refuses_a_plan_that_asks_for_it(node):
    before, after = planned(node, "proxmox:102", [GPU])
    assert added_lines(before, after) == ["hostpci0: 0b:00"]
    vm = vms_on(node).find("proxmox:102")
    inventory = scan(node)
    spec = build_spec(inventory, [GPU], machine="q35")
    with pytest.raises(VmError) as refused:
        proxmox.plan_attach(vm, Prepared(vm, inventory, spec, [GPU], []))
    assert refused.value.message == (
        "proxmox:102 (apache) has machine pc (i440fx), which has no PCI Express bus: pcie=1 needs machine q35, and "
        'qemu-server refuses to start the VM otherwise ("q35 machine model is not enabled").'
    )


def test_a_vf_is_one_function_of_its_own(make_tree):
    tree = KernelDouble(
        make_tree(sriov_host(files={"etc/pve/qemu-server/103.conf": conf_text("q35-viommu-virtio.conf")}))
    )
    tree.write("sys/bus/pci/devices/0000:82:00.0/sriov_numvfs", "2")
    vfs = sorted(name for name in tree.listdir("sys/bus/pci/devices") if name.startswith("0000:82:10."))
    before, after = planned(tree, "proxmox:103", vfs)
    assert added_lines(before, after) == [f"hostpci0: {vfs[0][5:]},pcie=1", f"hostpci1: {vfs[1][5:]},pcie=1"]


def test_sixteen_hostpci_entries_are_the_limit(node):
    free = [f"--hostpci{index}" for index in (2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)]
    assert node.run_command(["qm", "set", "101", *(arg for key in free for arg in (key, "00:f4.0"))]).ok
    before, after = planned(node, "proxmox:101", [GPU])
    assert added_lines(before, after) == ["hostpci15: 0b:00,pcie=1"]
    assert node.run_command(["qm", "set", "101", "--hostpci15", "00:f4.0"]).ok
    with pytest.raises(VmError) as full:
        planned(node, "proxmox:101", [GPU])
    assert full.value.message == (
        "proxmox:101 (vm-101) has 0 free hostpci entries and this needs 1: Proxmox allows hostpci0 to hostpci15, "
        "and 16 of them are in use."
    )


# Attach, detach, undo through qm -------------------------------------------------------
def test_attach_runs_one_qm_set_writes_what_was_planned_and_undo_puts_the_conf_back(node):
    original = conf_of(node, "101")
    _, plan = planned(node, "proxmox:101", [GPU])
    result = proxmox.attach(node, vms_on(node), "proxmox:101", [GPU])
    assert result.outcome == "succeeded", result.error
    assert ["qm", "set", "101", "--hostpci2", "0b:00,pcie=1"] in node.commands
    assert conf_of(node, "101") == plan == result.plan["after"]
    assert result.plan["diff"].splitlines()[:2] == ["--- proxmox:101 (before attach)", "+++ proxmox:101 (after attach)"]
    assert [line for line in result.plan["diff"].splitlines() if line[:1] in "+-"][2:] == ["+hostpci2: 0b:00,pcie=1"]
    assert result.warnings == []
    held = vms_on(node).find("proxmox:101").devices
    assert held == [HeldDevice(GPU, config=True, alias="hostpci2"), HeldDevice(AUDIO, config=True, alias="hostpci2")]
    assert result.state_after["devices"] == [vars(device) for device in held]
    assert result.undo == {"action": "vm_attach", "kind": "proxmox", "vm": "proxmox:101", "vmid": "101",
                           "before": {"hostpci2": None}, "after": {"hostpci2": "0b:00,pcie=1"},
                           "fingerprint": result.plan["fingerprint"]}  # fmt: skip
    again = proxmox.attach(node, vms_on(node), "proxmox:101", [AUDIO])
    assert again.outcome == "unchanged"
    undone = proxmox.undo(node, result.undo)
    assert undone.outcome == "succeeded", undone.error
    assert ["qm", "set", "101", "--delete", "hostpci2"] in node.commands
    assert conf_of(node, "101") == original


def test_detach_removes_the_whole_entry_and_its_undo_puts_it_back(node):
    assert proxmox.attach(node, vms_on(node), "proxmox:102", [GPU]).ok
    attached = conf_of(node, "102")
    result = proxmox.detach(node, vms_on(node), "proxmox:102", [AUDIO])
    assert result.outcome == "succeeded", result.error
    assert ["qm", "set", "102", "--delete", "hostpci0"] in node.commands
    assert result.warnings == [f"{GPU} leaves too: hostpci0 passes the whole device, one entry per card."]
    assert "hostpci0" not in conf_of(node, "102") and vms_on(node).find("proxmox:102").devices == []
    assert result.undo["before"] == {"hostpci0": "0b:00"} and result.undo["after"] == {"hostpci0": None}
    assert proxmox.undo(node, result.undo).outcome == "succeeded"
    assert conf_of(node, "102") == attached


def test_a_device_another_vms_conf_holds_is_refused_naming_that_vm(node):
    assert node.run_command(["qm", "set", "102", "--hostpci0", "0b:00"]).ok
    before = conf_of(node, "101")
    with pytest.raises(DeviceHeldElsewhere) as refused:
        proxmox.attach(node, vms_on(node), "proxmox:101", [GPU])
    assert "already belongs to proxmox:102 (stopped), which has it in its configuration" in refused.value.message
    assert refused.value.hint == "Detach it from apache first: two VMs cannot own one function."
    assert conf_of(node, "101") == before


def test_an_unknown_vmid_is_refused_by_the_wizard_and_by_qm(node):
    with pytest.raises(UnknownVm) as refused:
        proxmox.attach(node, vms_on(node), "proxmox:999", [GPU])
    assert refused.value.message == "There is no proxmox VM '999' on this host."
    answer = node.run_command(["qm", "set", "999", "--hostpci0", "0b:00"])
    assert (answer.returncode, answer.stderr) == (
        255,
        "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist\n",
    )


def test_a_device_the_vm_does_not_have_is_refused_on_detach(node):
    with pytest.raises(VmError) as refused:
        proxmox.detach(node, vms_on(node), "proxmox:102", [GPU])
    assert refused.value.message == f"proxmox:102 (apache) does not have {GPU}: its config holds no host device."


def test_undo_is_refused_after_a_hand_edit_unless_forced(node):
    result = proxmox.attach(node, vms_on(node), "proxmox:101", [GPU])
    edited = conf_of(node, "101").replace("memory: 512", "memory: 4096")
    Path(node.path("etc/pve/qemu-server/101.conf")).write_text(edited)
    with pytest.raises(ConfigChanged) as refused:
        proxmox.undo(node, result.undo)
    assert refused.value.message == (
        "proxmox:101's config changed after the attach; undoing it now would act on a config nobody has seen."
    )
    assert conf_of(node, "101") == edited
    assert proxmox.undo(node, result.undo, force=True).outcome == "succeeded"
    assert conf_of(node, "101") == edited.replace("hostpci2: 0b:00,pcie=1\n", "")


def test_a_running_vm_gets_the_change_in_pending_and_is_told_so(make_tree):
    conf = next(path for path in CFG2CMD if path.name == "q35-win10-hostpci.conf")
    files = {f"etc/pve/qemu-server/{RUNNER_VMID}.conf": conf.read_text()}
    root = make_tree(x570(files=files))
    argv = command_line(conf)
    start(root, RUNNER_VMID, argv)
    tree = KernelDouble(root)
    vms = vms_on(tree)
    plan = proxmox.plan_attach(vms.find("proxmox:8006"), prepare(tree, vms, "proxmox:8006", [GPU]))
    result = proxmox.attach(tree, vms, "proxmox:8006", [GPU])
    assert result.outcome == "succeeded", result.error
    assert conf_of(tree, RUNNER_VMID) == plan == conf.read_text() + "\n[PENDING]\nhostpci2: 0b:00,pcie=1\n"
    assert result.warnings == [
        "proxmox:8006 (vm-8006) is running and keeps the devices it started with: qemu-server hot-plugs no hostpci "
        "device: a change to a running VM waits in [PENDING] until the VM is stopped and started again (qm reboot "
        "does both; a reboot inside the guest does not). hostpci2 waits in [PENDING]."
    ]
    vm = vms_on(tree).find("proxmox:8006")
    assert vm.holds(GPU) == HeldDevice(GPU, config=True, live=False, alias="hostpci2")
    assert "hostpci2 comes at the next start ([PENDING])" in vm.detail
    with pytest.raises(VmError) as live:
        proxmox.attach(tree, vms_on(tree), "proxmox:8006", [GPU], live=True)
    assert live.value.message.startswith("proxmox:8006 (vm-8006) cannot change devices live: qemu-server hot-plugs")
    assert proxmox.undo(tree, result.undo).ok and conf_of(tree, RUNNER_VMID) == conf.read_text()


def test_detaching_from_a_running_vm_waits_for_its_next_start(make_tree):
    conf = next(path for path in CFG2CMD if path.name == "q35-win10-hostpci.conf")
    root = make_tree(x570(files={f"etc/pve/qemu-server/{RUNNER_VMID}.conf": conf.read_text()}))
    tree = KernelDouble(root)
    assert proxmox.attach(tree, vms_on(tree), "proxmox:8006", [GPU]).ok
    # started with the GPU, as qemu-server places a pcie=1 multifunction device behind a root port
    gpu = [f"vfio-pci,host={GPU},id=hostpci2.0,bus=ich9-pcie-port-3,addr=0x0.0,multifunction=on",
           f"vfio-pci,host={AUDIO},id=hostpci2.1,bus=ich9-pcie-port-3,addr=0x0.1"]  # fmt: skip
    start(root, RUNNER_VMID, [*command_line(conf), "-device", gpu[0], "-device", gpu[1]])
    result = proxmox.detach(tree, vms_on(tree), "proxmox:8006", [GPU])
    assert result.outcome == "succeeded", result.error
    assert conf_of(tree, RUNNER_VMID).endswith("\n[PENDING]\ndelete: hostpci2\n")
    assert "hostpci2 waits in [PENDING]" in result.warnings[-1]
    assert vms_on(tree).find("proxmox:8006").holds(GPU) == HeldDevice(GPU, config=False, live=True, alias="hostpci2")
    assert proxmox.undo(tree, result.undo).ok
    assert "[PENDING]" not in conf_of(tree, RUNNER_VMID)


def test_a_failing_qm_leaves_the_vm_as_it_was_and_says_so(node):
    before = conf_of(node, "101")
    node.inject(Fault("command_fails", command="qm set 101 *", returncode=255))
    result = proxmox.attach(node, vms_on(node), "proxmox:101", [GPU])
    assert result.outcome == "rolled_back"
    assert result.error["message"].startswith("`qm set 101 --hostpci2 0b:00,pcie=1` exited with 255")
    assert conf_of(node, "101") == before and result.state_after == result.state_before


def test_a_captured_tree_is_never_changed(make_tree):
    root = make_tree(x570(files={"etc/pve/qemu-server/101.conf": conf_text("q35-win10-hostpci.conf")}))
    tree = HostTree(root)
    with pytest.raises(VmError) as refused:
        proxmox.attach(tree, vms_on(tree), "proxmox:101", [GPU])
    assert refused.value.message == (
        f"{root} is a captured tree, not this host: qm would change the wrong machine, so nothing is changed."
    )


def test_an_undo_record_that_is_not_one_is_refused(node):
    with pytest.raises(InvalidRequest):
        proxmox.undo(node, {"action": "vm_attach", "kind": "proxmox", "vmid": "101", "before": {"args": "x"},
                            "after": {"hostpci2": None}})  # fmt: skip


def test_a_rom_file_is_named_as_qemu_server_reads_it(node):
    # The worker gives a VM only a ROM in a ROM directory (passthrough.vms.romfile); this one is not in
    # /usr/share/kvm, where qemu-server reads it from, so the attach says to copy it there.
    rom = Path(node.path("usr/share/vgabios/gp102-patched.rom"))
    rom.parent.mkdir(parents=True)
    rom.write_bytes(b"\x55\xaa" + bytes(510))
    result = proxmox.attach(
        node, vms_on(node), "proxmox:101", [GPU], primary_gpu=True, rom_file="/usr/share/vgabios/gp102-patched.rom"
    )
    assert result.outcome == "succeeded", result.error
    assert "hostpci2: 0b:00,pcie=1,x-vga=1,romfile=gp102-patched.rom" in conf_of(node, "101").splitlines()
    assert result.warnings == [
        "qemu-server reads romfile= from /usr/share/kvm only, and /usr/share/kvm/gp102-patched.rom is not there: "
        "copy /usr/share/vgabios/gp102-patched.rom to it before the VM starts."
    ]
