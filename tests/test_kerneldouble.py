"""The kernel double answers writes to a host tree as the kernel answers them in /sys."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

from passthrough.errors import SysfsWriteError
from passthrough.kerneldouble import KernelDouble, bound_to, faults, vfio_group_nodes
from passthrough.pci.scan import scan
from tests.kernelhosts import GT710, GTX1080TI, GTX1080TI_AUDIO, NVME, sriov_host, tree_digest, x570

GPU, AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address
DEVICES = "sys/bus/pci/devices"


@pytest.fixture
def double(make_tree) -> KernelDouble:
    kernel = KernelDouble(make_tree(x570()))
    kernel.run_command(["modprobe", "vfio-pci"])
    return kernel


def refused(kernel: KernelDouble, path: str, value: str) -> int | None:
    with pytest.raises(SysfsWriteError) as caught:
        kernel.write(path, value)
    return caught.value.errno


def to_vfio(kernel: KernelDouble, address: str) -> None:
    kernel.write(f"{DEVICES}/{address}/driver_override", "vfio-pci")
    current = kernel.link_name(f"{DEVICES}/{address}/driver")
    if current:
        kernel.write(f"sys/bus/pci/drivers/{current}/unbind", address)
    kernel.write("sys/bus/pci/drivers_probe", address)


def test_the_double_never_acts_on_the_live_root():
    with pytest.raises(ValueError):
        KernelDouble("/")


def test_driver_override_decides_the_next_probe(double):
    to_vfio(double, GPU)
    assert double.link_name(f"{DEVICES}/{GPU}/driver") == "vfio-pci"
    assert bound_to(double, "vfio-pci") == [GPU]
    assert bound_to(double, "nouveau") == [GT710.address]  # the other card stays
    assert scan(double).device(GPU).driver_override == "vfio-pci"


def test_an_override_naming_a_driver_that_is_not_loaded_binds_nothing(make_tree):
    kernel = KernelDouble(make_tree(x570()))  # vfio-pci not loaded
    to_vfio(kernel, GPU)
    assert kernel.link_name(f"{DEVICES}/{GPU}/driver") is None
    kernel.run_command(["modprobe", "vfio-pci"])  # loading it binds what its override names
    assert kernel.link_name(f"{DEVICES}/{GPU}/driver") == "vfio-pci"


def test_clearing_the_override_returns_the_function_to_its_native_driver(double):
    to_vfio(double, GPU)
    double.write(f"{DEVICES}/{GPU}/driver_override", "\n")
    assert double.read(f"{DEVICES}/{GPU}/driver_override") == "(null)"
    double.write("sys/bus/pci/drivers/vfio-pci/unbind", GPU)
    double.write("sys/bus/pci/drivers_probe", GPU)
    assert double.link_name(f"{DEVICES}/{GPU}/driver") == "nouveau"


def test_unbind_removes_both_links_and_refuses_a_driver_the_function_is_not_on(double):
    assert refused(double, "sys/bus/pci/drivers/vfio-pci/unbind", GPU) == errno.ENODEV
    double.write("sys/bus/pci/drivers/nouveau/unbind", GPU)
    assert not double.exists(f"{DEVICES}/{GPU}/driver")
    assert not double.exists(f"sys/bus/pci/drivers/nouveau/{GPU}")


def test_explicit_bind_is_refused_when_bound_or_not_matching(double):
    assert refused(double, "sys/bus/pci/drivers/nouveau/bind", GPU) == errno.EBUSY
    double.write("sys/bus/pci/drivers/nouveau/unbind", GPU)
    assert refused(double, "sys/bus/pci/drivers/vfio-pci/bind", GPU) == errno.ENODEV  # no override, no id
    double.write("sys/bus/pci/drivers/nouveau/bind", GPU)
    assert double.link_name(f"{DEVICES}/{GPU}/driver") == "nouveau"


def test_the_group_node_exists_while_any_function_of_the_group_is_on_vfio(double):
    to_vfio(double, GPU)
    to_vfio(double, AUDIO)
    assert vfio_group_nodes(double) == ["30"]
    assert double.exists("dev/vfio/vfio")
    double.write("sys/bus/pci/drivers/vfio-pci/unbind", GPU)
    assert vfio_group_nodes(double) == ["30"]
    double.write("sys/bus/pci/drivers/vfio-pci/unbind", AUDIO)
    assert vfio_group_nodes(double) == []


def test_vfio_pci_does_not_take_a_bridge(double):
    to_vfio(double, "0000:00:03.1")
    assert double.link_name(f"{DEVICES}/0000:00:03.1/driver") is None


def test_new_id_binds_every_unbound_function_with_that_id(double):
    double.write("sys/bus/pci/drivers/nouveau/unbind", GPU)
    double.write("sys/bus/pci/drivers/vfio-pci/new_id", "10de 1b06")
    assert double.link_name(f"{DEVICES}/{GPU}/driver") == "vfio-pci"
    assert refused(double, "sys/bus/pci/drivers/vfio-pci/new_id", "10de 1b06") == errno.EEXIST


def test_modprobe_lists_the_module_and_creates_the_driver_directory(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    assert not kernel.is_dir("sys/bus/pci/drivers/vfio-pci")
    result = kernel.run_command(["modprobe", "vfio-pci"])
    assert result.ok
    assert kernel.is_dir("sys/bus/pci/drivers/vfio-pci")
    modules = [line.split()[0] for line in kernel.read("proc/modules").splitlines()]
    assert {"vfio", "vfio_pci_core", "vfio_pci"} <= set(modules)
    assert "vfio_iommu_type1" not in modules  # loaded on its own, as the operations must do
    assert kernel.commands == [["modprobe", "vfio-pci"]]


def test_a_module_still_driving_a_function_cannot_be_removed(double):
    to_vfio(double, GPU)
    assert not double.run_command(["modprobe", "-r", "vfio-pci"]).ok
    double.write("sys/bus/pci/drivers/vfio-pci/unbind", GPU)
    assert double.run_command(["modprobe", "-r", "vfio-pci"]).ok
    assert not double.is_dir("sys/bus/pci/drivers/vfio-pci")


def test_other_commands_are_recorded_not_run(double):
    result = double.run_command(["update-initramfs", "-u", "-k", "all"])
    assert result.returncode == 0
    assert double.state.commands[-1] == ["update-initramfs", "-u", "-k", "all"]


def test_read_only_and_missing_attributes_are_refused(double):
    assert refused(double, f"{DEVICES}/{GPU}/vendor", "0x1234") == errno.EACCES
    assert refused(double, f"{DEVICES}/{GPU}/no_such_attribute", "1") == errno.ENOENT
    assert refused(double, "sys/bus/pci/drivers_probe", "0000:99:00.0") == errno.ENODEV
    assert double.read(f"{DEVICES}/{GPU}/vendor") == "0x10de"


def test_the_native_console_leaves_with_its_driver_and_comes_back(make_tree):
    kernel = KernelDouble(make_tree(x570(console="native")))
    assert kernel.exists("sys/class/graphics/fb0")
    kernel.write("sys/bus/pci/drivers/nouveau/unbind", GT710.address)
    assert not kernel.exists("sys/class/graphics/fb0") and not kernel.exists("sys/class/drm/card0")
    kernel.write("sys/bus/pci/drivers/nouveau/bind", GT710.address)
    assert kernel.realpath("sys/class/graphics/fb0/device").endswith(GT710.address)


def test_fbcon_takes_the_console_back_when_the_boot_gpus_driver_registers_its_framebuffer_again(make_tree):
    # As a 6.1 kernel does with bochs-drm (tests/realkernel_guest/test_gpus.py): fbcon, unbound
    # by hand, binds again by itself when the primary device's framebuffer registers.
    kernel = KernelDouble(make_tree(x570(console="native")))
    kernel.write("sys/class/vtconsole/vtcon1/bind", "0")
    kernel.write("sys/bus/pci/drivers/nouveau/unbind", GT710.address)
    assert [kernel.read(f"sys/class/vtconsole/vtcon{n}/bind") for n in (0, 1)] == ["1", "0"]
    kernel.write("sys/bus/pci/drivers/nouveau/bind", GT710.address)
    assert [kernel.read(f"sys/class/vtconsole/vtcon{n}/bind") for n in (0, 1)] == ["0", "1"]


def test_a_framebuffer_on_another_gpu_leaves_an_unbound_fbcon_alone(make_tree):
    kernel = KernelDouble(make_tree(x570(console="efifb")))
    kernel.write("sys/class/vtconsole/vtcon1/bind", "0")
    kernel.write("sys/bus/platform/drivers/efi-framebuffer/unbind", "efi-framebuffer.0")
    kernel.write("sys/bus/platform/drivers/efi-framebuffer/bind", "efi-framebuffer.0")
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "0"


def test_a_network_interface_disappears_while_its_nic_has_no_driver(make_tree):
    kernel = KernelDouble(make_tree(x570()))
    kernel.write("sys/bus/pci/drivers/igb/unbind", "0000:06:00.0")
    assert not kernel.exists("sys/class/net/enp6s0")
    kernel.write("sys/bus/pci/drivers_probe", "0000:06:00.0")
    assert kernel.exists("sys/class/net/enp6s0/operstate")


def test_efifb_lets_go_of_its_device_and_binds_it_again(make_tree):
    kernel = KernelDouble(make_tree(x570(console="efifb")))
    assert kernel.link_name("sys/devices/platform/efi-framebuffer.0/driver") == "efi-framebuffer"
    assert refused(kernel, "sys/bus/platform/drivers/simple-framebuffer/unbind", "efi-framebuffer.0") == errno.ENODEV
    kernel.write("sys/bus/platform/drivers/efi-framebuffer/unbind", "efi-framebuffer.0")
    assert not kernel.exists("sys/class/graphics/fb0")
    kernel.write("sys/bus/platform/drivers/efi-framebuffer/bind", "efi-framebuffer.0")
    assert kernel.read("sys/class/graphics/fb0/name") == "EFI VGA"


def test_unbinding_fbcon_hands_the_terminals_to_the_dummy_console(make_tree):
    kernel = KernelDouble(make_tree(x570(console="efifb")))
    kernel.write("sys/class/vtconsole/vtcon1/bind", "0")
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "0"
    assert kernel.read("sys/class/vtconsole/vtcon0/bind") == "1"
    kernel.write("sys/class/vtconsole/vtcon1/bind", "1")
    assert [kernel.read(f"sys/class/vtconsole/vtcon{n}/bind") for n in (0, 1)] == ["0", "1"]


# SR-IOV --------------------------------------------------------------------------------
PF0, PF1 = "0000:82:00.0", "0000:82:00.1"


def test_vfs_appear_where_the_82576_handbook_shows_them(make_tree):
    root = make_tree(sriov_host())
    kernel = KernelDouble(root)
    kernel.write(f"{DEVICES}/{PF1}/sriov_numvfs", "4")
    inventory = scan(kernel)
    pf = inventory.device(PF1)
    assert pf.sriov_numvfs == 4
    assert pf.virtfns == ["0000:82:10.1", "0000:82:10.3", "0000:82:10.5", "0000:82:10.7"]
    vf = inventory.device("0000:82:10.1")
    # As `virsh nodedev-dumpxml pci_0000_82_10_1` shows it: beside the PF, 8086:10ca, igbvf.
    assert vf.sysfs_path == "sys/devices/pci0000:80/0000:80:01.0/0000:82:10.1"
    assert (vf.vendor_id, vf.device_id, vf.driver, vf.physfn) == ("8086", "10ca", "igbvf", PF1)
    groups = [inventory.device(address).iommu_group for address in pf.virtfns]
    assert len(set(groups)) == 4 and not set(groups) & {40, 41, 42}
    listing = subprocess.run(
        ["lspci", "-nnD", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "0000:82:10.1 Ethernet controller [0200]: Intel Corporation 82576 Virtual Function [8086:10ca]" in listing


def test_changing_a_nonzero_vf_count_needs_zero_first(make_tree):
    kernel = KernelDouble(make_tree(sriov_host()))
    kernel.write(f"{DEVICES}/{PF0}/sriov_numvfs", "2")
    assert refused(kernel, f"{DEVICES}/{PF0}/sriov_numvfs", "4") == errno.EBUSY
    assert refused(kernel, f"{DEVICES}/{PF0}/sriov_numvfs", "9") == errno.ERANGE
    assert refused(kernel, f"{DEVICES}/{PF0}/sriov_numvfs", "two") == errno.EINVAL
    kernel.write(f"{DEVICES}/{PF0}/sriov_numvfs", "2")  # the same count: nothing to do
    assert scan(kernel).device(PF0).sriov_numvfs == 2


def test_zero_vfs_leaves_the_tree_as_it_was(make_tree):
    root = make_tree(sriov_host())
    kernel = KernelDouble(root)
    before = tree_digest(root)
    kernel.write(f"{DEVICES}/{PF0}/sriov_numvfs", "8")
    assert len(scan(kernel).devices) == 3 + 8
    kernel.write(f"{DEVICES}/{PF0}/sriov_numvfs", "0")
    after = tree_digest(root)
    # What stays is what stays on a host: the VF driver's module, loaded when the VFs appeared.
    loaded = {key for key in after.keys() - before.keys() if "igbvf" in key}
    assert loaded == {"sys/bus/pci/drivers/igbvf", "sys/module/igbvf", "sys/module/igbvf/initstate"} | {
        f"sys/bus/pci/drivers/igbvf/{name}" for name in ("bind", "unbind", "new_id", "remove_id", "module")
    } | {"sys/module/igbvf/drivers", "sys/module/igbvf/drivers/pci:igbvf"}
    assert "igbvf" in KernelDouble(root).read("proc/modules")
    ignored = loaded | {"proc/modules", "sys/module"}
    assert {key: value for key, value in after.items() if key not in ignored} == {
        key: value for key, value in before.items() if key not in ignored
    }


def test_vfs_stay_driverless_when_autoprobe_is_off_and_a_pf_without_driver_refuses(make_tree):
    kernel = KernelDouble(make_tree(sriov_host()))
    kernel.write(f"{DEVICES}/{PF0}/sriov_drivers_autoprobe", "0")
    kernel.write(f"{DEVICES}/{PF0}/sriov_numvfs", "1")
    assert scan(kernel).device("0000:82:10.0").driver is None
    kernel.write("sys/bus/pci/drivers/igb/unbind", PF1)
    assert refused(kernel, f"{DEVICES}/{PF1}/sriov_numvfs", "1") == errno.ENOENT


# Faults --------------------------------------------------------------------------------
def test_a_failing_probe_leaves_the_function_without_a_driver(double):
    double.inject(faults.probe_fails(AUDIO, driver="vfio-pci"))
    to_vfio(double, AUDIO)
    assert double.link_name(f"{DEVICES}/{AUDIO}/driver") is None
    double.write(f"{DEVICES}/{AUDIO}/driver_override", "\n")
    double.write("sys/bus/pci/drivers_probe", AUDIO)  # its native driver still probes fine
    assert double.link_name(f"{DEVICES}/{AUDIO}/driver") == "snd_hda_intel"


def test_a_probe_fault_with_an_errno_fails_the_write(double):
    double.inject(faults.probe_fails(AUDIO, errno=errno.ENOMEM))
    double.write(f"{DEVICES}/{AUDIO}/driver_override", "vfio-pci")
    double.write("sys/bus/pci/drivers/snd_hda_intel/unbind", AUDIO)
    assert refused(double, "sys/bus/pci/drivers_probe", AUDIO) == errno.ENOMEM


def test_the_nth_write_fails_once(double):
    double.inject(faults.nth_write_fails(2, errno.EIO))
    double.write(f"{DEVICES}/{GPU}/driver_override", "vfio-pci")
    assert refused(double, "sys/bus/pci/drivers/nouveau/unbind", GPU) == errno.EIO
    double.write("sys/bus/pci/drivers/nouveau/unbind", GPU)


def test_write_faults_match_a_glob_and_can_be_limited(double):
    double.inject(faults.write_fails("sys/bus/pci/drivers/*/unbind", errno.EBUSY, times=1))
    assert refused(double, "sys/bus/pci/drivers/nouveau/unbind", GPU) == errno.EBUSY
    double.write("sys/bus/pci/drivers/nouveau/unbind", GPU)
    assert double.state.write_count == 2
    assert double.writes == [("sys/bus/pci/drivers/nouveau/unbind", GPU)] * 2


def test_a_hang_delays_the_write(double):
    double.inject(faults.hang(f"{DEVICES}/{GPU}/driver_override", 0.3))
    started = time.monotonic()
    double.write(f"{DEVICES}/{GPU}/driver_override", "vfio-pci")
    assert time.monotonic() - started >= 0.3


def test_another_process_sees_the_same_kernel(make_tree):
    root = make_tree(x570())
    kernel = KernelDouble(root, faults=[faults.write_fails(f"{DEVICES}/{GPU}/driver_override", errno.EBUSY)])
    kernel.run_command(["modprobe", "vfio-pci"])
    kernel.write("sys/bus/pci/drivers/nouveau/unbind", GPU)
    script = (
        "import sys\n"
        "from passthrough.kerneldouble import KernelDouble\n"
        "from passthrough.errors import SysfsWriteError\n"
        "kernel = KernelDouble(sys.argv[1])\n"
        f"try:\n    kernel.write('{DEVICES}/{GPU}/driver_override', 'vfio-pci')\n"
        "except SysfsWriteError as error:\n    print('refused', error.errno)\n"
        f"kernel.write('sys/bus/pci/drivers_probe', '{GPU}')\n"
        f"print(kernel.link_name('{DEVICES}/{GPU}/driver'))\n"
    )
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = subprocess.run(
        [sys.executable, "-c", script, str(root)], capture_output=True, text=True, check=True, cwd=here
    ).stdout.split("\n")
    # The fault injected here refused the other process's write, and its probe used the
    # native driver this process's double recorded: the state lives in the tree.
    assert output[:2] == [f"refused {errno.EBUSY}", "nouveau"]
    assert kernel.state.write_count == 3


def test_a_function_on_vfio_at_creation_keeps_vfio_as_its_native_driver(make_tree):
    root = make_tree(x570())
    kernel = KernelDouble(root, native_drivers={NVME.address: "nvme"})
    assert kernel.native_driver(NVME.address) == "nvme"
    assert kernel.native_driver(GPU) == "nouveau"


def test_modprobe_links_the_driver_to_the_module_it_comes_from(make_tree):
    double = KernelDouble(make_tree(x570()))
    double.run_command(["modprobe", "xhci_pci"])
    assert double.link_name("sys/bus/pci/drivers/xhci_hcd/module") == "xhci_pci"
    assert double.is_dir("sys/bus/pci/drivers/xhci_hcd/module")
