"""The readiness page: one verdict on top, each check with its evidence and fix, "Check again"."""

from __future__ import annotations

import re

from django.urls import reverse

from passthrough.hosttrees import realworld
from tests.web_support import no_iommu_host, snapshot_host  # noqa: E402
from webui.jobs.models import Job


def test_a_ready_host_says_so_on_top_with_each_check(duo, viewer_client):
    html = viewer_client.get(reverse("readiness", kwargs={"host": "duo"})).content.decode()
    assert "Ready for passthrough." in html
    assert "CPU virtualization" in html and "The CPU has VT-x (vmx)." in html
    assert html.count('class="check check-') == 11
    assert 'class="badge badge-warn">warn' in html  # iommu=pt is only a suggestion here


def test_a_host_without_iommu_counts_what_to_fix_and_gives_each_fix_in_words(db, viewer_client, tmp_path):
    host, snapshot = snapshot_host("bare", no_iommu_host(), tmp_path / "bare")
    html = viewer_client.get(reverse("readiness", kwargs={"host": "bare"})).content.decode()
    failing = [check for check in snapshot.checks() if check["status"] == "fail"]
    assert failing, "the tree should fail the IOMMU check"
    reasons = snapshot.readiness["reasons"]
    assert f"{len(reasons)} thing{'s' if len(reasons) > 1 else ''} to fix" in html
    iommu = next(check for check in failing if check["id"] == "iommu")
    assert 'id="fix-iommu"' in html
    assert iommu["fix"].split("\n")[0][:40].replace("'", "&#x27;") in html
    assert "What was read" in html


def section(html: str, check: str) -> str:
    start = html.index(f'id="check-{check}"')
    return html[start : html.index("</li>", start)]


def test_copy_buttons_copy_the_commands_and_lines_of_a_fix_not_its_sentences(db, viewer_client, tmp_path):
    snapshot_host("bare", no_iommu_host(), tmp_path / "bare")
    html = viewer_client.get(reverse("readiness", kwargs={"host": "bare"})).content.decode()
    iommu = section(html, "iommu")  # words only ("Add intel_iommu=on ... in your boot loader's configuration")
    assert "Add intel_iommu=on to the kernel command line" in iommu and 'class="copy"' not in iommu
    modules = section(html, "vfio_modules")
    assert "`" not in modules
    assert (
        'Load them now: <span class="command"><code id="fix-vfio_modules-1-2">modprobe -a vfio vfio_iommu_type1 '
        'vfio_pci</code><button type="button" class="copy" data-copy="#fix-vfio_modules-1-2"' in modules
    )
    assert '<pre id="fix-vfio_modules-3">vfio\nvfio_iommu_type1\nvfio_pci</pre>' in modules  # the file's lines
    assert 'data-copy="#fix-vfio_modules-3"' in modules
    assert modules.count('class="copy"') == 2


def test_a_boot_loader_edit_copies_the_new_line_and_the_command_that_applies_it(db, viewer_client, tmp_path):
    snapshot_host("t480", realworld.schplorg_t480(), tmp_path / "t480")
    html = viewer_client.get(reverse("readiness", kwargs={"host": "t480"})).content.decode()
    mode = section(html, "iommu_passthrough_mode")
    new_line = re.search(r'<pre id="(fix-iommu_passthrough_mode-\d+)">GRUB_CMDLINE_LINUX=&quot;[^<]*iommu=pt', mode)
    assert new_line and f'data-copy="#{new_line.group(1)}"' in mode
    assert re.search(r'<code id="fix-[^"]+">grub-mkconfig -o /boot/grub/grub.cfg</code><button', mode)
    assert "`" not in html[html.index('<ol class="checks">') :]  # summaries and notes show commands as code


def test_an_intel_host_is_not_told_about_the_amd_iommu(db, viewer_client, tmp_path):
    snapshot_host("nas", realworld.asokolsky_nas(), tmp_path / "nas")  # intel_iommu=on amd_iommu=on, an Intel CPU
    cmdline = section(
        viewer_client.get(reverse("readiness", kwargs={"host": "nas"})).content.decode(), "kernel_cmdline"
    )
    assert "amd_iommu= has no effect on an Intel host." in cmdline
    assert "the AMD IOMMU is on by default" not in cmdline and "AMD host" not in cmdline


def test_check_again_stays_on_the_readiness_page_and_follows_the_scan(duo, operator_client, test_broker):
    readiness = reverse("readiness", kwargs={"host": "duo"})
    response = operator_client.post(reverse("scan", kwargs={"host": "duo"}))
    job = Job.objects.get()
    assert job.action == "scan" and response["Location"] == f"{readiness}?scan={job.pk}"
    html = operator_client.get(response["Location"]).content.decode()
    assert "Checking duo again" in html
    assert f'hx-get="{reverse("job", kwargs={"pk": job.pk})}?then=reload"' in html  # reloads this page at the end
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in html  # and without JavaScript
    Job.objects.filter(pk=job.pk).update(state="succeeded", message="Scan the host done.")
    html = operator_client.get(response["Location"]).content.decode()
    assert "Checked again: Scan the host done." in html and "Checking duo again" not in html
    assert 'http-equiv="refresh"' not in html
    assert html.count('class="check check-') == 11


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
