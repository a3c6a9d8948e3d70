"""The readiness page: one verdict on top, each check with its evidence and fix, "Check again"."""

from __future__ import annotations

from django.urls import reverse

from passthrough import realworld
from tests.web_support import no_iommu_host, snapshot_host  # noqa: E402
from webui.jobs.models import Job


def test_a_ready_host_says_so_on_top_with_each_check(duo, viewer_client):
    html = viewer_client.get(reverse("readiness", kwargs={"host": "duo"})).content.decode()
    assert "Ready for passthrough." in html
    assert "CPU virtualization" in html and "The CPU has VT-x (vmx)." in html
    assert html.count('class="check check-') == 11
    assert 'class="badge badge-warn">warn' in html  # iommu=pt is only a suggestion here


def test_a_host_without_iommu_counts_what_to_fix_and_gives_each_fix_with_a_copy_button(db, viewer_client, tmp_path):
    host, snapshot = snapshot_host("bare", no_iommu_host(), tmp_path / "bare")
    html = viewer_client.get(reverse("readiness", kwargs={"host": "bare"})).content.decode()
    failing = [check for check in snapshot.checks() if check["status"] == "fail"]
    assert failing, "the tree should fail the IOMMU check"
    reasons = snapshot.readiness["reasons"]
    assert f"{len(reasons)} thing{'s' if len(reasons) > 1 else ''} to fix" in html
    iommu = next(check for check in failing if check["id"] == "iommu")
    assert 'data-copy="#fix-iommu"' in html and 'id="fix-iommu"' in html
    assert iommu["fix"].split("\n")[0][:40].replace("'", "&#x27;") in html
    assert "What was read" in html


def test_check_again_runs_a_scan_job_and_shows_its_page(duo, operator_client, test_broker):
    response = operator_client.post(reverse("scan", kwargs={"host": "duo"}))
    job = Job.objects.get()
    assert job.action == "scan" and response["Location"] == reverse("job", kwargs={"pk": job.pk})
    finished = Job.objects.filter(pk=job.pk)
    finished.update(state="succeeded")
    assert "See the readiness checks" in operator_client.get(response["Location"]).content.decode()


def test_viewers_are_not_offered_check_again(duo, viewer_client):
    assert "Check again" not in viewer_client.get(reverse("readiness", kwargs={"host": "duo"})).content.decode()


def test_a_command_line_fix_is_offered_as_a_job_only_where_the_boot_loader_is_known(
    db, operator_client, tmp_path, test_broker
):
    snapshot_host("duo", realworld.asokolsky_duo(), tmp_path / "duo")  # no boot files in its tree
    assert (
        "Apply this kernel command-line change"
        not in operator_client.get(reverse("readiness", kwargs={"host": "duo"})).content.decode()
    )
    snapshot_host("t480", realworld.schplorg_t480(), tmp_path / "t480")  # GRUB, iommu=1 to become iommu=pt
    html = operator_client.get(reverse("readiness", kwargs={"host": "t480"})).content.decode()
    assert "Apply this kernel command-line change" in html
    operator_client.post(reverse("apply_fix", kwargs={"host": "t480", "check": "iommu_passthrough_mode"}))
    job = Job.objects.get()
    assert (job.action, job.parameters["add"], job.parameters["remove"]) == ("set_kernel_cmdline", ["iommu=pt"], [])


def test_a_check_without_a_command_line_change_is_refused_in_words(duo, operator_client, test_broker):
    response = operator_client.post(
        reverse("apply_fix", kwargs={"host": "duo", "check": "cpu_virtualization"}), follow=True
    )
    assert "proposes no kernel command-line change on duo" in response.content.decode()
    assert not Job.objects.exists()


def test_a_command_line_fix_without_a_known_boot_loader_is_refused_in_words(duo, operator_client, test_broker):
    response = operator_client.post(
        reverse("apply_fix", kwargs={"host": "duo", "check": "iommu_passthrough_mode"}), follow=True
    )
    assert "No boot loader configuration was found on duo" in response.content.decode()
    assert not Job.objects.exists()
