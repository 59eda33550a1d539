"""The only way to grant or withdraw consent and to suppress an address.

Each decision appends a ``ConsentEvent`` and moves ``ConsentState`` in the same transaction,
so the fast filter used when sending can never disagree with the ledger.
"""

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.masking import mask_personal_text
from core.phones import normalize_email, normalize_phone
from core.time_bounds import time_bounds_problem, time_parse
from consent.models import Action, Channel, ConsentEvent, ConsentState, Purpose, SmsReply, Source, Suppression

_STATUS_FOR_ACTION = {Action.GRANT: ConsentState.Status.GRANTED, Action.WITHDRAW: ConsentState.Status.WITHDRAWN}


@dataclass(frozen=True)
class ConsentDecision:
    """One decision for ``consent_record_bulk`` (used by imports)."""

    customer_id: int
    channel: str
    action: str
    source: str
    notice_version: str = ""
    evidence: dict = field(default_factory=dict)
    at: datetime | None = None


def consent_grant(*, customer, channel: str, source: str, notice_version: str = "", evidence: dict | None = None,
                  actor=None, at: datetime | None = None, purpose: str = Purpose.MARKETING) -> ConsentEvent:
    return _consent_record(customer=customer, channel=channel, action=Action.GRANT, source=source,
                           notice_version=notice_version, evidence=evidence, actor=actor, at=at, purpose=purpose)


def consent_withdraw(*, customer, channel: str, source: str, evidence: dict | None = None, actor=None,
                     at: datetime | None = None, notice_version: str = "", purpose: str = Purpose.MARKETING) -> ConsentEvent:
    return _consent_record(customer=customer, channel=channel, action=Action.WITHDRAW, source=source,
                           notice_version=notice_version, evidence=evidence, actor=actor, at=at, purpose=purpose)


def _validate(channel: str, action: str, source: str) -> None:
    if channel not in Channel.values:
        raise ValueError(f"Unknown channel {channel!r}; expected one of {Channel.values}.")
    if action not in Action.values:
        raise ValueError(f"Unknown action {action!r}.")
    if source not in Source.values:
        raise ValueError(f"Unknown consent source {source!r}; expected one of {Source.values}.")


def notice_version_in_force() -> str:
    """The privacy notice version recorded on a decision that does not name its own (a grant in
    the preference center, an SMS reply, a withdrawal): the one published when it was made."""
    return settings.NOTICE_VERSION


@transaction.atomic
def _consent_record(*, customer, channel, action, source, notice_version, evidence, actor, at, purpose) -> ConsentEvent:
    _validate(channel, action, source)
    at = at or timezone.now()
    event = ConsentEvent.objects.create(
        customer=customer, channel=channel, purpose=purpose, action=action, source=source,
        notice_version=notice_version or notice_version_in_force(), evidence=evidence or {}, actor=actor, at=at,
    )
    # Lock the state row so two simultaneous decisions for one customer apply in order.
    state = (
        ConsentState.objects.select_for_update()
        .filter(customer=customer, channel=channel, purpose=purpose)
        .first()
    )
    if state is None:
        ConsentState.objects.create(
            customer=customer, channel=channel, purpose=purpose, status=_STATUS_FOR_ACTION[action],
            source=source, notice_version=event.notice_version, last_event=event, changed_at=at,
        )
    elif state.changed_at <= at:
        # An event recorded late with an older timestamp (e.g. a polled reply) stays in the
        # ledger but does not override a newer decision.
        state.status = _STATUS_FOR_ACTION[action]
        state.source = source
        state.notice_version = event.notice_version
        state.last_event = event
        state.changed_at = at
        state.save(update_fields=["status", "source", "notice_version", "last_event", "changed_at"])
    return event


