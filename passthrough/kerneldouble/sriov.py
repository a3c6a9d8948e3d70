"""SR-IOV in the double: ``sriov_numvfs`` creates and removes virtual functions.

As drivers/pci/iov.c does: a VF's routing id is the PF's plus ``sriov_offset`` plus
``stride`` times its index; each VF sits beside its PF in the device tree with a
``physfn`` link, the PF gains ``virtfnN``, the IOMMU puts each VF in its own group, and
the VF driver probes it unless ``sriov_drivers_autoprobe`` is 0. Changing a non-zero
count to another non-zero count is refused with EBUSY; going through 0 is the caller's job.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import os
import shutil

from passthrough.host import IOMMU_GROUPS, PCI_DEVICES
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_function
from passthrough.kerneldouble.modules import Modules
from passthrough.kerneldouble.pci import KernelRefused, PciCore, link, unlink, write_file
from passthrough.pci.address import PciAddress

# The VF driver of each PF driver, as the kernel's modules pair them.
VF_DRIVERS = {
    "igb": "igbvf",
    "ixgbe": "ixgbevf",
    "i40e": "iavf",
    "ice": "iavf",
    "mlx5_core": "mlx5_core",
    "mlx4_core": "mlx4_core",
    "bnxt_en": "bnxt_en",
    "qede": "qede",
    "qlcnic": "qlcnic",
    "cxgb4": "cxgb4vf",
    "enic": "enic",
    "nvme": "nvme",
}


def _int(text: str | None, default: int) -> int:
    try:
        return int(text or "", 0)
    except ValueError:
        return default


def _hex(text: str | None, width: int) -> str:
    """Kernel attributes print ids as ``0x10ca`` (vendor, device) or ``10ca`` (sriov_vf_device)."""
    return f"{_int('0x' + (text or '0').removeprefix('0x'), 0):0{width}x}"


def vf_address(pf: str, index: int, offset: int, stride: int) -> str:
    parsed = PciAddress.parse(pf)
    routing_id = (parsed.bus << 8) | (parsed.slot << 3) | parsed.function
    vf = routing_id + offset + index * stride
    if vf > 0xFFFF:
        raise KernelRefused(errnos.ENOMEM, f"VF {index} of {pf} would sit past bus ff")
    return str(PciAddress(parsed.domain, vf >> 8, (vf >> 3) & 0x1F, vf & 0x7))


class Sriov:
    def __init__(self, core: PciCore) -> None:
        self.core = core
        self.tree = core.tree

    def attribute(self, pf: str, name: str) -> str | None:
        return self.tree.read(f"{PCI_DEVICES}/{pf}/{name}")

    def virtfns(self, pf: str) -> list[str]:
        names = [entry for entry in self.tree.listdir(f"{PCI_DEVICES}/{pf}") if entry.startswith("virtfn")]
        names.sort(key=lambda entry: int(entry[6:] or 0))
        return [name for name in (self.tree.link_name(f"{PCI_DEVICES}/{pf}/{entry}") for entry in names) if name]

    def set_numvfs(self, pf: str, value: str) -> None:
        try:
            wanted = int(value.strip(), 0)
        except ValueError:
            raise KernelRefused(errnos.EINVAL, f"{value!r} is not a number") from None
        if not 0 <= wanted <= 0xFFFF:
            raise KernelRefused(errnos.EINVAL, f"{value!r} is out of range for a 16-bit count")
        total = _int(self.attribute(pf, "sriov_totalvfs"), 0)
        if wanted > total:
            raise KernelRefused(errnos.ERANGE, f"{pf} supports at most {total} VFs")
        current = _int(self.attribute(pf, "sriov_numvfs"), 0)
        if wanted == current:
            return
        if self.core.driver_of(pf) is None:
            raise KernelRefused(errnos.ENOENT, f"no driver bound to {pf}; cannot configure SR-IOV")
        if wanted == 0:
            self.remove_all(pf)
            return
        if current:
            raise KernelRefused(
                errnos.EBUSY, f"{current} VFs already enabled on {pf}; disable them before enabling {wanted}"
            )
        fault = self.core.fault("sriov_enables_fewer", address=pf)
        count = min(wanted, fault.count or 0) if fault is not None else wanted
        for index in range(count):
            self.create(pf, index)
        write_file(self.tree, f"{self.core.device_dir(pf)}/sriov_numvfs", f"{count}\n")

    def create(self, pf: str, index: int) -> str:
        offset = _int(self.attribute(pf, "sriov_offset"), 128)
        stride = _int(self.attribute(pf, "sriov_stride"), 1)
        address = vf_address(pf, index, offset, stride)
        pf_dir = self.core.device_dir(pf)
        vf_dir = f"{os.path.dirname(pf_dir)}/{address}"
        spec = FunctionSpec(
            address,
            _hex(self.attribute(pf, "vendor"), 4),
            _hex(self.attribute(pf, "sriov_vf_device") or self.attribute(pf, "device"), 4),
            _hex(self.attribute(pf, "class"), 6),
            revision=_hex(self.attribute(pf, "revision"), 2),
            subsystem_vendor=_hex(self.attribute(pf, "subsystem_vendor"), 4),
            subsystem_device=_hex(self.attribute(pf, "subsystem_device"), 4),
            reset_methods=["flr"],  # SR-IOV requires VFs to support function-level reset
            numa_node=_int(self.attribute(pf, "numa_node"), -1),
            physfn=pf,
        )
        write_function(HostSpec(), spec, self.tree.path(vf_dir), self.tree.path("sys"), False, (0, 0, 0), {})
        write_file(self.tree, f"{vf_dir}/local_cpulist", (self.attribute(pf, "local_cpulist") or "0") + "\n")
        link(self.tree, f"{pf_dir}/virtfn{index}", vf_dir)
        self.core.state.reset_methods[address] = ["flr"]
        self._join_iommu(pf, address, vf_dir)
        vf_driver = self.core.state.vf_drivers.get(pf, VF_DRIVERS.get(self.core.state.native.get(pf) or ""))
        self.core.state.native[address] = vf_driver
        if self.attribute(pf, "sriov_drivers_autoprobe") != "0" and vf_driver:
            Modules(self.core).load(vf_driver)  # udev loads the VF driver's module on the VF's uevent
            with contextlib.suppress(KernelRefused):  # a VF whose probe fails stays without a driver
                self.core.probe(address)
        return address

    def _join_iommu(self, pf: str, address: str, vf_dir: str) -> None:
        if self.core.group_of(pf) is None:
            return  # no IOMMU: VFs get no group either
        taken = {int(name) for name in self.tree.listdir(IOMMU_GROUPS) if name.isdigit()}
        # The kernel numbers groups from an IDA: the lowest free id, so VFs re-created get their old groups.
        group = f"{IOMMU_GROUPS}/{min(set(range(len(taken) + 1)) - taken)}"
        write_file(self.tree, f"{group}/type", "DMA\n")
        write_file(self.tree, f"{group}/reserved_regions", "0x00000000fee00000 0x00000000feefffff msi\n")
        link(self.tree, f"{group}/devices/{address}", vf_dir)
        link(self.tree, f"{vf_dir}/iommu_group", group)
        if self.tree.exists(f"{PCI_DEVICES}/{pf}/iommu"):
            unit = self.tree.realpath(f"{PCI_DEVICES}/{pf}/iommu")
            link(self.tree, f"{unit}/devices/{address}", vf_dir)
            link(self.tree, f"{vf_dir}/iommu", unit)

    def remove_all(self, pf: str) -> None:
        pf_dir = self.core.device_dir(pf)
        for entry in [name for name in self.tree.listdir(pf_dir) if name.startswith("virtfn")]:
            address = self.tree.link_name(f"{pf_dir}/{entry}")
            if address and self.core.exists(address):
                self.remove(address)
            unlink(self.tree, f"{pf_dir}/{entry}")
        write_file(self.tree, f"{pf_dir}/sriov_numvfs", "0\n")

    def remove(self, address: str) -> None:
        self.core.detach(address)
        vf_dir = self.core.device_dir(address)
        group = self.core.group_of(address)
        if group is not None:
            group_dir = f"{IOMMU_GROUPS}/{group}"
            unlink(self.tree, f"{group_dir}/devices/{address}")
            if not self.tree.listdir(f"{group_dir}/devices"):
                shutil.rmtree(self.tree.path(group_dir))
        if self.tree.exists(f"{vf_dir}/iommu"):
            unlink(self.tree, f"{self.tree.realpath(f'{vf_dir}/iommu')}/devices/{address}")
        unlink(self.tree, f"{PCI_DEVICES}/{address}")
        shutil.rmtree(self.tree.path(vf_dir))
        self.core.state.native.pop(address, None)
        self.core.state.reset_methods.pop(address, None)
