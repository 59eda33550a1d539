"""Email transport (campaigns.channels.email), faked at Django's locmem backend."""

import smtplib
import threading
import time
from email._policybase import Compat32
from email.utils import formataddr
from unittest import mock

import pytest
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st

from campaigns.channels.base import OutboundMessage, TransportError
from campaigns.channels.email import _FOLDING_POLICY, EmailTransport, MarketingEmail, marketing_email_bytes
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


# Serialization: MarketingEmail must give the bytes Django's EmailMultiAlternatives gives.

_header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=120),
    st.from_regex(r"[\x21-\x7e]{1,30}( [\x21-\x7e]{1,30}){0,4}", fullmatch=True),
    st.text(max_size=60).filter(lambda v: "\r" not in v and "\n" not in v),
)


@settings_h(max_examples=400, deadline=None)
@given(name=st.sampled_from(["Subject", "To", "List-Unsubscribe", "Message-ID", "X-Long-Header-Name-For-Folding"]),
       value=_header_values, max_line_length=st.sampled_from([78, 0, None, 40]))
def test_memoized_folding_gives_exactly_what_compat32_gives(name, value, max_line_length):
    reference = Compat32().clone(linesep="\r\n", max_line_length=max_line_length)
    ours = _FOLDING_POLICY.clone(linesep="\r\n", max_line_length=max_line_length)

    assert ours.fold(name, value) == reference.fold(name, value)
    assert ours.fold_binary(name, value) == reference.fold_binary(name, value)


def _without_volatile_parts(raw: bytes, boundary: str) -> bytes:
    return raw.replace(boundary.encode(), b"BOUNDARY")


