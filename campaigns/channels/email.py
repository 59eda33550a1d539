"""Email through Django's configured EMAIL_BACKEND (EMAIL_URL: smtp, console, file; locmem in tests).

Every marketing email carries a text and an HTML part, a Message-ID in our own domain and the
RFC 8058 headers Gmail and Yahoo require of bulk senders:
``List-Unsubscribe: <https://...>`` (plus ``<mailto:...>`` when LIST_UNSUBSCRIBE_MAILTO is
set) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. Django encodes non-ASCII
subjects and display names (RFC 2047), so 想你了！ arrives as written.

With Django's SMTP backend the transport writes each message's bytes itself
(``marketing_email_bytes``: the same bytes Django's generator writes, proven by a property
test) and hands them to the backend's open session; every other backend (console, file,
locmem, anymail's) gets the ``EmailMultiAlternatives`` as usual.
"""

import functools
import re
import secrets
import smtplib
from concurrent.futures import ThreadPoolExecutor
from email._policybase import Compat32
from email.utils import formataddr, make_msgid
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from campaigns.channels.base import OutboundMessage, Transport, TransportError


def _message_id_domain() -> str:
    return urlsplit(settings.SITE_URL).hostname or "localhost"


def list_unsubscribe_headers(unsubscribe_url: str) -> dict[str, str]:
    targets = [f"<{unsubscribe_url}>"]
    mailto = getattr(settings, "LIST_UNSUBSCRIBE_MAILTO", "")
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def send_concurrency() -> int:
    """SMTP sessions one worker process keeps open (EMAIL_SEND_CONCURRENCY, default 4)."""
    return max(int(getattr(settings, "EMAIL_SEND_CONCURRENCY", 4)), 1)


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
    """Django's EmailMultiAlternatives, serialized faster (see above); the same bytes otherwise."""

    def message(self, **kwargs):
        msg = super().message(**kwargs)
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


