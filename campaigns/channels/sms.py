"""SMS through SMS_BACKEND, with the market's rules enforced here, at the last moment.

Backends (``SMS_BACKEND``): ``console`` (log only), ``file`` (one JSON object per line,
``{"to", "text", "campaign"}``, appended to SMS_FILE_PATH; replies are read from
SMS_REPLIES_PATH), ``http`` (a gateway, format below), or a dotted path to a class.

The transport, whatever the backend:

- starts every message with the signature in 【】 (the campaign's brand's ``sms_signature``;
  ContactPolicy.sms_signature for a message without a brand, such as a test send) and ends it
  with the opt-out instruction (ContactPolicy.sms_opt_out_text, "回复TD退订" by default), set
  off as its own sentence: "【青禾生活】…今天回来就生效。回复TD退订" (``sms_compose``);
- refuses to send outside the sending window in the customer's time zone (ChannelPolicy for
  SMS, 08:00-21:00 by default) with a transient error that says when the window opens;
- refuses when SMS is switched off globally (ContactPolicy.sms_enabled) or for the campaign.

HTTP gateway (``SMS_BACKEND=http``): ``POST SMS_HTTP_URL`` with header
``Authorization: Bearer SMS_HTTP_TOKEN`` and JSON body
``{"to": "+8613812345678", "text": "【品牌】…回复TD退订", "campaign": "name", "reference": "delivery id"}``;
a 2xx answer is ``{"id": "provider message id"}``. 4xx is permanent (a 422, or an ``error`` of
``invalid_number``, means the number is bad and gets suppressed), except 429 (throttled), which
is retried like 5xx, timeouts and connection errors. Replies are pulled with
``GET SMS_HTTP_REPLIES_URL`` (same header), answering ``[{"from", "text", "id", "received_at"}]``
(or ``{"replies": [...]}``).
"""

import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from campaigns.channels.base import OutboundMessage, Transport, TransportError
from campaigns.quiet_hours import customer_zone, window_next_opening

logger = logging.getLogger(__name__)

BAD_NUMBER_ERRORS = {"invalid_number", "invalid_phone", "bad_number", "unknown_number"}


@dataclass(frozen=True)
class SmsInbound:
    """A reply pulled from a provider (see consent.services.sms_replies_pull)."""

    sender: str
    text: str
    provider_id: str = ""
    received_at: str | None = None


class SmsBackend:
    """``send(*, to, text, campaign="", reference="") -> provider id`` (raises TransportError);
    ``fetch_replies() -> iterable of SmsInbound``."""

    def send(self, *, to: str, text: str, campaign: str = "", reference: str = "") -> str:
        raise NotImplementedError

    def fetch_replies(self):
        return []


class ConsoleSmsBackend(SmsBackend):
    def send(self, *, to, text, campaign="", reference=""):
        provider_id = f"console-{uuid.uuid4().hex[:16]}"
        logger.info("sms_console provider_id=%s campaign=%s chars=%d\n%s", provider_id, campaign, len(text), text)
        return provider_id


class FileSmsBackend(SmsBackend):
    def __init__(self, path: str | None = None, replies_path: str | None = None):
        self.path = Path(path or settings.SMS_FILE_PATH)
        default_replies = Path(getattr(settings, "VAR_DIR", ".")) / "sms" / "replies.jsonl"
        self.replies_path = Path(replies_path or getattr(settings, "SMS_REPLIES_PATH", "") or default_replies)

    def send(self, *, to, text, campaign="", reference=""):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"to": to, "text": text, "campaign": campaign}, ensure_ascii=False) + "\n"
        # One write() of the whole line in append mode: lines from concurrent workers never interleave.
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
        return f"file-{uuid.uuid4().hex[:16]}"

    def fetch_replies(self):
        if not self.replies_path.exists():
            return []
        replies = []
        with self.replies_path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("sms_replies_file_bad_line line=%d", number)
                    continue
                replies.append(SmsInbound(
                    sender=str(data.get("sender") or data.get("from") or ""), text=str(data.get("text") or ""),
                    provider_id=str(data.get("provider_id") or data.get("id") or ""), received_at=data.get("received_at"),
                ))
        return replies


