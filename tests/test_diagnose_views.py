"""The Diagnose page: the worker's findings from the latest snapshot, each linked to its device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import reverse

from passthrough.host import HostTree
from tests.test_diagnose import QEMU_LOG, intel_debian_grub, log
from tests.web_support import snapshot_host
from webui.hosts.models import Host, Snapshot


def page(client: Client, host: str) -> str:
    response = client.get(reverse("diagnose", kwargs={"host": host}))
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def failing(db: None, tmp_path: Path) -> tuple[Host, Snapshot]:
    spec = intel_debian_grub(dmesg=log("acs-override-truenas-170.log"))
    spec.files = {**spec.files, QEMU_LOG: log("group-not-viable-64kramsystem-15.log")}
    return snapshot_host("fuji", spec, tmp_path / "fuji")


def test_the_worker_stores_its_diagnosis_in_the_snapshot(failing: tuple[Host, Snapshot]) -> None:
    _, snapshot = failing
    diagnosis = snapshot.readiness["diagnosis"]
    assert [(item["id"], item["device"]) for item in diagnosis["findings"]] == [
        ("group_not_viable", "0000:01:00.0"),
        ("acs_override", None),
    ]
    assert diagnosis["sources"] == ["dmesg", "/var/log/libvirt/qemu/win10.log"]
    assert snapshot.readiness["checks"], "the readiness report is still all there"


def test_it_shows_each_finding_with_its_lines_cause_and_fix(failing: Any, viewer_client: Client) -> None:
    html = page(viewer_client, "fuji")
    assert html.count('class="check finding finding-') == 2
    assert (
        '<span class="badge badge-fail">error</span>' in html
        and '<span class="badge badge-warn">warning</span>' in html
    )
    evidence = log("group-not-viable-64kramsystem-15.log").splitlines()[0]
    assert f'<pre class="evidence">{evidence}\n</pre>' in html
    assert "vfio gives a VM whole IOMMU groups" in html
    # The fix's indented function list is a literal block with a Copy button, as readiness fixes are.
    assert "0000:01:00.1 GK104 HDMI Audio Controller (snd_hda_intel)</pre>" in html
    assert "<code>/var/log/libvirt/qemu/win10.log</code>" in html


def test_a_finding_links_the_device_it_concerns(failing: Any, viewer_client: Client) -> None:
    html = page(viewer_client, "fuji")
    device = reverse("device", kwargs={"host": "fuji", "address": "0000:01:00.0"})
    assert f'<a href="{device}"><code>0000:01:00.0</code></a>' in html
    assert html.count(f'href="{reverse("device", kwargs={"host": "fuji", "address": "0000:01:00.0"})}"') == 1


def test_a_working_hosts_logs_show_no_failure(db: None, viewer_client: Client, tmp_path: Path) -> None:
    snapshot_host("duo", intel_debian_grub(dmesg=log("clean-realkernel-debian-6.1-intel.log")), tmp_path / "duo")
    html = page(viewer_client, "duo")
    assert "No known passthrough failure in these logs." in html
    assert 'class="check finding' not in html


def test_a_snapshot_taken_before_diagnosis_says_a_scan_adds_it(db: None, viewer_client: Client) -> None:
    host = Host.objects.create(name="old", root="/nonexistent")
    Snapshot.objects.create(host=host, source="startup", inventory={"devices": [], "groups": []}, readiness={})
    html = page(viewer_client, "old")
    assert "No diagnosis in this snapshot" in html
    assert reverse("readiness", kwargs={"host": "old"}) in html


def test_a_host_without_a_snapshot_says_so(db: None, viewer_client: Client) -> None:
    Host.objects.create(name="new", root="/nonexistent")
    assert "No picture of new yet" in page(viewer_client, "new")


def test_it_answers_405_to_post_404_for_an_unknown_host_and_sends_strangers_to_sign_in(
    failing: Any, viewer_client: Client
) -> None:
    url = reverse("diagnose", kwargs={"host": "fuji"})
    assert viewer_client.post(url).status_code == 405
    assert viewer_client.get(reverse("diagnose", kwargs={"host": "nowhere"})).status_code == 404
    response = Client().get(url)
    assert response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL))


def test_the_page_reads_the_snapshot_not_the_host(failing: tuple[Host, Snapshot], viewer_client: Client) -> None:
    host, _ = failing
    (Path(HostTree(host.root).path(QEMU_LOG))).unlink()  # the log is gone; the page still shows what was stored
    assert "group_not_viable" in page(viewer_client, "fuji")


def test_a_snapshot_reads_the_kernel_log_once_for_readiness_and_diagnosis(
    db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the live host each read is a dmesg run; readiness and the diagnosis share one.
    reads = []
    original = HostTree.kernel_log

    def counted(self: HostTree) -> list[str] | None:
        reads.append(self.root)
        return original(self)

    monkeypatch.setattr(HostTree, "kernel_log", counted)
    _, snapshot = snapshot_host("fuji", intel_debian_grub(dmesg=log("acs-override-truenas-170.log")), tmp_path / "f")
    assert [finding["id"] for finding in snapshot.readiness["diagnosis"]["findings"]] == ["acs_override"]
    assert len(reads) == 1