@transaction.atomic
def consent_record_bulk(*, decisions: list[ConsentDecision], purpose: str = Purpose.MARKETING, actor=None) -> int:
    """Append many decisions in a fixed number of statements; the last decision per customer
    and channel sets the state. Returns the number of events written."""
    if not decisions:
        return 0
    now, in_force = timezone.now(), notice_version_in_force()
    for decision in decisions:
        _validate(decision.channel, decision.action, decision.source)
    events = ConsentEvent.objects.bulk_create(
        [
            ConsentEvent(
                customer_id=d.customer_id, channel=d.channel, purpose=purpose, action=d.action, source=d.source,
                notice_version=d.notice_version or in_force, evidence=d.evidence or {}, at=d.at or now, actor=actor,
            )
            for d in decisions
        ]
    )
    latest: dict[tuple[int, str], ConsentEvent] = {}
    for event in events:  # later decisions in the list win (PostgreSQL upserts need unique keys)
        latest[(event.customer_id, event.channel)] = event
    ConsentState.objects.bulk_create(
        [
            ConsentState(
                customer_id=e.customer_id, channel=e.channel, purpose=purpose, status=_STATUS_FOR_ACTION[e.action],
                source=e.source, notice_version=e.notice_version, last_event_id=e.pk, changed_at=e.at,
            )
            for e in latest.values()
        ],
        update_conflicts=True,
        unique_fields=["customer", "channel", "purpose"],
        update_fields=["status", "source", "notice_version", "last_event", "changed_at"],
    )
    return len(events)


def normalize_address(*, channel: str, address: str) -> str:
    """Raise django ValidationError when the address is not a valid email or phone."""
    if channel == Channel.EMAIL:
        return normalize_email(address)
    if channel == Channel.SMS:
        return normalize_phone(address)
    raise ValueError(f"Addresses can only be suppressed for email or SMS, not {channel!r}.")


@transaction.atomic
def suppression_add(*, channel: str, address: str, reason: str, note: str = "", actor=None) -> Suppression:
    """Suppress an address (idempotent: an existing suppression is returned unchanged)."""
    if reason not in Suppression.Reason.values:
        raise ValueError(f"Unknown suppression reason {reason!r}.")
    normalized = normalize_address(channel=channel, address=address)
    suppression, _ = Suppression.objects.get_or_create(
        channel=channel, address=normalized, defaults={"reason": reason, "note": note, "created_by": actor}
    )
    return suppression


# Opt-outs as they arrive: SMS replies, email bounces, complaints and ESP unsubscribes ----------

logger = logging.getLogger(__name__)


def _customers_with_address(*, channel: str, address: str) -> list:
    """Every customer holding ``address``: one phone or mailbox may be shared by several."""
    from reactivation.models import Customer

    field_name = "email" if channel == Channel.EMAIL else "phone"
    return list(Customer.objects.filter(**{field_name: address}).order_by("pk"))


def _not_in_future(at: datetime | None) -> datetime:
    """``at``, or now when it is missing, in the future or outside core.time_bounds.

    A provider clock running ahead must not let its event outrank decisions made after it, and a
    time before EARLIEST_DATE (year 1 with a +14:00 offset is 1 BC on PostgreSQL) must never be
    stored: the row could not be read back, and an opt-out dated then would change nothing.
    """
    now = timezone.now()
    if at is None or at > now or time_bounds_problem(at, now=now):
        return now
    return at


def sms_reply_record(*, sender: str, text: str, provider_id: str = "", received_at: datetime | None = None) -> SmsReply:
    """Store an inbound SMS and apply what it asks for; used by the webhook and the poller.

    - Withdrawal keywords (``consent.keywords``) withdraw SMS consent, and START/UNSTOP/YES grant
      it, for *every* customer with that phone (source ``sms_reply``, evidence: raw text, sender,
      provider id, reply id). ``SmsReply.customer`` points at the first of them.
    - A sender matching no customer is stored with outcome ``unknown_sender``. When it said STOP
      the number is also suppressed (reason ``manual``): a number that asked us to stop must never
      be texted, even if it is later imported on a new customer. A later START does not lift that
      suppression; Compliance can remove it in the admin once the person has opted in again.
    - Anything else is stored with outcome ``reply`` and changes nothing.

    Idempotent per ``provider_id``: the same provider id returns the reply already stored and
    records nothing again (re-polling and webhook retries are safe). A reply without one but with
    a ``received_at`` gets an id derived from sender, text and that time, so the same message
    delivered twice (a replayed webhook) adds nothing to the ledger either. ``received_at`` is
    stored as given unless it is in the future or out of core.time_bounds; then it is now.
    """
    reply, _created = _sms_reply_record(sender=sender, text=text, provider_id=provider_id, received_at=received_at)
    return reply


