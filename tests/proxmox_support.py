"""Proxmox VE nodes for the tests: real VM configs from qemu-server's test suite in host trees.

``tests/data/proxmox/SOURCES.txt`` says where each config comes from. A running VM is what
qemu-server's check_running looks for: ``var/run/qemu-server/<vmid>.pid`` naming a process
whose ``/proc/<pid>/cmdline`` is the real kvm command line qemu-server made from that
config (the ``.conf.cmd`` beside it), so the VMID of a running VM is the runner's 8006.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

DATA = Path(__file__).parent / "data" / "proxmox"
CFG2CMD = sorted((DATA / "cfg2cmd").glob("*.conf"))
PARSE_CONFIG = sorted((DATA / "parse-config").glob("*.conf"))
REAL_CONFS = CFG2CMD + PARSE_CONFIG
RUNNER_VMID = "8006"  # qemu-server's cfg2cmd runner

# The host functions qemu-server's cfg2cmd runner mocks lspci with, and its two cluster mappings.
RUNNER_FUNCTIONS = [
    "0000:00:43.1",
    "0000:00:f4.0",
    "0000:00:ff.1",
    "0000:0f:f2.0",
    "0000:d0:13.0",
    "0000:d0:15.1",
    "0000:d0:15.2",
    "0000:d0:17.0",
    "0000:f0:42.0",
    "0000:f0:43.0",
    "0000:f0:43.1",
    "1234:f0:43.1",
    "0000:01:00.4",
    "0000:01:00.5",
    "0000:01:00.6",
    "0000:07:10.0",
    "0000:07:10.1",
    "0000:07:10.4",
]
RUNNER_MAPPINGS = """someGpu
\tmap node=localhost,path=0000:01:00.4,id=10de:2231,iommugroup=1
\tmap node=localhost,path=0000:01:00.5,id=10de:2231,iommugroup=1
\tmap node=localhost,path=0000:01:00.6,id=10de:2231,iommugroup=1
\tmdev 1

someNic
\tmap node=localhost,path=0000:07:10.0,id=8086:1520,iommugroup=2
\tmap node=localhost,path=0000:07:10.1,id=8086:1520,iommugroup=2
\tmap node=localhost,path=0000:07:10.4,id=8086:1520,iommugroup=2
"""


def conf_text(name: str) -> str:
    found = [path for path in REAL_CONFS if path.name == name]
    assert found, name
    return found[0].read_text()


def command_line(conf: Path) -> list[str]:
    """The kvm argv of a cfg2cmd test, from its shell-quoted ``.conf.cmd``."""
    return shlex.split(Path(f"{conf}.cmd").read_text().replace("\\\n", " "))


def vfio_hosts(argv: list[str]) -> list[str]:
    devices = [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "-device" and argv[i + 1].startswith("vfio-")]
    return [option[5:] for device in devices for option in device.split(",") if option.startswith("host=")]


def write(root: Path, relative: str, text: str | bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def start(root: Path, vmid: str, argv: list[str], pid: int = 4242) -> None:
    """Make the VM running as qemu-server sees it: its pid file names a QEMU with that pid file."""
    assert f"/var/run/qemu-server/{vmid}.pid" in argv
    write(root, f"var/run/qemu-server/{vmid}.pid", f"{pid}\n")
    write(root, f"proc/{pid}/cmdline", "\x00".join(argv) + "\x00")


def stop(root: Path, vmid: str, pid: int = 4242) -> None:
    os.unlink(root / f"var/run/qemu-server/{vmid}.pid")
    os.unlink(root / f"proc/{pid}/cmdline")


def runner_node(root: Path, confs: dict[str, str], *, mappings: bool = True) -> Path:
    """A node as qemu-server's cfg2cmd runner sees it: its mocked functions, node "localhost", its mappings."""
    for address in RUNNER_FUNCTIONS:
        (root / "sys/bus/pci/devices" / address).mkdir(parents=True)
    write(root, "etc/hostname", "localhost\n")
    if mappings:
        write(root, "etc/pve/mapping/pci.cfg", RUNNER_MAPPINGS)
    for vmid, text in confs.items():
        write(root, f"etc/pve/qemu-server/{vmid}.conf", text)
    return root
