"""Scenario 1 through the web path: a real Celery worker and a private Redis in the guest, on the real kernel.

The worker runs with PASSTHROUGH_ROOT=/ and PASSTHROUGH_KERNEL=live, so its jobs write the
guest kernel's own sysfs. Jobs are created as the web app creates them (``service.submit``
by an operator), and their steps, snapshot and audit are what the pages show.

The second test kills the worker while the kernel itself holds it between unbind and bind:
snd_hda_intel's remove calls snd_card_free, which sleeps uninterruptibly until nothing holds
the sound card any more. The test holds it through a mapping of a PCM status page whose file
it closed (support.MappedCard): the bind refuses a card with open files, but cannot see a
mapping, so it passes validation and the pool process's write to .../snd_hda_intel/unbind
blocks in snd_card_free (state D) for as long as the test wants: no timing luck is involved.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.realkernel_guest.support import (
    MappedCard,
    driver,
    driver_override,
    kernel_stack,
    process_state,
    put_back_by_hand,
    wait_for_driver,
    wait_until_blocked_in,
    wait_until_exited,
)
from tests.worker_support import LiveWorker, operator_named, wait_for_job
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.models import Host
from webui.jobs.models import GroupLock, Job, State
from webui.jobs.owner import Owner
from webui.jobs.service import submit
from webui.wizard.views.jobs import previous_drivers

pytestmark = pytest.mark.django_db(transaction=True)

HOST = "guest"
E1000E = "0000:00:03.0"
HDA = "0000:00:05.0"
XHCI = "0000:00:05.1"
CONTROL = Path("/dev/snd/controlC0")
JOB_TIMEOUT = 180  # TCG on a busy two-core machine: a deadline, never a sleep


def _live_worker(start_worker) -> LiveWorker:  # type: ignore[no-untyped-def]
    # Its start-up imports Django and Celery over 9p under TCG: a minute when the machine
    # running the guests is busy with other tests, so the same deadline as a job.
    return start_worker(Path("/"), HOST, start_timeout=JOB_TIMEOUT, PASSTHROUGH_KERNEL="live")


def _finished(job: Job, worker: LiveWorker) -> Job:
    try:
        return wait_for_job(job, timeout=JOB_TIMEOUT)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- worker log (tail) ---\n{worker.log.read_text()[-3000:]}") from None


def _wait_for_started_step(job: Job, name: str, target: str, timeout: float = JOB_TIMEOUT) -> None:
    """Until the job's steps show ``name`` on ``target`` started and not ended (ok None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if any(s["name"] == name and s.get("target") == target and s.get("ok") is None for s in job.steps):
            return
        if job.is_finished:
            raise AssertionError(f"job {job.pk} finished before '{name}' on {target}: {job.message} {job.steps}")
        time.sleep(0.05)
    raise AssertionError(f"job {job.pk} never started '{name}' on {target}: {job.steps}")


def _sound_card_ready(timeout: float = 60) -> None:
    """snd_hda_intel probes its codecs in a work item: the control file comes after the driver link."""
    wait_for_driver(HDA, "snd_hda_intel", timeout)
    deadline = time.monotonic() + timeout
    while not CONTROL.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{CONTROL} did not appear within {timeout} s of snd_hda_intel binding {HDA}")
        time.sleep(0.1)


def test_a_web_job_binds_the_e1000e_on_the_live_worker_and_a_second_gives_it_back(start_worker):
    wait_for_driver(E1000E, "e1000e")
    worker = _live_worker(start_worker)
    host = Host.objects.get(name=HOST)
    assert host.latest_snapshot().parsed.device(E1000E).driver == "e1000e"
    alice = operator_named("alice")
    try:
        bound = _finished(
            submit(
                host=host,
                action="bind_vfio",
                targets=[E1000E],
                parameters={"release_console": False},
                user=alice,
            ),
            worker,
        )
        assert bound.state == State.SUCCEEDED, (bound.message, bound.steps)
        assert driver(E1000E) == "vfio-pci" and driver_override(E1000E) == "vfio-pci"
        assert bound.snapshot.parsed.device(E1000E).driver == "vfio-pci"
        names = [(step["name"], step["target"], step["ok"]) for step in bound.steps]
        assert ("unbind", E1000E, True) in names and ("bind", E1000E, True) in names, names
        assert bound.result["state_before"]["functions"][E1000E]["driver"] == "e1000e"
        assert bound.result["state_after"]["vfio_group_node"] is True

        # The job page's "Give back to the host": restore_driver to the drivers the bind recorded.
        back = _finished(
            submit(
                host=host,
                action="restore_driver",
                targets=[E1000E],
                parameters={"previous_drivers": previous_drivers(bound) or None},
                user=alice,
            ),
            worker,
        )
        assert back.state == State.SUCCEEDED, (back.message, back.steps)
        assert driver(E1000E) == "e1000e" and driver_override(E1000E) is None
        assert back.snapshot.parsed.device(E1000E).driver == "e1000e"
    finally:
        put_back_by_hand(E1000E, "e1000e")

    events = list(AuditEvent.objects.filter(job_id__isnull=False).order_by("id").values_list("job_id", "result"))
    assert events == [
        (bound.pk, "requested"),
        (bound.pk, "succeeded"),
        (back.pk, "requested"),
        (back.pk, "succeeded"),
    ]
    assert set(AuditEvent.objects.filter(job_id__isnull=False).values_list("actor", flat=True)) == {"alice"}
    assert not GroupLock.objects.exists()
    assert verify_chain().ok


