"""Email through Django's configured EMAIL_BACKEND (EMAIL_URL: smtp, console, file; locmem in tests).

Every marketing email carries a text and an HTML part, a Message-ID in our own domain and the
RFC 8058 headers Gmail and Yahoo require of bulk senders:
``List-Unsubscribe: <https://...>`` (plus ``<mailto:...>`` when LIST_UNSUBSCRIBE_MAILTO is
set) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. It comes From the campaign's
brand (``brand.from_name or brand.name`` at ``brand.from_email``, else DEFAULT_FROM_EMAIL's
address), with a Reply-To when the brand has one. Non-ASCII subjects and display names are
RFC 2047 encoded, so 想你了！ arrives as written, and the Date carries a real offset.

With Django's SMTP backend the transport hands each message's bytes to the backend's open
session itself:

- the bytes: ``marketing_email_bytes`` (what Django's generator writes for ``MarketingEmail``,
  proven by a property test) when the message has the shape it covers, else Django's own;
  8bit parts go out only when the server offers 8BITMIME (declared with ``BODY=8BITMIME``),
  otherwise the parts are re-encoded quoted-printable or base64;
- the envelope sender (where bounces go) is always DEFAULT_FROM_EMAIL's address, whatever
  brand the From shows;
- with DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY_FILE set, the final bytes are signed
  (``dkim_sign``) when the From domain is DKIM_DOMAIN or a subdomain of it.

Every other backend (console, file, locmem, anymail's) gets the ``EmailMultiAlternatives``
as usual: those write or sign their own bytes.
"""

import functools
import logging
import queue
import re
import secrets
import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone as dt_timezone
from email import charset as email_charset
from email._policybase import Compat32
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import dkim
from django.conf import settings
from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.core.mail.message import forbid_multi_line_headers, sanitize_address

from campaigns.channels.base import OutboundMessage, Sending, Transport, TransportError

logger = logging.getLogger(__name__)


def _message_id_domain() -> str:
    return urlsplit(settings.SITE_URL).hostname or "localhost"


def list_unsubscribe_headers(unsubscribe_url: str) -> dict[str, str]:
    targets = [f"<{unsubscribe_url}>"]
    mailto = getattr(settings, "LIST_UNSUBSCRIBE_MAILTO", "")
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def _printable(name: str) -> str:
    return "".join(ch for ch in name if ch.isprintable())


def brand_from_email(brand) -> str:
    """The From of a brand's messages: ``brand.from_name or brand.name`` at ``brand.from_email``
    (DEFAULT_FROM_EMAIL's address when blank); DEFAULT_FROM_EMAIL itself without a brand."""
    if brand is None:
        return settings.DEFAULT_FROM_EMAIL
    address = brand.from_email or parseaddr(settings.DEFAULT_FROM_EMAIL)[1]
    name = _printable(brand.from_name or brand.name or "")
    if not name:
        return address
    # formataddr encodes a non-ASCII name (RFC 2047) and quotes one with specials (a comma);
    # Django's sanitize_address also turns an internationalized domain into punycode.
    return formataddr((name, address)) if address.isascii() else sanitize_address((name, address), "utf-8")


# A batch this big opens the extra SMTP sessions (EMAIL_SEND_CONCURRENCY); a smaller one, while
# none is open, goes over the transport's own session.
LANES_FROM = 8


def send_concurrency() -> int:
    """SMTP sessions one worker process keeps open (EMAIL_SEND_CONCURRENCY, default 4)."""
    return max(int(getattr(settings, "EMAIL_SEND_CONCURRENCY", 4)), 1)


def email_date() -> str:
    """Now, as an RFC 5322 Date: "+0000", or the local offset with EMAIL_USE_LOCALTIME.

    (``email.utils.formatdate``, which Django uses, writes "-0000" in UTC: RFC 5322's "the
    local offset is unknown", which some filters count against a sender.)
    """
    now = datetime.now(dt_timezone.utc)
    return format_datetime(now.astimezone() if settings.EMAIL_USE_LOCALTIME else now)


# An ASCII subject compat32 folds as it is and every parser reads back exactly: printable words
# joined by single spaces, none too long to share the first line with "Subject: " (78 - 9).
_PLAIN_SUBJECT = re.compile(r"[\x21-\x7e]{1,69}(?: [\x21-\x7e]{1,69})*\Z")


