"""consent.selectors: the one definition of "may we contact this customer on this channel"."""

import itertools

import pytest
from django.utils import timezone

from consent.models import Source
from consent.selectors import address_is_suppressed, consent_is_granted, contactable_q
from consent.services import consent_grant, consent_withdraw
from reactivation.models import ActivityEvent, Customer
from tests.factories import ActivityEventFactory, CustomerFactory, SuppressionFactory

pytestmark = pytest.mark.django_db


def contactable(channel: str) -> set[int]:
    return set(Customer.objects.filter(contactable_q(channel=channel)).values_list("pk", flat=True))


def test_a_one_click_withdrawal_ends_contact_on_that_channel_only():
    # given a customer granted email and SMS
    customer = CustomerFactory()
    consent_grant(customer=customer, channel="email", source=Source.SIGNUP)
    consent_grant(customer=customer, channel="sms", source=Source.SIGNUP)

    # when they unsubscribe from email by RFC 8058 one-click
    consent_withdraw(customer=customer, channel="email", source=Source.ONE_CLICK)

    # then email is closed and SMS stays open
    assert customer.pk not in contactable("email")
    assert customer.pk in contactable("sms")


def test_consent_never_granted_is_no_consent():
    customer = CustomerFactory()

    assert customer.pk not in contactable("email") | contactable("sms") | contactable("in_app")


def test_the_latest_decision_wins_grant_withdraw_grant():
    # given a grant, a one-click withdrawal, and a later grant again (preference center)
    customer = CustomerFactory()
    start = timezone.now() - timezone.timedelta(days=3)
    consent_grant(customer=customer, channel="email", source=Source.SIGNUP, at=start)
    consent_withdraw(customer=customer, channel="email", source=Source.ONE_CLICK, at=start + timezone.timedelta(days=1))

    # when the customer grants again
    consent_grant(customer=customer, channel="email", source=Source.PREFERENCE_CENTER, at=start + timezone.timedelta(days=2))

    # then they may be contacted by email again
    assert customer.pk in contactable("email")


def test_a_suppressed_address_is_not_contactable_despite_consent():
    # given consent on both channels, and the email address suppressed (hard bounce)
    customer = CustomerFactory(email="bounced@example.com", phone="+8613800000001")
    consent_grant(customer=customer, channel="email", source=Source.SIGNUP)
    consent_grant(customer=customer, channel="sms", source=Source.SIGNUP)
    SuppressionFactory(channel="email", address="bounced@example.com")

    # then email is closed, SMS is not (suppressions are per channel and address)
    assert customer.pk not in contactable("email")
    assert customer.pk in contactable("sms")


def test_a_channel_with_an_address_needs_one_in_app_needs_none():
    customer = CustomerFactory(email="", phone="")
    for channel in ("email", "sms", "in_app"):
        consent_grant(customer=customer, channel=channel, source=Source.SIGNUP)

    assert customer.pk not in contactable("email") | contactable("sms")
    assert customer.pk in contactable("in_app")


def test_the_set_form_agrees_with_the_single_customer_checks():
    # given every combination of consent state, address and suppression on both channels
    addresses = {"email": "grid{}@example.com", "sms": "+861380000{:04d}"}
    customers = []
    for index, (state, address, suppressed) in enumerate(
        itertools.product(["none", "granted", "withdrawn"], [True, False], [True, False])
    ):
        if suppressed and not address:
            continue
        email = addresses["email"].format(index) if address else ""
        phone = addresses["sms"].format(index) if address else ""
        customer = CustomerFactory(email=email, phone=phone)
        for channel, value in (("email", email), ("sms", phone)):
            if state in ("granted", "withdrawn"):
                consent_grant(customer=customer, channel=channel, source=Source.SIGNUP)
            if state == "withdrawn":
                consent_withdraw(customer=customer, channel=channel, source=Source.ONE_CLICK)
            if suppressed:
                SuppressionFactory(channel=channel, address=value)
        customers.append(customer)

    # then the filter and the per-customer selectors agree for every customer and channel
    for channel, field in (("email", "email"), ("sms", "phone")):
        expected = {
            c.pk
            for c in customers
            if consent_is_granted(customer=c, channel=channel)
            and getattr(c, field)
            and not address_is_suppressed(channel=channel, address=getattr(c, field))
        }
        assert contactable(channel) == expected
        assert expected  # the grid holds contactable customers, not only refusals


def test_the_rule_reaches_the_customer_through_a_relation():
    # given activity of a consented customer and of one who never consented
    welcome = ActivityEventFactory(customer=CustomerFactory())
    consent_grant(customer=welcome.customer, channel="email", source=Source.SIGNUP)
    ActivityEventFactory(customer=CustomerFactory())

    # then filtering the events through ``customer__`` keeps only the consented customer's
    events = ActivityEvent.objects.filter(contactable_q(channel="email", prefix="customer__"))
    assert list(events) == [welcome]


def test_an_unknown_channel_is_refused():
    with pytest.raises(ValueError):
        contactable_q(channel="fax")


def test_the_filter_is_one_query_whatever_the_number_of_customers(django_assert_num_queries):
    for _ in range(5):
        consent_grant(customer=CustomerFactory(), channel="email", source=Source.SIGNUP)

    with django_assert_num_queries(1):
        assert len(contactable("email")) == 5