def test_a_worker_killed_while_the_kernel_holds_its_unbind_is_put_back_by_the_next_worker(start_worker):
    wait_for_driver(XHCI, "xhci_hcd")
    _sound_card_ready()
    worker = _live_worker(start_worker)
    control = MappedCard()  # the sound card is in use: its remove waits until this is unmapped
    try:
        job = _kill_the_worker_inside_the_unbind(worker, control)
        # What the real kernel left: the HDA function on no driver with the override pointing at
        # vfio-pci (its drivers_probe never ran), the xHCI function untouched, the job "running".
        assert driver(HDA) is None and driver_override(HDA) == "vfio-pci"
        assert driver(XHCI) == "xhci_hcd"
        job.refresh_from_db()
        assert job.state == State.RUNNING
        assert [s["name"] for s in job.steps if s["target"] == HDA] == ["validate", "override", "unbind"]
        assert job.steps[-1]["name"] == "unbind" and job.steps[-1]["ok"] is None  # it never heard back

        worker.start(timeout=JOB_TIMEOUT)  # its start-up reconciles before it reports ready
        job.refresh_from_db()
        assert job.state == State.ROLLED_BACK, (job.message, job.steps, worker.log.read_text()[-3000:])
        assert "worker stopped during 'unbind'" in job.message
        assert driver(HDA) == "snd_hda_intel" and driver_override(HDA) is None
        assert driver(XHCI) == "xhci_hcd" and driver_override(XHCI) is None
        assert job.snapshot.parsed.device(HDA).driver == "snd_hda_intel"
        _sound_card_ready()  # the card comes back whole: codec probed, control file there
    finally:
        control.close()
        worker.stop()
        put_back_by_hand(HDA, "snd_hda_intel")
        put_back_by_hand(XHCI, "xhci_hcd")
        _sound_card_ready()

    assert not Job.objects.filter(state=State.RUNNING).exists()
    assert not GroupLock.objects.exists()
    closing = AuditEvent.objects.filter(job_id=job.pk).exclude(result="requested").get()
    assert closing.result == "rolled_back" and closing.actor == "worker"
    assert closing.parameters.get("reconciled") is True
    assert closing.state_after["functions"][HDA] == {"driver": "snd_hda_intel", "driver_override": None}
    assert verify_chain().ok


def _kill_the_worker_inside_the_unbind(worker: LiveWorker, control: MappedCard) -> Job:
    """Submit a bind of the HDA slot, SIGKILL the worker while the kernel holds its unbind, let the unbind end."""
    job = submit(
        host=Host.objects.get(name=HOST),
        action="bind_vfio",
        targets=[HDA],
        parameters={"release_console": False},
        user=operator_named("crash"),
    )
    _wait_for_started_step(job, "unbind", HDA)
    owner = Owner.parse(job.owner)
    assert owner is not None, job.owner
    pool = owner.pid
    wait_until_blocked_in(pool, "snd_card_free")
    # The kernel removes the driver link before it calls the driver's remove: while the
    # write still sleeps, sysfs already says "no driver". (Not driver_override: reading it
    # takes the device lock, which the sleeping unbind holds, so this test would hang too.)
    assert driver(HDA) is None

    worker.kill()  # SIGKILL to the whole process group: the main process dies at once
    assert worker.process is not None and worker.process.returncode == -9
    # A process asleep in the kernel dies only when it wakes: it is still there, still in D.
    assert process_state(pool) == "D", kernel_stack(pool)
    control.close()  # the card's last reference: snd_card_free returns, the unbind completes
    wait_until_exited(pool)
    return job
