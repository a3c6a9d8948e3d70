"""Group verdicts: what vfio will accept, and what a person must know before trying."""

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.scan import scan

ROOT_PORT = FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2)


def _gpu(address, group, parent="0000:00:01.0", vendor="10de", device="1d01", driver="nouveau"):
    return FunctionSpec(
        address, vendor, device, "030000", driver=driver, iommu_group=group, parent=parent, boot_vga=False
    )


def _audio(address, group, parent="0000:00:01.0", vendor="10de", device="0fb8"):
    return FunctionSpec(address, vendor, device, "040300", driver="snd_hda_intel", iommu_group=group, parent=parent)


def test_gpu_and_its_audio_function_move_together(make_tree):
    inventory = scan(make_tree(HostSpec(functions=[ROOT_PORT, _gpu("01:00.0", 2), _audio("01:00.1", 2)])))
    group = inventory.group(2)
    assert group.viable
    assert group.endpoints == ["0000:01:00.0", "0000:01:00.1"]
    assert group.bridges == ["0000:00:01.0"]
    assert group.move_together == ["0000:01:00.0", "0000:01:00.1"]
    assert any("stays with the host" in reason for reason in group.reasons)


def test_a_group_of_bridges_only_has_nothing_to_pass(make_tree):
    inventory = scan(make_tree(HostSpec(functions=[ROOT_PORT])))
    assert not inventory.group(2).viable
    assert "no device to pass through" in inventory.group(2).reasons[0]


def test_audio_split_into_another_group_is_named_as_companion(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "460d", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec(
                "0000:01:00.0", "1002", "1478", "060400", driver="pcieport", iommu_group=19, parent="0000:00:01.0"
            ),
            FunctionSpec(
                "0000:02:00.0", "1002", "1479", "060400", driver="pcieport", iommu_group=20, parent="0000:01:00.0"
            ),
            _gpu("03:00.0", 21, "0000:02:00.0", "1002", "73df", "amdgpu"),
            _audio("03:00.1", 22, "0000:02:00.0", "1002", "ab28"),
        ]
    )
    inventory = scan(make_tree(spec))
    assert inventory.group(21).viable and inventory.group(22).viable
    assert inventory.group(21).companions == ["0000:03:00.1"]
    assert inventory.group(22).companions == ["0000:03:00.0"]
    assert inventory.group(21).move_together == ["0000:03:00.0", "0000:03:00.1"]
    assert any("group 22; pass it too" in reason for reason in inventory.group(21).reasons)


def test_gpu_and_audio_on_different_buses_behind_the_cards_switch_are_one_card(make_tree):
    # Intel Arc A310: GPU 03:00.0 and audio 04:00.0 sit under two downstream ports of one switch.
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "460d", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec(
                "0000:01:00.0", "8086", "4fa1", "060400", driver="pcieport", iommu_group=2, parent="0000:00:01.0"
            ),
            FunctionSpec(
                "0000:02:01.0", "8086", "4fa4", "060400", driver="pcieport", iommu_group=3, parent="0000:01:00.0"
            ),
            FunctionSpec(
                "0000:02:04.0", "8086", "4fa4", "060400", driver="pcieport", iommu_group=4, parent="0000:01:00.0"
            ),
            _gpu("03:00.0", 5, "0000:02:01.0", "8086", "56a6", "i915"),
            _audio("04:00.0", 6, "0000:02:04.0", "8086", "4f92"),
        ]
    )
    inventory = scan(make_tree(spec))
    assert inventory.group(5).companions == ["0000:04:00.0"]
    assert inventory.group(6).companions == ["0000:03:00.0"]


def test_apu_platform_functions_are_not_gpu_companions(make_tree):
    # Cezanne: iGPU and its audio are ATI (1002); the PSP and USB beside them are AMD (1022) and the host's.
    bridge = FunctionSpec("0000:00:08.1", "1022", "1635", "060400", driver="pcieport", iommu_group=4)
    spec = HostSpec(
        functions=[
            bridge,
            _gpu("05:00.0", 10, "0000:00:08.1", "1002", "1638", "amdgpu"),
            _audio("05:00.1", 11, "0000:00:08.1", "1002", "1637"),
            FunctionSpec("0000:05:00.2", "1022", "15df", "108000", driver="ccp", iommu_group=12, parent="0000:00:08.1"),
            FunctionSpec(
                "0000:05:00.3", "1022", "1639", "0c0330", driver="xhci_hcd", iommu_group=13, parent="0000:00:08.1"
            ),
        ]
    )
    inventory = scan(make_tree(spec))
    assert inventory.group(10).companions == ["0000:05:00.1"]
    assert inventory.group(13).companions == []


