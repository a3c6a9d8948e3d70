"""Job pages: the list, one job followed live (286 when it ends), undo and give back."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from tests.web_support import DUO_GPU, DUO_GPU_AUDIO, DUO_GPU_GROUP  # noqa: E402
from webui.hosts.models import Host
from webui.jobs.models import Job, State

NOW = time.time()


def bind_job(host: Host, state: str = State.SUCCEEDED, **fields) -> Job:
    defaults = {
        "actor": "otto",
        "action": "bind_vfio",
        "targets": [DUO_GPU],
        "parameters": {"confirm": None, "release_console": False},
        "state": state,
        "steps": [
            {
                "name": "validate",
                "target": DUO_GPU,
                "started": NOW,
                "finished": NOW + 0.004,
                "ok": True,
                "detail": f"IOMMU group 2: {DUO_GPU}, {DUO_GPU_AUDIO} go to vfio-pci",
            },
            {"name": "bind", "target": DUO_GPU, "started": NOW + 0.01, "finished": None, "ok": None, "detail": ""},
        ],  # fmt: skip
        "result": {
            "outcome": "succeeded",
            "state_before": {
                "functions": {
                    DUO_GPU: {"driver": "nouveau", "driver_override": None},
                    DUO_GPU_AUDIO: {"driver": "snd_hda_intel", "driver_override": None},
                }
            },
            "state_after": {"functions": {DUO_GPU: {"driver": "vfio-pci"}}},
            "warnings": ["The host's console still holds the boot GPU (efifb)."],
        },
        "message": "Bind to vfio-pci done for 0000:01:00.0, 0000:01:00.1.",
    }
    defaults.update(fields)
    return Job.objects.create(host=host, **defaults)


def job_url(job: Job, name: str = "job") -> str:
    return reverse(name, kwargs={"pk": job.pk})


def test_the_job_page_shows_steps_with_times_outcome_warnings_and_states(duo, viewer_client):
    job = bind_job(duo)
    html = viewer_client.get(job_url(job)).content.decode()
    assert f"Job {job.pk}: Bind to vfio-pci" in html
    assert "Succeeded" in html and "Bind to vfio-pci done for 0000:01:00.0, 0000:01:00.1." in html
    assert "validate" in html and "4 ms" in html and "go to vfio-pci" in html
    assert "The host&#x27;s console still holds the boot GPU (efifb)." in html
    assert "State before and after" in html and "snd_hda_intel" in html


def test_an_unfinished_job_polls_and_a_finished_one_does_not(duo, viewer_client):
    running = bind_job(duo, state=State.RUNNING)
    html = viewer_client.get(job_url(running)).content.decode()
    assert 'hx-trigger="load delay:0.5s, every 1s"' in html
    done = bind_job(duo)
    assert "hx-trigger" not in viewer_client.get(job_url(done)).content.decode()


def test_the_poll_answers_200_while_the_job_runs_and_286_when_it_has_ended(duo, viewer_client):
    job = bind_job(duo, state=State.RUNNING)
    poll = viewer_client.get(job_url(job), HTTP_HX_REQUEST="true")
    assert poll.status_code == 200 and "<html" not in poll.content.decode()
    assert "Running" in poll.content.decode()
    Job.objects.filter(pk=job.pk).update(state=State.SUCCEEDED)
    last = viewer_client.get(job_url(job), HTTP_HX_REQUEST="true")
    assert last.status_code == 286
    assert "Succeeded" in last.content.decode()  # htmx swaps this last answer in
    assert "HX-Refresh" not in last
    # A page built around the job (a wizard step) asks to be reloaded when it ends.
    assert viewer_client.get(job_url(job) + "?then=reload", HTTP_HX_REQUEST="true")["HX-Refresh"] == "true"


def test_a_failed_job_says_what_went_wrong_and_what_to_do(duo, viewer_client):
    job = bind_job(
        duo,
        state=State.ROLLED_BACK,
        message="Bind to vfio-pci failed and every change was undone: vfio-pci did not take 0000:01:00.0.",
        result={"outcome": "rolled_back", "error": {"message": "vfio-pci did not take 0000:01:00.0.",
                                                     "hint": "Check dmesg for vfio-pci errors."}},
    )  # fmt: skip
    html = viewer_client.get(job_url(job)).content.decode()
    assert "failed and every change was undone" in html
    assert "What to do:</strong> Check dmesg for vfio-pci errors." in html
    assert "Give back to the host" not in html


def test_the_job_list_filters_by_host_state_and_action(duo, viewer_client):
    other = Host.objects.create(name="other")
    bind_job(duo)
    bind_job(other, state=State.FAILED)
    Job.objects.create(host=duo, actor="otto", action="scan", state=State.QUEUED)

    def state_badges(query: dict[str, str]) -> int:
        # In the list, not the header: a host whose worker never beat is marked offline there.
        html = viewer_client.get(reverse("jobs"), query).content.decode()
        return html.split("</header>", 1)[-1].count('class="badge badge-')

    assert state_badges({}) == 3
    assert state_badges({"host": "other"}) == 1
    assert state_badges({"state": "queued"}) == 1
    assert "Scan the host" in viewer_client.get(reverse("jobs"), {"action": "scan"}).content.decode()


def test_give_back_restores_the_drivers_the_bind_recorded(duo, operator_client, test_broker):
    job = bind_job(duo)
    assert "Give back to the host" in operator_client.get(job_url(job)).content.decode()
    response = operator_client.post(job_url(job, "job_give_back"))
    made = Job.objects.get(action="restore_driver")
    assert response["Location"] == job_url(made)
    assert made.targets == [DUO_GPU]
    assert made.parameters == {"previous_drivers": {DUO_GPU: "nouveau", DUO_GPU_AUDIO: "snd_hda_intel"}}


def test_give_back_is_refused_for_a_job_that_bound_nothing(duo, operator_client, test_broker):
    job = bind_job(duo, state=State.FAILED)
    response = operator_client.post(job_url(job, "job_give_back"), follow=True)
    assert "did not bind anything to vfio-pci" in response.content.decode()
    assert not Job.objects.filter(action="restore_driver").exists()


def test_undo_submits_an_undo_change_for_a_persistence_job(duo, operator_client, test_broker):
    job = Job.objects.create(
        host=duo, actor="otto", action="persist_binding", targets=[DUO_GPU], state=State.SUCCEEDED,
        result={"outcome": "succeeded", "undo": {"files": [{"path": "etc/modprobe.d/x.conf"}]},
                "plan": {"diff": "--- /dev/null\n+++ b/etc/modprobe.d/x.conf\n+softdep\n", "commands": [], "notes": []}},
    )  # fmt: skip
    page = operator_client.get(job_url(job)).content.decode()
    assert "Undo this change" in page and "+softdep" in page
    operator_client.post(job_url(job, "job_undo"))
    undo = Job.objects.get(action="undo_change")
    assert undo.parameters == {"undo_of": job.pk, "force": False}
    assert (
        f'Undone by <a href="{job_url(undo)}">job {undo.pk}</a>' in operator_client.get(job_url(job)).content.decode()
    )


def test_undo_is_refused_for_a_bind_job(duo, operator_client, test_broker):
    job = bind_job(duo)
    response = operator_client.post(job_url(job, "job_undo"), follow=True)
    assert (
        "left nothing to undo: only a finished persistence job or VM change can be undone" in response.content.decode()
    )
    assert not Job.objects.filter(action="undo_change").exists()


def test_an_unknown_job_is_404(db, viewer_client):
    assert viewer_client.get(reverse("job", kwargs={"pk": 4242})).status_code == 404


@pytest.mark.worker
def test_a_bind_from_the_groups_page_runs_on_the_worker_and_the_pages_show_vfio(start_worker, tmp_path):
    """The whole path through a real worker: the page's button, the job page, the fresh snapshot."""
    from passthrough.hosttrees import realworld
    from passthrough.hosttrees.tree import write_tree
    from passthrough.pci.scan import scan
    from tests.web_support import make_user, signed_in
    from tests.worker_support import wait_for_job
    from webui.accounts.roles import OPERATOR

    root = write_tree(realworld.asokolsky_duo(), tmp_path / "duo")
    start_worker(root, "duo")
    client = signed_in(make_user("otto", OPERATOR))
    response = client.post(reverse("bind_group", kwargs={"host": "duo", "group": DUO_GPU_GROUP}))
    job = wait_for_job(Job.objects.get())
    assert job.state == State.SUCCEEDED, job.message
    html = client.get(response["Location"]).content.decode()
    assert "Succeeded" in html and "drivers_probe: now on vfio-pci" in html
    assert client.get(response["Location"], HTTP_HX_REQUEST="true").status_code == 286
    assert scan(root).device(DUO_GPU_AUDIO).driver == "vfio-pci"
    groups = client.get(reverse("groups", kwargs={"host": "duo"}), {"q": "gt 1030"}).content.decode()
    assert groups.count("<code>vfio-pci</code>") == 2


