"""set_sriov_vfs on two 82576 ports (8 VFs each, stride 2), as in the SR-IOV handbook capture."""

from __future__ import annotations

import os

import pytest

from passthrough.kerneldouble import KernelDouble, faults
from passthrough.ops import (
    FAILED,
    ROLLED_BACK,
    SUCCEEDED,
    UNCHANGED,
    DeviceInUse,
    InvalidCount,
    NotSriovCapable,
    bind_vfio,
    set_sriov_vfs,
)
from passthrough.pci.scan import scan
from tests.kernelhosts import SRIOV_PORTS, sriov_host

PF = SRIOV_PORTS[2].address  # 0000:82:00.1
NUMVFS = f"sys/bus/pci/devices/{PF}/sriov_numvfs"


@pytest.fixture
def kernel(make_tree) -> KernelDouble:
    return KernelDouble(make_tree(sriov_host()))


def numvfs_writes(kernel):
    return [value for path, value in kernel.writes if path == NUMVFS]


def test_four_vfs_appear_each_in_its_own_group(kernel):
    result = set_sriov_vfs(kernel, PF, 4)

    assert result.outcome == SUCCEEDED, result.error
    assert [step.name for step in result.steps] == ["validate", "snapshot", "enable_vfs", "verify"]
    vfs = ["0000:82:10.1", "0000:82:10.3", "0000:82:10.5", "0000:82:10.7"]
    assert result.state_after["sriov_numvfs"] == 4
    assert list(result.state_after["functions"]) == [PF, *vfs]
    groups = {result.state_after["functions"][vf]["iommu_group"] for vf in vfs}
    assert len(groups) == 4 and None not in groups
    inventory = scan(kernel)
    assert all(inventory.device(vf).physfn == PF for vf in vfs)
    assert inventory.device(PF).virtfns == vfs
    assert result.steps[-1].detail == f"4 VFs: {', '.join(vfs)}"


def test_four_to_eight_goes_through_zero(kernel):
    set_sriov_vfs(kernel, PF, 4)
    kernel.writes.clear()

    result = set_sriov_vfs(kernel, PF, 8)

    assert result.outcome == SUCCEEDED
    assert numvfs_writes(kernel) == ["0", "8"]
    assert [step.name for step in result.steps][2:] == ["disable_vfs", "enable_vfs", "verify"]
    assert scan(kernel).device(PF).sriov_numvfs == 8


def test_the_same_count_again_changes_nothing(kernel):
    set_sriov_vfs(kernel, PF, 2)
    kernel.writes.clear()
    assert set_sriov_vfs(kernel, PF, 2).outcome == UNCHANGED
    assert set_sriov_vfs(kernel, PF, "2").outcome == UNCHANGED  # as the shell hands it over
    assert kernel.writes == []


def test_zero_removes_every_vf(kernel):
    set_sriov_vfs(kernel, PF, 3)
    result = set_sriov_vfs(kernel, PF, 0)
    assert result.outcome == SUCCEEDED
    assert list(result.state_after["functions"]) == [PF]
    assert len(scan(kernel).devices) == 3


def test_more_than_totalvfs_is_refused_before_anything_is_written(kernel):
    with pytest.raises(InvalidCount, match="supports 0 to 8 VFs; 9 were asked"):
        set_sriov_vfs(kernel, PF, 9)
    assert kernel.writes == []


def test_a_verify_failure_rolls_back_to_the_prior_count(kernel):
    set_sriov_vfs(kernel, PF, 2)
    kernel.inject(faults.sriov_enables_fewer(PF, 3))  # the driver enables only 3 of the 6 asked
    kernel.writes.clear()

    result = set_sriov_vfs(kernel, PF, 6)

    assert result.outcome == ROLLED_BACK
    assert result.error["code"] == "verification_failed"
    assert "shows 3 VFs" in result.error["message"]
    assert numvfs_writes(kernel) == ["0", "6", "0", "2"]
    assert result.state_after == result.state_before
    assert scan(kernel).device(PF).sriov_numvfs == 2


def test_the_rollback_puts_a_vf_back_on_vfio_pci(kernel):
    set_sriov_vfs(kernel, PF, 2)
    bind_vfio(kernel, "0000:82:10.3")
    kernel.inject(faults.sriov_enables_fewer(PF, 1, times=1))

    result = set_sriov_vfs(kernel, PF, 4)

    assert result.outcome == ROLLED_BACK, result.error
    assert kernel.link_name("sys/bus/pci/devices/0000:82:10.3/driver") == "vfio-pci"
    assert kernel.link_name("sys/bus/pci/devices/0000:82:10.1/driver") == "igbvf"
    assert any("0000:82:10.3 was on vfio-pci" in warning for warning in result.warnings)


def test_a_driver_that_keeps_enabling_too_few_leaves_the_rollback_failed(kernel):
    set_sriov_vfs(kernel, PF, 2)
    kernel.inject(faults.sriov_enables_fewer(PF, 1))

    result = set_sriov_vfs(kernel, PF, 4)

    assert result.outcome == FAILED
    assert result.state_after["sriov_numvfs"] == 1
    assert "did not restore" in result.error["rollback"]


def test_a_vf_a_vm_holds_open_blocks_the_change(kernel):
    set_sriov_vfs(kernel, PF, 2)
    bind_vfio(kernel, "0000:82:10.1")
    group = scan(kernel).device("0000:82:10.1").iommu_group
    os.makedirs(f"{kernel.root}/proc/777/fd")
    os.symlink(f"/dev/vfio/{group}", f"{kernel.root}/proc/777/fd/30")
    kernel.writes.clear()

    with pytest.raises(DeviceInUse, match="removing VF 0000:82:10.1"):
        set_sriov_vfs(kernel, PF, 0)
    assert kernel.writes == []


def test_only_a_physical_function_with_a_driver_takes_a_count(kernel):
    with pytest.raises(NotSriovCapable, match="no SR-IOV capability"):
        set_sriov_vfs(kernel, "0000:80:01.0", 1)
    set_sriov_vfs(kernel, PF, 1)
    with pytest.raises(NotSriovCapable, match="itself a virtual function of 0000:82:00.1"):
        set_sriov_vfs(kernel, "0000:82:10.1", 1)
    kernel.write("sys/bus/pci/drivers/igb/unbind", "0000:82:00.0")
    with pytest.raises(NotSriovCapable, match="no driver is bound"):
        set_sriov_vfs(kernel, "0000:82:00.0", 1)
