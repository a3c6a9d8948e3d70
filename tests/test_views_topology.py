"""The topology page: the picture with its key and legend, and the picture alone as a file."""

import xml.etree.ElementTree as ET

from django.test import Client
from django.urls import reverse

from tests.web_support import DUO_GPU


def _url(host: str = "duo") -> str:
    return reverse("topology", kwargs={"host": host})


def test_it_shows_the_picture_with_its_key_and_the_groups_legend(duo, viewer_client):
    html = viewer_client.get(_url()).content.decode()
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="topology"' in html
    assert "IOMMU groups (✓ can be passed through as a whole, ✗ cannot)" in html
    assert "behind the chipset (guess)" in html and "CPU root port (guess)" in html
    assert 'href="?download=svg"' in html
    assert ' style="' not in html  # the Content-Security-Policy forbids inline styles


def test_it_downloads_the_picture_alone_with_absolute_links(duo, viewer_client):
    response = viewer_client.get(_url(), {"download": "svg"})
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="topology-duo.svg"'
    root = ET.fromstring(response.content)
    assert root.find("{http://www.w3.org/2000/svg}title").text == "PCIe topology of duo"
    hrefs = [element.get("href") for element in root.iter("{http://www.w3.org/2000/svg}a")]
    assert f"http://testserver{reverse('device', kwargs={'host': 'duo', 'address': DUO_GPU})}" in hrefs


def test_it_answers_405_to_a_post(duo, viewer_client):
    assert viewer_client.post(_url()).status_code == 405


def test_it_answers_404_for_an_unknown_host(duo, viewer_client):
    assert viewer_client.get(_url("nope")).status_code == 404


def test_it_sends_an_anonymous_visitor_to_sign_in(duo):
    response = Client().get(_url(), {"download": "svg"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:sign_in"))