def marketing_email_bytes(email: "MarketingEmail", *, date: str) -> bytes | None:
    """``email.message().as_bytes(linesep="\\r\\n")``, byte for byte, built directly.

    A marketing email is always the same shape: a text and an HTML part, UTF-8, 8bit, and a
    handful of headers. Building it through ``email.mime`` objects and the generator cost a
    third of the CPU of sending it; this writes the same bytes from the same header encoding
    (Django's ``forbid_multi_line_headers`` and compat32's folding, memoized) without the
    object tree. ``tests/campaigns/test_channels_email.py`` compares the two on generated
    messages. Returns None for what it does not cover (a line over 998 bytes, which Django
    sends quoted-printable, other alternatives or attachments): the caller then uses Django's.
    """
    from django.core.mail.message import forbid_multi_line_headers

    if email.attachments or [mimetype for _content, mimetype in email.alternatives] != ["text/html"] or \
            email.content_subtype != "plain" or (email.encoding or settings.DEFAULT_CHARSET).lower() != "utf-8" or \
            not email.body:  # Django leaves an empty text part out
        return None
    parts = [_part_bytes(email.body, "plain"), _part_bytes(email.alternatives[0][0], "html")]
    if None in parts:
        return None
    boundary = f"==============={secrets.token_hex(16)}=="
    if any(boundary.encode() in part for part in parts):
        return None
    extra = email.extra_headers
    headers = [("Subject", email.subject), ("From", extra.get("From", email.from_email))]
    if "To" in extra or email.to:
        headers.append(("To", extra["To"] if "To" in extra else ", ".join(str(v) for v in email.to)))
    names = {name.lower() for name in extra}
    if email.cc or email.bcc or email.reply_to or names & {"cc", "reply-to"}:
        return None
    if "date" not in names:
        headers.append(("Date", date))
    if "message-id" not in names:
        return None
    headers.extend((name, value) for name, value in extra.items() if name.lower() not in {"from", "to", "cc", "reply-to"})
    # sanitize=False: what compat32's fold_binary (the BytesGenerator's) passes for 8bit messages.
    out = [_fold("Content-Type", f'multipart/alternative; boundary="{boundary}"', False, "\r\n", 78),
           "MIME-Version: 1.0\r\n"]
    for name, value in headers:
        name, value = forbid_multi_line_headers(name, value, "utf-8")
        out.append(_fold(name, value, False, "\r\n", 78))
    out.append("\r\n")
    delimiter = f"--{boundary}\r\n".encode()
    return b"".join([
        "".join(out).encode("ascii", "surrogateescape"), delimiter, parts[0], b"\r\n", delimiter, parts[1],
        f"\r\n--{boundary}--\r\n".encode(),
    ])


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
        self._pool = None

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
        name = "".join(ch for ch in getattr(message.customer, "name", "") or "" if ch.isprintable())
        headers = {"Message-ID": make_msgid(domain=_message_id_domain())}
        if rendered.unsubscribe_url:
            headers.update(list_unsubscribe_headers(rendered.unsubscribe_url))
        email = MarketingEmail(
            subject=rendered.subject, body=rendered.text, from_email=settings.DEFAULT_FROM_EMAIL,
            to=[formataddr((name, message.to)) if name else message.to], headers=headers,
            connection=self.connection,
        )
        email.attach_alternative(rendered.html, "text/html")
        return email

    def _smtp_session(self):
        """The open smtplib session when the backend is Django's SMTP backend, else None."""
        from django.core.mail.backends.smtp import EmailBackend as SmtpBackend

        backend = self.connection
        # Exactly Django's class: a subclass may do more in _send (DKIM signing, say).
        return backend.connection if type(backend) is SmtpBackend else None

    def _send_direct(self, session, email, to: str) -> bool:
        """Django's SMTP backend, with its session open: give the session the message's bytes
        (``marketing_email_bytes``) and skip the backend's MIME object tree. False when the
        message is not of the shape it covers; the caller then goes through the backend."""
        from django.core.mail.message import sanitize_address
        from email.utils import formatdate

        raw = marketing_email_bytes(email, date=formatdate(localtime=settings.EMAIL_USE_LOCALTIME))
        if raw is None:
            return False
        if self._envelope_from is None:
            self._envelope_from = sanitize_address(email.from_email, "utf-8")
        recipient = to if to.isascii() else sanitize_address(to, "utf-8")  # IDN domains: punycode, as Django does
        session.sendmail(self._envelope_from, [recipient], raw)
        return True

    def send(self, message: OutboundMessage) -> str:
        email = self.build(message)
        if self._broken:
            self.open()
        try:
            session = self._smtp_session()
            if session is not None and self._send_direct(session, email, message.to):
                sent = 1
            else:
                sent = self.connection.send_messages([email])
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
        lanes = min(self._concurrency, len(messages) // 8 + 1)  # a handful of messages: one session
        if lanes <= 1 or not self._batch:
            return super().send_many(messages, before_each=before_each)
        while len(self._lanes) < lanes - 1:
            lane = EmailTransport(concurrency=1)
            try:
                lane.open()
            except TransportError:
                break  # fewer sessions than hoped: the open ones carry the batch
            self._lanes.append(lane)
        workers = [self, *self._lanes]
        if self._pool is None or self._pool._max_workers < len(workers):
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="smtp")
        # Round-robin slices: each session sends every len(workers)-th message.
        slices = [messages[index::len(workers)] for index in range(len(workers))]
        futures = [self._pool.submit(Transport.send_many, worker, part, before_each=before_each)
                   for worker, part in zip(workers, slices)]
        results = [None] * len(messages)
        for index, future in enumerate(futures):
            results[index::len(workers)] = future.result()
        return results

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

    def send_test(self, *, to: str, message) -> str:
        rendered = message
        email = MarketingEmail(
            subject=f"[TEST] {rendered.subject}", body=rendered.text, from_email=settings.DEFAULT_FROM_EMAIL,
            to=[to], headers={"Message-ID": make_msgid(domain=_message_id_domain())},
            connection=self.connection,
        )
        email.attach_alternative(rendered.html, "text/html")
        self.connection.send_messages([email])
        return "sent by email"
