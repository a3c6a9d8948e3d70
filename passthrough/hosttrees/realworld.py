"""Real machines as HostSpecs, built from the listings their owners published.

Each function reads verbatim copies under ``passthrough/data/realworld/<source>/`` (the
folder's PROVENANCE.txt says where they come from) and returns that machine's
:class:`~passthrough.hosttrees.spec.HostSpec`. Tests hold the inventory and group verdicts
to what the sources show; the demo mode offers the machines as sample hosts.

A listing shows functions and groups, not the running host. What a verdict also needs
(which GPU the firmware booted and whether a console sits on it, where the root
filesystem is, which NIC carries the default route) is a :class:`HostContext`. A
machine's default context holds only what its source states or what follows from it
(the only VGA function of a server is its boot VGA; the only NIC left on a host driver
carries the route); every other value is named as an assumption where it is set. Facts
no source gives (EFI boot, interrupt remapping) keep HostSpec's defaults; an unknown
kernel command line or release is written empty.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from passthrough.hosttrees import listings
from passthrough.hosttrees.listed import ListedFunction
from passthrough.hosttrees.listing_hosts import build_host_spec
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.ttar import TtarRecord, read_ttar, ttar_bytes, unpack_ttar  # noqa: F401 (re-exported)
from passthrough.pci.address import PciAddress

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "realworld")  # passthrough/data/realworld
CPU = {
    "intel": ("GenuineIntel", ("fpu", "vme", "msr", "pae", "vmx", "x2apic"), ("kvm_intel", "kvm")),
    "amd": ("AuthenticAMD", ("fpu", "vme", "msr", "pae", "svm", "x2apic"), ("kvm_amd", "kvm")),
}


@dataclass(frozen=True)
class HostContext:
    """What a listing does not show about the running host."""

    boot_vga: str | None = None  # the function the firmware initialised
    console: str | None = None  # a hosttrees.spec.GRAPHICS_CONSOLES kind, on the boot VGA
    root_controller: str | None = None  # the storage controller holding the root filesystem
    default_route_nic: str | None = None
    linux_bridge: str | None = None  # "vmbr0": the route leaves through a bridge over that NIC


UNKNOWN = HostContext()  # the source does not say which GPU the host boots with, nor more


def source_text(source: str, name: str) -> str:
    with open(os.path.join(DATA, source, name), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _line(text: str, pattern: str) -> str:
    """The first match of ``pattern`` (group 1) in ``text``; the sources are fixed, so absence is a bug."""
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise ValueError(f"pattern {pattern!r} not found in the source text")
    return match.group(1).strip()


def _release(cmdline: str) -> str:
    match = re.search(r"vmlinuz-(\S+)", cmdline)
    return match.group(1) if match else ""


def _machine(
    listed: list[ListedFunction],
    lspci: list[ListedFunction] | None,
    *,
    cpu: str,
    context: HostContext,
    cmdline: str = "",
    osrelease: str = "",
    bus_parents: dict[int, str | None] | None = None,
    files: dict[str, str] | None = None,
) -> HostSpec:
    spec = build_host_spec(listed, lspci, bus_parents=bus_parents, iommu=cpu, boot_vga=context.boot_vga)
    spec.cpu_vendor, spec.cpu_flags, spec.modules = CPU[cpu]
    spec.cmdline, spec.osrelease, spec.files = cmdline, osrelease or _release(cmdline), files or {}
    apply_context(spec, context)
    return spec


def apply_context(spec: HostSpec, context: HostContext) -> None:
    """Write the console, root disk and default route of ``context`` into ``spec``."""
    spec.console = context.console
    if context.root_controller:
        controller = spec.function(context.root_controller)
        disk = "nvme0n1" if controller.class_code.startswith("0108") else "sda"
        spec.block_devices = {disk: controller.address}
        spec.root_source = f"/dev/{disk}{'p' if disk[-1].isdigit() else ''}2"
    if context.default_route_nic:
        address = PciAddress.parse(context.default_route_nic)
        interface = f"enp{address.bus}s{address.slot}" + (f"f{address.function}" if address.function else "")
        spec.net_devices = {interface: str(address)}
        if context.linux_bridge:
            spec.net_bridges = {context.linux_bridge: [interface]}
        spec.default_route = context.linux_bridge or interface


# asokolsky/asokolsky.github.io: four homelab machines -------------------------------------
# Laptops and desktops alike: which GPU the firmware picks is a setup choice; an iGPU is
# the usual one, so that is the assumed default where there is one.
DUO = HostContext(boot_vga="0000:00:02.0", root_controller="0000:05:00.0")  # assumed: iGPU; the only NVMe
# fuji's lspci: SATA 00:17.0, I210 04:00.0 and the I350 are on vfio-pci, leaving the NVMe
# as the only storage and I210 03:00.0 as the only NIC on a host driver. vmbr0 is the
# bridge Proxmox's installer creates (assumed). Matrox 02:00.0 is its only VGA function.
FUJI = HostContext(
    boot_vga="0000:02:00.0", root_controller="0000:01:00.0", default_route_nic="0000:03:00.0", linux_bridge="vmbr0"
)
NAS = HostContext(boot_vga="0000:04:00.0")  # the only VGA function (ASPEED BMC)
# suprox: SATA and the I350 are on vfio-pci; of the two I210 on igb the first is assumed.
SUPROX = HostContext(
    boot_vga="0000:06:00.0", root_controller="0000:07:00.0", default_route_nic="0000:02:00.0", linux_bridge="vmbr0"
)


def _asokolsky(machine: str, groups_block: int, context: HostContext) -> HostSpec:
    groups = source_text("asokolsky-homelab", f"extracted/{machine}__iommu.block{groups_block}.txt")
    lspci = source_text("asokolsky-homelab", f"extracted/{machine}__lspci.block1.txt")
    cmdline = _line(groups, r"^(BOOT_IMAGE=.*)$")
    return _machine(
        listings.parse_groups(groups), listings.parse_lspci(lspci), cpu="intel", context=context, cmdline=cmdline
    )


def asokolsky_duo(context: HostContext = DUO) -> HostSpec:
    """ASRock Z370 desktop: GT 1030 01:00.0/.1 in group 2 with root port 00:01.0.

    The lspci was taken after a GPU swap (its 01:00.0 is an RTX 3050), so the GT 1030's
    drivers stay unknown rather than borrowed from another card.
    """
    return _asokolsky("duo", 1, context)


def asokolsky_fuji(context: HostContext = FUJI) -> HostSpec:
    """Fujitsu C236 server on Proxmox 6.5 (root on /dev/mapper/pve-root; the tree has no
    device-mapper layer, so the root partition sits on the NVMe directly)."""
    return _asokolsky("fuji", 2, context)


def asokolsky_nas(context: HostContext = NAS) -> HostSpec:
    """Supermicro Atom C3000 on TrueNAS: QAT, four X553 ports, AST1150 bridge and VGA in one group."""
    return _asokolsky("nas", 1, context)


def asokolsky_suprox(context: HostContext = SUPROX) -> HostSpec:
    """Supermicro C246 server on Proxmox: the I350's two functions in group 1 with root port 00:01.0."""
    return _asokolsky("suprox", 1, context)


