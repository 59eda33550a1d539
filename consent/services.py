"""The only way to grant or withdraw consent and to suppress an address.

Each decision appends a ``ConsentEvent`` and moves ``ConsentState`` in the same transaction,
so the fast filter used when sending can never disagree with the ledger.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from core.phones import normalize_email, normalize_phone
from consent.models import Action, Channel, ConsentEvent, ConsentState, Purpose, Source, Suppression

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


@transaction.atomic
def _consent_record(*, customer, channel, action, source, notice_version, evidence, actor, at, purpose) -> ConsentEvent:
    _validate(channel, action, source)
    at = at or timezone.now()
    event = ConsentEvent.objects.create(
        customer=customer, channel=channel, purpose=purpose, action=action, source=source,
        notice_version=notice_version or "", evidence=evidence or {}, actor=actor, at=at,
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
def consent_record_bulk(*, decisions: list[ConsentDecision], purpose: str = Purpose.MARKETING) -> int:
    """Append many decisions in a fixed number of statements; the last decision per customer
    and channel sets the state. Returns the number of events written."""
    if not decisions:
        return 0
    now = timezone.now()
    for decision in decisions:
        _validate(decision.channel, decision.action, decision.source)
    events = ConsentEvent.objects.bulk_create(
        [
            ConsentEvent(
                customer_id=d.customer_id, channel=d.channel, purpose=purpose, action=d.action, source=d.source,
                notice_version=d.notice_version or "", evidence=d.evidence or {}, at=d.at or now,
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
