"""A real SMTP conversation: the pipeline sends to a local aiosmtpd server, and the received
bytes are parsed back (headers, RFC 2047 encodings, both parts, one session per chunk), with
the envelope the server saw (MAIL FROM and its BODY= parameter) and the DKIM signature checked."""

import email
import socket
from contextlib import contextmanager
from email import policy

import pytest
from aiosmtpd.controller import Controller

from campaigns.channels import email as email_channel
from campaigns.channels.base import OutboundMessage
from campaigns.channels.email import EmailTransport
from campaigns.materialize import run_materialize
from campaigns.models import Delivery
from campaigns.rendering import RenderedMessage
from campaigns.sending import deliveries_send_chunk
from tests.campaigns.pipeline_helpers import (
    campaign_for, customers_with_consent, new_run,
)
from tests.campaigns.test_channels_email import dkim_key  # noqa: F401 - a fixture
from tests.factories import BrandFactory, CampaignFactory

pytestmark = pytest.mark.django_db


class Sink:
    def __init__(self):
        self.messages = []  # (recipients, the bytes received)
        self.envelopes = []  # (MAIL FROM address, its parameters)
        self.sessions = set()

    async def handle_DATA(self, server, session, envelope):
        self.sessions.add(id(session))
        self.messages.append((envelope.rcpt_tos, envelope.original_content))
        self.envelopes.append((envelope.mail_from, list(envelope.mail_options)))
        return "250 OK"


@contextmanager
def running_sink(settings, **server):
    """An aiosmtpd server on a free port, and Django's SMTP backend pointed at it.

    ``decode_data=True`` makes aiosmtpd leave 8BITMIME out of its EHLO answer and refuse a
    message with 8-bit bytes, as a strict 7-bit server does."""
    sink = Sink()
    with socket.socket() as probe:  # a free port (aiosmtpd's readiness check cannot use port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port, **server)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "品牌 <winback@winback.example.com>"
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_sink(settings):
    with running_sink(settings) as sink:
        yield sink


@pytest.fixture
def seven_bit_sink(settings):
    with running_sink(settings, decode_data=True) as sink:
        yield sink


def test_campaign_email_over_smtp_is_well_formed_and_encoded(smtp_sink):
    customers = customers_with_consent(3, name="张伟")
    campaign = campaign_for(brand=BrandFactory(name="好物", from_name="好物商城", from_email="hello@haowu.example.com",
                                               reply_to="care@haowu.example.com"))
    run = new_run(campaign)
    run_materialize(run=run)
    ids = list(Delivery.objects.filter(run=run, status="pending").values_list("pk", flat=True))

    result = deliveries_send_chunk(delivery_ids=ids, channel="email")

    assert result.counts["sent"] == 3
    assert len(smtp_sink.messages) == 3
    assert len(smtp_sink.sessions) == 1  # one SMTP session for the whole chunk
    rcpt_tos, raw = smtp_sink.messages[0]
    assert rcpt_tos == [customers[0].email]
    headers = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")  # headers are 7-bit: RFC 2047 encoded words
    assert "Subject: =?utf-8?" in headers and "=?utf-8?" in headers.split("To:", 1)[1]
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "想你了！好物 期待与您重逢"  # exactly: no leading space from an empty first line
    assert parsed["To"].addresses[0].display_name == "张伟"
    assert parsed["To"].addresses[0].addr_spec == customers[0].email
    assert (parsed["From"].addresses[0].display_name, parsed["From"].addresses[0].addr_spec) == (
        "好物商城", "hello@haowu.example.com")
    assert parsed["Reply-To"].addresses[0].addr_spec == "care@haowu.example.com"
    assert parsed["Date"].datetime.utcoffset() is not None and not parsed["Date"].endswith("-0000")
    # Bounces go to DEFAULT_FROM_EMAIL, whatever brand the From shows; the 8bit body is declared.
    mail_from, options = smtp_sink.envelopes[0]
    assert mail_from == "winback@winback.example.com" and "BODY=8BITMIME" in options
    assert parsed["List-Unsubscribe"].strip().startswith("<https://winback.example.com/consent/")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"].endswith("@winback.example.com>")
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    html = parsed.get_body(preferencelist=("html",)).get_content()
    assert "张伟，好久不见！" in text and "张伟，好久不见！" in html
    delivery = Delivery.objects.get(run=run, customer=customers[0])
    assert (delivery.status, delivery.provider_id) == ("sent", parsed["Message-ID"])


def test_an_unreachable_smtp_server_leaves_the_chunk_for_a_retry(settings):
    customers_with_consent(2)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2  # discard port: refused
    run = new_run(campaign_for())
    run_materialize(run=run)

    result = deliveries_send_chunk(delivery_ids=list(Delivery.objects.filter(run=run).values_list("pk", flat=True)),
                                   channel="email")

    assert result.counts["retry"] == 2
    assert set(Delivery.objects.filter(run=run).values_list("status", "attempts")) == {("pending", 1)}


