"""What a host tree holds besides its PCI functions: proc files, disks, network, consoles.

:func:`~passthrough.hosttrees.tree.write_tree` calls these after laying out the functions:
``proc/`` (cpuinfo, cmdline, modules, interrupts, mounts), block devices and network
interfaces under the functions that drive them (with the root filesystem's mount and the
default route), and the graphics console with its framebuffer and vtconsoles, so the
host-critical checks find what they find on a real host.
"""

from __future__ import annotations

import os

from passthrough.hosttrees.files import relative_link, write_file
from passthrough.hosttrees.spec import GRAPHICS_CONSOLES, HostSpec
from passthrough.pci.address import PciAddress


def _cpuinfo(spec: HostSpec) -> str:
    if spec.cpuinfo is not None:
        return spec.cpuinfo
    flags = " ".join(spec.cpu_flags)
    blocks = [
        f"processor\t: {index}\nvendor_id\t: {spec.cpu_vendor}\nmodel name\t: Synthetic CPU\nflags\t\t: {flags}\n"
        for index in range(spec.cpu_count)
    ]
    return "\n".join(blocks)


def write_proc(spec: HostSpec, root: str) -> None:
    proc = f"{root}/proc"
    write_file(f"{proc}/cpuinfo", _cpuinfo(spec))
    write_file(f"{proc}/cmdline", spec.cmdline + "\n")
    write_file(f"{proc}/sys/kernel/osrelease", spec.osrelease + "\n")
    write_file(f"{proc}/modules", "".join(f"{name} 16384 0 - Live 0x0000000000000000\n" for name in spec.modules))
    chip = "IR-PCI-MSI" if spec.interrupt_remapping else "PCI-MSI"
    ioapic = "IR-IO-APIC" if spec.interrupt_remapping else "IO-APIC"
    write_file(
        f"{proc}/interrupts",
        "           CPU0       CPU1\n"
        f"   0:         42          0   {ioapic}    2-edge      timer\n"
        f" 120:       1234          0  {chip} 524288-edge      nvme0q0\n",
    )


