"""Claim and send deliveries: the part of the pipeline that talks to providers.

``deliveries_send_chunk`` is what a chunk task runs. For each batch of the chunk it:

1. claims the deliveries in one transaction (``deliveries_claim``): rows still ``pending``, of a
   run that is ``sending``, due now, are locked (``SELECT ... FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so two workers never take the same row) and consent and suppression are checked
   again *at that moment*: a customer who opted out after materialization is skipped
   (``consent`` / ``suppressed``), not sent. The claim is a conditional UPDATE
   (``WHERE status = 'pending'``): a delivery sent once is never claimed again;
2. issues the offer grants for the claimed deliveries (``campaigns.offers.grants_issue_for_run``);
   those left without one are skipped (``budget``) or sent without an offer, as the campaign says;
3. renders each message and hands it to the channel transport, then records the outcome:
   ``sent`` with the provider id; a transient error puts the delivery back to ``pending`` with a
   ``not_before`` backoff (the per-minute ``dispatch_due`` picks it up; after ``MAX_ATTEMPTS`` it
   fails); a permanent error fails it and, when the address is bad, suppresses the address.

Batches are small (``CLAIM_BATCH``) so an opt-out that arrives while a chunk is sending stops
the messages of every later batch. In-app messages are written to our own database: their
batch is sent and marked in one transaction, exactly once.

A worker killed between the provider call and the UPDATE that marks ``sent`` leaves the
delivery ``sending``; ``deliveries_release_stale`` returns such rows to ``pending`` after
``STALE_AFTER``. That is the one at-least-once window, a few milliseconds wide.
"""

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from campaigns.channels.base import OutboundMessage, TransportError
from campaigns.channels.registry import transport_for
from campaigns.materialize import channel_enabled
from campaigns.models import Campaign, CampaignRun, ChannelPolicy, ContactPolicy, Delivery
from campaigns.ratelimit import RateLimiter
from consent.models import Channel, ConsentState, Purpose, Suppression

logger = logging.getLogger(__name__)

CHUNK_SIZE = 500
CLAIM_BATCH = 100
STALE_AFTER = timedelta(minutes=15)


def max_attempts() -> int:
    return int(getattr(settings, "CAMPAIGN_MAX_ATTEMPTS", 5))