# Desktops with a GPU for the guest -------------------------------------------------------------
ASHTONIAN = HostContext(boot_vga="0000:00:02.0")  # assumed: the iGPU (i915 drives it)


def ashtonian_city17(context: HostContext = ASHTONIAN) -> HostSpec:
    """Alder Lake: RX 6700 XT 03:00.0 and its audio split (groups 21/22) behind the Navi
    switch, RX 560 04:00.0/.1 together in group 23 on vfio-pci.

    Thunderbolt USB 41:00.0 hangs under 00:1d.0 by the left-over rule of
    :func:`~passthrough.hosttrees.listing_hosts.infer_topology`; the source does not say where.
    """
    text = source_text("ashtonian-kvm-aio", "output.sh.txt")
    return _machine(listings.parse_groups(text), listings.parse_lspci(text), cpu="intel", context=context)


# mapmanagement: "host GPU Radeon RX 550" (PROVENANCE). Pop!_OS boots through systemd-boot
# from /boot/efi, a UEFI boot, whose firmware framebuffer is efifb. The NVMe is assumed root.
MAPMANAGEMENT = HostContext(boot_vga="0000:04:00.0", console="efifb", root_controller="0000:01:00.0")
MAPMANAGEMENT_GROUPINGS = {
    "before_acs": "extracted/passthrough__pop_os__first_try.block2.txt",
    "acs": "extracted/passthrough__pop_os__first_try.block3.txt",
    "rx6950xt": "extracted/hardware__tested_hardware.block1.txt",
}