# An SMS reply is a few SMS at most (a long SMS of 10 parts is 670 Chinese characters); a longer
# text is not a message a person typed, and is stored cut here, saying so, in the reply and in
# the ledger's evidence alike.
SMS_REPLY_MAX_CHARS = 1000


def sms_text_for_storage(text: str) -> str:
    if len(text) <= SMS_REPLY_MAX_CHARS:
        return text
    return f"{text[:SMS_REPLY_MAX_CHARS]} […truncated: {len(text):,} characters received]"


@transaction.atomic
def _sms_reply_record(*, sender, text, provider_id, received_at) -> tuple[SmsReply, bool]:
    from consent.keywords import SmsIntent, sms_intent

    provider_id = (provider_id or "").strip()
    if not provider_id and received_at is not None:
        provider_id = _derived_provider_id(sender or "", text or "", received_at)
    if provider_id:
        existing = SmsReply.objects.filter(provider_id=provider_id).first()
        if existing is not None:
            return existing, False
    raw_sender = (sender or "").strip()
    try:
        phone = normalize_phone(raw_sender)
    except ValidationError:
        phone = ""
    intent = sms_intent(text)
    text = sms_text_for_storage(text or "")
    customers = _customers_with_address(channel=Channel.SMS, address=phone) if phone else []
    outcome = str(intent) if customers else "unknown_sender"
    received_at = _not_in_future(received_at)
    try:
        # The savepoint lets a concurrent delivery of the same provider id lose cleanly.
        with transaction.atomic():
            reply = SmsReply.objects.create(
                sender=(phone or raw_sender)[:32], text=text or "", customer=customers[0] if customers else None,
                outcome=outcome, provider_id=provider_id, received_at=received_at,
            )
    except IntegrityError:
        if not provider_id:
            raise
        return SmsReply.objects.get(provider_id=provider_id), False

    evidence = {"text": text or "", "sender": raw_sender, "provider_id": provider_id, "sms_reply_id": reply.pk}
    if intent is SmsIntent.WITHDRAW:
        for customer in customers:
            consent_withdraw(customer=customer, channel=Channel.SMS, source=Source.SMS_REPLY, evidence=evidence, at=received_at)
        if not customers:
            if phone:
                suppression_add(
                    channel=Channel.SMS, address=phone, reason=Suppression.Reason.MANUAL,
                    note=f"Opt-out keyword {text[:40]!r} from a number matching no customer (SMS reply #{reply.pk}).",
                )
            else:
                logger.warning("sms_reply_unparseable_sender reply_id=%s: opt-out not applied to any number", reply.pk)
    elif intent is SmsIntent.GRANT:
        for customer in customers:
            consent_grant(customer=customer, channel=Channel.SMS, source=Source.SMS_REPLY, evidence=evidence, at=received_at)
    logger.info("sms_reply_recorded reply_id=%s outcome=%s customers=%s", reply.pk, outcome, len(customers))
    return reply, True


def sms_replies_pull(*, backend) -> dict[str, int]:
    """Record every reply ``backend.fetch_replies()`` yields; returns counts.

    Replies carry ``sender``, ``text``, ``provider_id`` and ``received_at``. A reply without a
    provider id gets one derived from its content, so pulling the same file twice records it
    once. Each reply is its own transaction: one that fails is logged and counted, and the
    others are still recorded (the next pull retries it).
    """
    counts = {"pulled": 0, "recorded": 0, "duplicate": 0, "failed": 0}
    for item in backend.fetch_replies():
        counts["pulled"] += 1
        sender, text = str(getattr(item, "sender", "") or ""), str(getattr(item, "text", "") or "")
        provider_id = str(getattr(item, "provider_id", "") or "")
        try:
            received_at = time_parse(getattr(item, "received_at", None), naive_allowed=True)
            provider_id = provider_id or _derived_provider_id(sender, text, received_at)
            _reply, created = _sms_reply_record(sender=sender, text=text, provider_id=provider_id, received_at=received_at)
        except Exception:
            # Logged without the text or number: both are personal data.
            logger.exception("sms_reply_pull_failed provider_id=%s", provider_id)
            counts["failed"] += 1
            continue
        counts["recorded" if created else "duplicate"] += 1
    return counts


