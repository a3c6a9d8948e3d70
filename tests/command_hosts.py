"""Hosts the command tests run on: a workstation with a GPU to pass, and a VM with no IOMMU."""

from passthrough.hosttrees.spec import FunctionSpec, HostSpec

GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on iommu=pt"\nGRUB_CMDLINE_LINUX=""\n'

# Group 2 (GT 1030 and its HDMI audio behind a root port) is viable; group 0 holds only
# the host bridge, group 1 the boot iGPU under efifb, group 3 the chipset, group 4 the
# root NVMe, group 5 the NIC with the default route: none of those is.
WORKSTATION = HostSpec(
    functions=[
        FunctionSpec("0000:00:00.0", "8086", "3e30", "060000", "0d", iommu_group=0),
        FunctionSpec("0000:00:02.0", "8086", "3e92", "030000", driver="i915", iommu_group=1, boot_vga=True),
        FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2),
        FunctionSpec(
            "0000:01:00.0", "10de", "1d01", "030000", "a1", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0",
            boot_vga=False, reset_methods=["flr", "bus"], link=("8.0 GT/s PCIe", 4, "8.0 GT/s PCIe", 4),
        ),
        FunctionSpec("0000:01:00.1", "10de", "0fb8", "040300", "a1", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0"),
        FunctionSpec("0000:00:1f.0", "8086", "a305", "060100", "10", iommu_group=3),
        FunctionSpec("0000:00:1f.4", "8086", "a323", "0c0500", "10", driver="i801_smbus", iommu_group=3),
        FunctionSpec("0000:02:00.0", "144d", "a808", "010802", driver="nvme", iommu_group=4, reset_methods=["flr"]),
        FunctionSpec("0000:03:00.0", "8086", "1533", "020000", "03", driver="igb", iommu_group=5),
    ],
    cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/nvme0n1p2 ro quiet intel_iommu=on iommu=pt",
    osrelease="6.1.0-18-amd64",
    modules=("vfio_pci", "vfio_pci_core", "vfio_iommu_type1", "vfio", "kvm_intel", "kvm"),
    dev_vfio=("vfio", "2"),
    block_devices={"nvme0n1": "0000:02:00.0"},
    root_source="/dev/nvme0n1p2",
    net_devices={"enp3s0": "0000:03:00.0"},
    default_route="enp3s0",
    console="efifb",
    files={
        "etc/default/grub": GRUB,
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
        "usr/sbin/update-grub": "",
        "usr/sbin/update-initramfs": "",
        "boot/grub/grub.cfg": "menuentry 'Debian GNU/Linux' {\n}\n",
    },
)  # fmt: skip

# A KVM guest, like the machine this project is developed on: no IOMMU, nothing to pass.
VM_WITHOUT_IOMMU = HostSpec(
    functions=[
        FunctionSpec("0000:00:00.0", "8086", "29c0", "060000"),
        FunctionSpec("0000:00:02.0", "1af4", "1042", "010000", driver="virtio-pci"),
        FunctionSpec("0000:00:03.0", "1af4", "1041", "020000", driver="virtio-pci"),
    ],
    cpu_flags=("fpu", "vme", "msr", "pae", "x2apic", "hypervisor"),
    modules=(),
    iommu=None,
    interrupt_remapping=False,
    efi=False,
    cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/vda1 ro quiet",
    block_devices={"vda": "0000:00:02.0"},
    root_source="/dev/vda1",
    net_devices={"ens3": "0000:00:03.0"},
    default_route="ens3",
)
