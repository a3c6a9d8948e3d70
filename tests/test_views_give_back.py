"""A group on vfio-pci is given back from the devices and device pages; errors show by the group."""

from __future__ import annotations

from django.urls import reverse

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from tests.web_support import DUO_NVME, DUO_NVME_GROUP, snapshot_host  # noqa: E402
from webui.jobs.models import Job, State

GPU = "0000:01:00.0"
AUDIO = "0000:01:00.1"
GROUP = 2


def vfio_host(tmp_path, name: str = "vfiohost"):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=GROUP),
            FunctionSpec(GPU, "10de", "1d01", "030000", driver="vfio-pci", iommu_group=GROUP, parent="0000:00:01.0"),
            FunctionSpec(AUDIO, "10de", "0fb8", "040300", driver="vfio-pci", iommu_group=GROUP, parent="0000:00:01.0"),
            FunctionSpec("0000:02:00.0", "8086", "1539", "020000", driver="igb", iommu_group=3),
        ]
    )  # fmt: skip
    host, _ = snapshot_host(name, spec, tmp_path / name)
    return host


def bind_job(host, state=State.SUCCEEDED, **fields) -> Job:
    values = {
        "actor": "otto",
        "action": "bind_vfio",
        "targets": [GPU],
        "parameters": {"confirm": None, "release_console": False},
        "state": state,
        "group": GROUP,
        "result": {
            "state_before": {
                "functions": {GPU: {"driver": "nouveau"}, AUDIO: {"driver": "snd_hda_intel"}},
            }
        },
    }
    values.update(fields)
    return Job.objects.create(host=host, **values)


def restore_job(host, state=State.SUCCEEDED, **fields) -> Job:
    values = {"actor": "otto", "action": "restore_driver", "targets": [GPU], "state": state, "group": GROUP}
    values.update(fields)
    return Job.objects.create(host=host, **values)


def group_html(html: str, group: int) -> str:
    start = html.index(f'id="group-{group}"')
    return html[start : html.find("</tbody>", start)]


def give_back_url(host: str = "vfiohost", group: int = GROUP) -> str:
    return reverse("give_back_group", kwargs={"host": host, "group": group})


def test_a_group_on_vfio_is_offered_give_back_and_not_pass_through(db, operator_client, tmp_path):
    vfio_host(tmp_path)
    html = operator_client.get(reverse("groups", kwargs={"host": "vfiohost"})).content.decode()
    group = group_html(html, GROUP)
    assert "On vfio-pci now" in group and "Give back to the host" in group
    assert f'formaction="{give_back_url()}"' in group
    assert "Pass through this group" not in group
    assert "Pass through this group" in group_html(html, 3)  # the NIC on igb still can go


def test_the_device_page_of_a_function_on_vfio_offers_give_back_not_pass_through(db, operator_client, tmp_path):
    vfio_host(tmp_path)
    html = operator_client.get(reverse("device", kwargs={"host": "vfiohost", "address": GPU})).content.decode()
    assert "Pass this group through" not in html and "Pass through this group" not in html
    assert f'action="{give_back_url()}"' in html and "Give back to the host" in html


def test_viewers_see_that_the_group_is_on_vfio_without_a_button(db, viewer_client, tmp_path):
    vfio_host(tmp_path)
    group = group_html(viewer_client.get(reverse("groups", kwargs={"host": "vfiohost"})).content.decode(), GROUP)
    assert "On vfio-pci now" in group and "formaction" not in group


def test_give_back_from_the_groups_page_restores_the_drivers_its_bind_job_recorded(
    db, operator_client, tmp_path, test_broker
):
    host = vfio_host(tmp_path)
    bind = bind_job(host)
    response = operator_client.post(give_back_url())
    made = Job.objects.get(action="restore_driver")
    assert response["Location"] == reverse("job", kwargs={"pk": made.pk})
    assert made.targets == bind.targets
    assert made.parameters == {"previous_drivers": {GPU: "nouveau", AUDIO: "snd_hda_intel"}}