def write_block_and_net(spec: HostSpec, root: str, dirs: dict[str, str]) -> None:
    sys_dir = f"{root}/sys"
    majors = {"nvme": 259, "sd": 8, "vd": 254}
    for disk_index, (disk, controller) in enumerate(spec.block_devices.items()):
        address = str(PciAddress.parse(controller))
        major = next((number for prefix, number in majors.items() if disk.startswith(prefix)), 8)
        disk_dir = f"{dirs[address]}/host{disk_index}/block/{disk}"
        write_file(f"{disk_dir}/dev", f"{major}:{disk_index * 16}\n")
        relative_link(f"{sys_dir}/class/block/{disk}", disk_dir)
        relative_link(f"{sys_dir}/block/{disk}", disk_dir)
        relative_link(f"{sys_dir}/dev/block/{major}:{disk_index * 16}", disk_dir)
        separator = "p" if disk[-1].isdigit() else ""
        for number in (1, 2):
            part = f"{disk}{separator}{number}"
            part_dir = f"{disk_dir}/{part}"
            write_file(f"{part_dir}/partition", f"{number}\n")
            write_file(f"{part_dir}/dev", f"{major}:{disk_index * 16 + number}\n")
            relative_link(f"{sys_dir}/class/block/{part}", part_dir)
            relative_link(f"{sys_dir}/dev/block/{major}:{disk_index * 16 + number}", part_dir)
    if spec.root_source:
        name = spec.root_source.removeprefix("/dev/")
        dev = "0:0"
        if os.path.exists(f"{sys_dir}/class/block/{name}/dev"):
            with open(f"{sys_dir}/class/block/{name}/dev") as handle:
                dev = handle.read().strip()
        write_file(
            f"{root}/proc/self/mountinfo",
            f"22 1 {dev} / / rw,relatime shared:1 - {spec.root_fstype} {spec.root_source} rw\n"
            "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n",
        )
        write_file(
            f"{root}/proc/mounts", f"{spec.root_source} / {spec.root_fstype} rw,relatime 0 0\nproc /proc proc rw 0 0\n"
        )

    for interface, controller in spec.net_devices.items():
        address = str(PciAddress.parse(controller))
        net_dir = f"{dirs[address]}/net/{interface}"
        write_file(f"{net_dir}/operstate", "up\n")
        relative_link(f"{net_dir}/device", dirs[address])
        relative_link(f"{sys_dir}/class/net/{interface}", net_dir)
    for bridge, ports in spec.net_bridges.items():
        bridge_dir = f"{sys_dir}/devices/virtual/net/{bridge}"
        write_file(f"{bridge_dir}/operstate", "up\n")
        relative_link(f"{sys_dir}/class/net/{bridge}", bridge_dir)
        for port in ports:
            relative_link(f"{bridge_dir}/lower_{port}", os.path.realpath(f"{sys_dir}/class/net/{port}"))
            relative_link(f"{bridge_dir}/brif/{port}", os.path.realpath(f"{sys_dir}/class/net/{port}") + "/brport")
    if spec.default_route:
        write_file(
            f"{root}/proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            f"{spec.default_route}\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
            f"{spec.default_route}\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        )


def write_console(spec: HostSpec, root: str, dirs: dict[str, str]) -> None:
    sys_dir = f"{root}/sys"
    if spec.console is None:
        return
    if spec.console not in GRAPHICS_CONSOLES:
        raise ValueError(f"console must be one of {GRAPHICS_CONSOLES}")
    boot = next((function for function in spec.functions if function.boot_vga), None)
    vtcons = {"vtcon0": ("(S) dummy device", "0"), "vtcon1": ("(M) frame buffer device", "1")}
    if spec.console == "vgacon":
        vtcons = {"vtcon0": ("(S) VGA+", "1")}
    elif spec.console in ("efifb", "vesafb", "simpledrm"):
        platform = {"efifb": "efi-framebuffer.0", "vesafb": "vesa-framebuffer.0", "simpledrm": "simple-framebuffer.0"}[
            spec.console
        ]
        name = {"efifb": "EFI VGA", "vesafb": "VESA VGA", "simpledrm": "simpledrmdrmfb"}[spec.console]
        device = f"{sys_dir}/devices/platform/{platform}"
        write_file(f"{device}/graphics/fb0/name", name + "\n")
        relative_link(f"{device}/graphics/fb0/device", device)
        relative_link(f"{sys_dir}/class/graphics/fb0", f"{device}/graphics/fb0")
        if spec.console == "simpledrm":
            os.makedirs(f"{device}/drm/card0", exist_ok=True)
            relative_link(f"{device}/drm/card0/device", device)
            relative_link(f"{sys_dir}/class/drm/card0", f"{device}/drm/card0")
    elif spec.console == "native" and boot is not None:
        device = dirs[boot.address]
        write_file(f"{device}/graphics/fb0/name", f"{boot.driver or 'drm'}drmfb\n")
        relative_link(f"{device}/graphics/fb0/device", device)
        relative_link(f"{sys_dir}/class/graphics/fb0", f"{device}/graphics/fb0")
        os.makedirs(f"{device}/drm/card0", exist_ok=True)
        relative_link(f"{device}/drm/card0/device", device)
        relative_link(f"{sys_dir}/class/drm/card0", f"{device}/drm/card0")
    for vtcon, (name, bind) in vtcons.items():
        vt_dir = f"{sys_dir}/devices/virtual/vtconsole/{vtcon}"
        write_file(f"{vt_dir}/name", name + "\n")
        write_file(f"{vt_dir}/bind", bind + "\n")
        relative_link(f"{sys_dir}/class/vtconsole/{vtcon}", vt_dir)
