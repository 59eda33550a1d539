"""Email transport (campaigns.channels.email), faked at Django's locmem backend."""

import base64
import email as email_package
import logging
import re
import smtplib
import subprocess
import threading
import time
from email import policy
from email._policybase import Compat32
from email.utils import formataddr
from unittest import mock

import dkim
import pytest
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st

from campaigns.channels import email as email_channel
from campaigns.channels.base import OutboundMessage, TransportError
from campaigns.channels.email import (
    _FOLDING_POLICY, EmailTransport, MarketingEmail, dkim_sign, marketing_email_bytes, seven_bit_bytes, subject_header,
)
from campaigns.rendering import RenderedMessage
from tests.core.test_settings import django_setup, production_env, run_python  # noqa: F401 - production_env is a fixture
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory

pytestmark = pytest.mark.django_db


def message(customer, campaign=None, **rendered):
    fields = {"subject": "想你了！品牌 期待与您重逢", "html": "<p>你好</p>", "text": "你好",
              "unsubscribe_url": "https://winback.example.com/consent/unsubscribe/tok/"}
    fields.update(rendered)
    return OutboundMessage(to=customer.email, rendered=RenderedMessage(**fields), customer=customer, campaign=campaign)


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


# The brand's sender.

def test_the_from_and_reply_to_are_the_brands(settings):
    settings.DEFAULT_FROM_EMAIL = "Win-back <winback@winback.example.com>"
    brand = BrandFactory(name="青禾生活", from_name="青禾生活 Qinghe Living", from_email="hello@qinghe.example.com",
                         reply_to="care@qinghe.example.com")

    email = EmailTransport().build(message(CustomerFactory(), campaign=CampaignFactory(brand=brand)))

    parsed = email_package.message_from_bytes(email.message().as_bytes(linesep="\r\n"), policy=policy.default)
    sender = parsed["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("青禾生活 Qinghe Living", "hello@qinghe.example.com")
    assert parsed["Reply-To"].addresses[0].addr_spec == "care@qinghe.example.com"


@pytest.mark.parametrize("from_name, from_email, shown", [
    ("", "hello@qinghe.example.com", ("青禾生活", "hello@qinghe.example.com")),  # the brand's name
    ("Qinghe, Shanghai", "", ("Qinghe, Shanghai", "winback@winback.example.com")),  # DEFAULT_FROM_EMAIL's address
])
def test_a_brand_without_a_sender_name_or_address_falls_back(settings, from_name, from_email, shown):
    settings.DEFAULT_FROM_EMAIL = "Win-back <winback@winback.example.com>"
    brand = BrandFactory(name="青禾生活", from_name=from_name, from_email=from_email, reply_to="")

    email = EmailTransport().build(message(CustomerFactory(), campaign=CampaignFactory(brand=brand)))

    parsed = email_package.message_from_bytes(email.message().as_bytes(linesep="\r\n"), policy=policy.default)
    sender = parsed["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == shown
    assert parsed["Reply-To"] is None


def test_without_a_brand_the_from_is_default_from_email(settings):
    settings.DEFAULT_FROM_EMAIL = "Win-back <winback@winback.example.com>"

    email = EmailTransport().build(message(CustomerFactory()))

    assert email.from_email == "Win-back <winback@winback.example.com>" and email.reply_to == []


# The Date: a real offset on both paths.

@pytest.mark.parametrize("localtime, zone, offset", [(False, "Asia/Shanghai", "+0000"), (True, "Asia/Shanghai", "+0800"),
                                                     (True, "UTC", "+0000")])
def test_the_date_has_a_real_offset_on_both_paths(settings, localtime, zone, offset):
    settings.EMAIL_USE_LOCALTIME, settings.TIME_ZONE = localtime, zone
    email = _email_for("s", "n", "t", "<p>h</p>")
    del email.extra_headers["Date"]

    direct = marketing_email_bytes(email)
    generated = email.message().as_bytes(linesep="\r\n")

    for raw in (direct, generated):
        date = re.search(rb"\r\nDate: ([^\r]+)\r\n", raw).group(1).decode()
        assert date.endswith(" " + offset), date


# Subjects: the first line carries the first encoded word, and every reader gets the text back.

SUBJECTS = [
    "想你了！青禾生活 期待与您重逢", "[青禾生活] 为你准备了一份专属惊喜，点击领取！", "最近还好吗？[青禾生活] 想知道您为什么离开了我们",
    "想你了！青禾生活官方旗舰店 期待与您重逢，回来领取专属于你的双倍积分和满200减50优惠券吧",
    "🎁 专属惊喜 🎁 点击领取！", "🎁🎉💝🛍️✨" * 8, "お久しぶりです！青禾生活からの特別なお知らせ", "오랜만이에요! 특별 할인 쿠폰",
    "We miss you, 张伟! Come back for 20% off everything in the Qinghe Living shop this weekend only",
    "Ünïcödé ça va? Déjà vu: «offre spéciale» pour vous — seulement aujourd'hui, profitez-en maintenant",
    "x" * 120, "Subject with  two spaces and a trailing one ", " leading space", "looks like =?utf-8?q?an_encoded?= word",
    "tab\there", "我" * 200, "短", "Hi", "Plain ASCII subject that is long enough to be folded at least once by the folder",
]


def _subject_lines(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith((b" ", b"\t")))
    return lines[start:end]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_a_subject_reads_back_exactly_and_never_starts_with_an_empty_line(subject):
    email = _email_for(subject, "张伟", "你好", "<p>你好</p>")

    direct = marketing_email_bytes(email)
    generated = email.message()
    generated.set_boundary(direct.split(b'boundary="', 1)[1].split(b'"', 1)[0].decode())
    generated = generated.as_bytes(linesep="\r\n")

    assert direct == generated
    lines = _subject_lines(direct)
    assert lines[0].strip() != b"Subject:"
    assert all(len(line) <= 78 for line in lines) or not subject.isascii()  # an encoded word is at most 75
    assert email_package.message_from_bytes(direct, policy=policy.default)["Subject"] == subject


@settings_h(max_examples=300, deadline=None)
@given(subject=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=150))
def test_any_printable_subject_reads_back_exactly(subject):
    email = _email_for(subject, "", "t", "<p>h</p>")

    raw = marketing_email_bytes(email)

    assert _subject_lines(raw)[0].strip() != b"Subject:"
    assert email_package.message_from_bytes(raw, policy=policy.default)["Subject"] == subject


def test_a_subject_with_a_line_break_is_refused_on_both_paths():
    from django.core.mail import BadHeaderError

    email = _email_for("Hi\nBcc: everyone@example.com", "", "t", "<p>h</p>")
    with pytest.raises(BadHeaderError):
        marketing_email_bytes(email)
    with pytest.raises(BadHeaderError):
        email.message()


# Serialization: MarketingEmail must give the bytes Django's EmailMultiAlternatives gives (with
# the Subject encoded by subject_header).

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
    # The memoized folding and the early boundary change nothing else.
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
    reference_message.replace_header("Subject", subject_header(subject))
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


def _email_for(subject, name, text, html, *, from_email="品牌 Brand <winback@example.com>", reply_to=None, **extra):
    headers = {"Message-ID": "<42@winback.example.com>", "Date": "Tue, 24 Nov 2026 20:24:32 +0000",
               "List-Unsubscribe": "<https://winback.example.com/consent/unsubscribe/" + "t" * 60 + "/>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", **extra}
    email = MarketingEmail(subject=subject, body=text, from_email=from_email,
                           to=[formataddr((name, "x@example.com")) if name else "x@example.com"], headers=headers,
                           reply_to=reply_to)
    email.attach_alternative(html, "text/html")
    return email


def _no_line_break(value):
    return "\r" not in value and "\n" not in value


# Display names: anything formataddr encodes or quotes, and raw non-ASCII names Django encodes.
_display_names = st.one_of(
    st.text(max_size=40).filter(_no_line_break).map(lambda name: ("formataddr", name)),
    st.text(alphabet=st.sampled_from(list("张伟青禾生活 Qinghe Émile 🎁おÜ")), min_size=1, max_size=30).map(lambda name: ("raw", name)),
)


def _mailbox(display_name, address):
    how, name = display_name
    if not name.strip():
        return address
    return formataddr((name, address)) if how == "formataddr" else f"{name} <{address}>"


_reply_tos = st.one_of(
    st.none(),
    st.lists(st.tuples(_display_names, st.sampled_from(["care@qinghe.example.com", "a.b+c@example.org"])), min_size=1, max_size=2)
    .map(lambda pairs: ("list", [_mailbox(name, address) for name, address in pairs])),
    _display_names.map(lambda name: ("header", _mailbox(name, "care@qinghe.example.com"))),
)


@settings_h(max_examples=400, deadline=None)
@given(subject=st.text(max_size=120).filter(_no_line_break), name=st.text(max_size=40).filter(_no_line_break),
       from_name=_display_names, reply_to=_reply_tos, text=_line_text, html=_line_text)
def test_direct_smtp_bytes_are_djangos_bytes(subject, name, from_name, reply_to, text, html):
    extra = {"Reply-To": reply_to[1]} if reply_to and reply_to[0] == "header" else {}
    email = _email_for(subject, name, text, html, from_email=_mailbox(from_name, "hello@qinghe.example.com"),
                       reply_to=reply_to[1] if reply_to and reply_to[0] == "list" else None, **extra)

    try:
        reference = email.message()
    except Exception as exc:  # noqa: BLE001 - an address Django cannot parse: the direct path refuses it alike
        with pytest.raises(type(exc)):
            marketing_email_bytes(email)
        return
    direct = marketing_email_bytes(email, date="unused: the message has a Date header")

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
    assert marketing_email_bytes(_email_for("s", "n", "t", "<p>y</p>", reply_to=["r@example.com"]), date="d") is not None
    no_message_id = _email_for("s", "n", "t", "<p>y</p>")
    del no_message_id.extra_headers["Message-ID"]
    assert marketing_email_bytes(no_message_id, date="d") is None
    with_cc = _email_for("s", "n", "t", "<p>y</p>")
    with_cc.cc = ["c@example.com"]
    assert marketing_email_bytes(with_cc, date="d") is None


def test_reply_to_sits_where_django_puts_it():
    email = _email_for("s", "", "t", "<p>y</p>", reply_to=["care@qinghe.example.com"])
    del email.extra_headers["Date"]

    head = marketing_email_bytes(email, date="Tue, 24 Nov 2026 20:24:32 +0000").split(b"\r\n\r\n", 1)[0]

    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if not line.startswith(b" ")]
    assert names == [b"Content-Type", b"MIME-Version", b"Subject", b"From", b"To", b"Reply-To", b"Date", b"Message-ID",
                     b"List-Unsubscribe", b"List-Unsubscribe-Post"]