def mapmanagement_b550(grouping: str = "acs", context: HostContext = MAPMANAGEMENT) -> HostSpec:
    """Gigabyte B550 + Ryzen 3900X: the chipset group holds USB, SATA, the switch ports,
    the host's RX 550 and the RTL8125 NIC.

    ``before_acs`` lumps everything behind the CPU's first GPP bridges into group 0. That
    excerpt omits 00:07.1 and 00:08.1, which own buses 0c and 0d on this board (as the
    ``acs`` grouping shows), so those buses stay root buses instead of being hung under
    an empty chipset port.
    """
    if grouping not in MAPMANAGEMENT_GROUPINGS:
        raise ValueError(f"grouping must be one of {sorted(MAPMANAGEMENT_GROUPINGS)}, not {grouping!r}")
    text = source_text("mapmanagement-gpu-passthrough", MAPMANAGEMENT_GROUPINGS[grouping])
    cmdline = _line(
        source_text("mapmanagement-gpu-passthrough", "extracted/passthrough__pop_os__first_try.block6.txt"),
        r"^options (.*)$",
    )
    bus_parents: dict[int, str | None] = {0x0C: None, 0x0D: None} if grouping == "before_acs" else {}
    return _machine(
        listings.parse_groups(text), None, cpu="amd", context=context, cmdline=cmdline, bus_parents=bus_parents
    )


SCHPLORG = HostContext(boot_vga="0000:00:02.0")  # assumed: the laptop's iGPU drives its panel


def schplorg_t480(context: HostContext = SCHPLORG) -> HostSpec:
    """ThinkPad T480 with a Thunderbolt 3 eGPU: group 14 holds TB downstream port 05:01.0,
    the enclosure's bridges, GTX 1060 09:00.0/.1 and the enclosure's USB controller.

    ``lspci -vvv`` of the Thunderbolt bridges gives their secondary buses, which win over
    the inferred ones; /etc/default/grub and the modprobe and dracut files are the owner's.
    """
    source = "schplorg-vfio-t480"
    files = {
        "etc/default/grub": source_text(source, "original/grub"),
        "etc/modprobe.d/vfion.conf": source_text(source, "original/etc__modprobe.d__vfion.conf"),
        "etc/dracut.conf.d/vfio.conf": source_text(source, "original/etc__dracut.conf.d__vfio.conf"),
    }
    return _machine(
        listings.parse_groups(source_text(source, "extracted/README.block5.txt")),
        listings.parse_lspci(source_text(source, "extracted/README.block6.txt")),
        cpu="intel",
        context=context,
        osrelease=_line(source_text(source, "extracted/README.block3.txt"), r"^(\d\S+)$"),
        files=files,
    )


ETHANZHF = HostContext(boot_vga="0000:03:00.0")  # its only VGA function, the BMC's ASPEED


def ethanzhf_server(context: HostContext = ETHANZHF) -> HostSpec:
    """Multi-socket Sapphire Rapids-class server: 20 DMAR units, each accelerator alone in a group."""
    text = source_text("ethanzhf-iommu-tools", "tree.sh.output.txt")
    return _machine(listings.parse_dmar_tree(text), None, cpu="intel", context=context)


NAUNTER = HostContext(boot_vga="0000:05:00.0")  # the APU's iGPU is its only display function