@pytest.mark.parametrize("subject, name, text", [
    ("想你了！品牌 期待与您重逢", "张伟", "你好\n" * 3),
    ("We miss you, come back for 20% off", "Ann O'Neil", "Hi Ann,\n\n" + "a long line " * 40),
    ("Subject with  two spaces and a trailing one ", "", "=" * 100 + "\nÜnïcödé"),
])
def test_marketing_email_serializes_to_the_same_bytes_as_djangos_message(subject, name, text):
    headers = {"Message-ID": "<1@winback.example.com>", "Date": "Tue, 24 Nov 2026 20:24:32 -0000",
               "List-Unsubscribe": "<https://winback.example.com/consent/unsubscribe/" + "t" * 90 + "/>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    to = [f"{name} <x@example.com>" if name else "x@example.com"]
    fields = {"subject": subject, "body": text, "from_email": "Win-back <winback@example.com>", "to": to,
              "headers": headers}
    ours, reference = MarketingEmail(**fields), EmailMultiAlternatives(**fields)
    for email in (ours, reference):
        email.attach_alternative("<p>" + text + "</p>", "text/html")

    ours_message = ours.message()
    reference_message = reference.message()
    reference_message.set_boundary(ours_message.get_boundary())

    assert ours_message.as_bytes(linesep="\r\n") == reference_message.as_bytes(linesep="\r\n")
    assert ours_message.get_boundary().startswith("===============")


def test_each_marketing_email_gets_its_own_boundary_absent_from_its_parts():
    emails = [MarketingEmail(subject="s", body="text", to=["x@example.com"]) for _ in range(50)]
    for email in emails:
        email.attach_alternative("<p>html</p>", "text/html")
    messages = [email.message() for email in emails]

    boundaries = {message.get_boundary() for message in messages}
    assert len(boundaries) == 50
    for message in messages:
        raw = message.as_bytes(linesep="\r\n")
        assert raw.count(f"--{message.get_boundary()}".encode()) == 3  # two parts and the closing line


# The SMTP fast path: marketing_email_bytes must write what Django's generator writes.

_line_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


def _email_for(subject, name, text, html, **extra):
    headers = {"Message-ID": "<42@winback.example.com>", "Date": "Tue, 24 Nov 2026 20:24:32 -0000",
               "List-Unsubscribe": "<https://winback.example.com/consent/unsubscribe/" + "t" * 60 + "/>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", **extra}
    email = MarketingEmail(subject=subject, body=text, from_email="品牌 Brand <winback@example.com>",
                           to=[formataddr((name, "x@example.com")) if name else "x@example.com"], headers=headers)
    email.attach_alternative(html, "text/html")
    return email


@settings_h(max_examples=300, deadline=None)
@given(subject=st.text(max_size=120).filter(lambda v: "\r" not in v and "\n" not in v),
       name=st.text(max_size=40).filter(lambda v: "\r" not in v and "\n" not in v),
       text=_line_text, html=_line_text)
def test_direct_smtp_bytes_are_djangos_bytes(subject, name, text, html):
    email = _email_for(subject, name, text, html)

    direct = marketing_email_bytes(email, date="unused: the message has a Date header")

    reference = email.message()
    if direct is None:  # only for what Django sends quoted-printable
        assert not text or any(len(line.encode()) > 998 for line in (text + "\n" + html).splitlines())
        return
    reference.set_boundary(direct.split(b'boundary="', 1)[1].split(b'"', 1)[0].decode())
    assert direct == reference.as_bytes(linesep="\r\n")


def test_direct_smtp_bytes_fall_back_for_what_they_do_not_cover():
    assert marketing_email_bytes(_email_for("s", "n", "x" * 1200, "<p>y</p>"), date="d") is None  # quoted-printable
    assert marketing_email_bytes(_email_for("s", "n", "", "<p>y</p>"), date="d") is None  # no text part
    assert marketing_email_bytes(_email_for("s", "n", "t", "<p>y</p>", Cc="a@example.com"), date="d") is None
    assert marketing_email_bytes(_email_for("s", "n", "t", "<p>y</p>", **{"X-Campaign": "7"}), date="d") is not None
    no_message_id = _email_for("s", "n", "t", "<p>y</p>")
    del no_message_id.extra_headers["Message-ID"]
    assert marketing_email_bytes(no_message_id, date="d") is None
    with_cc = _email_for("s", "n", "t", "<p>y</p>")
    with_cc.cc = ["c@example.com"]
    assert marketing_email_bytes(with_cc, date="d") is None


# Several SMTP sessions (lanes) through Django's SMTP backend, smtplib faked at its class.

class FakeSMTP:
    refused: set = set()
    disconnect: set = set()
    sent: list = []
    lock = threading.Lock()

    def __init__(self, host="", port=0, local_hostname=None, timeout=None, **kwargs):
        self.open = True

    def starttls(self, **kwargs):
        pass

    def login(self, *args):
        pass

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        assert self.open, "a session used after it was closed"
        time.sleep(0.002)  # let the lanes overlap
        if to_addrs[0] in self.refused:
            raise smtplib.SMTPRecipientsRefused({to_addrs[0]: (550, b"no such user")})
        if to_addrs[0] in self.disconnect:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        with self.lock:
            self.sent.append((from_addr, list(to_addrs), msg))
        return {}

    def quit(self):
        self.open = False

    def close(self):
        self.open = False


@pytest.fixture
def fake_smtp(settings, monkeypatch):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    monkeypatch.setattr(smtplib, "SMTP", FakeSMTP)
    FakeSMTP.refused, FakeSMTP.disconnect, FakeSMTP.sent = set(), set(), []
    return FakeSMTP


def _outbound(n):
    rendered = RenderedMessage(subject="Hi", html="<p>x</p>", text="x", unsubscribe_url="https://winback.example.com/u/t/")
    return [OutboundMessage(to=f"user{i}@example.com", rendered=rendered) for i in range(n)]


@pytest.mark.parametrize("kind, permanent", [("refused", True), ("disconnect", False)])
def test_an_smtp_error_on_one_lane_fails_that_message_only_and_the_next_batch_still_goes(fake_smtp, kind, permanent):
    getattr(fake_smtp, kind).add("user0@example.com")  # message 0 goes to lane 0, the transport itself
    transport = EmailTransport(concurrency=4)
    transport.open()
    try:
        results = transport.send_many(_outbound(40))
        assert isinstance(results[0], TransportError) and results[0].permanent is permanent
        assert not any(isinstance(result, Exception) for result in results[1:])

        again = transport.send_many(_outbound(40))
    finally:
        transport.close()
    assert not any(isinstance(result, Exception) for result in again[1:])
    assert len(fake_smtp.sent) == 39 + 39


@pytest.mark.django_db
def test_a_refused_address_in_a_multi_session_chunk_is_failed_and_suppressed_and_the_rest_sent(fake_smtp, settings):
    from campaigns import services
    from campaigns.models import Delivery
    from consent.models import Suppression
    from tests.campaigns.pipeline_helpers import campaign_for, customers_with_consent
    from tests.campaigns.test_sending import materialized, pending_ids

    settings.EMAIL_SEND_CONCURRENCY = 4
    customers_with_consent(300)
    run = materialized(campaign_for())
    ids = pending_ids(run)
    refused = Delivery.objects.get(pk=ids[0])
    fake_smtp.refused.add(refused.address)

    services.chunk_send(delivery_ids=ids, channel="email")

    refused.refresh_from_db()
    assert refused.status == "failed" and "550" in refused.error
    assert Suppression.objects.filter(channel="email", address=refused.address).exists()
    assert Delivery.objects.filter(run=run, status="sent").count() == len(ids) - 1 == len(fake_smtp.sent)


def test_a_display_name_with_a_line_break_character_cannot_break_the_to_header():
    customer = CustomerFactory.build(name="Ann\x0bX-Injected: yes", pk=1)
    email = EmailTransport().build(message(customer))
    raw = email.message().as_bytes(linesep="\r\n")
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nX-Injected" not in headers