# Without 8BITMIME: the same message in 7-bit lines.

def test_seven_bit_bytes_encode_every_part_and_read_back_the_same():
    html = "<table>" + "<tr><td style=\"padding:8px;color:#333\">你好</td></tr>\n" * 30 + "</table>"
    email = _email_for("想你了", "张伟", "张伟，好久不见！\n" * 20, html)

    raw = seven_bit_bytes(email)

    assert raw.isascii()
    parsed = email_package.message_from_bytes(raw, policy=policy.default)
    plain, html_part = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain["Content-Transfer-Encoding"] == "base64"  # mostly Chinese: base64 is the shorter
    assert html_part["Content-Transfer-Encoding"] == "quoted-printable"  # mostly markup
    # The wire carries text with CRLF line ends (RFC 2045's canonical form).
    assert plain.get_content() == "张伟，好久不见！\r\n" * 20
    assert html_part.get_content() == html.replace("\n", "\r\n")


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

    def ehlo_or_helo_if_needed(self):
        pass

    def has_extn(self, name):
        return name.lower() == "8bitmime"

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


# DKIM: a key made for the test, its public half served by a fake DNS lookup.

class DkimKey:
    def __init__(self, path, public_key_b64: str):
        self.path = str(path)
        self.txt = f"v=DKIM1; k=rsa; p={public_key_b64}".encode()

    def dns(self, name, timeout=5):
        """dkimpy's dnsfunc: the TXT record at <selector>._domainkey.<domain>."""
        return self.txt if name.rstrip(b".") == b"s2026._domainkey.qinghe.example.com" else None

    def verify(self, raw: bytes) -> bool:
        return dkim.verify(raw, dnsfunc=self.dns)


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory):
    path = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return DkimKey(path, base64.b64encode(der).decode())