class HttpSmsBackend(SmsBackend):
    def __init__(self, url: str | None = None, token: str | None = None, replies_url: str | None = None,
                 timeout: float | None = None):
        self.url = url or getattr(settings, "SMS_HTTP_URL", "")
        self.token = token if token is not None else getattr(settings, "SMS_HTTP_TOKEN", "")
        self.replies_url = replies_url or getattr(settings, "SMS_HTTP_REPLIES_URL", "")
        self.timeout = timeout or getattr(settings, "SMS_HTTP_TIMEOUT", 10)
        self.session = requests.Session()

    def _headers(self):
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def send(self, *, to, text, campaign="", reference=""):
        if not self.url:
            raise TransportError("SMS_HTTP_URL is not set", permanent=True)
        body = {"to": to, "text": text, "campaign": campaign, "reference": reference}
        try:
            response = self.session.post(self.url, json=body, headers=self._headers(), timeout=self.timeout)
        except requests.RequestException as exc:  # timeouts, refused connections
            raise TransportError(f"SMS gateway unreachable: {type(exc).__name__}") from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        status = response.status_code
        if 200 <= status < 300:
            provider_id = str(data.get("id") or "")
            if not provider_id:
                raise TransportError("SMS gateway answered without an id")
            return provider_id
        error = str(data.get("error") or "")
        if status == 429 or status >= 500:
            raise TransportError(f"SMS gateway {status} {error}".strip())
        bad_address = status == 422 or error in BAD_NUMBER_ERRORS
        raise TransportError(f"SMS gateway refused: {status} {error}".strip(), permanent=True, bad_address=bad_address)

    def fetch_replies(self):
        if not self.replies_url:
            return []
        response = self.session.get(self.replies_url, headers=self._headers(), timeout=self.timeout)
        response.raise_for_status()
        data = response.json()
        items = data.get("replies", []) if isinstance(data, dict) else data
        return [
            SmsInbound(sender=str(item.get("from") or item.get("sender") or ""), text=str(item.get("text") or ""),
                       provider_id=str(item.get("id") or item.get("provider_id") or ""), received_at=item.get("received_at"))
            for item in items
        ]


BACKENDS = {"console": ConsoleSmsBackend, "file": FileSmsBackend, "http": HttpSmsBackend}


def sms_backend() -> SmsBackend:
    """The backend named by settings.SMS_BACKEND (console, file, http or a dotted class path)."""
    name = getattr(settings, "SMS_BACKEND", "console") or "console"
    cls = BACKENDS.get(name) or import_string(name)
    return cls()


# Sentence-final punctuation, full-width and half-width; the opt-out follows it directly.
_SENTENCE_END = set("。．！？!?.…～~")
# Closing quotes and brackets a sentence may end inside: "他说：“回来吧！”" is already ended.
_CLOSERS = "”’」』）)》〉\"'"
# Chinese and Japanese end a sentence with the ideographic full stop; Korean, in Hangul, uses
# the Western one, so Hangul does not count.
_IDEOGRAPHIC = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]")


_ENDS_WITH_LINK = re.compile(r"https?://\S+\Z")


def _ended_sentence(body: str) -> str:
    """``body`` ended as a sentence, ready for the opt-out to follow: "。" after Chinese or
    Japanese text, ". " after anything else; only the separator when it already ends one."""
    if _ENDS_WITH_LINK.search(body):
        # A full stop glued to a link becomes part of it on many phones (a dead link): a space.
        return body + " "
    ideographic = _IDEOGRAPHIC.search(body) is not None
    last = body.rstrip(_CLOSERS)[-1:]
    if last and last in _SENTENCE_END:
        return body if ideographic else body + " "
    return body + ("。" if ideographic else ". ")