def test_a_chipset_group_with_the_lpc_bridge_is_not_viable(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:1f.0", "8086", "a2c9", "060100", iommu_group=10),
            FunctionSpec("0000:00:1f.3", "8086", "a2f0", "040300", driver="snd_hda_intel", iommu_group=10),
            FunctionSpec("0000:00:1f.4", "8086", "a2a3", "0c0500", driver="i801_smbus", iommu_group=10),
        ]
    )
    group = scan(make_tree(spec)).group(10)
    assert not group.viable
    assert any("LPC/ISA bridge" in reason for reason in group.reasons)
    assert any("SMBus" in reason for reason in group.reasons)


def test_many_endpoints_in_one_group_must_all_go(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:02:00.0", "1022", "43ee", "0c0330", driver="xhci_hcd", iommu_group=15),
            FunctionSpec("0000:02:00.1", "1022", "43eb", "010601", driver="ahci", iommu_group=15),
            FunctionSpec("0000:05:00.0", "10ec", "8125", "020000", driver="r8169", iommu_group=15),
        ]
    )
    group = scan(make_tree(spec)).group(15)
    assert group.viable
    assert any("All 3 endpoints of this group must be passed together" in reason for reason in group.reasons)


def test_a_host_bridge_held_by_a_driver_blocks_the_group(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:00.0", "8086", "3ec2", "060000", driver="skl_uncore", iommu_group=0),
            _gpu("00:02.0", 0, parent=None, vendor="8086", device="3e92", driver="i915"),
        ]
    )
    group = scan(make_tree(spec)).group(0)
    assert not group.viable
    assert any("skl_uncore" in reason for reason in group.reasons)


def test_a_driverless_host_bridge_stays_with_the_host(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "1022", "1482", "060000", iommu_group=0),
            FunctionSpec("0000:01:00.0", "1987", "5012", "010802", driver="nvme", iommu_group=0),
        ]
    )
    group = scan(make_tree(spec)).group(0)
    assert group.viable and group.bridges == ["0000:00:01.0"]


def test_host_critical_members_make_a_group_not_viable_and_say_why(make_tree):
    spec = HostSpec(
        functions=[
            ROOT_PORT,
            FunctionSpec("0000:01:00.0", "144d", "a808", "010802", driver="nvme", iommu_group=2, parent="0000:00:01.0"),
        ],
        block_devices={"nvme0n1": "0000:01:00.0"},
        root_source="/dev/nvme0n1p2",
    )
    group = scan(make_tree(spec)).group(2)
    assert not group.viable
    assert group.host_critical == ["0000:01:00.0"]
    assert any("root filesystem" in reason for reason in group.reasons)


def test_acs_override_grouping_is_flagged(make_tree):
    spec = HostSpec(
        functions=[ROOT_PORT, _gpu("01:00.0", 3), _audio("01:00.1", 4)],
        cmdline="root=/dev/sda1 pcie_acs_override=downstream,multifunction",
    )
    inventory = scan(make_tree(spec))
    assert inventory.group(3).viable
    assert any("pcie_acs_override" in reason for reason in inventory.group(3).reasons)


def test_no_iommu_means_no_groups(make_tree):
    spec = HostSpec(
        functions=[FunctionSpec("0000:00:02.0", "1af4", "1042", "018000", driver="virtio-pci")],
        iommu=None,
        cpu_flags=("fpu", "vmx", "hypervisor"),
    )
    inventory = scan(make_tree(spec))
    assert inventory.groups == [] and inventory.device("0000:00:02.0").iommu_group is None


def test_a_group_that_cannot_go_lists_its_members_without_inviting_to_pass_them(make_tree):
    spec = HostSpec(functions=[FunctionSpec("0000:00:1f.0", "8086", "a2c9", "060100", iommu_group=10)])
    reasons = scan(make_tree(spec)).group(10).reasons
    assert reasons[-1] == "In this group: 00:1f.0 (Z370 Chipset LPC/eSPI Controller)."
    assert not any(reason.startswith("One device to pass") for reason in reasons)
