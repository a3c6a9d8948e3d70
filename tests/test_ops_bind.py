"""bind_vfio and restore_driver, end to end on the kernel double."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from passthrough.kerneldouble import KernelDouble, faults, vfio_group_nodes
from passthrough.ops import ROLLED_BACK, SUCCEEDED, UNCHANGED, DeviceInUse, bind_vfio, restore_driver
from passthrough.ops.result import FAILED
from tests.kernelhosts import GT710, GT710_AUDIO, GTX1080TI, GTX1080TI_AUDIO, threadripper, tree_digest, x570

GPU, AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address
DEVICES = "sys/bus/pci/devices"


@pytest.fixture
def kernel(make_tree) -> KernelDouble:
    double = KernelDouble(make_tree(x570()))
    double.run_command(["modprobe", "vfio-pci"])
    double.run_command(["modprobe", "vfio_iommu_type1"])
    return double


def driver(tree, address):
    return tree.link_name(f"{DEVICES}/{address}/driver")


def override(tree, address):
    return tree.read(f"{DEVICES}/{address}/driver_override")


def kernel_steps(result):
    return [
        (step.name, step.target) for step in result.steps if step.name not in ("validate", "snapshot", "load_module")
    ]


def test_gpu_and_its_audio_function_go_to_vfio_together(kernel):
    seen = []
    result = bind_vfio(kernel, GPU, progress=lambda step: seen.append((step.name, step.target, step.ok)))

    assert result.outcome == SUCCEEDED, result.error
    assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("vfio-pci", "vfio-pci")
    assert vfio_group_nodes(kernel) == ["30"]
    assert result.targets == [GPU, AUDIO]
    assert [step.name for step in result.steps[:2]] == ["validate", "snapshot"]
    assert kernel_steps(result) == [
        ("override", GPU),
        ("unbind", GPU),
        ("bind", GPU),
        ("override", AUDIO),
        ("unbind", AUDIO),
        ("bind", AUDIO),
        ("verify", "group 30"),
    ]
    # Each step is reported when it starts (ok unknown) and when it ends.
    assert seen[:2] == [("validate", GPU, None), ("validate", GPU, True)]
    assert len(seen) == 2 * len(result.steps)
    assert all(step.ok and step.started <= step.finished for step in result.steps)
    assert result.state_before["functions"][GPU] == {"driver": "nouveau", "driver_override": None, "iommu_group": 30}
    assert result.state_after["functions"][AUDIO] == {
        "driver": "vfio-pci",
        "driver_override": "vfio-pci",
        "iommu_group": 30,
    }
    assert result.state_after["vfio_group_node"] is True
    assert result.error is None


def test_binding_again_changes_nothing_and_writes_nothing(kernel):
    bind_vfio(kernel, GPU)
    writes, digest = len(kernel.writes), tree_digest(kernel.root)

    again = bind_vfio(kernel, AUDIO)  # any function of the group names the group

    assert again.outcome == UNCHANGED
    assert len(kernel.writes) == writes
    assert tree_digest(kernel.root) == digest
    assert again.state_after == again.state_before


def test_a_probe_failing_on_the_second_function_rolls_both_back(kernel):
    kernel.inject(faults.probe_fails(AUDIO, driver="vfio-pci"))

    result = bind_vfio(kernel, GPU)

    assert result.outcome == ROLLED_BACK
    assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("nouveau", "snd_hda_intel")
    assert (override(kernel, GPU), override(kernel, AUDIO)) == ("(null)", "(null)")
    assert vfio_group_nodes(kernel) == []
    assert result.state_after == result.state_before
    assert result.error["code"] == "verification_failed"
    assert f"{AUDIO} did not bind to vfio-pci" in result.error["message"]
    assert "no driver" in result.error["message"]
    failed = [step for step in result.steps if step.ok is False]
    assert [(step.name, step.target) for step in failed] == [("bind", AUDIO)]
    assert {step.target for step in result.steps if step.name == "rollback"} == {GPU, AUDIO}


def test_a_busy_unbind_is_explained_and_rolled_back(kernel):
    kernel.inject(faults.write_fails("sys/bus/pci/drivers/snd_hda_intel/unbind", errno.EBUSY))

    result = bind_vfio(kernel, GPU)

    assert result.outcome == ROLLED_BACK
    assert result.error["errno"] == errno.EBUSY
    assert "busy" in result.error["message"]
    assert result.state_after == result.state_before


def test_a_rollback_that_fails_says_so_and_where_things_were_left(kernel):
    kernel.inject(
        faults.probe_fails(AUDIO, driver="vfio-pci"),
        faults.write_fails("sys/bus/pci/drivers/nouveau/bind", errno.EIO),
    )

    result = bind_vfio(kernel, GPU)

    assert result.outcome == FAILED
    assert "did not restore" in result.error["rollback"]
    assert result.state_after["functions"][GPU]["driver"] is None  # unbound from vfio-pci, nouveau refused it
    assert result.state_after["functions"][AUDIO]["driver"] == "snd_hda_intel"


def test_a_time_limit_in_the_middle_of_a_bind_rolls_back(kernel):
    class SoftTimeLimit(Exception):  # what Celery raises in the task when the soft limit passes
        pass

    def expire(signum, frame):
        raise SoftTimeLimit()

    kernel.inject(faults.hang("sys/bus/pci/drivers_probe", 5, times=1))
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        result = bind_vfio(kernel, GPU)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert result.outcome == ROLLED_BACK
    assert result.error["code"] == "interrupted"
    assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("nouveau", "snd_hda_intel")


def test_restore_returns_each_function_to_its_native_driver(kernel):
    bind_vfio(kernel, GPU)

    result = restore_driver(kernel, GPU)

    assert result.outcome == SUCCEEDED, result.error
    assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("nouveau", "snd_hda_intel")
    assert (override(kernel, GPU), override(kernel, AUDIO)) == ("(null)", "(null)")
    assert vfio_group_nodes(kernel) == []
    verify = [step for step in result.steps if step.name == "verify"][0]
    assert verify.detail == f"{GPU} on nouveau; {AUDIO} on snd_hda_intel"
    assert restore_driver(kernel, GPU).outcome == UNCHANGED


def test_restore_leaves_a_function_driverless_when_it_had_no_driver(make_tree):
    spec = x570()
    spec.functions = [replace(f, driver=None) if f.address == AUDIO else f for f in spec.functions]
    kernel = KernelDouble(make_tree(spec))
    bound = bind_vfio(kernel, GPU)
    previous = {address: state["driver"] for address, state in bound.state_before["functions"].items()}

    result = restore_driver(kernel, GPU, previous_drivers=previous)

    assert result.outcome == SUCCEEDED, result.error
    assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("nouveau", None)


def test_restore_binds_the_previous_driver_by_name_when_probing_finds_none(make_tree):
    # The card was on nouveau through a dynamic id only: probing by id alone finds nothing.
    kernel = KernelDouble(make_tree(x570()), native_drivers={GPU: None})
    bind_vfio(kernel, GPU)

    result = restore_driver(kernel, GPU, previous_drivers={GPU: "nouveau", AUDIO: "snd_hda_intel"})

    assert result.outcome == SUCCEEDED, result.error
    assert driver(kernel, GPU) == "nouveau"
    assert override(kernel, GPU) == "(null)"


def test_restore_to_a_driver_that_is_not_loaded_rolls_back_to_vfio(kernel):
    bind_vfio(kernel, GPU)

    result = restore_driver(kernel, GPU, previous_drivers={GPU: "nvidia"})

    assert result.outcome == ROLLED_BACK
    assert "not on nvidia" in result.error["message"]
    assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("vfio-pci", "vfio-pci")
    assert vfio_group_nodes(kernel) == ["30"]


def test_restore_is_refused_while_a_vm_holds_the_group_open(kernel):
    bind_vfio(kernel, GPU)
    os.makedirs(f"{kernel.root}/proc/4242/fd")
    os.symlink("/dev/vfio/30", f"{kernel.root}/proc/4242/fd/17")
    with open(f"{kernel.root}/proc/4242/comm", "w") as handle:
        handle.write("qemu-system-x86\n")
    writes = len(kernel.writes)

    with pytest.raises(DeviceInUse, match="4242 \\(qemu-system-x86\\)"):
        restore_driver(kernel, GPU)
    assert len(kernel.writes) == writes


def test_restore_is_refused_while_a_vm_holds_a_device_through_iommufd(kernel):
    bind_vfio(kernel, GPU)
    os.makedirs(f"{kernel.root}/{DEVICES}/{AUDIO}/vfio-dev/vfio1")
    os.makedirs(f"{kernel.root}/proc/5151/fd")
    os.symlink("/dev/vfio/devices/vfio1", f"{kernel.root}/proc/5151/fd/40")

    with pytest.raises(DeviceInUse, match="5151"):
        restore_driver(kernel, GPU)


def _open_sound_file(kernel, pid: int, node: str, comm: str) -> None:
    os.makedirs(f"{kernel.root}/proc/{pid}/fd")
    os.symlink(node, f"{kernel.root}/proc/{pid}/fd/9")
    with open(f"{kernel.root}/proc/{pid}/comm", "w") as handle:
        handle.write(f"{comm}\n")


def test_a_bind_is_refused_while_a_process_has_the_audio_functions_sound_card_open(kernel):
    # On a 6.1 kernel the unbind of snd_hda_intel sleeps in snd_card_free until every file of
    # the card is closed (tests/realkernel_guest/test_intel.py): the job would hang.
    os.makedirs(f"{kernel.root}/{DEVICES}/{AUDIO}/sound/card0")
    _open_sound_file(kernel, 777, "/dev/snd/pcmC0D3p", "pipewire")

    with pytest.raises(DeviceInUse, match=rf"{AUDIO}'s sound card is open by 777 \(pipewire\)") as refused:
        bind_vfio(kernel, GPU)
    assert "systemctl --user stop pipewire" in (refused.value.hint or "")
    assert kernel.writes == []
    assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("nouveau", "snd_hda_intel")


def test_another_cards_open_files_do_not_stop_the_bind(kernel):
    os.makedirs(f"{kernel.root}/{DEVICES}/{AUDIO}/sound/card1")
    _open_sound_file(kernel, 778, "/dev/snd/controlC10", "pipewire")  # card 10, not card 1

    assert bind_vfio(kernel, GPU).outcome == SUCCEEDED


def test_a_card_whose_audio_sits_in_another_group_is_named(make_tree):
    kernel = KernelDouble(make_tree(threadripper()))

    result = bind_vfio(kernel, "0000:0d:00.0")  # Radeon VII, HDMI audio alone in group 21

    assert result.outcome == SUCCEEDED
    assert result.targets == ["0000:0d:00.0"]
    assert any("0d:00.1" in warning and "group 21" in warning for warning in result.warnings)


# The boot GPU and its console ------------------------------------------------------------
BOOT = GT710.address


def test_the_console_is_released_before_the_boot_gpu_is_bound(make_tree):
    kernel = KernelDouble(make_tree(x570(console="efifb")))

    result = bind_vfio(kernel, BOOT, confirm=BOOT, release_console=True)

    assert result.outcome == SUCCEEDED, result.error
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "0"
    assert kernel.link_name("sys/devices/platform/efi-framebuffer.0/driver") is None
    assert not kernel.exists("sys/class/graphics/fb0")
    assert kernel_steps(result)[:3] == [
        ("release_console", "vtcon1"),
        ("release_console", "efi-framebuffer.0"),
        ("override", BOOT),
    ]
    assert result.state_before["console"] == {"vtcon1": "1", "efi-framebuffer.0": "efi-framebuffer"}
    assert result.state_after["console"] == {"vtcon1": "0", "efi-framebuffer.0": None}
    assert driver(kernel, GT710_AUDIO.address) == "vfio-pci"


def test_the_console_comes_back_when_the_bind_rolls_back(make_tree):
    root = make_tree(x570(console="efifb"))
    kernel = KernelDouble(root)
    kernel.inject(faults.probe_fails(GT710_AUDIO.address, driver="vfio-pci"))
    before = tree_digest(root)

    result = bind_vfio(kernel, BOOT, confirm=BOOT, release_console=True)

    assert result.outcome == ROLLED_BACK
    assert kernel_steps(result)[-2:] == [
        ("restore_console", "efi-framebuffer.0"),
        ("restore_console", "vtcon1"),
    ]
    assert kernel.read("sys/class/graphics/fb0/name") == "EFI VGA"
    assert kernel.read("sys/class/vtconsole/vtcon1/bind") == "1"
    after = tree_digest(root)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    # Only what loading vfio-pci added is new: the tree is otherwise exactly as it was.
    from_modprobe = {key for key in changed if "vfio" in key or key.startswith("sys/module")}
    assert from_modprobe and changed - from_modprobe == {"dev", "proc/modules"}


def test_a_console_left_on_the_boot_gpu_is_warned_about(make_tree):
    kernel = KernelDouble(make_tree(x570(console="simpledrm")))

    result = bind_vfio(kernel, BOOT, confirm=BOOT)

    assert result.outcome == SUCCEEDED
    assert any("console still holds the boot GPU" in warning for warning in result.warnings)
    assert kernel.link_name("sys/devices/platform/simple-framebuffer.0/driver") == "simpledrm"


def test_a_bind_that_left_the_console_alone_rolls_back_to_it_untouched(make_tree):
    kernel = KernelDouble(make_tree(x570(console="efifb")))
    kernel.inject(faults.probe_fails(GT710_AUDIO.address, driver="vfio-pci"))

    result = bind_vfio(kernel, BOOT, confirm=BOOT)

    assert result.outcome == ROLLED_BACK
    assert result.state_after["console"] == {"vtcon1": "1", "efi-framebuffer.0": "efi-framebuffer"}
    assert not any(step.name in ("release_console", "restore_console") for step in result.steps)


@pytest.mark.parametrize("then", ["bind_again", "restore"])
def test_a_worker_killed_between_unbind_and_bind_leaves_a_state_either_operation_finishes(kernel, then):
    kernel.inject(faults.hang("sys/bus/pci/drivers_probe", 60))
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = (
        "import sys\nfrom passthrough.kerneldouble import KernelDouble\nfrom passthrough.ops import bind_vfio\n"
        f"bind_vfio(KernelDouble(sys.argv[1]), '{GPU}')\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script, kernel.root], cwd=here)
    try:
        deadline = time.monotonic() + 30
        while kernel.state.write_count < 2 and time.monotonic() < deadline:  # override, unbind: then it hangs
            time.sleep(0.05)
    finally:
        worker.kill()  # SIGKILL: no rollback runs
        worker.wait()
    assert (driver(kernel, GPU), override(kernel, GPU)) == (None, "vfio-pci")
    kernel.clear_faults()

    if then == "bind_again":
        result = bind_vfio(kernel, GPU)
        assert result.outcome == SUCCEEDED
        assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("vfio-pci", "vfio-pci")
    else:
        result = restore_driver(kernel, GPU)
        assert result.outcome == SUCCEEDED
        assert (driver(kernel, GPU), driver(kernel, AUDIO)) == ("nouveau", "snd_hda_intel")
        assert override(kernel, GPU) == "(null)"
