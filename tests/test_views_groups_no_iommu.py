"""The devices page of a host booted without the IOMMU: no groups, and what to do about it."""

from __future__ import annotations

import gzip

from django.urls import reverse

from tests.web_support import no_iommu_host, snapshot_host  # noqa: E402


def test_a_host_without_iommu_groups_gets_a_page_that_says_the_iommu_is_off_and_links_its_fix(
    db, viewer_client, tmp_path
):
    snapshot_host("bare", no_iommu_host(), tmp_path / "bare")
    response = viewer_client.get(reverse("groups", kwargs={"host": "bare"}))
    assert response.status_code == 200
    html = response.content.decode()
    assert "No IOMMU groups" in html and "the IOMMU is off" in html
    assert f'href="{reverse("readiness", kwargs={"host": "bare"})}#check-iommu"' in html
    # Every function is still listed, under "Without an IOMMU group".
    assert "<code>01:00.0</code>" in html and "<code>00:00.0</code>" in html


def test_a_host_without_iommu_groups_is_served_compressed_and_filtered_too(db, operator_client, tmp_path):
    snapshot_host("bare", no_iommu_host(), tmp_path / "bare")
    url = reverse("groups", kwargs={"host": "bare"})
    packed = operator_client.get(url, HTTP_ACCEPT_ENCODING="gzip")
    assert packed.status_code == 200
    body = gzip.decompress(packed.content) if packed.get("Content-Encoding") == "gzip" else packed.content
    assert "No IOMMU groups" in body.decode()
    assert operator_client.get(url, {"q": "nvidia"}).status_code == 200
    assert operator_client.get(url, {"kind": "gpu"}, HTTP_HX_REQUEST="true").status_code == 200