def naunter_b550(context: HostContext = NAUNTER) -> HostSpec:
    """ASRock B550 ITX + Ryzen 5700G, grouped with the ACS override patch: the Cezanne
    iGPU and its audio land in groups 14 and 15. The source names the one parameter."""
    source = "naunter-device-passthrough-notes"
    readme = source_text(source, "original/ASRock-B550-Phantom-Gaming-ITX-ax__README.md")
    cmdline = _line(readme, r"`(pcie_acs_override=[^`]+)`")
    text = source_text(source, "extracted/ASRock-B550-Phantom-Gaming-ITX-ax__README.block1.txt")
    return _machine(listings.parse_groups(text), None, cpu="amd", context=context, cmdline=cmdline)


def joe_p_x570(context: HostContext = UNKNOWN) -> HostSpec:
    """Gigabyte X570 + Ryzen 3900X, stock grouping: GTX 1080 Ti 0b:00.0/.1 in group 30,
    GT 710 in 31, the chipset's switch ports grouped with their USB and SATA."""
    text = source_text("joe-p-vfio-headless", "extracted/README.block2.txt")
    return _machine(listings.parse_groups(text), None, cpu="amd", context=context)


def sirspudd_threadripper(context: HostContext = UNKNOWN) -> HostSpec:
    """Threadripper 1950X on X399, two root complexes (00: and 40:): Radeon VII 0d:00.0/.1
    split into groups 20/21, RX 580 43:00.0/.1 together in group 42."""
    source = "sirspudd-threadripper-1950x"
    cmdline = source_text(source, "extracted/post.block1.txt").strip()
    text = source_text(source, "extracted/post.block4.txt")
    return _machine(listings.parse_groups(text), None, cpu="amd", context=context, cmdline=cmdline)


MISTIKAN = HostContext(boot_vga="0000:03:00.0")  # the RX 7600 is its only display function


def mistikan_anaconda(context: HostContext = MISTIKAN) -> HostSpec:
    """B560 + RX 7600 behind the Navi switch, GPU and audio split (groups 12/13); iommu.sh
    marks functions with a reset "[R]" but not which reset methods they have."""
    text = source_text("mistikan-hl-cluster", "extracted/docs__iommu.block1.txt")
    return _machine(listings.parse_iommu_sh(text), None, cpu="intel", context=context)


# The Arc's source shows its two functions only. DG2 cards carry a switch (upstream port
# 8086:4fa1, downstream ports 8086:4fa4) with the GPU and the audio on separate downstream
# ports; that switch, a root port above it (placeholder ids: the platform is not stated)
# and one group per function are this catalogue's assumption, so the card can be judged.
ARC_ASSUMED = [
    ListedFunction("0000:00:01.0", "0604", vendor_id="8086", device_id="460d", driver="pcieport", iommu_group=1),
    ListedFunction("0000:01:00.0", "0604", vendor_id="8086", device_id="4fa1", driver="pcieport", iommu_group=2),
    ListedFunction("0000:02:01.0", "0604", vendor_id="8086", device_id="4fa4", driver="pcieport", iommu_group=3),
    ListedFunction("0000:02:04.0", "0604", vendor_id="8086", device_id="4fa4", driver="pcieport", iommu_group=4),
]
ARC_GROUPS = {"0000:03:00.0": 5, "0000:04:00.0": 6}


def onizuka_arc310(context: HostContext = UNKNOWN, *, assume_switch: bool = True) -> HostSpec:
    """Intel Arc A310 on vfio-pci: GPU 03:00.0 and its audio 04:00.0, on different buses."""
    source = "developer-onizuka-arc310"
    cards = listings.parse_lspci(source_text(source, "extracted/README.block3.txt"))
    if assume_switch:
        for function in cards:
            function.iommu_group = ARC_GROUPS.get(function.address)
    listed = ([ListedFunction(**vars(bridge)) for bridge in ARC_ASSUMED] if assume_switch else []) + cards
    cmdline = _line(source_text(source, "extracted/README.block2.txt"), r"Kernel command line: (.*)$")
    return _machine(listed, None, cpu="intel", context=context, cmdline=cmdline)


