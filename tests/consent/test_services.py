import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from consent.models import ConsentEvent, ConsentState, Suppression
from consent.selectors import address_is_suppressed, consent_is_granted
from consent.services import ConsentDecision, consent_grant, consent_record_bulk, consent_withdraw, suppression_add
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def test_grant_then_withdraw_moves_current_state_with_the_ledger():
    customer = CustomerFactory()

    consent_grant(customer=customer, channel="email", source="signup", notice_version="v1", evidence={"ip": "1.2.3.4"})
    assert consent_is_granted(customer=customer, channel="email")

    consent_withdraw(customer=customer, channel="email", source="unsubscribe_link")

    assert not consent_is_granted(customer=customer, channel="email")
    assert list(ConsentEvent.objects.filter(customer=customer).order_by("id").values_list("action", "source")) == [
        ("grant", "signup"),
        ("withdraw", "unsubscribe_link"),
    ]
    state = ConsentState.objects.get(customer=customer, channel="email")
    assert state.last_event == ConsentEvent.objects.latest("id")


def test_channels_are_independent():
    customer = CustomerFactory()
    consent_grant(customer=customer, channel="email", source="signup")
    consent_grant(customer=customer, channel="sms", source="signup")

    consent_withdraw(customer=customer, channel="sms", source="sms_reply", evidence={"text": "TD"})

    assert consent_is_granted(customer=customer, channel="email")
    assert not consent_is_granted(customer=customer, channel="sms")


def test_an_older_event_recorded_late_does_not_override_a_newer_decision():
    from django.utils import timezone

    customer = CustomerFactory()
    consent_withdraw(customer=customer, channel="sms", source="sms_reply")
    consent_grant(customer=customer, channel="sms", source="import", at=timezone.now() - timezone.timedelta(days=3))

    assert not consent_is_granted(customer=customer, channel="sms")
    assert ConsentEvent.objects.filter(customer=customer).count() == 2


def test_unknown_source_is_refused_and_nothing_is_written():
    customer = CustomerFactory()
    with pytest.raises(ValueError, match="source"):
        consent_grant(customer=customer, channel="email", source="carrier-pigeon")
    assert not ConsentEvent.objects.exists()


def test_bulk_record_keeps_the_last_decision_per_customer_and_channel():
    first, second = CustomerFactory(), CustomerFactory()

    written = consent_record_bulk(
        decisions=[
            ConsentDecision(customer_id=first.pk, channel="email", action="grant", source="import"),
            ConsentDecision(customer_id=first.pk, channel="email", action="withdraw", source="import"),
            ConsentDecision(customer_id=second.pk, channel="sms", action="grant", source="import", notice_version="v2"),
        ]
    )

    assert written == 3
    assert not consent_is_granted(customer=first, channel="email")
    assert consent_is_granted(customer=second, channel="sms")


def test_suppression_holds_for_a_new_customer_with_the_same_address():
    old = CustomerFactory(email="gone@example.com")
    suppression_add(channel="email", address="Gone@Example.com", reason="hard_bounce")
    old.delete()

    newcomer = CustomerFactory(email="gone@example.com")

    assert address_is_suppressed(channel="email", address=newcomer.email)


def test_suppression_is_idempotent_and_normalizes_phones():
    first = suppression_add(channel="sms", address="138 0013 8000", reason="manual")
    again = suppression_add(channel="sms", address="+8613800138000", reason="complaint")

    assert first.pk == again.pk
    assert first.address == "+8613800138000"
    assert Suppression.objects.count() == 1


def test_suppression_rejects_an_invalid_address():
    with pytest.raises(ValidationError):
        suppression_add(channel="sms", address="12345", reason="manual")
    assert not Suppression.objects.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("statement", ["UPDATE consent_consentevent SET source = 'admin'", "DELETE FROM consent_consentevent"])
def test_the_ledger_rejects_updates_and_deletes_on_postgres(statement):
    customer = CustomerFactory()
    consent_grant(customer=customer, channel="email", source="signup")
    from django.db import connection

    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert ConsentEvent.objects.filter(source="signup").count() == 1


def test_bulk_record_keeps_the_staff_actor():
    from tests.factories import UserFactory

    customer, staff = CustomerFactory(), UserFactory()
    consent_record_bulk(
        decisions=[ConsentDecision(customer_id=customer.pk, channel="email", action="withdraw", source="admin")],
        actor=staff,
    )
    assert ConsentEvent.objects.get(customer=customer).actor == staff


# The notice version in force and times from outside ----------------------------------------


def test_every_decision_without_its_own_notice_version_records_the_one_in_force(settings):
    from consent.services import consent_preferences_update

    settings.NOTICE_VERSION = "privacy-2026-05"
    customer = CustomerFactory()

    consent_preferences_update(customer=customer, wanted={"email": True, "sms": True})
    consent_withdraw(customer=customer, channel="sms", source="unsubscribe_link")
    consent_record_bulk(decisions=[ConsentDecision(customer_id=customer.pk, channel="in_app", action="grant", source="import")])
    consent_grant(customer=customer, channel="in_app", source="admin", notice_version="paper-2019")

    assert list(ConsentEvent.objects.order_by("id").values_list("channel", "notice_version")) == [
        ("email", "privacy-2026-05"), ("sms", "privacy-2026-05"), ("sms", "privacy-2026-05"),
        ("in_app", "privacy-2026-05"), ("in_app", "paper-2019")]
    assert set(ConsentState.objects.values_list("notice_version", flat=True)) == {"privacy-2026-05", "paper-2019"}


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+14:00", "1969-07-20T20:17:00Z", "2999-01-01T00:00:00Z"])
def test_a_provider_time_out_of_bounds_is_recorded_as_now(at):
    from django.utils import timezone

    from consent.services import email_complaint_record, email_unsubscribe_record, sms_reply_record
    from core.time_bounds import time_parse

    customer = CustomerFactory(email="a@example.com", phone="+8613812345678")
    consent_grant(customer=customer, channel="email", source="signup")
    consent_grant(customer=customer, channel="sms", source="signup")
    before = timezone.now()

    email_unsubscribe_record(address="a@example.com", at=time_parse(at))
    email_complaint_record(address="a@example.com", at=time_parse(at))
    sms_reply_record(sender="+8613812345678", text="TD", provider_id="p1", received_at=time_parse(at))

    withdrawals = ConsentEvent.objects.filter(action="withdraw")
    assert withdrawals.count() == 3
    assert all(before <= event.at <= timezone.now() for event in withdrawals)
    assert not consent_is_granted(customer=customer, channel="email")
    assert not consent_is_granted(customer=customer, channel="sms")


def test_a_pulled_reply_with_a_time_out_of_bounds_is_recorded_as_now():
    from types import SimpleNamespace

    from django.utils import timezone

    from consent.models import SmsReply
    from consent.services import sms_replies_pull

    customer = CustomerFactory(phone="+8613812345678")
    consent_grant(customer=customer, channel="sms", source="signup")

    class Backend:
        def fetch_replies(self):
            yield SimpleNamespace(sender="+8613812345678", text="退订", provider_id="", received_at="0001-01-01T00:00:00+14:00")

    counts = sms_replies_pull(backend=Backend())

    assert counts["recorded"] == 1
    assert SmsReply.objects.get().received_at <= timezone.now()
    assert not consent_is_granted(customer=customer, channel="sms")