def _derived_provider_id(sender: str, text: str, received_at) -> str:
    stamp = received_at.isoformat() if isinstance(received_at, datetime) else str(received_at or "")
    digest = hashlib.sha256("\x1f".join([sender, text, stamp]).encode()).hexdigest()
    return f"sha256:{digest[:48]}"


def email_bounce_record(*, address: str, permanent: bool, reason_text: str = "") -> Suppression | None:
    """A permanent bounce suppresses the address (reason ``hard_bounce``); a soft one changes
    nothing, since the mailbox may accept the next message. Returns the suppression or None.
    Raises ValidationError when ``address`` is not an email address."""
    normalized = normalize_email(address)
    if not normalized:
        raise ValidationError("A bounce needs the recipient's address.", code="email")
    if not permanent:
        logger.info("email_soft_bounce_ignored reason=%s", (reason_text or "")[:200])
        return None
    # The provider's text usually quotes the address (and sometimes others): stored masked, as
    # Marketers read suppression notes. The address itself is the suppression's own field.
    return suppression_add(
        channel=Channel.EMAIL, address=normalized, reason=Suppression.Reason.HARD_BOUNCE,
        note=mask_personal_text(f"Hard bounce: {reason_text}"[:1000]),
    )


@transaction.atomic
def email_complaint_record(*, address: str, evidence: dict | None = None, at: datetime | None = None) -> Suppression:
    """A spam complaint suppresses the address and withdraws email consent of every customer
    holding it (source ``complaint``)."""
    normalized = normalize_email(address)
    if not normalized:
        raise ValidationError("A complaint needs the recipient's address.", code="email")
    suppression = suppression_add(
        channel=Channel.EMAIL, address=normalized, reason=Suppression.Reason.COMPLAINT,
        note=mask_personal_text(str((evidence or {}).get("description") or "Spam complaint")[:1000]),
    )
    for customer in _customers_with_address(channel=Channel.EMAIL, address=normalized):
        consent_withdraw(customer=customer, channel=Channel.EMAIL, source=Source.COMPLAINT, evidence=evidence,
                         at=_not_in_future(at))
    return suppression


@transaction.atomic
def email_unsubscribe_record(*, address: str, evidence: dict | None = None, at: datetime | None = None) -> list[ConsentEvent]:
    """An unsubscribe the email provider received (its own link or List-Unsubscribe handling)
    withdraws email consent of every customer holding the address. Source ``unsubscribe_link``:
    ``one_click`` is kept for RFC 8058 POSTs our own endpoint verified."""
    normalized = normalize_email(address)
    if not normalized:
        raise ValidationError("An unsubscribe needs the recipient's address.", code="email")
    return [
        consent_withdraw(customer=customer, channel=Channel.EMAIL, source=Source.UNSUBSCRIBE_LINK, evidence=evidence,
                         at=_not_in_future(at))
        for customer in _customers_with_address(channel=Channel.EMAIL, address=normalized)
    ]


@transaction.atomic
def consent_preferences_update(*, customer, wanted: dict[str, bool], evidence: dict | None = None,
                               source: str = Source.PREFERENCE_CENTER) -> list[ConsentEvent]:
    """Record a grant or withdrawal for each channel in ``wanted`` whose answer differs from the
    current state (no state row counts as not granted); unchanged channels record nothing."""
    granted = set(
        ConsentState.objects.filter(
            customer=customer, purpose=Purpose.MARKETING, status=ConsentState.Status.GRANTED
        ).values_list("channel", flat=True)
    )
    events = []
    for channel, want in wanted.items():
        if want and channel not in granted:
            events.append(consent_grant(customer=customer, channel=channel, source=source, evidence=evidence))
        elif not want and channel in granted:
            events.append(consent_withdraw(customer=customer, channel=channel, source=source, evidence=evidence))
    return events
