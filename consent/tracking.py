"""django-anymail tracking events -> consent services.

anymail only reports ESP webhooks through its ``tracking`` signal, so this receiver is the thin
edge (STYLE point 10 still holds: it parses the event and calls one service, nothing more).

What each normalized event does:
- ``bounced`` and permanent -> ``email_bounce_record(permanent=True)``: Suppression ``hard_bounce``.
  Soft bounces change nothing (anymail maps most of them to ``deferred`` already; the rest are
  recognised by ``bounce_is_permanent``).
- ``complained`` -> ``email_complaint_record``: Suppression ``complaint`` + email consent withdrawn
  (source ``complaint``) for every customer with that address.
- ``unsubscribed`` -> ``email_unsubscribe_record``: email consent withdrawn with source
  ``unsubscribe_link``. We cannot tell whether the ESP saw an RFC 8058 POST or a click on its own
  page, and ``one_click`` is reserved for POSTs our endpoint verified itself.
- ``rejected`` (the ESP refused to send) -> by ``reject_reason``: ``bounced``/``invalid`` like a
  hard bounce, ``spam`` like a complaint, ``unsubscribed`` like an unsubscribe; ``blocked``,
  ``timed_out`` and ``other`` are ESP policy or transient, and change nothing.
Everything else (delivered, opened, ...) is ignored here.
"""

import logging
import re

from django.core.exceptions import ValidationError

from consent import services

logger = logging.getLogger(__name__)

_SMTP_CODE = re.compile(r"(?<![\d.])([245])(?:\d\d(?![\d.])|\.\d{1,3}\.\d{1,3}(?![\d.]))")
_SOFT_WORDS = ("transient", "soft", "temporar", "undetermined", "mailbox full", "try again later")


def bounce_is_permanent(event) -> bool:
    """Whether a ``bounced`` event means the address is dead.

    In order: the ESP's own marker (Amazon SES ``bounceType``, Postmark ``SoftBounce``, SendGrid
    ``blocked``, Mailgun ``severity``), then the first SMTP reply code or enhanced status code in
    ``mta_response`` (4xx soft, 5xx hard), then soft-sounding words in ``description``. With no
    evidence either way a ``bounced`` event counts as permanent, as anymail documents it
    ("rejected or blocked by receiving MTA"; delays are ``deferred``).
    """
    esp_event = event.esp_event if isinstance(event.esp_event, dict) else {}
    bounce = esp_event.get("bounce") if isinstance(esp_event.get("bounce"), dict) else {}
    if bounce.get("bounceType"):
        return bounce["bounceType"] == "Permanent"
    if esp_event.get("Type") == "SoftBounce" or esp_event.get("type") == "blocked":
        return False
    if esp_event.get("severity") in ("temporary", "permanent"):
        return esp_event["severity"] == "permanent"
    match = _SMTP_CODE.search(event.mta_response or "")
    if match:
        return match.group(1) == "5"
    description = (event.description or "").lower()
    return not any(word in description for word in _SOFT_WORDS)


def _evidence(event, esp_name: str) -> dict:
    return {
        "esp": esp_name or "",
        "event_type": event.event_type,
        "event_id": str(event.event_id or ""),
        "message_id": str(event.message_id or ""),
        "description": str(event.description or "")[:500],
        "mta_response": str(event.mta_response or "")[:500],
    }


def tracking_event_received(sender, event, esp_name="", **kwargs) -> None:
    """Receiver for ``anymail.signals.tracking``. An event without a usable recipient is logged
    and dropped (answering 500 would only make the ESP retry the same payload forever)."""
    kind = event.event_type
    if kind == "rejected":
        kind = {"bounced": "bounced", "invalid": "bounced", "spam": "complained", "unsubscribed": "unsubscribed"}.get(
            event.reject_reason or "", ""
        )
    if kind not in ("bounced", "complained", "unsubscribed"):
        return
    evidence = _evidence(event, esp_name)
    try:
        if kind == "bounced":
            permanent = event.event_type == "rejected" or bounce_is_permanent(event)
            reason_text = event.mta_response or event.description or event.reject_reason or ""
            services.email_bounce_record(address=event.recipient or "", permanent=permanent, reason_text=reason_text)
        elif kind == "complained":
            services.email_complaint_record(address=event.recipient or "", evidence=evidence, at=event.timestamp)
        else:
            services.email_unsubscribe_record(address=event.recipient or "", evidence=evidence, at=event.timestamp)
    except ValidationError:
        logger.warning("anymail_event_bad_recipient esp=%s event_type=%s event_id=%s", esp_name, event.event_type, event.event_id)
        return
    logger.info("anymail_event_applied esp=%s event_type=%s as=%s event_id=%s", esp_name, event.event_type, kind, event.event_id)
