"""Scenario 5: GPUs. The boot VGA at 00:02.0 carries the console
(bochs-drm's fb0, fbcon on it); a secondary-vga behind a root port shares its slot and IOMMU
group with an HDA function (with a codec).

What the real kernel shows here: bochs-drm drives both GPUs (fb0 on the boot VGA, fb1 on the
second), fbcon is vtcon1 "(M) frame buffer device" and draws only on fb0, and vtcon0 is
"(S) dummy device" (bochs' aperture takeover removed the VGA text console). Unbinding
fbcon hands the terminals to the dummy console; a native driver that registers the
framebuffer fbcon maps again makes fbcon take the console back by itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from passthrough.host import HostTree
from passthrough.pci.hostcritical import find_host_critical
from passthrough.pci.scan import scan
from tests.realkernel_guest.support import PCI, device, driver, group, wait_for_driver

pytestmark = pytest.mark.django_db(transaction=True)

BOOT = "0000:00:02.0"
GPU = "0000:01:00.0"
AUDIO = "0000:01:00.1"
VTCONSOLE = Path("/sys/class/vtconsole")
GRAPHICS = Path("/sys/class/graphics")


def vtconsoles() -> dict[str, tuple[str, str]]:
    """{vtconN: (name, bind)}."""
    return {
        entry.name: ((entry / "name").read_text().strip(), (entry / "bind").read_text().strip())
        for entry in sorted(VTCONSOLE.iterdir())
    }


def fbcon() -> str:
    (name,) = [vtcon for vtcon, (text, _) in vtconsoles().items() if text == "(M) frame buffer device"]
    return name


def framebuffers() -> dict[str, str]:
    """{fbN: the PCI function it is drawn by}."""
    return {
        entry.name: (entry / "device").resolve().name
        for entry in sorted(GRAPHICS.iterdir())
        if entry.name.startswith("fb") and entry.name[2:].isdigit()
    }


def wait_for(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout} s (vtconsoles {vtconsoles()}, fb {framebuffers()})")
        time.sleep(0.1)


@pytest.fixture
def as_found():
    """Every GPU function on its driver and the console on fb0 before and after the test."""
    for address, wanted in ((BOOT, "bochs-drm"), (GPU, "bochs-drm"), (AUDIO, "snd_hda_intel")):
        wait_for_driver(address, wanted)
    wait_for(lambda: framebuffers() == {"fb0": BOOT, "fb1": GPU}, "both framebuffers registered")
    assert vtconsoles()[fbcon()][1] == "1"
    yield
    found = (driver(BOOT), driver(GPU), driver(AUDIO))
    if found != ("bochs-drm", "bochs-drm", "snd_hda_intel"):  # a failed test: put it back for the next one
        for address in (BOOT, GPU):
            device("restore", address)
        (VTCONSOLE / fbcon() / "bind").write_text("1")
    assert found == ("bochs-drm", "bochs-drm", "snd_hda_intel")
    wait_for(lambda: vtconsoles()[fbcon()][1] == "1" and framebuffers() == {"fb0": BOOT, "fb1": GPU}, "as found")


def test_the_boot_vga_carries_the_console_and_is_host_critical(as_found):
    assert (PCI / BOOT / "boot_vga").read_text().strip() == "1"
    assert not (PCI / GPU / "boot_vga").exists()  # a display controller (0380), not VGA: no boot_vga at all
    assert group(GPU) == group(AUDIO) != group(BOOT)
    consoles = vtconsoles()
    assert consoles[fbcon()] == ("(M) frame buffer device", "1")
    assert not any("VGA" in name for name, _ in consoles.values()), consoles  # bochs removed vgacon

    tree = HostTree("/")
    critical = find_host_critical(tree, scan(tree).devices)

    assert critical[BOOT] == [
        "its driver draws framebuffer fb0 (bochs-drmdrmfb)",
        f"the framebuffer console ({fbcon()}) is bound",
    ]
    assert GPU not in critical and AUDIO not in critical


def test_binding_the_boot_vga_is_refused_while_the_console_is_on_it(as_found):
    refused = device("bind", BOOT)

    assert refused["job"]["state"] == "failed", refused
    message = refused["job"]["message"]
    assert "touches host-critical functions" in message
    assert "its driver draws framebuffer fb0" in message and f"the framebuffer console ({fbcon()}) is bound" in message
    assert f"type {BOOT} as the confirmation" in message
    assert driver(BOOT) == "bochs-drm"
    assert vtconsoles()[fbcon()][1] == "1"


def test_the_second_gpu_and_its_audio_bind_together_and_come_back(as_found):
    bound = device("bind", GPU)

    assert bound["job"]["state"] == "succeeded", bound
    assert bound["result"]["targets"] == [GPU, AUDIO]
    assert (driver(GPU), driver(AUDIO)) == ("vfio-pci", "vfio-pci")
    assert Path(f"/dev/vfio/{group(GPU)}").exists()
    assert framebuffers() == {"fb0": BOOT}  # fb1 left with bochs-drm; the console stays on fb0
    assert vtconsoles()[fbcon()][1] == "1"
    assert not any(step["name"] == "release_console" for step in bound["job"]["steps"])

    back = device("restore", GPU)

    assert back["job"]["state"] == "succeeded", back
    assert (driver(GPU), driver(AUDIO)) == ("bochs-drm", "snd_hda_intel")
    assert not Path(f"/dev/vfio/{group(GPU)}").exists()
    wait_for(lambda: framebuffers() == {"fb0": BOOT, "fb1": GPU}, "fb1 back on the second GPU")
    wait_for(lambda: Path("/proc/asound/card0/codec#0").exists(), "the sound card's codec back")


def test_releasing_the_console_frees_the_boot_vga_and_giving_it_back_returns_the_console(as_found):
    from webui.hosts.models import Snapshot
    from webui.hosts.snapshots import take_snapshot, this_host
    from webui.hosts.trees import worker_tree
    from webui.jobs.models import Action, State
    from webui.jobs.runner import execute
    from webui.jobs.service import create_job
    from webui.wizard.giveback import bind_job_of
    from webui.wizard.views.devices import _restore_parameters

    # As on a host whose worker has started: a snapshot, so the bind job knows its group.
    take_snapshot(this_host(), worker_tree(), Snapshot.Source.STARTUP)
    console = fbcon()
    bound = device("bind", BOOT, "--release-console", "--confirm", BOOT)

    assert bound["job"]["state"] == "succeeded", bound
    assert driver(BOOT) == "vfio-pci"
    assert Path(f"/dev/vfio/{group(BOOT)}").exists()
    consoles = vtconsoles()
    assert consoles[console][1] == "0"
    assert [bind for name, bind in consoles.values() if name == "(S) dummy device"] == ["1"]
    assert framebuffers() == {"fb1": GPU}  # fb0 left with bochs-drm; fbcon does not move to fb1
    assert bound["result"]["state_after"]["console"] == {console: "0"}

    # The give-back the web UI sends for this group: the drivers before, and the console released.
    parameters = _restore_parameters(bind_job_of(this_host(), group(BOOT)))
    assert parameters["released_console"] == {console: None}
    job = create_job(
        host=this_host(),
        action=Action.RESTORE_DRIVER,
        targets=[BOOT],
        parameters=parameters,
        actor="shell:root",
        state=State.RUNNING,
    )
    job = execute(job, worker_tree(), source="shell")

    assert job.state == State.SUCCEEDED, (job.message, job.steps)
    assert driver(BOOT) == "bochs-drm"
    assert vtconsoles()[console][1] == "1"
    assert framebuffers() == {"fb0": BOOT, "fb1": GPU}
    assert any(step["name"] == "verify_console" and step["ok"] for step in job.steps), job.steps


def test_the_kernel_gives_the_console_back_when_the_boot_vga_driver_returns(as_found):
    # A give-back that does not name the console (the shell's restore) still finds it bound:
    # bochs-drm registers fb0 again and fbcon, mapped to fb0, takes the terminals back itself.
    console = fbcon()
    assert device("bind", BOOT, "--release-console", "--confirm", BOOT)["job"]["state"] == "succeeded"
    assert vtconsoles()[console][1] == "0"

    back = device("restore", BOOT)

    assert back["job"]["state"] == "succeeded", back
    assert back["result"]["parameters"]["released_console"] is None
    assert driver(BOOT) == "bochs-drm"
    assert vtconsoles()[console][1] == "1"
