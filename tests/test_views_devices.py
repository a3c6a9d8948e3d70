"""The devices-and-groups page, one device's page, and "Pass through this group"."""

from __future__ import annotations

import gzip

import pytest
from django.urls import reverse

from tests.web_support import (  # noqa: E402
    DUO_CHIPSET_GROUP,
    DUO_GPU,
    DUO_GPU_AUDIO,
    DUO_GPU_GROUP,
    DUO_NVME,
    DUO_NVME_GROUP,
)
from webui.jobs.models import Job, State

GROUPS = reverse("groups", kwargs={"host": "duo"})


def bind_url(group: int) -> str:
    return reverse("bind_group", kwargs={"host": "duo", "group": group})


def shown_groups(html: str) -> list[int]:
    import re

    return [int(number) for number in re.findall(r'<tbody class="group [^"]*" id="group-(\d+)"', html)]


def test_every_group_is_listed_with_every_member(duo, viewer_client):
    html = viewer_client.get(GROUPS).content.decode()
    assert shown_groups(html) == list(range(15))
    gpu_group = html[html.index('id="group-2"') : html.index('id="group-3"')]
    for address in ("00:01.0", "01:00.0", "01:00.1"):
        assert f"<code>{address}</code>" in gpu_group
    assert "GP108 [GeForce GT 1030]" in gpu_group
    assert "The 2 functions of one device go together" in gpu_group
    assert "bridge: stays with the host" in gpu_group


def test_the_root_filesystem_nvme_is_marked_host_critical_and_asks_for_its_phrase(duo, operator_client):
    html = operator_client.get(GROUPS).content.decode()
    group = html[html.index(f'id="group-{DUO_NVME_GROUP}"') :]
    assert "Host-critical: needs your confirmation" in group
    assert "⚠ host-critical: the root filesystem" in group
    assert 'href="/hosts/duo/groups/14/review/"' in group  # the review asks for the phrase


def test_a_group_that_cannot_go_has_its_button_disabled_with_the_reason(duo, operator_client):
    html = operator_client.get(GROUPS).content.decode()
    group = html[html.index(f'id="group-{DUO_CHIPSET_GROUP}"') : html.index(f'id="group-{DUO_CHIPSET_GROUP + 1}"')]
    assert "Cannot be passed through" in group
    assert "disabled" in group and "the host cannot run without it" in group
    assert "formaction" not in group and "/review/" not in group


def test_viewers_are_told_they_cannot_run_jobs_and_get_no_button(duo, viewer_client):
    html = viewer_client.get(GROUPS).content.decode()
    assert "viewers cannot run jobs" in html
    assert "formaction" not in html


def test_filtering_by_text_keeps_whole_groups(duo, viewer_client):
    html = viewer_client.get(GROUPS, {"q": "gt 1030"}).content.decode()
    assert shown_groups(html) == [DUO_GPU_GROUP]
    assert "<code>01:00.1</code>" in html and "<code>00:01.0</code>" in html  # its audio and its bridge
    assert "1 of 15 groups match." in html


@pytest.mark.parametrize(
    ("kind", "groups"), [("gpu", [0, DUO_GPU_GROUP]), ("usb", [3]), ("storage", [5, DUO_NVME_GROUP])]
)
def test_filtering_by_kind(duo, viewer_client, kind, groups):
    assert shown_groups(viewer_client.get(GROUPS, {"kind": kind}).content.decode()) == groups


def test_text_and_kind_together_and_no_match_said_in_words(duo, viewer_client):
    assert shown_groups(viewer_client.get(GROUPS, {"q": "nvidia", "kind": "gpu"}).content.decode()) == [2]
    html = viewer_client.get(GROUPS, {"q": "no such device"}).content.decode()
    assert "No group has a device matching that filter." in html


def test_an_unknown_kind_is_said_and_every_group_shown(duo, viewer_client):
    html = viewer_client.get(GROUPS, {"kind": "fpga"}).content.decode()
    assert "Select a valid choice" in html
    assert len(shown_groups(html)) == 15