def test_without_javascript_an_unfinished_job_page_reloads_itself_until_the_job_ends(duo, viewer_client):
    refresh = '<noscript><meta http-equiv="refresh" content="2"></noscript>'
    assert refresh in viewer_client.get(job_url(bind_job(duo, state=State.QUEUED))).content.decode()
    assert refresh in viewer_client.get(job_url(bind_job(duo, state=State.RUNNING))).content.decode()
    assert refresh not in viewer_client.get(job_url(bind_job(duo))).content.decode()


def test_a_scan_of_the_whole_host_says_it_is_done_without_an_empty_list(duo, operator):
    from passthrough.host import HostTree
    from webui.jobs.runner import execute

    job = Job.objects.create(host=duo, user=operator, actor="otto", action="scan", state=State.RUNNING)
    assert execute(job, HostTree(duo.root)).message == "Scan the host done."


def test_commands_in_a_jobs_words_show_as_code(duo, viewer_client):
    job = bind_job(
        duo,
        message="Bind to vfio-pci done for 0000:01:00.0. Run `update-initramfs -u` to keep it.",
        result={"outcome": "succeeded", "plan": {"diff": "", "commands": [], "notes": ["Applied by `dracut -f`."]}},
    )
    html = viewer_client.get(job_url(job)).content.decode()
    assert "Run <code>update-initramfs -u</code> to keep it." in html
    assert "Applied by <code>dracut -f</code>." in html
    assert "`" not in html[html.index('id="job-progress"') :]
