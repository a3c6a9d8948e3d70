"""Real inputs for the readiness and boot-configuration tests (see tests/data/readiness/PROVENANCE.txt)."""

from __future__ import annotations

from pathlib import Path

from passthrough.hosttrees.spec import FunctionSpec

DATA = Path(__file__).parent / "data" / "readiness"

DEBIAN_OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
UBUNTU_OS_RELEASE = 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n'
ARCH_OS_RELEASE = 'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\n'
POP_OS_RELEASE = 'NAME="Pop!_OS"\nPRETTY_NAME="Pop!_OS 22.04 LTS"\nID=pop\nID_LIKE="ubuntu debian"\n'
# Debian's shipped /etc/default/grub, the part that matters here.
DEBIAN_GRUB = (
    "# If you change this file, run 'update-grub' afterwards to update\n"
    "GRUB_DEFAULT=0\n"
    "GRUB_TIMEOUT=5\n"
    "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n"
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    'GRUB_CMDLINE_LINUX=""\n'
)


def text(name: str) -> str:
    return (DATA / name).read_text()


def first_line(name: str) -> str:
    return text(name).splitlines()[0].strip()


def shell_output(name: str) -> str:
    """A copied terminal block without its prompt lines (``root@fuji:~# dmesg | grep ...``)."""
    lines = text(name).splitlines()
    return "\n".join(line for line in lines if not line.startswith(("root@", "$ ", "~"))) + "\n"


def lsmod_names(name: str) -> tuple[str, ...]:
    return tuple(line.split()[0] for line in shell_output(name).splitlines() if line.strip())


def without_boot_image(cmdline: str) -> str:
    """What /etc/kernel/cmdline or a loader entry holds: GRUB adds BOOT_IMAGE= itself."""
    return " ".join(word for word in cmdline.split() if not word.startswith("BOOT_IMAGE="))


def grouped_intel_functions() -> list[FunctionSpec]:
    """A host bridge and an I350 port, each in its own group, so the tree has dmar0 and groups."""
    return [
        FunctionSpec("00:00.0", "8086", "5918", class_code="060000", iommu_group=0),
        FunctionSpec("00:01.0", "8086", "1901", class_code="060400", driver="pcieport", iommu_group=1),
        FunctionSpec("01:00.0", "8086", "1521", class_code="020000", driver="igb", iommu_group=1, parent="00:01.0"),
    ]