def test_give_back_from_the_groups_page_also_puts_back_the_consoles_its_bind_released(
    db, operator_client, tmp_path, test_broker
):
    host = vfio_host(tmp_path)
    bind_job(
        host,
        result={
            "state_before": {"functions": {GPU: {"driver": "nouveau"}}, "console": {"vtcon1": "1"}},
            "state_after": {"functions": {GPU: {"driver": "vfio-pci"}}, "console": {"vtcon1": "0"}},
        },
    )
    operator_client.post(give_back_url())
    made = Job.objects.get(action="restore_driver")
    assert made.parameters == {"previous_drivers": {GPU: "nouveau"}, "released_console": {"vtcon1": None}}


def test_give_back_without_a_bind_job_lets_the_kernel_pick_the_drivers(db, operator_client, tmp_path, test_broker):
    vfio_host(tmp_path)  # bound at boot, or by hand: no job recorded what came before
    operator_client.post(give_back_url())
    made = Job.objects.get(action="restore_driver")
    assert made.targets == [GPU] and made.parameters == {"previous_drivers": None}


def test_a_refused_give_back_is_said_next_to_its_group_not_at_the_top(db, operator_client, tmp_path, dead_broker):
    vfio_host(tmp_path)
    response = operator_client.post(give_back_url())
    assert response["Location"] == reverse("groups", kwargs={"host": "vfiohost"}) + f"#group-{GROUP}"
    html = operator_client.get(response["Location"]).content.decode()
    assert "The job queue (Redis) cannot be reached" in group_html(html, GROUP)
    assert 'class="messages"' not in html  # not up at the top, where the anchor scrolls it away
    again = operator_client.get(reverse("groups", kwargs={"host": "vfiohost"})).content.decode()
    assert "cannot be reached" not in again  # said once


def test_give_back_of_a_group_not_on_vfio_is_refused_by_the_group(db, operator_client, tmp_path, test_broker):
    vfio_host(tmp_path)
    response = operator_client.post(give_back_url(group=3))
    html = operator_client.get(response["Location"]).content.decode()
    assert "Nothing to give back: no function of IOMMU group 3 is on vfio-pci." in group_html(html, 3)
    assert not Job.objects.exists()


def test_a_refused_confirmation_is_said_on_the_review_next_to_the_confirmation(duo, operator_client):
    url = reverse("bind_group", kwargs={"host": "duo", "group": DUO_NVME_GROUP})
    response = operator_client.post(url, {"confirm": "yes"})
    assert response["Location"] == reverse("review_group", kwargs={"host": "duo", "group": DUO_NVME_GROUP}) + "#decide"
    html = operator_client.get(response["Location"]).content.decode()
    box = html[html.index('class="confirm-box"') :]
    assert "(“yes”) is not the one asked for" in box[: box.index("</form>")]
    assert f"type {DUO_NVME} as the confirmation" in html
    assert 'class="messages"' not in html
    assert not Job.objects.exists()


# given_back_by: whether a bind job's group was given back, for the job page ----------------------


def test_a_bind_job_is_given_back_by_the_first_restore_of_its_group_after_it(db, tmp_path):
    from webui.wizard.giveback import given_back_by

    host = vfio_host(tmp_path)
    restore_job(host)  # before the bind: not its give-back
    bind = bind_job(host)
    assert given_back_by(bind) is None
    restore_job(host, state=State.FAILED)  # failed: the group is still on vfio-pci
    restore_job(host, targets=["0000:02:00.0"], group=3)  # another group
    assert given_back_by(bind) is None
    restored = restore_job(host, state=State.RUNNING)
    assert given_back_by(bind) == restored  # on its way back: no second give-back
    assert given_back_by(restored) is None  # only bind jobs are given back


def test_a_bind_job_without_a_group_is_matched_by_its_functions(db, tmp_path):
    from webui.wizard.giveback import given_back_by

    host = vfio_host(tmp_path)
    bind = bind_job(host, group=None)
    restored = restore_job(host, group=None, targets=[AUDIO])
    assert given_back_by(bind) == restored


def test_give_back_does_not_reuse_the_record_of_a_bind_already_given_back(db, operator_client, tmp_path, test_broker):
    host = vfio_host(tmp_path)
    bind_job(host)
    first = restore_job(host)
    operator_client.post(give_back_url())
    made = Job.objects.filter(action="restore_driver").exclude(pk=first.pk).get()
    assert made.parameters == {"previous_drivers": None}
