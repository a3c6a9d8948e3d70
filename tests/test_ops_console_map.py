"""Which function the host's console is on: the framebuffer fbcon draws it on, not any GPU with a framebuffer.

On the X570 the boot GPU (GT 710) shows the console through efifb (fb0), and the second
GPU (GTX 1080 Ti) has a framebuffer of its own from its DRM driver (fb1). fbcon draws the
consoles on fb0 unless ``fbcon=map:`` says otherwise, so binding the second GPU takes no
console, and asking for the console to be released there would make no sense.
"""

from __future__ import annotations

import os

from passthrough.kerneldouble import KernelDouble
from passthrough.ops import SUCCEEDED, bind_vfio
from passthrough.pci.console import fbcon_framebuffers, framebuffer_consoles_on
from passthrough.pci.hostcritical import console_on
from tests.kernelhosts import GT710, GTX1080TI, x570

GPU, BOOT = GTX1080TI.address, GT710.address


def with_native_framebuffer(root: str | os.PathLike[str], address: str, fb: str, card: str) -> None:
    """What nouveau's fbdev emulation adds under a GPU it drives: a DRM card and a framebuffer."""
    device = os.path.realpath(f"{root}/sys/bus/pci/devices/{address}")
    for directory, class_name, name in (
        (f"{device}/graphics/{fb}", "graphics", fb),
        (f"{device}/drm/{card}", "drm", card),
    ):
        os.makedirs(directory)
        os.makedirs(f"{root}/sys/class/{class_name}", exist_ok=True)
        os.symlink(os.path.relpath(device, directory), f"{directory}/device")
        os.symlink(
            os.path.relpath(directory, f"{root}/sys/class/{class_name}"), f"{root}/sys/class/{class_name}/{name}"
        )
    with open(f"{device}/graphics/{fb}/name", "w") as handle:
        handle.write("nouveaudrmfb\n")


def two_gpus(make_tree, cmdline: str | None = None) -> KernelDouble:
    spec = x570(console="efifb")
    if cmdline:
        spec.cmdline = cmdline
    root = make_tree(spec)
    with_native_framebuffer(root, GPU, "fb1", "card1")
    return KernelDouble(root)


def test_binding_the_second_gpu_says_nothing_about_a_console_it_does_not_hold(make_tree):
    kernel = two_gpus(make_tree)

    result = bind_vfio(kernel, GPU)

    assert result.outcome == SUCCEEDED, result.error
    assert not any("console" in warning for warning in result.warnings), result.warnings
    assert "console" not in result.state_before
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "1"


def test_fbcon_draws_on_fb0_unless_the_command_line_maps_it_elsewhere(make_tree):
    assert fbcon_framebuffers(two_gpus(make_tree)) == ["fb0"]
    assert fbcon_framebuffers(two_gpus(make_tree, "quiet fbcon=font:VGA8x16,map:1")) == ["fb1"]
    assert fbcon_framebuffers(two_gpus(make_tree, "quiet fbcon=map:01")) == ["fb0", "fb1"]
    assert fbcon_framebuffers(two_gpus(make_tree, "quiet fbcon=map:7")) == ["fb0"]  # no fb7: the first there is


def test_the_console_is_on_the_boot_gpu_through_the_firmware_framebuffer(make_tree):
    kernel = two_gpus(make_tree)
    assert framebuffer_consoles_on(kernel, BOOT) == {"vtcon1": ["fb0"]}
    assert framebuffer_consoles_on(kernel, GPU) == {}
    assert "the framebuffer console (vtcon1) is bound" in console_on(kernel, BOOT)


def test_a_console_mapped_to_the_second_gpu_is_named_once_with_its_function(make_tree):
    kernel = two_gpus(make_tree, "BOOT_IMAGE=/boot/vmlinuz ro quiet fbcon=map:1")
    assert framebuffer_consoles_on(kernel, GPU) == {"vtcon1": ["fb1"]}
    assert "the framebuffer console (vtcon1) is bound" not in console_on(kernel, BOOT)

    result = bind_vfio(kernel, GPU)

    assert result.outcome == SUCCEEDED, result.error
    (warning,) = [warning for warning in result.warnings if "console" in warning]
    assert f"holds {GPU} (vtcon1)" in warning and "boot GPU" not in warning


def test_releasing_the_console_from_the_second_gpu_leaves_the_boot_gpus_framebuffer(make_tree):
    kernel = two_gpus(make_tree, "quiet fbcon=map:1")

    result = bind_vfio(kernel, GPU, release_console=True)

    assert result.outcome == SUCCEEDED, result.error
    assert [step.target for step in result.steps if step.name == "release_console"] == ["vtcon1"]
    assert kernel.link_name("sys/devices/platform/efi-framebuffer.0/driver") == "efi-framebuffer"
