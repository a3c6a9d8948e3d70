"""The setup wizard: five steps, resumable, none skipped, each choice checked against the snapshot."""

from __future__ import annotations

from django.urls import reverse

from tests.web_support import (  # noqa: E402
    DUO_CHIPSET_GROUP,
    DUO_GPU,
    DUO_GPU_AUDIO,
    DUO_NVME,
    no_iommu_host,
    snapshot_host,
)
from webui.jobs.models import GroupLock, Job, State
from webui.wizard.models import WizardState


def step(number: int, host: str = "duo") -> str:
    return reverse("wizard_step", kwargs={"host": host, "step": number})


def submit(number: int, host: str = "duo") -> str:
    return reverse("wizard_submit", kwargs={"host": host, "step": number})


def state_of(user) -> WizardState:
    return WizardState.objects.get(user=user)


def finish(action: str, **fields) -> Job:
    """What the worker does at the end of a job: its outcome stored, its group lock released."""
    job = Job.objects.get(action=action)
    Job.objects.filter(pk=job.pk).update(state=fields.pop("state", State.SUCCEEDED), **fields)
    GroupLock.objects.filter(job=job).delete()
    return job


def test_home_is_the_wizard_until_a_device_is_passed_through(duo, viewer_client):
    assert viewer_client.get(reverse("home"))["Location"] == reverse("host_home", kwargs={"host": "duo"})
    assert viewer_client.get(reverse("host_home", kwargs={"host": "duo"}))["Location"] == reverse(
        "wizard", kwargs={"host": "duo"}
    )
    assert viewer_client.get(reverse("wizard", kwargs={"host": "duo"}))["Location"] == step(1)
    html = viewer_client.get(step(1)).content.decode()
    assert "Step 1 of 5" in html and "Check this host" in html and "Ready for passthrough." in html


def test_home_is_the_dashboard_once_a_function_is_on_vfio(db, viewer_client, tmp_path):
    from passthrough.hosttrees import realworld

    spec = realworld.asokolsky_duo()
    for function in spec.functions:
        if function.address in (DUO_GPU, DUO_GPU_AUDIO):
            function.driver = "vfio-pci"
    snapshot_host("duo", spec, tmp_path / "duo")
    html = viewer_client.get(reverse("host_home", kwargs={"host": "duo"})).content.decode()
    assert "On vfio-pci now" in html and "GP108 [GeForce GT 1030]" in html
    assert "Open the setup wizard" in html


def test_a_failing_check_must_be_read_before_going_on(db, operator, operator_client, tmp_path):
    snapshot_host("bare", no_iommu_host(), tmp_path / "bare")
    page = operator_client.get(step(1, "bare")).content.decode()
    assert 'name="acknowledged" value="iommu"' in page and "I have read this fix" in page
    response = operator_client.post(submit(1, "bare"), follow=True)
    assert response.redirect_chain[-1][0] == step(1, "bare")
    assert "Read the fix of each" in response.content.decode()
    assert "IOMMU present and enabled" in response.content.decode()
    failing = ["iommu"] + [c for c in ("vfio_modules", "cpu_virtualization") if f'value="{c}"' in page]
    response = operator_client.post(submit(1, "bare"), {"acknowledged": failing})
    assert response["Location"] == step(2, "bare")
    assert "iommu" in state_of(operator).acknowledged


def test_a_step_not_reached_sends_the_user_back_to_the_one_to_finish(duo, operator_client):
    operator_client.get(step(1))
    response = operator_client.get(step(4), follow=True)
    assert response.redirect_chain[-1][0] == step(1)
    assert "Finish step 1 (Check this host) first." in response.content.decode()


def test_the_device_list_puts_gpus_first_and_says_what_moves_with_them(duo, operator_client):
    operator_client.post(submit(1))
    html = operator_client.get(step(2)).content.decode()
    gpus = [html.index("CoffeeLake-S GT2"), html.index("GP108 [GeForce GT 1030]")]
    assert max(gpus) < html.index("I211 Gigabit Network Connection") < html.index("SN550 NVMe")
    assert (
        "also moves <code>01:00.1</code> GP108 High Definition Audio Controller: another function of the same card"
        in html
    )
    assert "You will be asked to confirm." in html  # the root NVMe
    chipset = html[html.index("Z370 Chipset LPC/eSPI Controller") - 400 :]
    assert "disabled" in chipset[:600] and "the host cannot run without it" in chipset