def subject_header(subject: str) -> "str | Header":
    """The Subject header's value, encoded so that it reads back exactly as ``subject``.

    Django encodes a non-ASCII subject as ``Header(subject, "utf-8").encode()``: encoded
    words sized as if the header had no name, so compat32 then moves the first one, too long
    to follow "Subject: ", to a line of its own. A header that starts with an empty line reads
    back with a leading space in modern parsers (Python's ``policy.default``, Gmail's), and most
    Chinese subjects are long enough for that. ``Header(..., header_name="Subject")``
    sizes the first encoded word to share the line with the name. Anything not plainly ASCII
    (a long word, double spaces, an "=?" a reader would take for an encoded word) is encoded.
    """
    if _PLAIN_SUBJECT.match(subject) and "=?" not in subject:
        return subject
    return Header(subject, "utf-8", header_name="Subject")


def _check_header_value(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:  # as Django's forbid_multi_line_headers: no header injection
        raise BadHeaderError(f"Header values can't contain newlines (got {value!r} for header {name!r})")


# Serializing a message ------------------------------------------------------------------------
#
# Python's email generator (policy compat32, which Django uses) folds every header through
# email.header.Header, and picks a multipart boundary by compiling a regular expression unique
# to each message. Together that was half of the CPU an email cost a worker. Both are pure
# functions of their input, so:
#
# - ``_FOLDING_POLICY`` memoizes compat32's folding per (header, value): a campaign's From,
#   Subject (when not personal), MIME-Version, Content-Type of the parts... are folded once per
#   process, not once per message. A value that is plain printable ASCII with single spaces and
#   fits on one line folds to itself under compat32 (``tests/campaigns/test_channels_email.py``
#   proves it against compat32 with generated values), so it skips ``Header`` altogether.
# - ``MarketingEmail`` sets a random 128-bit boundary up front, checked against the parts'
#   text with a substring test (stricter than the generator's line-anchored one).

_ONE_LINE_ASCII = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*\Z")
_COMPAT32 = Compat32()


@functools.lru_cache(maxsize=4096)
def _fold(name: str, value: str, sanitize: bool, linesep: str, max_line_length: int | None) -> str:
    if max_line_length and len(name) + 2 + len(value) <= max_line_length and _ONE_LINE_ASCII.match(value):
        return f"{name}: {value}{linesep}"
    return _COMPAT32.clone(linesep=linesep, max_line_length=max_line_length)._fold(name, value, sanitize)


class _MemoizedFoldingPolicy(Compat32):
    """compat32, byte for byte, with its header folding memoized."""

    def _fold(self, name, value, sanitize):
        if value.__class__ is str:
            return _fold(name, value, sanitize, self.linesep, self.max_line_length)
        return super()._fold(name, value, sanitize)


_FOLDING_POLICY = _MemoizedFoldingPolicy()


class MarketingEmail(EmailMultiAlternatives):
    """Django's EmailMultiAlternatives, serialized faster (see above), with a Subject that reads
    back exactly (``subject_header``) and a Date with a real offset (``email_date``); Django's
    bytes otherwise."""

    def message(self, **kwargs):
        msg = super().message(**kwargs)
        # Django has checked the subject for newlines; replace_header keeps the header's place.
        msg.replace_header("Subject", subject_header(str(self.subject)))
        if "date" not in {name.lower() for name in self.extra_headers}:
            msg.replace_header("Date", email_date())
        if msg.is_multipart():
            # The parts' sources: their 8bit form is the same text, and quoted-printable and
            # base64 never write fifteen "=" in a row, so a boundary absent here is absent there.
            texts = [self.body, *(content for content, _mimetype in self.alternatives)]
            while True:
                boundary = f"==============={secrets.token_hex(16)}=="
                if not any(boundary in text for text in texts if isinstance(text, str)):
                    break
            msg.set_boundary(boundary)
        msg.policy = _FOLDING_POLICY
        return msg


_NEWLINE = re.compile(r"\r\n|\r|\n")
_MAX_LINE_BYTES = 998  # RFC 5322; Django switches a part to quoted-printable above it


def _part_bytes(content: str, subtype: str) -> bytes | None:
    """One 8bit UTF-8 text part, as compat32 writes it; None when a line needs quoted-printable."""
    lines = _NEWLINE.split(content)
    encoded = [line.encode("utf-8", "surrogateescape") for line in lines]
    if any(len(line) > _MAX_LINE_BYTES for line in encoded):
        return None
    transfer_encoding = "7bit" if content.isascii() else "8bit"
    head = (f'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
            f"Content-Transfer-Encoding: {transfer_encoding}\r\n\r\n").encode()
    return head + b"\r\n".join(encoded)


@functools.lru_cache(maxsize=1024)
def _subject_line(subject: str) -> str:
    """The folded Subject line ``MarketingEmail.message()`` writes (see ``subject_header``)."""
    value = subject_header(subject)
    if value.__class__ is str:
        return _fold("Subject", value, False, "\r\n", 78)
    return "Subject: " + value.encode(linesep="\r\n", maxlinelen=78) + "\r\n"  # compat32's _fold of a Header


def marketing_email_bytes(email: "MarketingEmail", *, date: str | None = None) -> bytes | None:
    """``email.message().as_bytes(linesep="\\r\\n")``, byte for byte, built directly.

    A marketing email is always the same shape: a text and an HTML part, UTF-8, 8bit, and a
    handful of headers. Building it through ``email.mime`` objects and the generator cost a
    third of the CPU of sending it; this writes the same bytes from the same header encoding
    (Django's ``forbid_multi_line_headers``, ``subject_header`` and compat32's folding,
    memoized) in the order Django's ``EmailMessage.message()`` sets them (Subject, From, To,
    Reply-To, Date, then the extra headers) without the object tree.
    ``tests/campaigns/test_channels_email.py`` compares the two on generated messages. The Date
    is ``date`` (``email_date()`` when None) unless the extra headers carry one. Returns None
    for what it does not cover (a line over 998 bytes, which Django sends quoted-printable, a
    Cc, other alternatives or attachments, no Message-ID): the caller then uses Django's.
    """
    if email.attachments or [mimetype for _content, mimetype in email.alternatives] != ["text/html"] or \
            email.content_subtype != "plain" or str(email.encoding or settings.DEFAULT_CHARSET).lower() != "utf-8" or \
            not email.body:  # Django leaves an empty text part out
        return None
    extra = email.extra_headers
    names = {name.lower() for name in extra}
    if email.cc or names & {"cc", "subject"} or "message-id" not in names:
        return None
    parts = [_part_bytes(email.body, "plain"), _part_bytes(email.alternatives[0][0], "html")]
    if None in parts:
        return None
    boundary = f"==============={secrets.token_hex(16)}=="
    if any(boundary.encode() in part for part in parts):
        return None
    subject = str(email.subject)
    _check_header_value("Subject", subject)
    headers = [("From", extra.get("From", email.from_email))]
    # Django takes To and Reply-To from the extra headers under exactly these names, else from
    # the lists, and drops the extra headers of those names in any other case.
    if "To" in extra or email.to:
        headers.append(("To", extra["To"] if "To" in extra else ", ".join(str(v) for v in email.to)))
    if "Reply-To" in extra or email.reply_to:
        headers.append(("Reply-To", extra["Reply-To"] if "Reply-To" in extra else ", ".join(str(v) for v in email.reply_to)))
    if "date" not in names:
        headers.append(("Date", date or email_date()))
    headers.extend((name, value) for name, value in extra.items() if name.lower() not in {"from", "to", "cc", "reply-to"})
    # sanitize=False: what compat32's fold_binary (the BytesGenerator's) passes for 8bit messages.
    out = [_fold("Content-Type", f'multipart/alternative; boundary="{boundary}"', False, "\r\n", 78),
           "MIME-Version: 1.0\r\n", _subject_line(subject)]
    for name, value in headers:
        name, value = forbid_multi_line_headers(name, value, "utf-8")
        out.append(_fold(name, value, False, "\r\n", 78))
    out.append("\r\n")
    delimiter = f"--{boundary}\r\n".encode()
    return b"".join([
        "".join(out).encode("ascii", "surrogateescape"), delimiter, parts[0], b"\r\n", delimiter, parts[1],
        f"\r\n--{boundary}--\r\n".encode(),
    ])


# 8BITMIME, or not ---------------------------------------------------------------------------
#
# A server that does not offer 8BITMIME must get 7-bit lines (RFC 6152), and a relay that
# converts 8bit to quoted-printable on the way breaks a DKIM body hash. So without 8BITMIME
# the parts are re-encoded before signing: quoted-printable for mostly-ASCII text (HTML markup),
# base64 for mostly-CJK text, which quoted-printable would triple (=E4=BD=A0 per character).

_QP = email_charset.Charset("utf-8")
_QP.body_encoding = email_charset.QP
_BASE64 = email_charset.Charset("utf-8")
_BASE64.body_encoding = email_charset.BASE64


def seven_bit_bytes(email: EmailMultiAlternatives) -> bytes:
    """Django's bytes for ``email`` with every 8bit part re-encoded quoted-printable or base64."""
    msg = email.message()
    for part in msg.walk():
        if part.is_multipart() or part.get("Content-Transfer-Encoding", "").lower() != "8bit":
            continue
        data = part.get_payload(decode=True)
        non_ascii = sum(byte > 0x7f for byte in data)
        # quoted-printable: 1 byte per ASCII byte, 3 per other; base64: 4 per 3 bytes.
        charset = _QP if len(data) + 2 * non_ascii <= len(data) * 4 // 3 else _BASE64
        text = data.decode(part.get_content_charset() or "utf-8", "surrogateescape")
        if charset is _BASE64:  # text is base64-encoded in its canonical form, CRLF line ends (RFC 2045 6.8)
            text = _NEWLINE.sub("\r\n", text)
        del part["Content-Transfer-Encoding"]
        part.set_payload(text, charset=charset)
    return msg.as_bytes(linesep="\r\n")


# DKIM ---------------------------------------------------------------------------------------

# What the signature covers (RFC 6376 5.4): what a reader sees and what the one-click
# unsubscribe depends on. A header listed but absent is signed as absent, so nobody can add
# a Reply-To or a List-Unsubscribe on the way without breaking the signature.
DKIM_SIGNED_HEADERS = (
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Reply-To", b"List-Unsubscribe",
    b"List-Unsubscribe-Post", b"MIME-Version", b"Content-Type",
)
_unaligned_domains: set[str] = set()
_unaligned_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def dkim_private_key(path: str) -> bytes:
    """The PEM key at ``path``, read once per process (config.settings has checked it parses).
    dkimpy finds the PEM body between "--\\n" and "\\n--": CRLF line ends are normalized."""
    return Path(path).read_bytes().replace(b"\r\n", b"\n")


@functools.lru_cache(maxsize=256)
def _address_domain(mailbox: str) -> str:
    return parseaddr(mailbox)[1].rpartition("@")[2].strip().rstrip(".").lower()


def dkim_sign(raw: bytes, *, from_header: str) -> bytes:
    """``raw`` with a DKIM-Signature header first (rsa-sha256, relaxed/relaxed), when DKIM is
    configured and ``from_header``'s domain is DKIM_DOMAIN or a subdomain of it; else ``raw``.

    A signature of another domain than the From's does not count for DMARC, which wants the
    two aligned: such a message goes unsigned, with a warning logged once per domain and
    process (the brand's from_email, or DEFAULT_FROM_EMAIL, needs a key of its own domain).
    """
    domain = getattr(settings, "DKIM_DOMAIN", "")
    selector = getattr(settings, "DKIM_SELECTOR", "")
    key_file = getattr(settings, "DKIM_PRIVATE_KEY_FILE", "")
    if not (domain and selector and key_file):
        return raw
    domain = domain.lower().rstrip(".")
    from_domain = _address_domain(from_header)
    if from_domain != domain and not from_domain.endswith("." + domain):
        if from_domain not in _unaligned_domains:
            with _unaligned_lock:
                if from_domain not in _unaligned_domains:
                    _unaligned_domains.add(from_domain)
                    logger.warning("dkim_unaligned from_domain=%s dkim_domain=%s: sending unsigned; DMARC "
                                   "needs a DKIM key of the From domain", from_domain, domain)
        return raw
    signature = dkim.sign(
        raw, selector.encode("ascii"), domain.encode("ascii"), dkim_private_key(key_file),
        canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=b"rsa-sha256", include_headers=list(DKIM_SIGNED_HEADERS),
    )
    return signature + raw


class EmailTransport(Transport):
    """One backend connection per batch (``open``/``close``): an SMTP session is reused for
    every message of a chunk instead of a TCP+TLS handshake each.

    ``send_many`` spreads a batch over up to ``send_concurrency()`` sessions, one thread each.
    SMTP is four round trips per message (MAIL, RCPT, DATA, the body) and the thread waiting on
    one releases the GIL, so the other sessions build and send meanwhile. A transport given
    an explicit ``connection`` (tests, the admin's test send) uses that one session only.
    """

    channel = "email"

    def __init__(self, *, connection=None, concurrency: int | None = None):
        self._connection = connection
        self._batch = False  # inside open()/close(): keep one session alive
        self._broken = False  # the session died; reopen before the next message
        self._concurrency = 1 if connection is not None else (concurrency or send_concurrency())
        self._lanes: list[EmailTransport] = []  # the extra sessions, opened on the first big batch
        self._envelope_from = None  # DEFAULT_FROM_EMAIL as the SMTP envelope wants it, once
        self._pool = None  # one thread per session, once the extra sessions are open
        self._free = None  # the sessions no thread is using

    @property
    def connection(self):
        if self._connection is None:
            self._connection = get_connection(fail_silently=False)
        return self._connection

    def open(self) -> None:
        try:
            self.connection.open()
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"cannot connect to the mail server: {exc}") from exc
        self._batch = True
        self._broken = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for lane in self._lanes:
            lane.close()
        self._lanes = []
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # noqa: BLE001 - closing a dead connection must not hide the real error
                pass
        self._batch = False

    def build(self, message: OutboundMessage) -> EmailMultiAlternatives:
        rendered = message.rendered
        # A name with a vertical tab, form feed or another line break Python's email package
        # splits on would break the To header: keep printable characters only.
        name = _printable(getattr(message.customer, "name", "") or "")
        headers = {"Message-ID": make_msgid(domain=_message_id_domain())}
        if rendered.unsubscribe_url:
            headers.update(list_unsubscribe_headers(rendered.unsubscribe_url))
        brand = getattr(message.campaign, "brand", None)
        email = MarketingEmail(
            subject=rendered.subject, body=rendered.text, from_email=brand_from_email(brand),
            to=[formataddr((name, message.to)) if name else message.to], headers=headers,
            reply_to=[brand.reply_to] if brand is not None and brand.reply_to else None,
            connection=self.connection,
        )
        email.attach_alternative(rendered.html, "text/html")
        return email

    def _deliver(self, email: EmailMultiAlternatives, to: str) -> int:
        """Hand ``email`` (for ``to``) to the backend; over Django's SMTP backend, to its session."""
        backend = self.connection
        # Exactly Django's class: a subclass may do more in _send, which this path bypasses.
        if type(backend) is not SmtpBackend:
            return backend.send_messages([email])
        opened = backend.open()  # True outside open()/close(): a session for this message only
        try:
            self._send_smtp(backend.connection, email, to)
        finally:
            if opened:
                backend.close()
        return 1

    def _send_smtp(self, session: smtplib.SMTP, email: EmailMultiAlternatives, to: str) -> None:
        """Write ``email``'s bytes to the open ``session``, for ``to``, bounces to DEFAULT_FROM_EMAIL.

        The direct bytes (``marketing_email_bytes``: no MIME object tree) when the message has
        their shape, Django's otherwise; 8bit only to a server that offers 8BITMIME (declared
        ``BODY=8BITMIME``), else 7-bit parts (``seven_bit_bytes``); then DKIM-signed
        (``dkim_sign``), so every message that leaves over SMTP carries the signature.
        """
        # smtplib says EHLO lazily (Django's open() only through STARTTLS or AUTH); the
        # extensions are known after it.
        session.ehlo_or_helo_if_needed()
        eight_bit = session.has_extn("8bitmime")
        raw = marketing_email_bytes(email)
        if raw is None or not (eight_bit or raw.isascii()):
            raw = email.message().as_bytes(linesep="\r\n") if eight_bit else seven_bit_bytes(email)
        raw = dkim_sign(raw, from_header=email.extra_headers.get("From", email.from_email))
        if self._envelope_from is None:
            self._envelope_from = sanitize_address(settings.DEFAULT_FROM_EMAIL, "utf-8")
        recipient = to if to.isascii() else sanitize_address(to, "utf-8")  # IDN domains: punycode, as Django does
        options = ["BODY=8BITMIME"] if eight_bit and not raw.isascii() else []
        session.sendmail(self._envelope_from, [recipient], raw, mail_options=options)

    def send(self, message: OutboundMessage) -> str:
        email = self.build(message)
        if self._broken:
            self.open()
        try:
            sent = self._deliver(email, message.to)
        except smtplib.SMTPRecipientsRefused as exc:
            code = min((value[0] for value in exc.recipients.values()), default=550)
            self._reset()
            raise TransportError(f"recipient refused ({code})", permanent=code >= 500, bad_address=code in (550, 551, 553)) from exc
        except smtplib.SMTPResponseException as exc:
            self._reset()
            raise TransportError(f"mail server said {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Disconnects and timeouts: the next message reconnects.
            self._reset()
            raise TransportError(f"mail server unavailable: {exc}") from exc
        if not sent:
            raise TransportError("the mail backend accepted no message")
        return email.extra_headers["Message-ID"]

    def send_many(self, messages, *, before_each=None) -> list:
        """Send a batch over several sessions at once; results in the order of ``messages``."""
        return self.start_many(messages, before_each=before_each).wait()

    def start_many(self, messages, *, before_each=None) -> Sending:
        """Start sending ``messages`` over the open sessions; ``.wait()`` returns the results in order.

        The batch is cut into one part per session (every n-th message), each sent by the next
        free session, one thread per session: a batch started while an earlier one is still going
        out queues behind it, and a session that is done with its part of the earlier batch starts
        on the next without waiting for the others. The extra sessions open with the first batch
        of ``LANES_FROM`` messages or more (a handful of messages takes one session); from then on
        every message goes through them, since the transport's own session is one of them.
        """
        if not self._batch or (self._pool is None and (self._concurrency <= 1 or len(messages) < LANES_FROM)):
            return Sending(Transport.send_many(self, messages, before_each=before_each))
        if self._pool is None:
            while len(self._lanes) < self._concurrency - 1:
                lane = EmailTransport(concurrency=1)
                try:
                    lane.open()
                except TransportError:
                    break  # fewer sessions than hoped: the open ones carry the batch
                self._lanes.append(lane)
            self._free = queue.SimpleQueue()
            for session in (self, *self._lanes):
                self._free.put(session)
            self._pool = ThreadPoolExecutor(max_workers=len(self._lanes) + 1, thread_name_prefix="smtp")
        parts = min(len(self._lanes) + 1, len(messages))
        positions = [list(range(index, len(messages), parts)) for index in range(parts)]
        futures = [self._pool.submit(self._send_on_a_free_session, messages[index::parts], before_each)
                   for index in range(parts)]
        return Sending(futures=futures, positions=positions)

    def _send_on_a_free_session(self, messages, before_each):
        session = self._free.get()  # one per pool thread: never waits
        try:
            return Transport.send_many(session, messages, before_each=before_each)
        finally:
            self._free.put(session)

    def _reset(self) -> None:
        # A session that saw an error may be mid-transaction or dead: start a clean one for the
        # next message of the batch. Only THIS session: _reset runs on a lane's thread, and
        # close() would shut down the lane pool and the other lanes' sessions under them.
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # noqa: BLE001 - closing a dead connection must not hide the real error
                pass
        self._broken = self._batch

    def send_test(self, *, to: str, message, brand=None) -> str:
        rendered = message
        email = MarketingEmail(
            subject=f"[TEST] {rendered.subject}", body=rendered.text, from_email=brand_from_email(brand),
            to=[to], headers={"Message-ID": make_msgid(domain=_message_id_domain())},
            reply_to=[brand.reply_to] if brand is not None and brand.reply_to else None,
            connection=self.connection,
        )
        email.attach_alternative(rendered.html, "text/html")
        self._deliver(email, to)
        return "sent by email"
