"""The job page around giving a device back: each warning said once, the consoles the bind
released given back too, and a binding at boot that would take the device again offered
to be stopped."""

from __future__ import annotations

from django.urls import reverse

from tests.web_support import DUO_GPU, DUO_GPU_AUDIO
from webui.hosts.models import Host
from webui.jobs.messages import task_arguments, validate_arguments
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


def bind_that_released_the_console(host: Host) -> Job:
    console_before = {"vtcon1": "1", "efi-framebuffer.0": "efi-framebuffer"}
    console_after = {"vtcon1": "0", "efi-framebuffer.0": None}
    functions = {DUO_GPU: {"driver": "nouveau", "driver_override": None}, DUO_GPU_AUDIO: {"driver": "snd_hda_intel"}}
    return finished_job(
        host,
        "bind_vfio",
        {
            "state_before": {"functions": functions, "console": console_before},
            "state_after": {"functions": {DUO_GPU: {"driver": "vfio-pci"}}, "console": console_after},
        },
        "Bind to vfio-pci done.",
        parameters={"confirm": DUO_GPU, "release_console": True},
    )


def give_back_job(host: Host, bound_at_boot: list[str]) -> Job:
    state = {"functions": {DUO_GPU: {"driver": "nouveau"}}, "bound_at_boot": bound_at_boot}
    return finished_job(host, "restore_driver", {"state_before": state, "state_after": state}, "Give back done.")


def test_give_back_carries_the_consoles_the_bind_released(duo, operator_client, test_broker):
    job = bind_that_released_the_console(duo)

    operator_client.post(job_url(job, "job_give_back"))

    made = Job.objects.get(action="restore_driver")
    assert made.parameters == {
        "previous_drivers": {DUO_GPU: "nouveau", DUO_GPU_AUDIO: "snd_hda_intel"},
        "released_console": {"vtcon1": None, "efi-framebuffer.0": "efi-framebuffer"},
    }
    arguments = task_arguments(made)
    assert validate_arguments("restore_driver", (), arguments) == arguments


def test_a_give_back_that_left_the_binding_at_boot_offers_to_stop_it(duo, operator_client, test_broker):
    job = give_back_job(duo, [DUO_GPU, DUO_GPU_AUDIO])
    page = operator_client.get(job_url(job)).content.decode()
    assert "Also stop binding it at boot" in page and "Until then every boot binds" in page

    response = operator_client.post(job_url(job, "job_give_back"))

    made = Job.objects.get(action="unpersist_binding")
    assert response["Location"] == job_url(made)
    assert made.targets == [DUO_GPU, DUO_GPU_AUDIO]
    assert made.parameters == {"fingerprint": None, "after_give_back": job.pk}
    page = operator_client.get(job_url(job)).content.decode()
    assert "Also stop binding it at boot" not in page and f'stopped by <a href="{job_url(made)}">job {made.pk}' in page
    operator_client.post(job_url(job, "job_give_back"))
    assert Job.objects.filter(action="unpersist_binding").count() == 1


def test_a_give_back_with_nothing_bound_at_boot_offers_nothing_more(duo, operator_client, test_broker):
    job = give_back_job(duo, [])
    assert "stop binding it at boot" not in operator_client.get(job_url(job)).content.decode()
    response = operator_client.post(job_url(job, "job_give_back"), follow=True)
    assert "nothing to give back" in response.content.decode()
    assert not Job.objects.filter(action="unpersist_binding").exists()


def test_a_viewer_is_not_offered_to_stop_the_binding_at_boot(duo, viewer_client):
    job = give_back_job(duo, [DUO_GPU])
    assert "Also stop binding it at boot" not in viewer_client.get(job_url(job)).content.decode()


def test_a_bind_already_given_back_says_by_which_job_and_offers_give_back_no_more(duo, operator_client, test_broker):
    job = bind_that_released_the_console(duo)
    assert "Give back to the host</button>" in operator_client.get(job_url(job)).content.decode()
    operator_client.post(job_url(job, "job_give_back"))
    made = Job.objects.get(action="restore_driver")
    html = operator_client.get(job_url(job)).content.decode()
    assert "Give back to the host</button>" not in html
    assert f'Given back by <a href="{job_url(made)}">job {made.pk}</a>' in html
    operator_client.post(job_url(job, "job_give_back"))  # a second click makes no second job
    assert Job.objects.filter(action="restore_driver").count() == 1