def test_picking_the_gpu_plans_binding_at_boot_and_the_review_says_exactly_what_changes(
    duo, operator, operator_client, test_broker
):
    operator_client.post(submit(1))
    response = operator_client.post(submit(2), {"device": DUO_GPU})
    assert response["Location"] == step(3)
    plan_job = Job.objects.get()
    assert plan_job.action == "plan_change" and plan_job.targets == [DUO_GPU, DUO_GPU_AUDIO]
    assert plan_job.parameters["change"] == "persist_binding"
    html = operator_client.get(step(3)).content.decode()
    for words in ("What moves to vfio-pci", "<code>01:00.0</code>", "<code>01:00.1</code>", "Stay with the host",
                  "Bind at every boot", "working out the file changes", "What could go wrong", "How to undo it",
                  "Give back to the host", "What could not be checked"):  # fmt: skip
        assert words in html
    assert 'hx-trigger="load delay:0.5s, every 1s"' in html  # the plan job is followed live


def test_step_3_says_what_could_not_be_checked_for_a_nic_without_a_route_table(duo, operator_client, test_broker):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": "0000:03:00.0"})  # the I211: the duo capture has no route table
    html = operator_client.get(step(3)).content.decode()
    assert "What could not be checked" in html
    assert "the NIC carrying your SSH session cannot be told apart" in html


def test_the_review_shows_the_plan_jobs_diff_once_it_has_run(duo, operator, operator_client, test_broker):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_GPU})
    diff = '--- /dev/null\n+++ b/etc/udev/rules.d/90-passthrough-wizard-vfio.rules\n+ACTION=="add"\n'
    finish("plan_change", result={"plan": {"diff": diff, "commands": ["update-initramfs -u -k all"], "notes": []}})
    html = operator_client.get(step(3)).content.decode()
    assert "+++ b/etc/udev/rules.d/90-passthrough-wizard-vfio.rules" in html
    assert "update-initramfs -u -k all" in html


def test_a_device_whose_group_cannot_go_is_refused_in_words(duo, operator_client, test_broker):
    operator_client.post(submit(1))
    response = operator_client.post(submit(2), {"device": "0000:00:1f.0"}, follow=True)
    assert f"IOMMU group {DUO_CHIPSET_GROUP} cannot be passed through" in response.content.decode()
    assert response.redirect_chain[-1][0] == step(2)
    assert not Job.objects.exists()


def test_a_host_critical_device_needs_its_phrase_at_the_review(duo, operator, operator_client, test_broker):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_NVME})
    assert not Job.objects.exists()  # its plan needs the confirmation first
    html = operator_client.get(step(3)).content.decode()
    assert f"type <code>{DUO_NVME}</code>" in html and "the root filesystem" in html
    response = operator_client.post(submit(3), {"confirm": "sure"}, follow=True)
    assert f"(“sure”) is not the one asked for. To go ahead anyway, type {DUO_NVME}" in response.content.decode()
    assert operator_client.post(submit(3), {"confirm": DUO_NVME})["Location"] == step(4)
    assert state_of(operator).confirm == DUO_NVME


def test_apply_binds_the_group_and_step_5_needs_it_done(duo, operator, operator_client, test_broker):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_GPU})
    finish("plan_change")
    operator_client.post(submit(3), {})
    assert "Apply: bind to vfio-pci" in operator_client.get(step(4)).content.decode()
    refused = operator_client.post(submit(4), {"do": "next"}, follow=True)
    assert "Apply the binding first" in refused.content.decode()
    operator_client.post(submit(4), {"do": "bind"})
    bind = Job.objects.get(action="bind_vfio")
    assert bind.targets == [DUO_GPU] and bind.parameters == {"confirm": None, "release_console": False}
    assert state_of(operator).bind_job == bind
    assert f'hx-get="/jobs/{bind.pk}/?then=reload"' in operator_client.get(step(4)).content.decode()
    finish("bind_vfio")
    assert "Continue: give it to a VM" in operator_client.get(step(4)).content.decode()
    assert operator_client.post(submit(4), {"do": "next"})["Location"] == step(5)


