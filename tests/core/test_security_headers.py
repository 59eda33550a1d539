"""Every page carries a Content-Security-Policy (scripts only from this site or with the
request's nonce) and a Permissions-Policy; the admin login is throttled per account and per IP;
Swagger UI comes from this installation."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from core.security_headers import PERMISSIONS_POLICY
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "pass-w0rd-for-tests"


def _script_policy(response) -> str:
    policy = response["Content-Security-Policy"]
    return next(part for part in policy.split(";") if part.strip().startswith("script-src"))


@pytest.mark.parametrize("url", ["/admin/login/", "/admin/", "/api/v1/schema/", "/api/v1/docs/", "/consent/unsubscribe/x/",
                                 "/offers/claim/nope/", "/no-such-page/", "/api/v1/nothing/"])
def test_every_answer_carries_both_policies(client, url):
    response = client.get(url)
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert "'unsafe-inline'" not in _script_policy(response)
    assert response["Permissions-Policy"] == PERMISSIONS_POLICY
    assert "camera=()" in PERMISSIONS_POLICY and "geolocation=()" in PERMISSIONS_POLICY


def test_each_response_has_its_own_nonce_and_inline_scripts_carry_it(admin_client):
    from tests.factories import CampaignFactory

    campaign = CampaignFactory()
    first = admin_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    second = admin_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    nonces = [re.search(r"'nonce-([^']+)'", r["Content-Security-Policy"]).group(1) for r in (first, second)]
    assert nonces[0] != nonces[1]
    html = first.content.decode()
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline, "the campaign form has an inline script"
    assert all(f'nonce="{nonces[0]}"' in attributes for attributes in inline if "application/json" not in attributes)


def test_swagger_ui_is_served_from_this_installation(client):
    html = client.get("/api/v1/docs/").content.decode()
    assert "cdn" not in html.lower() and "jsdelivr" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)  # no inline script at all


# Login throttling -------------------------------------------------------------------------


def _login(username, password, ip="198.51.100.7"):
    return Client(REMOTE_ADDR=ip).post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_an_account_is_locked_after_too_many_wrong_passwords_even_with_the_right_one(settings):
    settings.AXES_FAILURE_LIMIT = 5
    UserFactory(username="alice", is_superuser=True)
    for attempt in range(4):
        assert _login("alice", "wrong", ip=f"198.51.100.{attempt}").status_code == 200  # the form again
    assert _login("alice", "wrong", ip="198.51.100.4").status_code == 429  # the fifth locks
    locked = _login("alice", PASSWORD, ip="198.51.100.99")  # another address, the right password
    assert locked.status_code == 429
    assert "_auth_user_id" not in locked.client.session


def test_an_address_is_locked_after_too_many_wrong_passwords_for_any_accounts(settings):
    settings.AXES_FAILURE_LIMIT = 5
    UserFactory(username="bob", is_superuser=True)
    for attempt in range(5):
        _login(f"guess{attempt}", "wrong", ip="203.0.113.5")
    assert _login("bob", PASSWORD, ip="203.0.113.5").status_code == 429
    # bob from his own address is not affected
    assert _login("bob", PASSWORD, ip="192.0.2.10").status_code == 302


def test_a_successful_login_resets_the_count(settings):
    settings.AXES_FAILURE_LIMIT = 3
    UserFactory(username="carol", is_superuser=True)
    for _ in range(2):
        _login("carol", "wrong")
    assert _login("carol", PASSWORD).status_code == 302
    for _ in range(2):
        _login("carol", "wrong")
    assert _login("carol", PASSWORD).status_code == 302


def test_the_claim_pages_inline_script_carries_the_nonce(client):
    from core.tokens import claim_token_make
    from tests.factories import OfferGrantFactory

    response = client.get(f"/offers/claim/{claim_token_make(grant_id=OfferGrantFactory().pk)}/")
    nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"]).group(1)
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", response.content.decode())
    assert inline and all(f'nonce="{nonce}"' in attributes for attributes in inline)