def test_a_large_batch_goes_over_several_sessions_and_each_delivery_keeps_its_message_id(smtp_sink, settings):
    # given: 40 recipients and four SMTP sessions per worker
    settings.EMAIL_SEND_CONCURRENCY = 4
    customers_with_consent(40)
    run = new_run(campaign_for())
    run_materialize(run=run)
    ids = list(Delivery.objects.filter(run=run, status="pending").values_list("pk", flat=True))

    # when
    result = deliveries_send_chunk(delivery_ids=ids, channel="email")

    # then: every message arrived once, over more than one but at most four sessions, and each
    # delivery records the Message-ID of the message its own recipient received
    assert result.counts["sent"] == 40 and len(smtp_sink.messages) == 40
    assert 1 < len(smtp_sink.sessions) <= 4
    received = {}
    for rcpt_tos, raw in smtp_sink.messages:
        received[rcpt_tos[0]] = email.message_from_bytes(raw, policy=policy.default)["Message-ID"]
    assert len(received) == 40
    for address, provider_id in Delivery.objects.filter(run=run).values_list("address", "provider_id"):
        assert received[address] == provider_id


def test_one_session_when_concurrency_is_one(smtp_sink, settings):
    settings.EMAIL_SEND_CONCURRENCY = 1
    customers_with_consent(20)
    run = new_run(campaign_for())
    run_materialize(run=run)
    ids = list(Delivery.objects.filter(run=run, status="pending").values_list("pk", flat=True))

    assert deliveries_send_chunk(delivery_ids=ids, channel="email").counts["sent"] == 20
    assert len(smtp_sink.sessions) == 1


# 8BITMIME, and a server without it.

def _send_one(text, html, *, subject="想你了！青禾生活 期待与您重逢", campaign=None):
    rendered = RenderedMessage(subject=subject, text=text, html=html, unsubscribe_url="https://winback.example.com/u/t/")
    with EmailTransport(concurrency=1) as transport:
        return transport.send(OutboundMessage(to="ann@example.com", rendered=rendered, campaign=campaign))


def _body_type(sink):
    """The BODY= parameter of the last MAIL FROM (smtplib adds SIZE= on its own)."""
    return [option for option in sink.envelopes[-1][1] if option.startswith("BODY=")]


def test_an_ascii_message_declares_no_body_type(smtp_sink):
    _send_one("Hello", "<p>Hello</p>", subject="Hello")

    (_recipients, raw), = smtp_sink.messages
    assert raw.isascii() and not _body_type(smtp_sink)


@pytest.mark.parametrize("text", ["张伟，好久不见！\n积分翻倍。", "张伟，" + "好久不见！" * 400])  # the second: over 998 bytes
def test_a_server_without_8bitmime_gets_7bit_parts_that_read_back_the_same(seven_bit_sink, text):
    html = "<p>" + text + "</p>"

    _send_one(text, html)

    (_recipients, raw), = seven_bit_sink.messages
    assert raw.isascii() and not _body_type(seven_bit_sink)
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == html
    assert parsed["Subject"] == "想你了！青禾生活 期待与您重逢"


# DKIM, end to end: every message that leaves over SMTP is signed, whichever bytes it is.

@pytest.fixture
def dkim_signing(settings, dkim_key):  # noqa: F811
    settings.DKIM_DOMAIN, settings.DKIM_SELECTOR, settings.DKIM_PRIVATE_KEY_FILE = "qinghe.example.com", "s2026", dkim_key.path
    email_channel._unaligned_domains.clear()
    return dkim_key


@pytest.mark.parametrize("sink, text", [
    ("smtp_sink", "张伟，好久不见！"),  # the direct bytes, 8bit
    ("smtp_sink", "张伟，" + "好久不见！" * 400),  # Django's bytes (a line Django sends quoted-printable)
    ("seven_bit_sink", "张伟，好久不见！"),  # re-encoded for a 7-bit server
])
def test_the_received_message_verifies_and_a_tampered_one_does_not(request, dkim_signing, sink, text):
    sink = request.getfixturevalue(sink)
    brand = BrandFactory(name="青禾生活", from_email="hello@qinghe.example.com", reply_to="care@qinghe.example.com")

    _send_one(text, "<p>" + text + "</p>", campaign=CampaignFactory(brand=brand))

    (_recipients, raw), = sink.messages
    assert raw.startswith(b"DKIM-Signature: ")
    assert dkim_signing.verify(raw)
    head, body = raw.split(b"\r\n\r\n", 1)
    tampered = head + b"\r\n\r\n" + body.replace(b"\r\n--", b"\r\nPS: one more line\r\n--", 1)
    assert not dkim_signing.verify(tampered)
    assert not dkim_signing.verify(raw.replace(b"hello@qinghe.example.com", b"hello@qinghe.example.org"))


def test_a_test_send_over_smtp_is_signed_too(smtp_sink, dkim_signing, settings):
    settings.DEFAULT_FROM_EMAIL = "Win-back <winback@qinghe.example.com>"

    EmailTransport().send_test(to="me@example.com", message=RenderedMessage(subject="Hi", html="<p>x</p>", text="x"))

    (_recipients, raw), = smtp_sink.messages
    assert dkim_signing.verify(raw)