def test_binding_at_boot_is_written_with_the_plans_fingerprint(duo, operator, operator_client, test_broker):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_GPU})
    plan = finish("plan_change", result={"plan": {"diff": "+x\n", "fingerprint": "abc123"}})
    operator_client.post(submit(3), {"persist": "on"})
    assert state_of(operator).persist
    operator_client.post(submit(4), {"do": "bind"})
    finish("bind_vfio")
    assert "Write these files" in operator_client.get(step(4)).content.decode()
    operator_client.post(submit(4), {"do": "persist"})
    persist = Job.objects.get(action="persist_binding")
    assert persist.targets == [DUO_GPU, DUO_GPU_AUDIO]
    assert persist.parameters["fingerprint"] == "abc123"
    assert persist.parameters["native_drivers"] == plan.parameters["native_drivers"]


def test_your_vm_shows_the_chosen_hypervisors_config_and_finishing_makes_home_the_dashboard(
    duo, operator, operator_client, test_broker
):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_GPU})
    finish("plan_change")
    operator_client.post(submit(3), {})
    operator_client.post(submit(4), {"do": "bind"})
    finish("bind_vfio")
    operator_client.post(submit(4), {"do": "next"})
    html = operator_client.get(step(5), {"target": "proxmox"}).content.decode()
    assert "Step 5 of 5" in html and "passthrough-vm.conf" in html and "hostpci0" in html
    assert 'download="passthrough-vm.conf"' in html and 'data-copy="#config-text"' in html
    response = operator_client.post(submit(5), {"target": "proxmox"})
    assert response["Location"] == reverse("host_home", kwargs={"host": "duo"})
    assert state_of(operator).finished is not None and state_of(operator).target == "proxmox"
    assert "The wizard is done." in operator_client.get(response["Location"]).content.decode()


def test_the_wizard_resumes_where_the_user_left_it(duo, operator, operator_client, test_broker):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_GPU})
    from tests.web_support import signed_in

    again = signed_in(operator)  # a new browser session
    assert again.get(reverse("wizard", kwargs={"host": "duo"}))["Location"] == step(3)
    assert f'value="{DUO_GPU}" checked' in again.get(step(2)).content.decode()


def test_start_over_forgets_the_choices(duo, operator, operator_client, test_broker):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_GPU})
    operator_client.post(reverse("wizard_restart", kwargs={"host": "duo"}))
    state = state_of(operator)
    assert (state.step, state.reached, state.device, state.plan_job) == (1, 1, "", None)


def test_viewers_read_the_steps_but_the_buttons_are_disabled(duo, viewer_client):
    html = viewer_client.get(step(1)).content.decode()
    assert "Saving choices and running jobs needs an operator account." in html
    assert 'class="primary" disabled' in html


def test_apply_while_the_plan_still_runs_is_refused_in_words(duo, operator_client, test_broker):
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_GPU})
    operator_client.post(submit(3), {})
    response = operator_client.post(submit(4), {"do": "bind"}, follow=True)
    assert "IOMMU group 2 on duo already has a job in progress" in response.content.decode()
    assert not Job.objects.filter(action="bind_vfio").exists()


def test_without_javascript_steps_3_and_4_reload_themselves_while_their_job_runs(duo, operator_client, test_broker):
    refresh = '<noscript><meta http-equiv="refresh" content="2"></noscript>'
    operator_client.post(submit(1))
    operator_client.post(submit(2), {"device": DUO_GPU})
    assert refresh in operator_client.get(step(3)).content.decode()  # the plan job is queued
    finish("plan_change", result={"plan": {"diff": "", "commands": [], "notes": []}})
    assert refresh not in operator_client.get(step(3)).content.decode()
    operator_client.post(submit(3), {})
    operator_client.post(submit(4), {"do": "bind"})
    assert refresh in operator_client.get(step(4)).content.decode()  # the bind job is queued
    finish("bind_vfio")
    assert refresh not in operator_client.get(step(4)).content.decode()
