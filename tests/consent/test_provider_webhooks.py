"""Email providers' webhooks, end to end: HTTP request -> anymail -> consent/tracking.py -> Suppression."""

import base64
import importlib
import json

import pytest
from django.urls import clear_url_caches

from consent.models import ConsentEvent, Suppression
from consent.services import consent_grant
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SECRET = "postmark:Zq3-very-long-webhook-secret"
URL = "/anymail/postmark/tracking/"


@pytest.fixture
def webhooks_on(settings):
    """The project's urlconf as it is built when ANYMAIL_WEBHOOK_SECRET is set."""
    settings.ANYMAIL_WEBHOOK_SECRET = SECRET
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    import config.urls

    importlib.reload(config.urls)
    clear_url_caches()
    yield
    settings.ANYMAIL_WEBHOOK_SECRET = ""
    importlib.reload(config.urls)
    clear_url_caches()


def post(client, payload, secret=SECRET):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(secret.encode()).decode()} if secret else {}
    return client.post(URL, data=json.dumps(payload), content_type="application/json", **headers)


def postmark_bounce(email, kind="HardBounce"):
    return {
        "RecordType": "Bounce", "Type": kind, "TypeCode": 1, "ID": 42, "MessageID": "b7bc2f4a-e38e",
        "Email": email, "BouncedAt": "2026-11-20T16:33:54.9070259Z", "Description": "The server was unable to deliver",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
    }


def test_a_signed_hard_bounce_webhook_suppresses_the_address(client, webhooks_on):
    customer = CustomerFactory(email="gone@example.com")
    consent_grant(customer=customer, channel="email", source="signup")

    response = post(client, postmark_bounce("Gone@Example.com"))

    assert response.status_code == 200
    suppression = Suppression.objects.get(channel="email", address="gone@example.com")
    assert suppression.reason == Suppression.Reason.HARD_BOUNCE


def test_a_signed_complaint_webhook_withdraws_email_consent(client, webhooks_on):
    customer = CustomerFactory(email="angry@example.com")
    consent_grant(customer=customer, channel="email", source="signup")
    complaint = {**postmark_bounce("angry@example.com", kind="SpamComplaint"), "RecordType": "SpamComplaint"}

    assert post(client, complaint).status_code == 200

    assert Suppression.objects.get(address="angry@example.com").reason == Suppression.Reason.COMPLAINT
    assert ConsentEvent.objects.filter(customer=customer, action="withdraw", source="complaint").exists()


@pytest.mark.parametrize("secret", [None, "postmark:wrong-secret-of-enough-length"])
def test_an_unsigned_or_wrongly_signed_webhook_changes_nothing(client, webhooks_on, secret):
    response = post(client, postmark_bounce("victim@example.com"), secret=secret)

    assert response.status_code == 400
    assert not Suppression.objects.exists()


def test_without_a_secret_the_webhooks_are_not_mounted(client):
    response = post(client, postmark_bounce("victim@example.com"))

    assert response.status_code == 404
    assert not Suppression.objects.exists()
