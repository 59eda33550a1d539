"""Email transport (campaigns.channels.email), faked at Django's locmem backend."""

import smtplib
from unittest import mock

import pytest
from django.core import mail

from campaigns.channels.base import OutboundMessage, TransportError
from campaigns.channels.email import EmailTransport
from campaigns.rendering import RenderedMessage
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def message(customer, **rendered):
    fields = {"subject": "想你了！品牌 期待与您重逢", "html": "<p>你好</p>", "text": "你好",
              "unsubscribe_url": "https://winback.example.com/consent/unsubscribe/tok/"}
    fields.update(rendered)
    return OutboundMessage(to=customer.email, rendered=RenderedMessage(**fields), customer=customer)


def test_email_has_both_parts_rfc8058_headers_and_a_message_id_in_our_domain(settings):
    settings.LIST_UNSUBSCRIBE_MAILTO = "unsubscribe@winback.example.com"
    customer = CustomerFactory(name="张伟")

    with EmailTransport() as transport:
        provider_id = transport.send(message(customer))

    sent = mail.outbox[0]
    assert sent.subject == "想你了！品牌 期待与您重逢"
    assert sent.body == "你好" and sent.alternatives[0] == ("<p>你好</p>", "text/html")
    assert sent.extra_headers["List-Unsubscribe"] == (
        "<https://winback.example.com/consent/unsubscribe/tok/>, <mailto:unsubscribe@winback.example.com?subject=unsubscribe>")
    assert sent.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert provider_id == sent.extra_headers["Message-ID"] and provider_id.endswith("@winback.example.com>")
    raw = sent.message().as_string()
    assert "=?utf-8?" in raw  # the Chinese subject and display name are RFC 2047 encoded


def test_one_connection_is_opened_for_a_batch():
    customers = CustomerFactory.create_batch(3)
    backend = mock.MagicMock()
    backend.send_messages.return_value = 1
    transport = EmailTransport(connection=backend)

    with transport:
        for customer in customers:
            transport.send(message(customer))

    assert backend.open.call_count == 1 and backend.close.call_count == 1
    assert backend.send_messages.call_count == 3


@pytest.mark.parametrize("error, permanent, bad_address", [
    (smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"no such user")}), True, True),
    (smtplib.SMTPRecipientsRefused({"x@example.com": (450, b"mailbox busy")}), False, False),
    (smtplib.SMTPDataError(554, b"rejected as spam"), True, False),
    (smtplib.SMTPDataError(451, b"try again"), False, False),
    (smtplib.SMTPServerDisconnected("gone"), False, False),
    (TimeoutError("timed out"), False, False),
])
def test_smtp_errors_map_to_transport_errors_and_the_session_is_reopened(error, permanent, bad_address):
    backend = mock.MagicMock()
    backend.send_messages.side_effect = [error, 1]
    transport = EmailTransport(connection=backend)
    customer = CustomerFactory()

    with transport:
        with pytest.raises(TransportError) as caught:
            transport.send(message(customer))
        transport.send(message(customer))

    assert (caught.value.permanent, caught.value.bad_address) == (permanent, bad_address)
    assert backend.open.call_count == 2  # a fresh session after the error


def test_a_backend_that_accepts_nothing_is_a_transient_error():
    backend = mock.MagicMock()
    backend.send_messages.return_value = 0

    with pytest.raises(TransportError) as caught:
        EmailTransport(connection=backend).send(message(CustomerFactory()))
    assert not caught.value.permanent


def test_test_send_marks_the_subject():
    EmailTransport().send_test(to="me@example.com", message=RenderedMessage(subject="Hi", html="<p>x</p>", text="x"))

    assert mail.outbox[0].subject == "[TEST] Hi" and mail.outbox[0].to == ["me@example.com"]