def sms_compose(*, text: str, signature: str, opt_out_text: str) -> str:
    """【signature】text, then the opt-out instruction as a sentence of its own.

    "好久不见" → "【品牌】好久不见。回复TD退订"; "Come back!" → "【Brand】Come back! Reply STOP to
    opt out". Idempotent: a text that already starts with the signature or ends with the
    opt-out (with or without the full stop before it) gets neither a second time, so a
    template may write them itself and a composed text composes to itself.
    """
    text, signature, opt_out_text = (text or "").strip(), (signature or "").strip(), (opt_out_text or "").strip()
    head = f"【{signature}】" if signature else ""
    body = text[len(head):] if head and text.startswith(head) else text
    if opt_out_text:
        if body.endswith(opt_out_text):
            body = body[: -len(opt_out_text)].rstrip()
        body = (_ended_sentence(body) if body else "") + opt_out_text
    return head + body


def sms_opt_out_text(*, contact_policy, language: str = "") -> str:
    """The refusal instruction in the message's language: the contact policy's (Chinese
    carriers' wording, "回复TD退订" by default) or, for English messages, SMS_OPT_OUT_TEXT_EN
    ("Reply STOP to opt out": the keyword US and UK carriers recognise)."""
    if language == "en":
        return getattr(settings, "SMS_OPT_OUT_TEXT_EN", "") or "Reply STOP to opt out"
    return contact_policy.sms_opt_out_text


def sms_compose_for(*, text: str, brand, contact_policy, language: str = "") -> str:
    """The text as sent and billed: ``brand.sms_signature`` (the contact policy's when there is
    no brand), the text, the opt-out instruction in the message's language (``sms_compose``)."""
    signature = brand.sms_signature if brand is not None else contact_policy.sms_signature
    return sms_compose(text=text, signature=signature,
                       opt_out_text=sms_opt_out_text(contact_policy=contact_policy, language=language))


class SmsTransport(Transport):
    channel = "sms"

    def __init__(self, *, backend: SmsBackend | None = None, contact_policy=None, channel_policy=None, clock=None):
        from campaigns.models import ChannelPolicy, ContactPolicy

        self.clock = clock or timezone.now
        self.backend = backend or sms_backend()
        self.contact_policy = contact_policy or ContactPolicy.current()
        self.channel_policy = channel_policy or ChannelPolicy.objects.filter(channel="sms").first() or ChannelPolicy(
            channel="sms", quiet_hours_enabled=True
        )

    def compose(self, text: str, *, brand=None, language: str = "") -> str:
        return sms_compose_for(text=text, brand=brand, contact_policy=self.contact_policy, language=language)

    def send(self, message: OutboundMessage) -> str:
        campaign = message.campaign
        if not self.contact_policy.sms_enabled or (campaign is not None and not campaign.sms_enabled):
            raise TransportError("SMS is switched off", permanent=True)
        if not message.to:
            raise TransportError("no phone number", permanent=True, bad_address=False)
        policy = self.channel_policy
        if policy.quiet_hours_enabled:
            zone = customer_zone(getattr(message.customer, "timezone", ""))
            opening = window_next_opening(now=self.clock(), zone=zone, start=policy.window_start, end=policy.window_end)
            if opening is not None:
                raise TransportError(f"outside the SMS window; opens at {opening.isoformat()}", retry_at=opening)
        return self.backend.send(
            to=message.to, text=self.compose(message.rendered.text, brand=getattr(campaign, "brand", None),
                                             language=getattr(message.rendered, "language", "")),
            campaign=getattr(campaign, "name", ""), reference=str(message.delivery_id or ""),
        )

    def send_test(self, *, to: str, message, brand=None) -> str:
        text = self.compose(message.text, brand=brand, language=getattr(message, "language", ""))
        self.backend.send(to=to, text=text, campaign="test", reference="test")
        return "sent by SMS"
