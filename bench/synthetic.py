"""A synthetic 1,024-function host for benchmarks: a busy server-class box.

4 Intel E810 NICs with 128 VFs each, GPUs with their audio (and, for Turing cards, USB-C
and UCSI functions), NVMe drives, a B550-style chipset group behind a switch, and uncore
functions on extra root buses to reach the requested count. Every PCIe device sits behind
its own root port, as on real boards, and every function has an IOMMU group.
"""

from __future__ import annotations

from passthrough.hosttrees.spec import FunctionSpec, HostSpec

GEN4 = ("16.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16)
GEN4_X4 = ("16.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 4)
GEN3_X8 = ("8.0 GT/s PCIe", 8, "8.0 GT/s PCIe", 8)


class _Allocator:
    def __init__(self) -> None:
        self.next_bus = 1
        self.next_group = 0
        self.root_slot = 8  # root ports from 00:01.0 on, eight functions per slot as AMD boards do
        self.functions: list[FunctionSpec] = []

    def group(self) -> int:
        self.next_group += 1
        return self.next_group - 1

    def root_port(self) -> tuple[str, int]:
        slot, function = divmod(self.root_slot, 8)
        self.root_slot += 1
        address = f"0000:00:{slot:02x}.{function}"
        bus = self.next_bus
        self.next_bus += 1
        self.functions.append(
            FunctionSpec(
                address, "1022", "1483", "060400", driver="pcieport", iommu_group=self.group(), secondary_bus=bus
            )
        )
        return address, bus


def build_synthetic_host(total: int = 1024) -> HostSpec:
    alloc = _Allocator()
    functions = alloc.functions
    functions.append(FunctionSpec("0000:00:00.0", "1022", "1480", "060000", iommu_group=alloc.group()))

    # 4 E810 NICs, each with 128 VFs (offset 128, stride 1: VFs fill slots 10-1f of the PF's bus).
    for nic in range(4):
        port, bus = alloc.root_port()
        pf = f"0000:{bus:02x}:00.0"
        functions.append(
            FunctionSpec(
                pf, "8086", "159b", "020000", "02", "8086", "0003", driver="ice", iommu_group=alloc.group(),
                parent=port, reset_methods=["flr", "bus"], link=GEN4, numa_node=nic % 2,
                sriov_totalvfs=128, sriov_numvfs=128, extra={"sriov_vf_device": "1889"},
            )
        )  # fmt: skip
        for vf in range(128):
            devfn = 0x80 + vf
            functions.append(
                FunctionSpec(
                    f"0000:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}", "8086", "1889", "020000", "02", "8086", "0000",
                    driver="iavf", iommu_group=alloc.group(), physfn=pf, reset_methods=["flr"], numa_node=nic % 2,
                )
            )  # fmt: skip

    # GPUs: 8 Turing cards with 4 functions, 8 older cards with VGA + audio.
    for gpu in range(16):
        port, bus = alloc.root_port()
        group = alloc.group()
        card = [("030000", "1e84", "nvidia"), ("040300", "10f8", "snd_hda_intel")]
        if gpu < 8:
            card += [("0c0330", "1ad8", "xhci_hcd"), ("0c8000", "1ad9", "nvidia-gpu")]
        else:
            card = [("030000", "1b80", "nouveau"), ("040300", "10f0", "snd_hda_intel")]
        for function, (class_code, device, driver) in enumerate(card):
            functions.append(
                FunctionSpec(
                    f"0000:{bus:02x}:00.{function}", "10de", device, class_code, "a1", "1458", "4001", driver=driver,
                    iommu_group=group, parent=port, boot_vga=False if class_code == "030000" else None,
                    reset_methods=["bus"], link=GEN4 if function == 0 else None,
                )
            )  # fmt: skip

    # NVMe drives.
    for _drive in range(32):
        port, bus = alloc.root_port()
        functions.append(
            FunctionSpec(
                f"0000:{bus:02x}:00.0", "144d", "a80a", "010802", "00", "144d", "a801", driver="nvme",
                iommu_group=alloc.group(), parent=port, reset_methods=["flr", "bus"], link=GEN4_X4,
            )
        )  # fmt: skip

    # A B550-style chipset: switch upstream port and 8 downstream ports in one group with
    # USB, SATA, a 2.5G NIC and a low-end host GPU (the one with the console).
    port, bus = alloc.root_port()
    chipset_group = alloc.group()
    upstream = f"0000:{bus:02x}:00.2"
    functions += [
        FunctionSpec(
            f"0000:{bus:02x}:00.0", "1022", "43ee", "0c0330", driver="xhci_hcd", iommu_group=chipset_group, parent=port
        ),
        FunctionSpec(
            f"0000:{bus:02x}:00.1", "1022", "43eb", "010601", driver="ahci", iommu_group=chipset_group, parent=port
        ),
        FunctionSpec(upstream, "1022", "43e9", "060400", driver="pcieport", iommu_group=chipset_group, parent=port),
    ]
    inner_bus = alloc.next_bus
    alloc.next_bus += 1
    functions[-1].secondary_bus = inner_bus
    downstream_devices = [
        ("1002", "699f", "030000", "amdgpu", True),
        ("10ec", "8125", "020000", "r8169", None),
    ]
    for index in range(8):
        down = f"0000:{inner_bus:02x}:{index:02x}.0"
        functions.append(
            FunctionSpec(down, "1022", "43ea", "060400", driver="pcieport", iommu_group=chipset_group, parent=upstream)
        )
        if index < len(downstream_devices):
            vendor, device, class_code, driver, boot = downstream_devices[index]
            leaf_bus = alloc.next_bus
            alloc.next_bus += 1
            functions[-1].secondary_bus = leaf_bus
            functions.append(
                FunctionSpec(
                    f"0000:{leaf_bus:02x}:00.0", vendor, device, class_code, driver=driver,
                    iommu_group=chipset_group, parent=down, boot_vga=boot,
                )
            )  # fmt: skip

    # Uncore functions on their own root buses, one group each, up to the requested total.
    bus = 0x80
    while len(functions) < total:
        for slot in range(32):
            for function in range(8):
                if len(functions) >= total:
                    break
                functions.append(
                    FunctionSpec(
                        f"0000:{bus:02x}:{slot:02x}.{function}", "8086", "324c", "088000", iommu_group=alloc.group()
                    )
                )
        bus += 1

    nic = next(function for function in functions if function.driver == "r8169")
    return HostSpec(
        functions=functions,
        cpu_vendor="AuthenticAMD",
        cpu_flags=("fpu", "svm", "x2apic"),
        cpu_count=32,
        iommu="amd",
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.8.12-4-pve root=/dev/nvme0n1p2 ro quiet iommu=pt",
        block_devices={"nvme0n1": next(function.address for function in functions if function.driver == "nvme")},
        root_source="/dev/nvme0n1p2",
        net_devices={"enp9s0": nic.address},
        net_bridges={"vmbr0": ["enp9s0"]},
        default_route="vmbr0",
        console="efifb",
    )
