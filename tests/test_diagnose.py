"""Diagnose: every finding id on the real log a user posted, no finding on a working host's log,
and fixes that name this host's boot loader, vendor and functions.

The logs are in tests/data/kernel_logs/ (SOURCES.txt gives each one's page). The host trees
are built as the other tests build them (passthrough.hosttrees); the group of the Intel tree
is the IOMMU group 1 the 64kramsystem issue lists next to its "group 1 is not viable" error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from passthrough.diagnose.finding import LogLine
from passthrough.diagnose.logs import UnreadableLog
from passthrough.diagnose.run import diagnose, find
from passthrough.host import HostTree
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from tests.readiness_data import DATA as READINESS_DATA
from tests.readiness_data import DEBIAN_GRUB, DEBIAN_OS_RELEASE

MakeTree = Callable[[HostSpec], Path]
LOGS = Path(__file__).parent / "data" / "kernel_logs"
QEMU_LOG = "var/log/libvirt/qemu/win10.log"


def log(name: str) -> str:
    return (LOGS / name).read_text()


def lines_of(name: str) -> list[LogLine]:
    return [LogLine(name, line) for line in log(name).splitlines()]


def intel_debian_grub(**changes: object) -> HostSpec:
    """Debian 12 with GRUB on an Intel host: 64kramsystem's group 1 (a GTX 760 on vfio-pci, its HDMI
    audio still on snd_hda_intel) and an integrated GPU drawing the console with simpledrm."""
    spec = HostSpec(
        functions=[
            FunctionSpec("00:00.0", "8086", "0c00", "060000", iommu_group=0),
            FunctionSpec("00:01.0", "8086", "0c01", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec("00:02.0", "8086", "0412", "030000", driver="i915", iommu_group=2, boot_vga=True),
            FunctionSpec("01:00.0", "10de", "1187", "030000", driver="vfio-pci", iommu_group=1, parent="00:01.0"),
            FunctionSpec("01:00.1", "10de", "0e0a", "040300", driver="snd_hda_intel", iommu_group=1, parent="00:01.0"),
        ],
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda2 ro quiet intel_iommu=on",
        osrelease="6.1.0-18-amd64",
        console="simpledrm",
        files={"etc/default/grub": DEBIAN_GRUB, "etc/os-release": DEBIAN_OS_RELEASE},
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def amd_proxmox(**changes: object) -> HostSpec:
    """Proxmox VE on ZFS (systemd-boot under proxmox-boot-tool) on an AMD host with a Radeon RX Vega 56
    (1002:687f, a Vega 10 with the AMD reset bug) on vfio-pci; efifb holds the console."""
    spec = HostSpec(
        functions=[
            FunctionSpec("00:00.0", "1022", "1480", "060000", iommu_group=0),
            FunctionSpec("00:03.1", "1022", "1483", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec("00:08.0", "1002", "699f", "030000", driver="amdgpu", iommu_group=4, boot_vga=True),
            FunctionSpec("01:00.0", "1002", "687f", "030000", driver="vfio-pci", iommu_group=2, parent="00:03.1"),
            FunctionSpec("01:00.1", "1002", "aaf8", "040300", driver="vfio-pci", iommu_group=3, parent="00:03.1"),
        ],
        cpu_vendor="AuthenticAMD",
        cpu_flags=("fpu", "vme", "svm", "x2apic"),
        iommu="amd",
        modules=("kvm_amd", "kvm"),
        cmdline="initrd=\\EFI\\proxmox\\5.15.108-1-pve\\initrd.img-5.15.108-1-pve root=ZFS=rpool/ROOT/pve-1 boot=zfs",
        osrelease="5.15.108-1-pve",
        console="efifb",
        files={
            "etc/kernel/proxmox-boot-uuids": "2A1B-3C4D\n",
            "etc/kernel/cmdline": "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n",
            "etc/os-release": DEBIAN_OS_RELEASE,
        },
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def findings_on(make_tree: MakeTree, spec: HostSpec, logname: str, where: str = QEMU_LOG) -> list:
    spec.files = {**spec.files, where: log(logname)} if where != "dmesg.txt" else spec.files
    if where == "dmesg.txt":
        spec.dmesg = log(logname)
    return diagnose(HostTree(str(make_tree(spec)))).findings


# -- every id on a real log ----------------------------------------------------------------

REAL_LOGS = [
    ("bar-reserve-vega8-cosminmocan.log", "bar_reserve_conflict", "0000:05:00.0"),
    ("rmrr-hp-harvester-7340.log", "rmrr_ineligible", "0000:04:00.1"),
    ("no-iommu-group-macos-simple-kvm-143.log", "no_iommu_group", "0000:00:14.0"),
    ("group-not-viable-64kramsystem-15.log", "group_not_viable", "0000:01:00.0"),
    ("group-not-viable-kubevirt-6718.log", "group_not_viable", "0000:01:00.0"),
    ("reset-d3cold-kata-11708.log", "reset_d3cold", "0000:01:00.0"),
    ("reset-d3cold-nvidia-bryansteiner-39.log", "reset_d3cold", "0000:01:00.0"),
    ("interrupt-remapping-l0rek-proxmox.log", "interrupt_remapping_off", None),
    ("iommu-off-firmware-nvidia-kubevirt-45.log", "iommu_disabled_firmware", None),
    ("iommu-broken-dmar-heads-286.log", "iommu_disabled_firmware", None),
    ("dmar-fault-intel-i915ovmf-23.log", "dmar_fault", "0000:00:02.0"),
    ("dmar-fault-amd-dasharo-1134.log", "dmar_fault", "0000:01:00.0"),
    ("dmar-fault-amd-pcengines-240.log", "dmar_fault", "0000:05:00.0"),
    ("vfio-probe-failed-kubevirt-66.log", "vfio_probe_failed", "0000:01:00.0"),
    ("vfio-probe-failed-rpi5-geerlingguy-754.log", "vfio_probe_failed", "0001:01:00.0"),
    ("acs-override-truenas-170.log", "acs_override", None),
    ("device-in-use-harvester-8294.log", "device_in_use", "0000:01:00.0"),
]


@pytest.mark.parametrize(("name", "finding_id", "device"), REAL_LOGS, ids=[row[0] for row in REAL_LOGS])
def test_each_real_log_gives_its_one_finding_on_the_device_it_names(name: str, finding_id: str, device: str) -> None:
    [finding] = find(lines_of(name))
    assert (finding.id, finding.device) == (finding_id, device)
    assert finding.evidence and all(line in log(name).splitlines() for line in finding.evidence)


def test_every_finding_id_is_covered_by_a_real_log() -> None:
    from passthrough.diagnose.matchers import MATCHERS

    assert {matcher.id for matcher in MATCHERS} == {finding_id for _, finding_id, _ in REAL_LOGS}


@pytest.mark.parametrize(
    "path",
    [
        LOGS / "clean-realkernel-debian-6.1-intel.log",
        READINESS_DATA / "dmesg-asokolsky-fuji-dmar.txt",
        READINESS_DATA / "dmesg-onizuka-vfio.txt",
        READINESS_DATA / "dmesg-asokolsky-fuji-remapping.txt",
    ],
    ids=lambda path: path.name,
)
def test_a_working_hosts_log_gives_no_finding(path: Path) -> None:
    lines = [LogLine("dmesg", line) for line in path.read_text().splitlines()]
    assert len(lines) > 1
    assert find(lines) == []


def test_the_clean_guest_log_really_did_passthrough_work() -> None:
    """Guards the clean-log test: the guest bound, reset and grouped devices, and its IOMMU was on."""
    text = log("clean-realkernel-debian-6.1-intel.log")
    assert "DMAR: IOMMU enabled" in text and "Adding to iommu group" in text and "VFIO - User Level" in text


# -- grouping and addresses ----------------------------------------------------------------


def test_a_fault_repeated_many_times_is_one_finding_with_its_count() -> None:
    [finding] = find(lines_of("dmar-fault-intel-i915ovmf-23.log"))
    assert finding.occurrences == 6 and len(finding.evidence) == 6
    assert all("Request device [00:02.0]" in line for line in finding.evidence)


def test_findings_are_one_per_id_and_device() -> None:
    lines = lines_of("dmar-fault-amd-dasharo-1134.log") + lines_of("dmar-fault-amd-pcengines-240.log")
    lines += lines_of("reset-d3cold-kata-11708.log")
    found = sorted((finding.id, finding.device, finding.occurrences) for finding in find(lines))
    assert found == [
        ("dmar_fault", "0000:01:00.0", 3),
        ("dmar_fault", "0000:05:00.0", 5),
        ("reset_d3cold", "0000:01:00.0", 3),
    ]


def test_short_and_full_addresses_come_out_in_the_full_form() -> None:
    short = find(lines_of("dmar-fault-intel-i915ovmf-23.log"))[0]  # "Request device [00:02.0]"
    split_amd = find(lines_of("dmar-fault-amd-pcengines-240.log"))[0]  # "IO_PAGE_FAULT device=05:00.0"
    full = find(lines_of("dmar-fault-amd-dasharo-1134.log"))[0]  # "ath10k_pci 0000:01:00.0: AMD-Vi: ..."
    other_domain = find(lines_of("vfio-probe-failed-rpi5-geerlingguy-754.log"))[0]  # "vfio-pci 0001:01:00.0"
    assert [short.device, split_amd.device, full.device, other_domain.device] == [
        "0000:00:02.0",
        "0000:05:00.0",
        "0000:01:00.0",
        "0001:01:00.0",
    ]


def test_a_journal_timestamp_is_not_taken_for_a_device() -> None:
    # "Jan 09 10:03:12.035211 hp-129-tink-system kernel: vfio-pci 0000:04:00.1: ..."
    [finding] = find(lines_of("rmrr-hp-harvester-7340.log"))
    assert finding.device == "0000:04:00.1"


def test_vt_d_enabled_by_the_command_line_is_not_a_firmware_problem_when_units_appear() -> None:
    # kata-containers#10622's `dmesg | grep -i iommu` head: enabled, then a DRHD and groups.
    lines = [
        "[    0.067112] DMAR: IOMMU enabled",
        "[    0.178341] DMAR-IR: IOAPIC id 2 under DRHD base  0xfed91000 IOMMU 0",
        "[    0.551524] pci 0000:00:00.0: Adding to iommu group 0",
    ]
    assert find([LogLine("dmesg", line) for line in lines]) == []
    assert [finding.id for finding in find(lines_of("iommu-off-firmware-nvidia-kubevirt-45.log"))] == [
        "iommu_disabled_firmware"
    ]


# -- the logs a diagnosis reads --------------------------------------------------------------


def test_the_kernel_log_and_libvirts_vm_logs_of_the_tree_are_both_read(make_tree: MakeTree) -> None:
    spec = intel_debian_grub(dmesg=log("acs-override-truenas-170.log"))
    spec.files = {**spec.files, QEMU_LOG: log("group-not-viable-64kramsystem-15.log")}
    diagnosis = diagnose(HostTree(str(make_tree(spec))))
    assert diagnosis.sources == ["dmesg", "/var/log/libvirt/qemu/win10.log"]
    by_id = {finding.id: finding for finding in diagnosis.findings}
    assert by_id["acs_override"].sources == ["dmesg"]
    assert by_id["group_not_viable"].sources == ["/var/log/libvirt/qemu/win10.log"]
    assert [finding.severity for finding in diagnosis.findings] == ["error", "warning"]


def test_a_log_given_by_path_is_read_and_a_missing_one_is_bad_input(make_tree: MakeTree, tmp_path: Path) -> None:
    tree = HostTree(str(make_tree(intel_debian_grub())))
    given = LOGS / "device-in-use-harvester-8294.log"
    assert [finding.id for finding in diagnose(tree, [str(given)]).findings] == ["device_in_use"]
    with pytest.raises(UnreadableLog, match="is not a file"):
        diagnose(tree, [str(tmp_path / "missing.log")])


def test_a_tree_without_a_kernel_log_says_so_and_finds_nothing(make_tree: MakeTree) -> None:
    diagnosis = diagnose(HostTree(str(make_tree(intel_debian_grub()))))
    assert diagnosis.findings == [] and diagnosis.sources == []
    assert "unreadable" in diagnosis.unreadable[0]


# -- fixes for this host ---------------------------------------------------------------------


def test_group_not_viable_names_the_functions_of_the_group_still_on_host_drivers(make_tree: MakeTree) -> None:
    [finding] = findings_on(make_tree, intel_debian_grub(), "group-not-viable-64kramsystem-15.log")
    assert "0000:01:00.1 GK104 HDMI Audio Controller (snd_hda_intel)" in finding.fix
    assert "0000:00:01.0" not in finding.fix  # the root port may stay on pcieport
    assert "0000:01:00.0" not in finding.fix.split("\n", 1)[1]  # already on vfio-pci


def test_group_not_viable_once_the_group_is_bound_says_so(make_tree: MakeTree) -> None:
    spec = intel_debian_grub()
    spec.function("01:00.1").driver = "vfio-pci"
    [finding] = findings_on(make_tree, spec, "group-not-viable-kubevirt-6718.log")
    assert finding.fix.startswith("Every endpoint of IOMMU group 1 is on vfio-pci now")


def test_bar_conflict_fix_follows_the_framebuffer_and_the_boot_loader_of_each_host(make_tree: MakeTree) -> None:
    [debian] = findings_on(make_tree, intel_debian_grub(), "bar-reserve-vega8-cosminmocan.log", "dmesg.txt")
    [proxmox] = findings_on(make_tree, amd_proxmox(), "bar-reserve-vega8-cosminmocan.log", "dmesg.txt")
    assert "This host runs simpledrm." in debian.cause and "efifb" in proxmox.cause
    assert "initcall_blacklist=sysfb_init" in debian.fix and "video=efifb:off" not in debian.fix
    assert "/etc/default/grub" in debian.fix and "`update-grub`" in debian.fix
    assert "video=efifb:off" in proxmox.fix and "initcall_blacklist" not in proxmox.fix
    assert "/etc/kernel/cmdline" in proxmox.fix and "`proxmox-boot-tool refresh`" in proxmox.fix


def test_reset_failure_of_an_amd_vega_points_to_vendor_reset_and_of_an_nvidia_card_does_not(
    make_tree: MakeTree,
) -> None:
    [vega] = findings_on(make_tree, amd_proxmox(), "reset-d3cold-kata-11708.log", "dmesg.txt")
    assert "AMD Vega 10 GPU" in vega.fix and "vendor-reset" in vega.fix
    assert "vendor_reset is not loaded on this host" in vega.fix
    loaded = amd_proxmox(modules=("kvm_amd", "kvm", "vendor_reset"))
    [with_module] = findings_on(make_tree, loaded, "reset-d3cold-kata-11708.log", "dmesg.txt")
    assert "vendor_reset is loaded on this host" in with_module.fix
    [nvidia] = findings_on(make_tree, intel_debian_grub(), "reset-d3cold-nvidia-bryansteiner-39.log", "dmesg.txt")
    assert "vendor-reset" not in nvidia.fix and "disable_idle_d3=1" in nvidia.fix


def test_interrupt_remapping_fix_names_the_vendors_switch_and_where_the_parameter_goes(make_tree: MakeTree) -> None:
    [intel] = findings_on(make_tree, intel_debian_grub(), "interrupt-remapping-l0rek-proxmox.log", "dmesg.txt")
    [amd] = findings_on(make_tree, amd_proxmox(), "interrupt-remapping-l0rek-proxmox.log", "dmesg.txt")
    assert intel.fix.startswith("Enable VT-d and x2APIC") and "/etc/default/grub" in intel.fix
    assert amd.fix.startswith("Enable the IOMMU and x2APIC") and "proxmox-boot-tool refresh" in amd.fix
    assert all("vfio_iommu_type1.allow_unsafe_interrupts=1" in item.fix for item in (intel, amd))


def test_firmware_iommu_fix_names_the_vendors_switch(make_tree: MakeTree) -> None:
    name = "iommu-off-firmware-nvidia-kubevirt-45.log"
    [intel] = findings_on(make_tree, intel_debian_grub(), name, "dmesg.txt")
    [amd] = findings_on(make_tree, amd_proxmox(), name, "dmesg.txt")
    assert "VT-d" in intel.fix and "AMD-Vi" in amd.fix


def test_no_iommu_group_on_intel_without_intel_iommu_on_gives_the_boot_loader_edit(make_tree: MakeTree) -> None:
    spec = intel_debian_grub(cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda2 ro quiet")
    [finding] = findings_on(make_tree, spec, "no-iommu-group-macos-simple-kvm-143.log")
    assert "add intel_iommu=on to the kernel command line" in finding.fix.lower()
    assert "/etc/default/grub" in finding.fix


def test_probe_failure_with_einval_is_explained_as_a_missing_group(make_tree: MakeTree) -> None:
    [finding] = findings_on(make_tree, amd_proxmox(), "vfio-probe-failed-kubevirt-66.log", "dmesg.txt")
    assert "EINVAL" in finding.cause and "no IOMMU group" in finding.cause
    assert finding.fix == "0000:01:00.0 is in IOMMU group 2 now; bind it again."


def test_acs_override_fix_removes_the_parameter_where_this_host_boots(make_tree: MakeTree) -> None:
    spec = amd_proxmox()
    spec.files = {
        **spec.files,
        "etc/kernel/cmdline": "root=ZFS=rpool/ROOT/pve-1 boot=zfs pcie_acs_override=downstream\n",
    }
    [finding] = findings_on(make_tree, spec, "acs-override-truenas-170.log", "dmesg.txt")
    assert "peer-to-peer DMA" in finding.cause
    assert (
        "Remove pcie_acs_override from the kernel command line" in finding.fix and "/etc/kernel/cmdline" in finding.fix
    )


def test_device_in_use_names_the_group_file_to_look_up(make_tree: MakeTree) -> None:
    [finding] = findings_on(make_tree, intel_debian_grub(), "device-in-use-harvester-8294.log")
    assert "`fuser -v /dev/vfio/1`" in finding.fix


def test_dmar_fault_of_a_host_driver_suggests_passthrough_mode(make_tree: MakeTree) -> None:
    [finding] = findings_on(make_tree, intel_debian_grub(), "dmar-fault-intel-i915ovmf-23.log", "dmesg.txt")
    assert finding.device == "0000:00:02.0" and "(i915)" in finding.cause
    assert "iommu=pt" in finding.fix and "intel_iommu=igfx_off" in finding.fix