def retry_backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 ... minutes, at most an hour: long enough for a provider to recover."""
    base = int(getattr(settings, "CAMPAIGN_RETRY_BASE_SECONDS", 60))
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 3600))


@dataclass
class ChunkResult:
    counts: Counter = field(default_factory=Counter)
    run_ids: set = field(default_factory=set)


# Claiming -------------------------------------------------------------------------------------


def _consent_q():
    return Exists(
        ConsentState.objects.filter(
            customer=OuterRef("customer_id"), channel=OuterRef("channel"), purpose=Purpose.MARKETING,
            status=ConsentState.Status.GRANTED,
        )
    )


def _suppressed_q():
    return Exists(Suppression.objects.filter(channel=OuterRef("channel"), address=OuterRef("address")))


@transaction.atomic
def deliveries_claim(*, delivery_ids: list[int], channel: str | None = None, now: datetime | None = None,
                     counts: Counter | None = None) -> list[Delivery]:
    """Claim the given deliveries that may still be sent; return them (customer, campaign and
    templates loaded). Skips, in the same transaction, those whose customer withdrew consent
    or whose address was suppressed since materialization, and SMS switched off since.

    At most 7 queries whatever the number of ids.
    """
    now = now or timezone.now()
    counts = counts if counts is not None else Counter()
    # Looked up by primary key only: a join on the run's status would let a planner with stale
    # statistics walk the whole run (delivery_run_status_idx) instead of the 100 ids.
    candidates = (
        Delivery.objects.filter(pk__in=delivery_ids, status=Delivery.Status.PENDING)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .filter(**({"channel": channel} if channel else {}))
        .annotate(has_consent=_consent_q(), is_suppressed=_suppressed_q())
        .order_by("pk")
    )
    if connection.features.has_select_for_update_skip_locked:
        candidates = candidates.select_for_update(skip_locked=True, of=("self",))
    rows = list(candidates.values_list("pk", "channel", "campaign_id", "has_consent", "is_suppressed", "run_id"))
    if not rows:
        return []
    sending_runs = set(
        CampaignRun.objects.filter(pk__in={row[5] for row in rows}, status=CampaignRun.Status.SENDING).values_list("pk", flat=True)
    )
    # Deliveries of a paused or cancelled run stay pending, untouched.
    rows = [row[:5] for row in rows if row[5] in sending_runs]
    if not rows:
        return []

    contact = None
    sms_off_campaigns = set()
    if any(channel == Channel.SMS for _pk, channel, *_ in rows):
        contact = ContactPolicy.current()
        campaign_ids = {campaign_id for _pk, channel, campaign_id, *_ in rows if channel == Channel.SMS}
        sms_off_campaigns = {
            c.pk for c in Campaign.objects.filter(pk__in=campaign_ids)
            if not channel_enabled(campaign=c, channel=Channel.SMS, contact_policy=contact)
        }

    skipped = defaultdict(list)
    claim_ids = []
    for pk, channel, campaign_id, has_consent, is_suppressed in rows:
        if not has_consent:
            skipped[Delivery.SkipReason.CONSENT].append(pk)
        elif is_suppressed:
            skipped[Delivery.SkipReason.SUPPRESSED].append(pk)
        elif channel == Channel.SMS and campaign_id in sms_off_campaigns:
            skipped[Delivery.SkipReason.CHANNEL_OFF].append(pk)
        else:
            claim_ids.append(pk)
    for reason, ids in skipped.items():
        Delivery.objects.filter(pk__in=ids, status=Delivery.Status.PENDING).update(
            status=Delivery.Status.SKIPPED, skip_reason=reason, claimed_at=now
        )
        counts[f"skipped_{reason}"] += len(ids)
        logger.info("deliveries_skipped_at_claim reason=%s count=%d", reason, len(ids))
    if not claim_ids:
        return []
    claimed = Delivery.objects.filter(pk__in=claim_ids, status=Delivery.Status.PENDING).update(
        status=Delivery.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1, not_before=None
    )
    if claimed != len(claim_ids):  # only possible without row locks; the loaded rows say who won
        logger.warning("deliveries_claim lost=%d (another worker claimed them first)", len(claim_ids) - claimed)
    return list(
        Delivery.objects.filter(pk__in=claim_ids, status=Delivery.Status.SENDING, claimed_at=now)
        .select_related(
            "customer", "run", "campaign", "campaign__email_template", "campaign__sms_template", "campaign__in_app_template"
        )
        .order_by("pk")
    )


# Offers ---------------------------------------------------------------------------------------


def _issue_grants(*, deliveries: list[Delivery], counts: Counter, now: datetime) -> tuple[list[Delivery], dict]:
    """Grants per run; returns the deliveries still to send and {delivery_id: grant}."""
    by_run = defaultdict(list)
    for delivery in deliveries:
        if delivery.campaign.offer_id:
            by_run[delivery.run_id].append(delivery)
    if not by_run:
        return deliveries, {}
    from campaigns.offers import grants_issue_for_run

    grants, skip_ids = {}, []
    for run_deliveries in by_run.values():
        run = run_deliveries[0].run
        issued = grants_issue_for_run(run=run, deliveries=run_deliveries, now=now)
        grants.update(issued)
        if run.campaign.when_budget_exhausted == Campaign.WhenBudgetExhausted.SKIP:
            skip_ids.extend(d.pk for d in run_deliveries if d.pk not in issued)
    if skip_ids:
        Delivery.objects.filter(pk__in=skip_ids, status=Delivery.Status.SENDING).update(
            status=Delivery.Status.SKIPPED, skip_reason=Delivery.SkipReason.BUDGET
        )
        counts["skipped_budget"] += len(skip_ids)
        skip = set(skip_ids)
        deliveries = [d for d in deliveries if d.pk not in skip]
    return deliveries, grants


# Sending --------------------------------------------------------------------------------------


def _template_for(delivery: Delivery):
    return getattr(delivery.campaign, f"{delivery.channel}_template")


def _render(delivery: Delivery, grant):
    from campaigns.rendering import render_message

    return render_message(
        template=_template_for(delivery), customer=delivery.customer, campaign=delivery.campaign, grant=grant,
        channel=delivery.channel,
    )


def _outbound(delivery: Delivery, rendered) -> OutboundMessage:
    return OutboundMessage(to=delivery.address, rendered=rendered, customer=delivery.customer,
                           campaign=delivery.campaign, delivery_id=delivery.pk)


def _mark_sent(delivery: Delivery, provider_id: str, now: datetime) -> None:
    with transaction.atomic():
        _fast_commit()
        Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING).update(
            status=Delivery.Status.SENT, sent_at=now, provider_id=(provider_id or "")[:200], error=""
        )


def _fast_commit() -> None:
    """Let this transaction's COMMIT return before its WAL is flushed (PostgreSQL).

    Marking a message sent is one small commit per message; waiting for an fsync each time
    caps a worker at a few hundred messages per second. The commit still reaches the server
    before the next message is sent, so a killed worker loses nothing; only a crash of the
    database server itself could forget the last fraction of a second of marks, and those
    deliveries are then released as stale and sent again (at-least-once, as documented).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _mark_error(delivery: Delivery, exc: Exception, now: datetime, counts: Counter) -> None:
    """Record a failed attempt: retry later, defer to the window, or fail for good."""
    error = (getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")[:1000]
    retry_at = getattr(exc, "retry_at", None)
    permanent = getattr(exc, "permanent", False)
    rows = Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING)
    if retry_at is not None and not permanent:
        # Not the provider's fault: the window is closed. Waiting costs no attempt.
        rows.update(status=Delivery.Status.DEFERRED, not_before=retry_at, error=error, attempts=F("attempts") - 1)
        counts["deferred_quiet"] += 1
        return
    if permanent or delivery.attempts >= max_attempts():
        rows.update(status=Delivery.Status.FAILED, error=error)
        counts["failed"] += 1
        logger.warning("delivery_failed delivery=%s channel=%s permanent=%s error=%s", delivery.pk, delivery.channel,
                       permanent, error)
        if getattr(exc, "bad_address", False) and delivery.channel in (Channel.EMAIL, Channel.SMS) and delivery.address:
            from consent.services import suppression_add

            try:
                suppression_add(channel=delivery.channel, address=delivery.address, reason=Suppression.Reason.HARD_BOUNCE,
                                note=f"Provider refused the address (delivery #{delivery.pk}): {error}")
                counts["suppressed"] += 1
            except Exception:  # noqa: BLE001 - an unparseable stored address must not stop the chunk
                logger.exception("suppression_add_failed delivery=%s", delivery.pk)
        return
    rows.update(status=Delivery.Status.PENDING, not_before=now + retry_backoff(delivery.attempts), error=error)
    counts["retry"] += 1
    logger.info("delivery_retry delivery=%s attempts=%s error=%s", delivery.pk, delivery.attempts, error)