# prometheus/procfs: an E810 with SR-IOV in a sysfs fixture ----------------------------------
E810 = "sys/devices/pci0000:a2/0000:a2:00.0"


def prometheus_e810(numvfs: int = 4, *, first_group: int = 40, iommu: str = "intel") -> HostSpec:
    """The fixture's E810 (0000:a2:00.0, ice) with ``numvfs`` virtual functions created.

    Ids, link, NUMA node, reset methods and the SR-IOV geometry (total VFs, VF device id,
    offset, stride) are the fixture's. It records no IOMMU group for the E810, so the
    group numbers (the PF ``first_group``, each VF the next) and the IOMMU kind are made up.
    """
    attributes = {
        record.path.rsplit("/", 1)[1]: record.content.decode().strip()
        for record in read_ttar(ttar_bytes())
        if record.kind == "file" and record.path.removeprefix("fixtures/").rsplit("/", 1)[0] == E810
    }
    total = int(attributes["sriov_totalvfs"])
    if not 0 <= numvfs <= total:
        raise ValueError(f"the E810 offers 0 to {total} VFs, not {numvfs}")
    pf = PciAddress.parse("0000:a2:00.0")
    offset, stride = int(attributes["sriov_offset"]), int(attributes["sriov_stride"])
    width = int(attributes["max_link_width"])
    functions = [
        FunctionSpec(
            str(pf), attributes["vendor"][2:], attributes["device"][2:], attributes["class"][2:],
            attributes["revision"][2:], attributes["subsystem_vendor"][2:], attributes["subsystem_device"][2:],
            driver="ice", iommu_group=first_group, reset_methods=attributes["reset_method"].split(),
            link=(attributes["current_link_speed"], int(attributes["current_link_width"]), attributes["max_link_speed"], width),
            numa_node=int(attributes["numa_node"]), sriov_totalvfs=total, sriov_numvfs=numvfs,
            extra={"sriov_vf_device": attributes["sriov_vf_device"], "sriov_offset": str(offset), "sriov_stride": str(stride)},
        )
    ]  # fmt: skip
    for index in range(numvfs):
        routing_id = (pf.bus << 8) + (pf.slot << 3) + pf.function + offset + index * stride
        address = f"{pf.domain:04x}:{routing_id >> 8:02x}:{(routing_id >> 3) & 0x1F:02x}.{routing_id & 7}"
        functions.append(
            FunctionSpec(
                address, attributes["vendor"][2:], attributes["sriov_vf_device"], attributes["class"][2:],
                attributes["revision"][2:], physfn=str(pf), iommu_group=first_group + 1 + index,
                numa_node=int(attributes["numa_node"]),
            )
        )  # fmt: skip
    vendor, flags, modules = CPU[iommu]
    return HostSpec(
        functions=functions, iommu=iommu, cpu_vendor=vendor, cpu_flags=flags, modules=modules, cmdline="", osrelease=""
    )


MACHINES: dict[str, Callable[[], HostSpec]] = {
    "asokolsky-duo": asokolsky_duo,
    "asokolsky-fuji": asokolsky_fuji,
    "asokolsky-nas": asokolsky_nas,
    "asokolsky-suprox": asokolsky_suprox,
    "ashtonian-city17": ashtonian_city17,
    "mapmanagement-b550": mapmanagement_b550,
    "mapmanagement-b550-before-acs": lambda: mapmanagement_b550("before_acs"),
    "mapmanagement-b550-rx6950xt": lambda: mapmanagement_b550("rx6950xt"),
    "schplorg-t480": schplorg_t480,
    "ethanzhf-server": ethanzhf_server,
    "naunter-b550": naunter_b550,
    "joe-p-x570": joe_p_x570,
    "sirspudd-threadripper": sirspudd_threadripper,
    "mistikan-anaconda": mistikan_anaconda,
    "onizuka-arc310": onizuka_arc310,
    "prometheus-e810": prometheus_e810,
}