def test_htmx_gets_only_the_list_and_a_browser_without_javascript_the_whole_page(duo, viewer_client):
    partial = viewer_client.get(GROUPS, {"q": "nvme"}, HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<div id="group-list">') and "<html" not in partial
    assert shown_groups(partial) == [DUO_NVME_GROUP]
    page = viewer_client.get(GROUPS, {"q": "nvme"}).content.decode()
    assert "<html" in page and shown_groups(page) == [DUO_NVME_GROUP]


def test_the_page_is_the_same_whether_compressed_or_not(duo, operator_client):
    plain = operator_client.get(GROUPS)
    packed = operator_client.get(GROUPS, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert packed["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed["Vary"]
    assert "Content-Encoding" not in plain
    unpacked = gzip.decompress(packed.content).decode()
    # Equal but for the CSRF tokens, which are masked afresh on every request.
    import re

    mask = re.compile(r'(value="|X-CSRFToken": ")[A-Za-z0-9]{64}')
    assert mask.sub(r"\1TOKEN", unpacked) == mask.sub(r"\1TOKEN", plain.content.decode())
    assert shown_groups(unpacked) == list(range(15))


def test_pass_through_submits_a_bind_job_and_shows_its_page(duo, operator_client, test_broker):
    response = operator_client.post(bind_url(DUO_GPU_GROUP))
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("job", kwargs={"pk": job.pk})
    assert (job.action, job.targets, job.state) == ("bind_vfio", [DUO_GPU], State.QUEUED)
    assert job.parameters == {"confirm": None, "release_console": False}
    assert job.actor == "otto" and job.group == DUO_GPU_GROUP


def test_a_group_that_is_not_viable_is_refused_in_words_and_nothing_is_queued(duo, operator_client, test_broker):
    response = operator_client.post(bind_url(DUO_CHIPSET_GROUP), follow=True)
    assert f"IOMMU group {DUO_CHIPSET_GROUP} cannot be passed through" in response.content.decode()
    assert "the host cannot run without it" in response.content.decode()
    assert not Job.objects.exists()


def test_a_host_critical_group_needs_its_phrase_typed(duo, operator_client, test_broker):
    response = operator_client.post(bind_url(DUO_NVME_GROUP), {"confirm": "yes"}, follow=True)
    assert f"(“yes”) is not the one asked for. To go ahead anyway, type {DUO_NVME}" in response.content.decode()
    assert not Job.objects.exists()
    operator_client.post(bind_url(DUO_NVME_GROUP), {"confirm": DUO_NVME})
    assert Job.objects.get().parameters == {"confirm": DUO_NVME, "release_console": False}


def test_a_broker_that_is_down_is_said_in_words_and_the_job_closed(duo, operator_client, dead_broker):
    response = operator_client.post(bind_url(DUO_GPU_GROUP), follow=True)
    html = response.content.decode()
    assert "The job queue (Redis) cannot be reached" in html
    assert "Start Redis or check REDIS_URL" in html
    assert Job.objects.get().state == State.FAILED


def test_a_busy_group_is_refused_in_words(duo, operator_client, test_broker):
    operator_client.post(bind_url(DUO_GPU_GROUP))
    response = operator_client.post(bind_url(DUO_GPU_GROUP), follow=True)
    assert f"IOMMU group {DUO_GPU_GROUP} on duo already has a job in progress" in response.content.decode()
    assert Job.objects.count() == 1


def test_the_device_page_has_its_facts_its_group_and_what_moves_with_it(duo, viewer_client):
    html = viewer_client.get(reverse("device", kwargs={"host": "duo", "address": DUO_GPU})).content.decode()
    assert "GP108 [GeForce GT 1030]" in html and "NVIDIA Corporation" in html
    assert "[10de]" in html and "[1d01]" in html and "[030000]" in html
    assert "IOMMU group 2:" in html and "Can be passed through" in html
    assert DUO_GPU_AUDIO[5:] in html  # the audio function that moves with it
    assert "Not SR-IOV capable." in html
    assert "Reset methods" in html


def test_the_host_critical_device_page_says_why(duo, viewer_client):
    html = viewer_client.get(reverse("device", kwargs={"host": "duo", "address": DUO_NVME})).content.decode()
    assert "Host-critical." in html and "the root filesystem" in html


@pytest.mark.parametrize(
    ("host", "address", "words"),
    [
        ("nohost", DUO_GPU, "There is no host named &#x27;nohost&#x27;"),
        ("duo", "0000:09:00.0", "There is no PCI function 0000:09:00.0 on duo"),
        ("duo", "zz:top", "is not a PCI address"),
    ],
)
def test_unknown_hosts_and_devices_get_404_in_words(duo, viewer_client, host, address, words):
    response = viewer_client.get(reverse("device", kwargs={"host": host, "address": address}))
    assert response.status_code == 404
    assert words in response.content.decode()
    assert "Traceback" not in response.content.decode()


def test_an_unknown_group_cannot_be_bound(duo, operator_client):
    assert operator_client.post(bind_url(99)).status_code == 404


def test_a_host_without_a_snapshot_says_so_and_offers_a_scan(db, operator_client):
    from webui.hosts.models import Host

    Host.objects.create(name="fresh")
    html = operator_client.get(reverse("groups", kwargs={"host": "fresh"})).content.decode()
    assert "No picture of fresh yet" in html and "Scan fresh now" in html


@pytest.mark.slow
def test_a_1024_function_host_lists_every_group_with_every_member_on_one_page(db, operator_client, tmp_path):
    import re

    from bench.synthetic import build_synthetic_host
    from tests.web_support import snapshot_host

    _, snapshot = snapshot_host("big", build_synthetic_host(1024), tmp_path / "big")
    groups = snapshot.inventory["groups"]
    html = gzip.decompress(
        operator_client.get(reverse("groups", kwargs={"host": "big"}), HTTP_ACCEPT_ENCODING="gzip").content
    ).decode()
    assert shown_groups(html) == [group["id"] for group in groups]
    assert len(re.findall(r'<td><a href="/hosts/big/devices/[0-9a-f:.]+/"><code>', html)) == sum(
        len(group["devices"]) for group in groups
    )
    # sign out (in the wide header and in the narrow menu), the filter, and one form for every group's button
    assert html.count("<form") == 4


# Reset and SR-IOV from the device page ------------------------------------------------------


@pytest.fixture
def e810(db, tmp_path):
    from passthrough.hosttrees import realworld
    from tests.web_support import snapshot_host

    host, _ = snapshot_host("e810", realworld.prometheus_e810(numvfs=2), tmp_path / "e810")
    return host


def test_a_device_under_its_host_driver_is_not_offered_a_reset(duo, operator_client, test_broker):
    nic = "0000:03:00.0"  # the I211 on igb
    page = operator_client.get(reverse("device", kwargs={"host": "duo", "address": nic})).content.decode()
    assert "resetting a device under its host driver is unsafe" in page
    response = operator_client.post(reverse("reset_device", kwargs={"host": "duo", "address": nic}), follow=True)
    assert "was not reset" in response.content.decode()
    assert not Job.objects.exists()


@pytest.fixture
def vfio_gpu(db, tmp_path):
    from passthrough.hosttrees.spec import FunctionSpec, HostSpec
    from tests.web_support import snapshot_host

    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2),
            FunctionSpec("0000:01:00.0", "10de", "1d01", "030000", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0", reset_methods=["flr", "bus"]),
        ]
    )  # fmt: skip
    host, _ = snapshot_host("vfiohost", spec, tmp_path / "vfiohost")
    return host


def test_a_reset_with_a_listed_method_becomes_a_job(vfio_gpu, operator_client, test_broker):
    gpu = "0000:01:00.0"
    page = operator_client.get(reverse("device", kwargs={"host": "vfiohost", "address": gpu})).content.decode()
    assert "Reset this device" in page and '<option value="bus">bus</option>' in page
    response = operator_client.post(
        reverse("reset_device", kwargs={"host": "vfiohost", "address": gpu}), {"method": "bus"}
    )
    job = Job.objects.get()
    assert response.status_code == 302 and response.url == reverse("job", kwargs={"pk": job.pk})
    assert (job.action, job.targets, job.parameters) == ("reset", [gpu], {"method": "bus", "confirm": None})


def test_an_unlisted_reset_method_is_refused_in_words(vfio_gpu, operator_client, test_broker):
    url = reverse("reset_device", kwargs={"host": "vfiohost", "address": "0000:01:00.0"})
    response = operator_client.post(url, {"method": "../../reset"}, follow=True)
    assert "Pick one of the reset methods the device lists" in response.content.decode()
    assert not Job.objects.exists()


def gpu_beside_its_audio(tmp_path, methods: list[str]):
    """A GPU on vfio-pci with its HDMI audio function on the same bus, behind one root port."""
    from passthrough.hosttrees.spec import FunctionSpec, HostSpec
    from tests.web_support import snapshot_host

    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2),
            FunctionSpec("0000:01:00.0", "10de", "1b06", "030000", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0", reset_methods=methods),
            FunctionSpec("0000:01:00.1", "10de", "10ef", "040300", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0"),
        ]
    )  # fmt: skip
    host, _ = snapshot_host("audiohost", spec, tmp_path / "audiohost")
    return host