@pytest.fixture
def dkim_settings(settings, dkim_key):
    settings.DKIM_DOMAIN, settings.DKIM_SELECTOR, settings.DKIM_PRIVATE_KEY_FILE = "qinghe.example.com", "s2026", dkim_key.path
    email_channel._unaligned_domains.clear()
    return dkim_key


def _signed(from_email, dkim_key):
    email = _email_for("想你了！青禾生活 期待与您重逢", "张伟", "张伟，好久不见！", "<p>张伟，好久不见！</p>", from_email=from_email,
                       reply_to=["care@qinghe.example.com"])
    return dkim_sign(marketing_email_bytes(email), from_header=email.from_email)


@pytest.mark.parametrize("from_email", ["青禾生活 <hello@qinghe.example.com>", "Qinghe <news@mail.Qinghe.example.com>"])
def test_a_message_from_the_dkim_domain_or_a_subdomain_is_signed_and_verifies(dkim_settings, from_email):
    raw = _signed(from_email, dkim_settings)

    assert raw.startswith(b"DKIM-Signature: ")
    signature = email_package.message_from_bytes(raw)["DKIM-Signature"]
    tags = dict(tag.split("=", 1) for tag in re.sub(r"\s+", "", signature).split(";") if tag)
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == ("rsa-sha256", "relaxed/relaxed", "qinghe.example.com", "s2026")
    assert tags["h"].lower().split(":") == ["from", "to", "subject", "date", "message-id", "reply-to", "list-unsubscribe",
                                            "list-unsubscribe-post", "mime-version", "content-type"]
    assert dkim_settings.verify(raw)


