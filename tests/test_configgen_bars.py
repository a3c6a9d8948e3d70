"""BAR sizes from real sysfs ``resource`` files (hwloc's captures of real machines)."""

from __future__ import annotations

from passthrough.configgen import build_spec, generate
from passthrough.configgen.layout import GIB, KIB, MIB, read_bars
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.scan import scan
from tests.configgen_support import PEERS

CAPTURES = PEERS / "hwloc-linux-sysfs-captures"


def captured(machine: str, address: str) -> FunctionSpec:
    """A FunctionSpec carrying the captured ids, class and resource file of one real function."""
    folder = CAPTURES / machine / address.replace(":", "-")

    def attribute(name: str) -> str:
        return (folder / name).read_text().strip()

    return FunctionSpec(
        address,
        attribute("vendor").removeprefix("0x"),
        attribute("device").removeprefix("0x"),
        attribute("class").removeprefix("0x"),
        iommu_group=7,
        extra={"resource": attribute("resource")},
    )


def test_vector_engine_has_a_64_gib_prefetchable_64bit_bar(make_tree):
    root = make_tree(HostSpec(functions=[captured("32intel64-2p8co2t+8ve", "0000:1d:00.0")]))
    bars = read_bars(str(root), "0000:1d:00.0")
    assert [(bar.index, bar.size, bar.is_64bit, bar.prefetchable) for bar in bars] == [
        (0, 64 * GIB, True, True),
        (2, 32 * MIB, False, False),
        (3, 256 * KIB, False, False),
        (4, 4 * KIB, False, False),
        (5, 4 * KIB, False, False),
    ]


def test_old_kernel_flags_still_read_as_prefetchable(make_tree):
    # This capture's kernel set IORESOURCE_PREFETCH as 0x1000; the BAR's own bits say prefetchable.
    root = make_tree(HostSpec(functions=[captured("32em64t-2n8c+dax+nvme+mic+dimms", "0000:83:00.0")]))
    bars = read_bars(str(root), "0000:83:00.0")
    assert [(bar.index, bar.size, bar.is_64bit, bar.prefetchable) for bar in bars] == [
        (0, 8 * GIB, True, True),
        (4, 128 * KIB, True, False),
    ]


def test_io_bars_are_left_out(make_tree):
    root = make_tree(HostSpec(functions=[captured("32em64t-2n8c+dax+nvme+mic+dimms", "0000:05:00.0")]))
    bars = read_bars(str(root), "0000:05:00.0")
    assert [(bar.index, bar.size, bar.is_64bit) for bar in bars] == [(0, 16 * MIB, False), (1, 128 * KIB, False)]


def test_missing_resource_file_means_unknown(make_tree):
    root = make_tree(HostSpec(functions=[FunctionSpec("01:00.0", "10de", "1b06", "030000", iommu_group=1)]))
    assert read_bars(str(root), "0000:01:00.0") == []


def test_bars_read_from_the_tree_size_esxi_and_hyperv_windows(make_tree):
    root = make_tree(HostSpec(functions=[captured("32intel64-2p8co2t+8ve", "0000:1d:00.0")]))
    inventory = scan(root)
    spec = build_spec(inventory, ["1d:00.0"], tree=str(root))
    assert spec.devices[0].bars[0].size == 64 * GIB
    vmx = generate(inventory, spec, "vmware").text
    assert 'pciPassthru.64bitMMIOSizeGB = "128"' in vmx
    dda = generate(inventory, spec, "hyperv").text
    # 2 x 64 GiB + 512 MiB for Hyper-V; the 32-bit BARs (about 32 MiB) fit the 3 GB default.
    assert "-LowMemoryMappedIoSpace 3GB -HighMemoryMappedIoSpace 131584MB" in dda
