"""A real SMTP conversation: the pipeline sends to a local aiosmtpd server, and the received
bytes are parsed back (headers, RFC 2047 encodings, both parts, one session per chunk)."""

import email
import socket
from email import policy

import pytest
from aiosmtpd.controller import Controller

from campaigns.materialize import run_materialize
from campaigns.models import Delivery
from campaigns.sending import deliveries_send_chunk
from tests.campaigns.pipeline_helpers import (
    campaign_for, customers_with_consent, new_run,
)

pytestmark = pytest.mark.django_db


class Sink:
    def __init__(self):
        self.messages = []
        self.sessions = set()

    async def handle_DATA(self, server, session, envelope):
        self.sessions.add(id(session))
        self.messages.append((envelope.rcpt_tos, envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_sink(settings):
    sink = Sink()
    with socket.socket() as probe:  # a free port (aiosmtpd's readiness check cannot use port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "品牌 <winback@winback.example.com>"
    yield sink
    controller.stop()


def test_campaign_email_over_smtp_is_well_formed_and_encoded(smtp_sink):
    customers = customers_with_consent(3, name="张伟")
    campaign = campaign_for(brand="好物")
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
    assert str(parsed["Subject"]) == "想你了！好物 期待与您重逢"
    assert parsed["To"].addresses[0].display_name == "张伟"
    assert parsed["To"].addresses[0].addr_spec == customers[0].email
    assert parsed["From"].addresses[0].display_name == "品牌"
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