def test_a_tampered_body_or_header_fails_verification(dkim_settings):
    raw = _signed("青禾生活 <hello@qinghe.example.com>", dkim_settings)

    assert dkim_settings.verify(raw)
    assert not dkim_settings.verify(raw.replace("好久不见".encode(), "好久不贱".encode()))
    assert not dkim_settings.verify(raw.replace(b"care@qinghe.example.com", b"care@elsewhere.example.com"))


def test_a_from_domain_dkim_does_not_align_with_is_sent_unsigned_with_one_warning(dkim_settings, caplog):
    caplog.set_level(logging.WARNING, logger="campaigns.channels.email")

    raws = [_signed(f"Shop <hello@{domain}>", dkim_settings)
            for domain in ("other.example.com", "other.example.com", "notqinghe.example.com")]

    assert not any(raw.startswith(b"DKIM-Signature") for raw in raws)
    warnings = [record.getMessage() for record in caplog.records if "dkim_unaligned" in record.getMessage()]
    assert len(warnings) == 2 and "from_domain=other.example.com" in warnings[0]
    assert "from_domain=notqinghe.example.com" in warnings[1]  # a suffix is not a subdomain


def test_without_dkim_settings_nothing_is_signed(settings):
    settings.DKIM_DOMAIN = settings.DKIM_SELECTOR = settings.DKIM_PRIVATE_KEY_FILE = ""

    raw = _signed("青禾生活 <hello@qinghe.example.com>", None)

    assert raw.startswith(b"Content-Type: multipart/alternative")


def test_the_key_is_read_once_per_process(dkim_settings):
    email_channel.dkim_private_key.cache_clear()

    for _ in range(3):
        _signed("青禾生活 <hello@qinghe.example.com>", dkim_settings)

    assert email_channel.dkim_private_key.cache_info().misses == 1


def test_over_smtp_the_envelope_is_default_from_email_and_the_from_the_brands_signed(fake_smtp, dkim_settings, settings):
    settings.DEFAULT_FROM_EMAIL = "Win-back <bounces@qinghe.example.com>"
    brand = BrandFactory(name="青禾生活", from_email="hello@qinghe.example.com", reply_to="care@qinghe.example.com")
    campaign = CampaignFactory(brand=brand)

    with EmailTransport(concurrency=1) as transport:
        transport.send(message(CustomerFactory(email="ann@example.com"), campaign=campaign))

    (envelope_from, recipients, raw), = fake_smtp.sent
    assert envelope_from == "Win-back <bounces@qinghe.example.com>"  # smtplib sends MAIL FROM:<bounces@...>
    assert recipients == ["ann@example.com"]
    parsed = email_package.message_from_bytes(raw, policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == "hello@qinghe.example.com"
    assert dkim_settings.verify(raw)


# DKIM settings fail loudly at start-up.

@pytest.mark.parametrize("variables, named", [
    ({"DKIM_DOMAIN": "qinghe.example.com", "DKIM_SELECTOR": "s2026"}, "DKIM_PRIVATE_KEY_FILE"),
    ({"DKIM_PRIVATE_KEY_FILE": "KEY"}, "DKIM_DOMAIN"),
    ({"DKIM_DOMAIN": "qinghe.example.com", "DKIM_PRIVATE_KEY_FILE": "KEY"}, "DKIM_SELECTOR"),
    ({"DKIM_DOMAIN": "qinghe.example.com", "DKIM_SELECTOR": "s2026", "DKIM_PRIVATE_KEY_FILE": "/nonexistent/dkim.pem"},
     "DKIM_PRIVATE_KEY_FILE cannot be read"),
    ({"DKIM_DOMAIN": "qinghe.example.com", "DKIM_SELECTOR": "s2026", "DKIM_PRIVATE_KEY_FILE": "NOT_A_KEY"},
     "DKIM_PRIVATE_KEY_FILE is not a PEM RSA private key"),
    ({"DKIM_DOMAIN": "hello@qinghe.example.com", "DKIM_SELECTOR": "s2026", "DKIM_PRIVATE_KEY_FILE": "KEY"}, "DKIM_DOMAIN"),
])
def test_half_configured_dkim_refuses_to_start(production_env, dkim_key, tmp_path, variables, named):  # noqa: F811
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello\n")
    paths = {"KEY": dkim_key.path, "NOT_A_KEY": str(not_a_key)}
    env = {**production_env, **{name: paths.get(value, value) for name, value in variables.items()}}

    result = django_setup(env)

    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured:") and named in last_line, result.stderr


def test_complete_dkim_settings_start(production_env, dkim_key):  # noqa: F811
    env = {**production_env, "DKIM_DOMAIN": "Qinghe.Example.com.", "DKIM_SELECTOR": "s2026", "DKIM_PRIVATE_KEY_FILE": dkim_key.path}

    result = run_python(env, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DKIM_DOMAIN)")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "qinghe.example.com"
