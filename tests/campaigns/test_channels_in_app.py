"""In-app transport (campaigns.channels.in_app) and the registry."""

import pytest

from campaigns.channels.base import OutboundMessage, TransportError
from campaigns.channels.email import EmailTransport
from campaigns.channels.in_app import InAppTransport
from campaigns.channels.registry import transport_for
from campaigns.channels.sms import SmsTransport
from campaigns.models import InboxMessage
from campaigns.rendering import RenderedMessage
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def rendered(**fields):
    return RenderedMessage(**{"title": "我们想你了", "body": "回来看看", "deep_link": "app://home",
                              "unsubscribe_url": "https://winback.example.com/consent/unsubscribe/t/", **fields})


def test_send_stores_an_inbox_message_and_returns_its_id():
    customer = CustomerFactory()

    provider_id = InAppTransport().send(OutboundMessage(to="", rendered=rendered(), customer=customer))

    message = InboxMessage.objects.get()
    assert provider_id == str(message.pk)
    assert (message.customer, message.title, message.body, message.deep_link, message.unsubscribe_url) == (
        customer, "我们想你了", "回来看看", "app://home", "https://winback.example.com/consent/unsubscribe/t/")


def test_send_many_is_one_insert_and_reports_per_message(django_assert_num_queries):
    customers = CustomerFactory.create_batch(5)
    messages = [OutboundMessage(to="", rendered=rendered(), customer=c) for c in customers]
    messages.append(OutboundMessage(to="", rendered=rendered(), customer=None))

    with django_assert_num_queries(1):
        results = InAppTransport().send_many(messages)

    assert all(r.isdigit() for r in results[:5]) and isinstance(results[5], TransportError)
    assert InboxMessage.objects.count() == 5


def test_registry_gives_a_transport_per_channel_and_refuses_unknown_kinds():
    assert isinstance(transport_for("email"), EmailTransport)
    assert isinstance(transport_for("sms"), SmsTransport)
    assert isinstance(transport_for("in_app"), InAppTransport)
    with pytest.raises(ValueError, match="No transport"):
        transport_for("fax")


def test_send_many_returns_each_messages_own_row_in_order():
    customers = CustomerFactory.create_batch(4)
    messages = [OutboundMessage(to="", rendered=rendered(), customer=c, delivery_id=None) for c in customers]

    results = InAppTransport().send_many(messages)

    rows = {str(m.pk): m for m in InboxMessage.objects.all()}
    assert [rows[r].customer_id for r in results] == [c.pk for c in customers]
    assert {(m.title, m.body, m.deep_link, m.unsubscribe_url) for m in rows.values()} == {
        ("我们想你了", "回来看看", "app://home", "https://winback.example.com/consent/unsubscribe/t/")}
    assert all(m.created_at is not None and m.read_at is None for m in rows.values())
