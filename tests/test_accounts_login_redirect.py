"""/accounts/login/, the address Django apps usually sign in at, leads to the sign-in page."""

from django.test import Client
from django.urls import reverse


def test_it_redirects_to_the_sign_in_page_keeping_next(db):
    response = Client().get("/accounts/login/", {"next": "/hosts/duo/topology/"})
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:sign_in") + "?next=%2Fhosts%2Fduo%2Ftopology%2F"


def test_it_redirects_without_a_query_too(db):
    response = Client().get("/accounts/login/")
    assert response.status_code == 302 and response["Location"] == reverse("accounts:sign_in")


def test_the_sign_in_page_it_leads_to_answers_and_then_sends_the_user_on(db):
    from tests.web_support import PASSWORD, make_user

    make_user("vera", None)
    client = Client()
    page = client.get("/accounts/login/?next=/jobs/", follow=True)
    assert page.status_code == 200 and page.redirect_chain[-1][0].startswith(reverse("accounts:sign_in"))
    signed_in = client.post(page.redirect_chain[-1][0], {"username": "vera", "password": PASSWORD})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/jobs/"
