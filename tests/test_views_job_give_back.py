"""The job page around giving a device back: each warning said once, the consoles the bind
released given back too, and a binding at boot that would take the device again offered
to be stopped."""

from __future__ import annotations

from django.urls import reverse

from tests.web_support import DUO_GPU, DUO_GPU_AUDIO
from webui.hosts.models import Host
from webui.jobs.models import Job, State

CONSOLE_WARNING = (
    "The host's console still holds the boot GPU 0000:01:00.0 (vtcon1); vfio-pci may fail to claim its memory "
    "and the VM may show nothing. Ask for the console to be released."
)


def finished_job(host: Host, action: str, result: dict, message: str, **fields) -> Job:
    return Job.objects.create(
        host=host,
        actor="otto",
        action=action,
        targets=[DUO_GPU],
        state=State.SUCCEEDED,
        result={"outcome": "succeeded", "targets": [DUO_GPU, DUO_GPU_AUDIO], **result},
        message=message,
        **fields,
    )


def job_url(job: Job, name: str = "job") -> str:
    return reverse(name, kwargs={"pk": job.pk})


def test_a_warning_the_message_already_says_is_shown_once(duo, viewer_client):
    job = finished_job(
        duo,
        "bind_vfio",
        {"warnings": [CONSOLE_WARNING]},
        f"Bind to vfio-pci done for {DUO_GPU}, {DUO_GPU_AUDIO}. {CONSOLE_WARNING}",
    )
    html = viewer_client.get(job_url(job)).content.decode()
    assert html.count("Ask for the console to be released.") == 1
    assert 'class="warnings"' not in html


def test_a_warning_the_message_does_not_say_is_listed(duo, viewer_client):
    job = finished_job(
        duo, "bind_vfio", {"outcome": "unchanged", "warnings": ["Bind that group too."]}, "Nothing to do."
    )
    html = viewer_client.get(job_url(job)).content.decode()
    assert '<ul class="warnings"><li>Bind that group too.</li></ul>' in html
