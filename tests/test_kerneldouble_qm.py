"""The kernel double's ``qm``: qemu-server's config writing and pending rules, on real configs.

Its behaviours are taken from qemu-server 9.2 (PVE::API2::Qemu::update_vm,
PVE::QemuServer::parse_vm_config / write_vm_config, PVE::AbstractConfig): see
passthrough/kerneldouble/qm.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from passthrough.kerneldouble import KernelDouble
from tests.proxmox_support import CFG2CMD, PARSE_CONFIG, RUNNER_VMID, command_line, conf_text, runner_node, start

# As write_vm_config writes them; not sections.conf (its [PENDING] is applied on a stopped VM's next
# qm set) nor q35-linux-hostpci-template.conf (hand-written: scsihw before scsi0).
CANONICAL = [
    path for path in CFG2CMD + PARSE_CONFIG if path.name not in ("sections.conf", "q35-linux-hostpci-template.conf")
]


def node_with(tmp_path: Path, text: str) -> KernelDouble:
    return KernelDouble(runner_node(tmp_path, {RUNNER_VMID: text}))


def conf(tree: KernelDouble) -> str:
    return Path(tree.path(f"etc/pve/qemu-server/{RUNNER_VMID}.conf")).read_text()


def qm(tree: KernelDouble, *args: str):
    return tree.run_command(["qm", *args])


@pytest.mark.parametrize("path", CANONICAL, ids=lambda path: path.name)
def test_adding_and_removing_an_entry_writes_each_real_conf_back_as_it_was(tmp_path, path):
    tree = node_with(tmp_path, path.read_text())
    added = qm(tree, "set", RUNNER_VMID, "--hostpci9", "00:ff.1,pcie=1")
    assert added.ok and added.stdout == f"update VM {RUNNER_VMID}: -hostpci9 00:ff.1,pcie=1\n"
    main_section = conf(tree).split("\n\n[", 1)[0]
    assert "hostpci9: 00:ff.1,pcie=1" in main_section.splitlines()
    assert qm(tree, "set", RUNNER_VMID, "--delete", "hostpci9").ok
    assert conf(tree) == path.read_text()


def test_keys_are_sorted_as_perl_sorts_them(tmp_path):
    tree = node_with(tmp_path, conf_text("q35-linux-hostpci.conf"))
    assert qm(tree, "set", RUNNER_VMID, "--hostpci10", "00:f4.0", "--hostpci5", "00:f4.0").ok
    keys = [line.split(":")[0] for line in conf(tree).splitlines() if line.startswith("hostpci")]
    assert keys == ["hostpci0", "hostpci1", "hostpci10", "hostpci2", "hostpci3", "hostpci4", "hostpci5", "hostpci7"]
    template = node_with(tmp_path / "template", conf_text("q35-linux-hostpci-template.conf"))
    assert qm(template, "set", RUNNER_VMID, "--hostpci9", "00:f4.0").ok
    assert "scsi0: local:100/base-100-disk-2.raw,size=10G\nscsihw: virtio-scsi-pci\n" in conf(template)


def test_a_stopped_vm_takes_its_pending_changes_and_keeps_its_other_sections(tmp_path):
    original = conf_text("sections.conf")
    tree = node_with(tmp_path, original)
    assert qm(tree, "set", RUNNER_VMID, "--hostpci0", "00:ff.1").ok
    text = conf(tree)
    main, rest = text.split("\n\n", 1)
    assert "bios: ovmf" in main.splitlines() and "hostpci0: 00:ff.1" in main.splitlines()
    assert "[PENDING]" not in text
    assert rest == original.split("\n\n[special:cloudinit]", 1)[1].join(["[special:cloudinit]", ""])


def test_a_running_vm_keeps_changes_pending_as_qemu_server_does(tmp_path):
    path = next(path for path in CFG2CMD if path.name == "q35-linux-hostpci.conf")
    tree = node_with(tmp_path, path.read_text())
    start(Path(tree.root), RUNNER_VMID, command_line(path))
    assert qm(tree, "set", RUNNER_VMID, "--hostpci5", "00:f4.0").ok
    assert conf(tree) == path.read_text() + "\n[PENDING]\nhostpci5: 00:f4.0\n"
    assert qm(tree, "set", RUNNER_VMID, "--delete", "hostpci5").ok  # a value only pending just goes
    assert conf(tree) == path.read_text()
    assert qm(tree, "set", RUNNER_VMID, "--delete", "!hostpci0,hostpci1").ok
    assert conf(tree) == path.read_text() + "\n[PENDING]\ndelete: !hostpci0,hostpci1\n"
    assert qm(tree, "set", RUNNER_VMID, "--hostpci0", "00:ff.1", "--hostpci1", "d0:13.0,pcie=1").ok
    assert conf(tree) == path.read_text()  # set back to what it has: nothing is pending


def test_deleting_what_is_not_set_warns_and_changes_nothing(tmp_path):
    tree = node_with(tmp_path, conf_text("q35-win10-hostpci.conf"))
    answer = qm(tree, "set", RUNNER_VMID, "--delete", "hostpci2")
    assert (answer.returncode, answer.stderr) == (0, "cannot delete 'hostpci2' - not set in current configuration!\n")
    assert conf(tree) == conf_text("q35-win10-hostpci.conf")


def test_qm_list_prints_qms_columns_and_running_means_what_check_running_finds(tmp_path):
    path = next(path for path in CFG2CMD if path.name == "i440fx-win10-hostpci.conf")
    root = runner_node(tmp_path, {RUNNER_VMID: path.read_text(), "101": conf_text("plain.conf")})
    tree = KernelDouble(root)
    stopped = qm(tree, "list").stdout.splitlines()
    assert stopped[0] == "      VMID NAME                 STATUS     MEM(MB)    BOOTDISK(GB) PID       "
    assert stopped[1].split() == ["101", "apache", "stopped", "512", "0.00", "0"]
    assert stopped[2].split() == [RUNNER_VMID, "VM", RUNNER_VMID, "stopped", "512", "0.00", "0"]
    start(root, RUNNER_VMID, command_line(path), pid=4242)
    assert qm(tree, "list").stdout.splitlines()[2].split()[3:] == ["running", "512", "0.00", "4242"]
    (root / "proc/4242/cmdline").write_text("/usr/bin/sleep\x00100\x00")  # the pid now belongs to another process
    assert qm(tree, "list").stdout.splitlines()[2].split()[3] == "stopped"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "999", "--hostpci0", "00:ff.1"], "Configuration file 'nodes/localhost/qemu-server/999.conf' does not exist"),
        (["set", "99", "--hostpci0", "00:ff.1"],
         "400 Parameter verification failed.\nvmid: invalid format - value does not look like a valid VM ID"),
        (["set", RUNNER_VMID, "--hostpci16", "00:ff.1"], "Unknown option: hostpci16\n400 unable to parse option"),
        (["set", RUNNER_VMID, "--hostpci0", "00:ff.1,speed=9"],
         "400 Parameter verification failed.\nhostpci0: invalid format - format error\nhostpci0.speed: property is "
         "not defined in schema and the schema does not allow additional properties"),
        (["set", RUNNER_VMID, "--hostpci0", "0000:1:00.0"],
         "400 Parameter verification failed.\nhostpci0: invalid format - format error\nhostpci0.host: value does not "
         "match the regex pattern"),
        (["set", RUNNER_VMID, "--hostpci0", "pcie=1"],
         "400 Parameter verification failed.\nhostpci0: Either 'host' or 'mapping' must be set."),
        (["start", RUNNER_VMID], "the qm double answers only `qm set` and `qm list`, not start"),
    ],
)  # fmt: skip
def test_what_qm_refuses_is_refused_with_its_words_and_changes_nothing(tmp_path, args, message):
    tree = node_with(tmp_path, conf_text("q35-win10-hostpci.conf"))
    answer = qm(tree, *args)
    assert (answer.returncode, answer.stderr) == (255, message + "\n")
    assert conf(tree) == conf_text("q35-win10-hostpci.conf")


def test_a_locked_vm_is_refused(tmp_path):
    tree = node_with(
        tmp_path, conf_text("q35-win10-hostpci.conf").replace("machine: q35", "lock: backup\nmachine: q35")
    )
    answer = qm(tree, "set", RUNNER_VMID, "--hostpci2", "00:ff.1")
    assert (answer.returncode, answer.stderr) == (255, "VM is locked (backup)\n")