def _send_one_by_one(*, transport, deliveries, grants, limiter, counts, clock) -> None:
    for delivery in deliveries:
        try:
            rendered = _render(delivery, grants.get(delivery.pk))
        except Exception as exc:  # noqa: BLE001 - a template that fails for this customer fails this delivery
            _mark_error(delivery, TransportError(f"render failed: {exc}", permanent=True), clock(), counts)
            continue
        limiter.acquire()
        try:
            provider_id = transport.send(_outbound(delivery, rendered))
        except TransportError as exc:
            _mark_error(delivery, exc, clock(), counts)
            continue
        except Exception as exc:  # noqa: BLE001 - an unexpected provider failure is retried, not lost
            logger.exception("transport_error delivery=%s", delivery.pk)
            _mark_error(delivery, exc, clock(), counts)
            continue
        _mark_sent(delivery, provider_id, clock())
        counts["sent"] += 1


def _send_transactional(*, transport, deliveries, grants, limiter, counts, clock) -> None:
    """Send and mark the whole batch in one transaction (in-app: our own database)."""
    messages, sendable = [], []
    for delivery in deliveries:
        try:
            messages.append(_outbound(delivery, _render(delivery, grants.get(delivery.pk))))
            sendable.append(delivery)
        except Exception as exc:  # noqa: BLE001
            _mark_error(delivery, TransportError(f"render failed: {exc}", permanent=True), clock(), counts)
    if not sendable:
        return
    for _ in sendable:
        limiter.acquire()
    now = clock()
    with transaction.atomic():
        results = transport.send_many(messages)
        sent_ids = [d.pk for d, result in zip(sendable, results) if not isinstance(result, Exception)]
        Delivery.objects.filter(pk__in=sent_ids, status=Delivery.Status.SENDING).update(
            status=Delivery.Status.SENT, sent_at=now, error=""
        )
    counts["sent"] += len(sent_ids)
    for delivery, result in zip(sendable, results):
        if isinstance(result, Exception):
            _mark_error(delivery, result, now, counts)


def deliveries_send_chunk(*, delivery_ids: list[int], channel: str, transport=None, now: datetime | None = None,
                          clock=timezone.now) -> ChunkResult:
    """Claim, render, grant and send the deliveries of one chunk on one channel.

    Idempotent: ids already sent, skipped or claimed by another worker are left alone, so a
    redelivered task (acks_late) or a duplicate chunk sends nothing twice.
    """
    result = ChunkResult()
    ids = sorted(set(delivery_ids))
    if not ids:
        return result
    policy = ChannelPolicy.objects.filter(channel=channel).first()
    limiter = RateLimiter(channel=channel, per_second=policy.rate_per_second if policy else None)
    transport = transport or transport_for(channel)
    send = _send_transactional if transport.transactional else _send_one_by_one
    opened = False
    try:
        for start in range(0, len(ids), CLAIM_BATCH):
            claimed = deliveries_claim(delivery_ids=ids[start:start + CLAIM_BATCH], channel=channel, now=now or clock(),
                                       counts=result.counts)
            if not claimed:
                continue
            result.run_ids.update(d.run_id for d in claimed)
            claimed, grants = _issue_grants(deliveries=claimed, counts=result.counts, now=now or clock())
            if not opened:
                try:
                    transport.open()
                    opened = True
                except TransportError as exc:
                    for delivery in claimed:
                        _mark_error(delivery, exc, clock(), result.counts)
                    continue
            send(transport=transport, deliveries=claimed, grants=grants, limiter=limiter, counts=result.counts, clock=clock)
    finally:
        if opened:
            transport.close()
    logger.info("deliveries_send_chunk channel=%s ids=%d %s", channel, len(ids),
                " ".join(f"{k}={v}" for k, v in sorted(result.counts.items())))
    return result


@transaction.atomic
def deliveries_release_stale(*, now: datetime | None = None) -> int:
    """Deliveries claimed longer than STALE_AFTER ago by a worker that died: back to pending."""
    now = now or timezone.now()
    released = Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_at__lt=now - STALE_AFTER).update(
        status=Delivery.Status.PENDING, not_before=now
    )
    if released:
        logger.warning("deliveries_release_stale released=%d", released)
    return released
