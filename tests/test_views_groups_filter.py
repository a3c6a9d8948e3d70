"""The live filter of the devices page: the address bar follows the list, and "Show all" comes with it."""

from __future__ import annotations

from django.urls import reverse

GROUPS = reverse("groups", kwargs={"host": "duo"})


def test_a_live_filter_puts_its_own_query_in_the_address_bar(duo, viewer_client):
    response = viewer_client.get(GROUPS, {"q": "nvme", "kind": ""}, HTTP_HX_REQUEST="true")
    assert response["HX-Replace-Url"] == f"{GROUPS}?q=nvme"
    both = viewer_client.get(GROUPS, {"q": "gt 1030", "kind": "gpu"}, HTTP_HX_REQUEST="true")
    assert both["HX-Replace-Url"] == f"{GROUPS}?q=gt+1030&kind=gpu"


def test_clearing_the_live_filter_puts_the_bare_address_back(duo, viewer_client):
    response = viewer_client.get(GROUPS, {"q": "", "kind": ""}, HTTP_HX_REQUEST="true")
    assert response["HX-Replace-Url"] == GROUPS


def test_the_form_does_not_push_the_request_it_is_about_to_replace(duo, viewer_client):
    html = viewer_client.get(GROUPS).content.decode()
    assert 'hx-push-url="true"' not in html


def test_show_all_comes_with_a_filtered_list_live_and_not_with_the_whole_list(duo, viewer_client):
    filtered = viewer_client.get(GROUPS, {"q": "nvme"}, HTTP_HX_REQUEST="true").content.decode()
    assert f'<a href="{GROUPS}">Show all</a>' in filtered
    whole = viewer_client.get(GROUPS, {"q": ""}, HTTP_HX_REQUEST="true").content.decode()
    assert "Show all" not in whole