def test_a_bus_reset_the_kernel_would_refuse_is_not_offered_and_the_page_says_why(
    db, tmp_path, operator_client, test_broker
):
    gpu_beside_its_audio(tmp_path, ["flr", "bus"])
    gpu = "0000:01:00.0"
    url = reverse("reset_device", kwargs={"host": "audiohost", "address": gpu})
    page = operator_client.get(reverse("device", kwargs={"host": "audiohost", "address": gpu})).content.decode()

    assert '<option value="flr">flr</option>' in page and '<option value="bus">' not in page
    why = (
        "Bus is not offered: the kernel refuses a bus reset of 01:00.0 (ENOTTY), because 01:00.1 (GP102 HDMI Audio "
        "Controller) shares bus 01 with 01:00.0. It resets the bus behind a bridge only for a device alone on it, "
        "even though reset_method lists bus."
    )
    assert f'<p class="muted" id="reset-left-out">{why}</p>' in page
    assert 'name="method" aria-describedby="reset-left-out"' in page
    assert page.index('id="reset-left-out"') < page.index(url)  # said next to the form, before it

    refused = operator_client.post(url, {"method": "bus"}, follow=True).content.decode()
    assert f"{gpu} was not reset: {why}" in refused
    assert not Job.objects.exists()

    operator_client.post(url, {"method": "flr"})
    assert Job.objects.get().parameters == {"method": "flr", "confirm": None}


