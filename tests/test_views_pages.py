"""What every page shares: the header (host switcher, demo badge, role), error pages in words."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from webui.hosts.models import Host


def test_one_host_has_no_switcher_and_two_have_one(duo, viewer_client):
    html = viewer_client.get(reverse("readiness", kwargs={"host": "duo"})).content.decode()
    assert 'class="switcher"' not in html and "Host: <strong>duo</strong>" in html
    Host.objects.create(name="pve2")
    html = viewer_client.get(reverse("readiness", kwargs={"host": "duo"})).content.decode()
    assert 'class="switcher"' in html
    assert f'href="{reverse("host_home", kwargs={"host": "pve2"})}"' in html


def test_the_host_last_looked_at_is_the_one_home_opens(duo, viewer_client):
    Host.objects.create(name="zeta")
    viewer_client.get(reverse("readiness", kwargs={"host": "zeta"}))
    assert viewer_client.get(reverse("home"))["Location"] == reverse("host_home", kwargs={"host": "zeta"})


def test_the_header_names_the_user_and_role(duo, viewer_client, operator_client):
    assert "vera · viewer" in viewer_client.get(reverse("jobs")).content.decode()
    assert "otto · operator" in operator_client.get(reverse("jobs")).content.decode()


def test_a_demo_says_so_on_every_page(duo, viewer_client, settings):
    settings.PASSTHROUGH_DEMO = "asokolsky-duo"
    for url in (reverse("jobs"), reverse("groups", kwargs={"host": "duo"}), reverse("accounts:sign_in")):
        assert "Demo: asokolsky-duo" in Client().get(url, follow=True).content.decode()
        assert "Demo: asokolsky-duo" in viewer_client.get(url, follow=True).content.decode()


def test_without_hosts_the_start_page_says_how_to_get_one(db, viewer_client):
    html = viewer_client.get(reverse("home")).content.decode()
    assert "No host has reported yet" in html and "scripts/run --demo" in html


def test_debug_is_off_and_a_crash_is_a_page_in_words_without_a_traceback(duo, viewer, settings, monkeypatch):
    from webui.wizard.views import topology

    assert settings.DEBUG is False

    def crash(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(topology.snapshots, "prepared", crash)
    client = Client(raise_request_exception=False)
    client.force_login(viewer)
    response = client.get(reverse("topology", kwargs={"host": "duo"}))
    html = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on the server" in html and "Nothing you asked for was changed" in html
    assert "secret internals" not in html and "Traceback" not in html


def test_an_unknown_address_is_a_404_page_in_words(db, viewer_client):
    response = viewer_client.get("/no/such/page/")
    assert response.status_code == 404
    assert "There is no page at <code>/no/such/page/</code>" in response.content.decode()


def test_a_403_says_why(duo, viewer_client):
    response = viewer_client.post(reverse("scan", kwargs={"host": "duo"}))
    assert response.status_code == 403
    assert "Your account is a viewer" in response.content.decode()


def test_the_topology_is_an_svg_linking_each_function_to_its_page(duo, viewer_client):
    html = viewer_client.get(reverse("topology", kwargs={"host": "duo"})).content.decode()
    assert "<svg" in html and "21 functions, 15 IOMMU groups" in html
    assert f'href="{reverse("device", kwargs={"host": "duo", "address": "0000:01:00.0"})}"' in html
    assert 'class="row device critical"' in html  # the root NVMe


def test_pages_load_htmx_and_the_copy_script_from_this_server(duo, viewer_client):
    html = viewer_client.get(reverse("jobs")).content.decode()
    assert '<script src="/static/vendor/htmx.min.js" defer></script>' in html
    assert '<script src="/static/js/app.js" defer></script>' in html
    assert "<script>" not in html and "onclick" not in html  # no inline JavaScript
