"""django-anymail tracking events sent through anymail's own signal reach consent.services."""

import logging

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from anymail.webhooks.base import AnymailBaseWebhookView
from django.utils import timezone

from consent.models import ConsentEvent, Suppression
from consent.selectors import consent_is_granted
from consent.services import consent_grant, email_bounce_record
from consent.tracking import bounce_is_permanent, tracking_event_received
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _send(esp_name="Amazon SES", **fields):
    fields.setdefault("timestamp", timezone.now())
    fields.setdefault("event_id", "evt-1")
    fields.setdefault("message_id", "msg-1")
    event = AnymailTrackingEvent(**fields)
    # As anymail's webhook views do: sender is the view class, then event and esp_name.
    tracking.send(sender=AnymailBaseWebhookView, event=event, esp_name=esp_name)
    return event


def _customer(email="wang.fang@example.com"):
    customer = CustomerFactory(email=email)
    consent_grant(customer=customer, channel="email", source="signup")
    return customer


def test_the_receiver_is_connected_once():
    receivers = [r for r in tracking._live_receivers(AnymailBaseWebhookView)[0] if r is tracking_event_received]
    assert len(receivers) == 1


def test_a_hard_bounce_suppresses_the_address_and_keeps_consent_as_it_is():
    customer = _customer()

    _send(event_type="bounced", recipient="Wang.Fang@Example.com", description="Permanent: General",
          mta_response="smtp; 550 5.1.1 user unknown",
          esp_event={"bounce": {"bounceType": "Permanent", "bounceSubType": "General"}})

    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.address, suppression.reason) == ("email", "wang.fang@example.com", "hard_bounce")
    assert "550 5.1.1" in suppression.note
    assert consent_is_granted(customer=customer, channel="email")


@pytest.mark.parametrize(
    "fields",
    [
        {"description": "Transient: MailboxFull", "esp_event": {"bounce": {"bounceType": "Transient"}}},  # Amazon SES
        {"description": "Undetermined: Undetermined", "esp_event": {"bounce": {"bounceType": "Undetermined"}}},
        {"description": "Soft bounce", "esp_event": {"Type": "SoftBounce"}},  # Postmark
        {"esp_event": {"type": "blocked", "reason": "IP reputation"}},  # SendGrid
        {"esp_event": {"severity": "temporary"}},  # Mailgun
        {"mta_response": "452 4.2.2 Mailbox full", "esp_event": {}},
        {"description": "Temporary failure, try again later", "esp_event": {}},
    ],
    ids=["ses-transient", "ses-undetermined", "postmark-soft", "sendgrid-blocked", "mailgun-temporary", "smtp-4xx", "words"],
)
def test_a_soft_bounce_changes_nothing(fields, caplog):
    _customer()

    with caplog.at_level(logging.INFO, logger="consent.services"):
        _send(event_type="bounced", recipient="wang.fang@example.com", **fields)

    assert not Suppression.objects.exists()
    assert "email_soft_bounce_ignored" in caplog.text


@pytest.mark.parametrize(
    "fields",
    [
        {"esp_event": {"bounce": {"bounceType": "Permanent"}}},
        {"esp_event": {"severity": "permanent"}},
        {"mta_response": "550 Requested action not taken: mailbox unavailable", "esp_event": {}},
        {"mta_response": "smtp;5.1.1 bad destination mailbox", "esp_event": {}},
        {"esp_event": {"Type": "HardBounce"}, "description": "The server was unable to deliver your message"},
        {"esp_event": None},  # no detail at all: anymail's "bounced" means the receiving MTA refused it
    ],
    ids=["ses", "mailgun", "smtp-550", "enhanced-5.1.1", "postmark-hard", "no-detail"],
)
def test_permanent_bounces_are_recognised(fields):
    fields.setdefault("description", None)
    fields.setdefault("mta_response", None)
    assert bounce_is_permanent(AnymailTrackingEvent(event_type="bounced", **fields))


def test_a_complaint_suppresses_and_withdraws_email_consent_for_every_holder():
    first, second = _customer(), _customer()
    bystander = _customer(email="someone.else@example.com")
    at = timezone.now() - timezone.timedelta(minutes=5)

    _send(esp_name="SendGrid", event_type="complained", recipient="wang.fang@example.com", description="abuse",
          event_id="sg-77", timestamp=at, esp_event={"event": "spamreport"})

    assert Suppression.objects.get().reason == "complaint"
    events = ConsentEvent.objects.filter(action="withdraw")
    assert {e.customer_id for e in events} == {first.pk, second.pk}
    event = events.first()
    assert (event.channel, event.source, event.at) == ("email", "complaint", at)
    assert event.evidence["esp"] == "SendGrid" and event.evidence["event_id"] == "sg-77"
    assert consent_is_granted(customer=bystander, channel="email")


def test_an_esp_unsubscribe_withdraws_with_source_unsubscribe_link_and_suppresses_nothing():
    customer = _customer()

    _send(esp_name="Postmark", event_type="unsubscribed", recipient="wang.fang@example.com", esp_event={"Type": "Unsubscribe"})

    event = ConsentEvent.objects.get(action="withdraw")
    assert (event.customer, event.channel, event.source) == (customer, "email", "unsubscribe_link")
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(
    ("reject_reason", "expected"),
    [("bounced", "hard_bounce"), ("invalid", "hard_bounce"), ("spam", "complaint"), ("unsubscribed", None),
     ("blocked", None), ("timed_out", None), ("other", None), (None, None)],
)
def test_rejections_follow_their_reason(reject_reason, expected):
    customer = _customer()

    _send(event_type="rejected", recipient="wang.fang@example.com", reject_reason=reject_reason, esp_event={})

    assert list(Suppression.objects.values_list("reason", flat=True)) == ([expected] if expected else [])
    withdrawn = not consent_is_granted(customer=customer, channel="email")
    assert withdrawn == (reject_reason in ("spam", "unsubscribed"))


@pytest.mark.parametrize("event_type", ["delivered", "opened", "clicked", "deferred", "queued", "unknown"])
def test_other_events_change_nothing(event_type):
    _customer()

    _send(event_type=event_type, recipient="wang.fang@example.com", esp_event={})

    assert not Suppression.objects.exists()
    assert ConsentEvent.objects.count() == 1


@pytest.mark.parametrize("recipient", [None, "", "not-an-address"])
def test_an_event_without_a_usable_recipient_is_logged_and_dropped(recipient, caplog):
    with caplog.at_level(logging.WARNING, logger="consent.tracking"):
        _send(event_type="complained", recipient=recipient, esp_event={})

    assert not Suppression.objects.exists()
    assert "anymail_event_bad_recipient" in caplog.text


def test_the_same_hard_bounce_twice_keeps_one_suppression():
    for _ in range(2):
        _send(event_type="bounced", recipient="gone@example.com", esp_event={"bounce": {"bounceType": "Permanent"}})

    assert Suppression.objects.count() == 1


def test_email_bounce_record_for_other_providers():
    assert email_bounce_record(address="a@example.com", permanent=False, reason_text="421 try later") is None
    suppression = email_bounce_record(address="A@Example.com", permanent=True, reason_text="550 no such user")

    assert (suppression.address, suppression.reason) == ("a@example.com", "hard_bounce")
    assert Suppression.objects.count() == 1
