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