def test_a_device_that_lists_only_a_bus_reset_the_kernel_would_refuse_is_offered_no_reset(
    db, tmp_path, operator_client, test_broker
):
    gpu_beside_its_audio(tmp_path, ["bus"])
    gpu = "0000:01:00.0"
    url = reverse("reset_device", kwargs={"host": "audiohost", "address": gpu})
    page = operator_client.get(reverse("device", kwargs={"host": "audiohost", "address": gpu})).content.decode()

    assert '<button type="button" disabled aria-describedby="reset-blocked">Reset this device</button>' in page
    assert url not in page
    assert (
        "The kernel will refuse to reset it (ENOTTY): bus is the only method it lists, and 01:00.1 (GP102 HDMI "
        "Audio Controller) shares bus 01 with 01:00.0."
    ) in page
    assert "Give it to a VM together with 01:00.1 (all on vfio-pci)" in page

    for method in ("", "bus"):
        refused = operator_client.post(url, {"method": method}, follow=True).content.decode()
        assert f"{gpu} was not reset: The kernel will refuse to reset it (ENOTTY)" in refused
    assert not Job.objects.exists()


def test_setting_vfs_becomes_a_job_and_out_of_range_counts_are_refused(e810, operator_client, test_broker):
    url = reverse("set_vfs", kwargs={"host": "e810", "address": "0000:a2:00.0"})
    for bad in ("129", "-1", "lots", ""):
        page = operator_client.post(url, {"count": bad}, follow=True).content.decode()
        assert "from 0 to 128" in page, bad
    assert not Job.objects.exists()
    operator_client.post(url, {"count": "8"})
    job = Job.objects.get()
    assert (job.action, job.parameters) == ("set_sriov_vfs", {"count": 8, "confirm": None})


def test_a_function_without_sriov_gets_no_vf_job(duo, operator_client, test_broker):
    page = operator_client.post(
        reverse("set_vfs", kwargs={"host": "duo", "address": DUO_GPU}), {"count": "2"}, follow=True
    )
    assert "not an SR-IOV physical function" in page.content.decode()
    assert not Job.objects.exists()


def test_the_device_page_says_where_the_device_sits(viewer_client, duo):
    html = viewer_client.get(reverse("device", kwargs={"host": "duo", "address": DUO_GPU})).content.decode()
    assert "<th>Where it sits</th>" in html
