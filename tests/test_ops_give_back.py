"""Giving a GPU back gives back everything its bind took: the console too, and says when the
next boot takes the GPU again."""

from __future__ import annotations

import pytest

from passthrough.kerneldouble import KernelDouble, faults
from passthrough.ops import ROLLED_BACK, SUCCEEDED, UNCHANGED, InvalidRequest, bind_vfio, restore_driver
from passthrough.ops.console import released_by
from passthrough.ops.persist import apply_persist_binding
from tests.kernelhosts import GT710, GT710_AUDIO, GTX1080TI, GTX1080TI_AUDIO, tree_digest, x570
from tests.test_ops_persist import debian_files

BOOT, BOOT_AUDIO = GT710.address, GT710_AUDIO.address
GPU, AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address
BOOT_DRIVERS = {BOOT: "nouveau", BOOT_AUDIO: "snd_hda_intel"}


def boot_gpu_passed_with_its_console_released(make_tree, **spec) -> tuple[KernelDouble, dict]:
    kernel = KernelDouble(make_tree(x570(console="efifb", **spec)))
    bind = bind_vfio(kernel, BOOT, confirm=BOOT, release_console=True)
    assert bind.outcome == SUCCEEDED, bind.error
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "0"
    return kernel, released_by(bind.state_before, bind.state_after)


def test_the_bind_records_what_it_released(make_tree):
    _, released = boot_gpu_passed_with_its_console_released(make_tree)
    assert released == {"vtcon1": None, "efi-framebuffer.0": "efi-framebuffer"}


def test_giving_the_boot_gpu_back_binds_the_console_again_and_checks_it(make_tree):
    kernel, released = boot_gpu_passed_with_its_console_released(make_tree)

    result = restore_driver(kernel, BOOT, previous_drivers=BOOT_DRIVERS, released_console=released)

    assert result.outcome == SUCCEEDED, result.error
    assert kernel.link_name(f"sys/bus/pci/devices/{BOOT}/driver") == "nouveau"
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "1"
    assert kernel.link_name("sys/devices/platform/efi-framebuffer.0/driver") == "efi-framebuffer"
    assert kernel.read("sys/class/graphics/fb0/name") == "EFI VGA"
    names = [(step.name, step.target) for step in result.steps]
    assert names.index(("restore_console", "efi-framebuffer.0")) < names.index(("restore_console", "vtcon1"))
    assert ("verify_console", "vtcon1, efi-framebuffer.0") in names
    assert result.state_after["console"] == {"vtcon1": "1", "efi-framebuffer.0": "efi-framebuffer"}


def test_a_give_back_not_told_what_the_bind_released_leaves_the_console_alone(make_tree):
    # What every give-back did before the job passed released_console: the screen stayed dark.
    kernel, _ = boot_gpu_passed_with_its_console_released(make_tree)
    assert restore_driver(kernel, BOOT, previous_drivers=BOOT_DRIVERS).outcome == SUCCEEDED
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "0"


def test_a_native_console_comes_back_with_its_driver_even_when_the_give_back_does_not_name_it(make_tree):
    # The real kernel's fbcon takes the terminals back when the boot GPU's driver registers
    # its framebuffer again (tests/realkernel_guest/test_gpus.py, bochs-drm on 6.1).
    kernel = KernelDouble(make_tree(x570(console="native")))
    bind = bind_vfio(kernel, BOOT, confirm=BOOT, release_console=True)
    assert bind.outcome == SUCCEEDED, bind.error
    assert released_by(bind.state_before, bind.state_after) == {"vtcon1": None}
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "0"

    assert restore_driver(kernel, BOOT, previous_drivers=BOOT_DRIVERS).outcome == SUCCEEDED

    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "1"
    assert kernel.read("sys/class/vtconsole/vtcon0/bind") == "0"


def test_a_console_that_does_not_come_back_rolls_the_give_back_back(make_tree):
    kernel, released = boot_gpu_passed_with_its_console_released(make_tree)
    kernel.inject(faults.write_fails("sys/class/vtconsole/vtcon1/bind", value="1"))
    before = tree_digest(kernel.root)

    result = restore_driver(kernel, BOOT, previous_drivers=BOOT_DRIVERS, released_console=released)

    assert result.outcome == ROLLED_BACK, result.error
    assert [(step.name, step.target, step.ok) for step in result.steps if step.ok is False] == [
        ("restore_console", "vtcon1", False)
    ]
    assert kernel.link_name(f"sys/bus/pci/devices/{BOOT}/driver") == "vfio-pci"
    assert kernel.link_name("sys/devices/platform/efi-framebuffer.0/driver") is None
    assert tree_digest(kernel.root) == before


def test_a_console_still_released_after_the_gpu_went_back_is_bound_on_a_second_try(make_tree):
    kernel, released = boot_gpu_passed_with_its_console_released(make_tree)
    restore_driver(kernel, BOOT, previous_drivers=BOOT_DRIVERS)

    again = restore_driver(kernel, BOOT, previous_drivers=BOOT_DRIVERS, released_console=released)

    assert again.outcome == SUCCEEDED, again.error
    assert again.targets == []
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "1"
    assert restore_driver(kernel, BOOT, released_console=released).outcome == UNCHANGED


@pytest.mark.parametrize(
    "released",
    [
        {"vtcon1": "efi-framebuffer"},
        {"efi-framebuffer.0": None},
        {"serial8250": "serial8250"},
        {"efi-framebuffer.0": "nouveau"},
        {"../../vtcon1": None},
        ["vtcon1"],
    ],
)
def test_a_released_console_other_than_a_vtconsole_or_firmware_framebuffer_is_refused(make_tree, released):
    kernel, _ = boot_gpu_passed_with_its_console_released(make_tree)
    digest = tree_digest(kernel.root)
    with pytest.raises(InvalidRequest, match="released_console"):
        restore_driver(kernel, BOOT, released_console=released)
    assert tree_digest(kernel.root) == digest


def test_giving_back_a_gpu_still_bound_at_boot_says_the_next_reboot_takes_it_again(make_tree):
    kernel = KernelDouble(make_tree(x570(files=debian_files())))
    assert apply_persist_binding(kernel, [GPU]).outcome == SUCCEEDED
    assert bind_vfio(kernel, GPU).outcome == SUCCEEDED

    result = restore_driver(kernel, GPU, previous_drivers={GPU: "nouveau", AUDIO: "snd_hda_intel"})

    assert result.outcome == SUCCEEDED, result.error
    assert result.state_after["bound_at_boot"] == [GPU, AUDIO]
    (warning,) = [warning for warning in result.warnings if "boot" in warning]
    assert f"{GPU}, {AUDIO} are still bound to vfio-pci at every boot" in warning
    assert "the next reboot takes them from the host again" in warning


def test_giving_back_a_gpu_not_bound_at_boot_says_nothing_of_the_next_boot(make_tree):
    kernel = KernelDouble(make_tree(x570(files=debian_files())))
    bind_vfio(kernel, GPU)
    result = restore_driver(kernel, GPU)
    assert result.outcome == SUCCEEDED and result.state_after["bound_at_boot"] == []
    assert not any("boot" in warning for warning in result.warnings)
