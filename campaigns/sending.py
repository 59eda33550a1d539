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
batch is claimed (straight to ``sent``), written and marked in one transaction, exactly once.

Email and SMS batches are handed to the transport whole (``send_many``), and the deliveries
it accepted are marked ``sent`` in ONE UPDATE afterwards, not one commit per message (a
commit per message capped a worker at a few hundred emails per second). The trade-off: a
worker killed between the provider calls and that UPDATE leaves up to one batch (at most
``CLAIM_BATCH`` messages) ``sending`` instead of one message. Those rows are never resent at
once: ``deliveries_release_stale`` returns them to ``pending`` only after ``STALE_AFTER`` and
writes ``STALE_NOTE`` into their ``error``, so a customer who got a message twice can be
explained. That is the one at-least-once window; everywhere else a delivery is sent at most once.
"""

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, CharField, Exists, F, OuterRef, Q, Value, When
from django.utils import timezone

from campaigns.channels.base import OutboundMessage, TransportError
from campaigns.channels.registry import transport_for
from campaigns.materialize import channel_enabled
from campaigns.models import Campaign, CampaignRun, ChannelPolicy, ContactPolicy, Delivery
from campaigns.ratelimit import RateLimiter
from campaigns.rendering import MESSAGE_CUSTOMER_FIELDS
from consent.models import Channel, ConsentState, Purpose, Suppression

logger = logging.getLogger(__name__)

CHUNK_SIZE = 500
CLAIM_BATCH = 100
# In-app chunks are claimed, written and marked in one transaction per batch, with no window
# between the consent check and the write, so a bigger batch costs no opt-out latency and pays
# each chunk's and batch's fixed queries over twice the messages (about +9% messages/s).
CHUNK_SIZES = {Channel.IN_APP: 1000}
CLAIM_BATCH_TRANSACTIONAL = 1000


def chunk_size(channel: str) -> int:
    """How many deliveries a send_chunk task of this channel carries."""
    return CHUNK_SIZES.get(channel, CHUNK_SIZE)


STALE_AFTER = timedelta(minutes=15)
# What sending reads of a claimed delivery; with MESSAGE_CUSTOMER_FIELDS, all that a claim loads.
# A customer row carries six timestamps and a JSON document that no message needs: loading
# them was a fifth of an in-app message's cost. Reading a field left out costs a query per
# message (the fixed-query tests in tests/campaigns/test_sending.py catch that).
CLAIMED_DELIVERY_FIELDS = ("campaign_id", "run_id", "customer_id", "channel", "address", "status", "attempts",
                           "claimed_at")
_CLAIM_LOADS = (*CLAIMED_DELIVERY_FIELDS, *(f"customer__{name}" for name in MESSAGE_CUSTOMER_FIELDS))
# Left on a released delivery: the worker died after claiming it, maybe after the provider took
# the message. If it is sent again, the delivery says why a customer may have received two.
STALE_NOTE = "Released after a stale claim: the worker stopped after claiming; the message may already have been sent once."


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
                     counts: Counter | None = None, claim_as: str = Delivery.Status.SENDING) -> list[Delivery]:
    """Claim the given deliveries that may still be sent; return them (customer, campaign and
    templates loaded). Skips, in the same transaction, those whose customer withdrew consent
    or whose address was suppressed since materialization, and SMS switched off since.

    Claimed deliveries become ``claim_as``: ``sending`` (the provider is called after this
    transaction) or ``sent``, for a transport that writes only to our database and is called
    inside the caller's transaction (in-app: see ``_claim_and_send_transactional``).

    At most 8 queries whatever the number of ids.
    """
    now = now or timezone.now()
    counts = counts if counts is not None else Counter()
    # Looked up by primary key only: a join on the run's status would let a planner with stale
    # statistics walk the whole run (delivery_run_status_idx) instead of the 100 ids. The same
    # SELECT locks the rows and loads what the messages need (the customer's fields).
    candidates = (
        Delivery.objects.filter(pk__any=delivery_ids, status=Delivery.Status.PENDING)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .filter(**({"channel": channel} if channel else {}))
        .annotate(has_consent=_consent_q(), is_suppressed=_suppressed_q())
        .select_related("customer")
        .only(*_CLAIM_LOADS)
        .order_by("pk")
    )
    if connection.features.has_select_for_update_skip_locked:
        candidates = candidates.select_for_update(skip_locked=True, of=("self",))
    rows = list(candidates)
    if not rows:
        return []
    sending_runs = {
        run.pk: run for run in CampaignRun.objects.filter(pk__any={d.run_id for d in rows}, status=CampaignRun.Status.SENDING)
    }
    # Deliveries of a paused or cancelled run stay pending, untouched.
    rows = [d for d in rows if d.run_id in sending_runs]
    if not rows:
        return []

    contact = None
    sms_off_campaigns = set()
    if any(d.channel == Channel.SMS for d in rows):
        contact = ContactPolicy.current()
        campaign_ids = {d.campaign_id for d in rows if d.channel == Channel.SMS}
        sms_off_campaigns = {
            c.pk for c in Campaign.objects.filter(pk__any=campaign_ids)
            if not channel_enabled(campaign=c, channel=Channel.SMS, contact_policy=contact)
        }

    skipped = defaultdict(list)
    to_claim = []
    for delivery in rows:
        if not delivery.has_consent:
            skipped[Delivery.SkipReason.CONSENT].append(delivery.pk)
        elif delivery.is_suppressed:
            skipped[Delivery.SkipReason.SUPPRESSED].append(delivery.pk)
        elif delivery.channel == Channel.SMS and delivery.campaign_id in sms_off_campaigns:
            skipped[Delivery.SkipReason.CHANNEL_OFF].append(delivery.pk)
        else:
            to_claim.append(delivery)
    for reason, ids in skipped.items():
        Delivery.objects.filter(pk__any=ids, status=Delivery.Status.PENDING).update(
            status=Delivery.Status.SKIPPED, skip_reason=reason, claimed_at=now
        )
        counts[f"skipped_{reason}"] += len(ids)
        logger.info("deliveries_skipped_at_claim reason=%s count=%d", reason, len(ids))
    if not to_claim:
        return []
    claim_ids = [d.pk for d in to_claim]
    changes = {"status": claim_as, "claimed_at": now, "not_before": None}
    if claim_as == Delivery.Status.SENT:
        changes.update(sent_at=now, error="")
    claimed = Delivery.objects.filter(pk__any=claim_ids, status=Delivery.Status.PENDING).update(
        attempts=F("attempts") + 1, **changes
    )
    if claimed == len(claim_ids):  # always, with row locks: the loaded rows are ours
        claimed_rows = to_claim
        for delivery in claimed_rows:
            for name, value in changes.items():
                setattr(delivery, name, value)
            delivery.attempts += 1
    else:  # only possible without row locks: the database says which rows this worker won
        logger.warning("deliveries_claim lost=%d (another worker claimed them first)", len(claim_ids) - claimed)
        claimed_rows = list(
            Delivery.objects.filter(pk__any=claim_ids, status=claim_as, claimed_at=now)
            .select_related("customer")
            .only(*_CLAIM_LOADS)
            .order_by("pk")
        )
    # A batch belongs to one or two campaigns: load each campaign (with its templates and
    # offer) and run once and share the instances, instead of joining and building six model
    # instances per row.
    campaigns = {
        c.pk: c for c in Campaign.objects.filter(pk__any={d.campaign_id for d in claimed_rows})
        .select_related("email_template", "sms_template", "in_app_template", "offer", "brand")
        # One query per channel in the batch for the templates' language variants.
        .prefetch_related("email_template__translations", "sms_template__translations", "in_app_template__translations")
    }
    for run in sending_runs.values():
        if run.campaign_id in campaigns:
            run.campaign = campaigns[run.campaign_id]
    for delivery in claimed_rows:
        delivery.campaign = campaigns[delivery.campaign_id]
        delivery.run = sending_runs[delivery.run_id]
    return claimed_rows


# Offers ---------------------------------------------------------------------------------------


def _issue_grants(*, deliveries: list[Delivery], counts: Counter, now: datetime,
                  claimed_as: str = Delivery.Status.SENDING) -> tuple[list[Delivery], dict]:
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
        Delivery.objects.filter(pk__any=skip_ids, status=claimed_as).update(
            status=Delivery.Status.SKIPPED, skip_reason=Delivery.SkipReason.BUDGET, sent_at=None
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


def _mark_sent_many(sent: list[tuple[Delivery, str]], now: datetime) -> None:
    """Mark a batch sent in one UPDATE, each row with its provider id.

    On PostgreSQL the ids and provider ids travel as two arrays (``UPDATE ... FROM unnest``):
    the ORM's equivalent, a CASE with a WHEN per row, cost more to build in Python than the
    messages' SMTP exchange. Elsewhere (SQLite in development) the CASE is fine.
    """
    if not sent:
        return
    ids = [delivery.pk for delivery, _ in sent]
    provider_ids = [(provider_id or "")[:200] for _, provider_id in sent]
    with transaction.atomic():
        _fast_commit()
        if connection.vendor == "postgresql":
            table = connection.ops.quote_name(Delivery._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} AS d SET status = %s, sent_at = %s, provider_id = u.provider_id, error = '' "
                    "FROM unnest(%s::bigint[], %s::text[]) AS u(id, provider_id) "
                    "WHERE d.id = u.id AND d.status = %s",
                    [Delivery.Status.SENT, now, ids, provider_ids, Delivery.Status.SENDING],
                )
            return
        by_pk = Case(*[When(pk=pk, then=Value(provider_id)) for pk, provider_id in zip(ids, provider_ids)],
                     default=Value(""), output_field=CharField())
        Delivery.objects.filter(pk__any=ids, status=Delivery.Status.SENDING).update(
            status=Delivery.Status.SENT, sent_at=now, provider_id=by_pk, error=""
        )


def _fast_commit() -> None:
    """Let this transaction's COMMIT return before its WAL is flushed (PostgreSQL).

    Marks are frequent small commits; waiting for an fsync each time would cap a worker.
    Only a crash of the database server itself could forget the last fraction of a second of
    marks, and those deliveries are then released as stale (with a note, see
    ``deliveries_release_stale``): at-least-once, as documented.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _mark_error(delivery: Delivery, exc: Exception, now: datetime, counts: Counter,
                claimed_as: str = Delivery.Status.SENDING) -> None:
    """Record a failed attempt: retry later, defer to the window, or fail for good."""
    error = (getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")[:1000]
    retry_at = getattr(exc, "retry_at", None)
    permanent = getattr(exc, "permanent", False)
    rows = Delivery.objects.filter(pk=delivery.pk, status=claimed_as)
    if claimed_as == Delivery.Status.SENT:  # claimed in this transaction as sent: it was not
        rows.update(sent_at=None)
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


def _render_batch(*, deliveries, grants, counts, clock,
                  claimed_as: str = Delivery.Status.SENDING) -> tuple[list[Delivery], list[OutboundMessage]]:
    messages, sendable = [], []
    for delivery in deliveries:
        try:
            messages.append(_outbound(delivery, _render(delivery, grants.get(delivery.pk))))
            sendable.append(delivery)
        except Exception as exc:  # noqa: BLE001 - a template that fails for this customer fails this delivery
            _mark_error(delivery, TransportError(f"render failed: {exc}", permanent=True), clock(), counts,
                        claimed_as=claimed_as)
    return sendable, messages


def _send_batch(*, transport, deliveries, grants, limiter, counts, clock) -> None:
    """Send a claimed batch through the provider, then mark it in one UPDATE.

    The transport gets the whole batch (``send_many``: the email transport spreads it over a
    few SMTP sessions) and takes a rate-limit permit before each message. Every delivery is
    already ``sending`` (claimed), so a worker that dies before the UPDATE leaves its batch
    ``sending``, never ``pending``: nothing is resent at once, and ``deliveries_release_stale``
    releases it later with a note.
    """
    sendable, messages = _render_batch(deliveries=deliveries, grants=grants, counts=counts, clock=clock)
    if not sendable:
        return
    results = transport.send_many(messages, before_each=limiter.acquire)
    now = clock()
    sent = [(d, result) for d, result in zip(sendable, results) if not isinstance(result, Exception)]
    _mark_sent_many(sent, now)
    counts["sent"] += len(sent)
    _mark_refused(sendable, results, now, counts)


def _mark_refused(sendable, results, now, counts, claimed_as: str = Delivery.Status.SENDING) -> None:
    """Record each message the transport returned an exception for (``_mark_error``)."""
    for delivery, result in zip(sendable, results):
        if isinstance(result, Exception):
            if not isinstance(result, TransportError):
                logger.error("transport_error delivery=%s", delivery.pk, exc_info=result)
            _mark_error(delivery, result, now, counts, claimed_as=claimed_as)


def _send_transactional(*, transport, deliveries, grants, limiter, counts, clock) -> None:
    """Write and mark an already claimed batch in one transaction (in-app, when the batch's
    campaign has an offer: see ``deliveries_send_chunk``)."""
    sendable, messages = _render_batch(deliveries=deliveries, grants=grants, counts=counts, clock=clock)
    if not sendable:
        return
    for _ in sendable:
        limiter.acquire()
    now = clock()
    with transaction.atomic():
        _fast_commit()
        results = transport.send_many(messages)
        sent_ids = [d.pk for d, result in zip(sendable, results) if not isinstance(result, Exception)]
        Delivery.objects.filter(pk__any=sent_ids, status=Delivery.Status.SENDING).update(
            status=Delivery.Status.SENT, sent_at=now, error=""
        )
    counts["sent"] += len(sent_ids)
    _mark_refused(sendable, results, now, counts)


def _claim_and_send_transactional(*, delivery_ids, channel, transport, limiter, counts, now, clock) -> list[Delivery]:
    """Claim, render and send a batch in ONE transaction (in-app: our own database); return
    the claimed deliveries.

    The claim marks the deliveries ``sent`` at once and the transport's INSERT commits with
    it: a crash rolls both back (the deliveries are pending again, no message was written), so
    each message is written exactly once, and each delivery row is updated once instead of
    twice (claimed, then sent), which was a fifth of an in-app message's cost. A delivery that
    fails to render or that the transport refuses is then changed from ``sent`` to what
    ``_mark_error`` decides, in the same transaction.
    """
    sent = Delivery.Status.SENT
    with transaction.atomic():
        _fast_commit()
        claimed = deliveries_claim(delivery_ids=delivery_ids, channel=channel, now=now, counts=counts, claim_as=sent)
        if not claimed:
            return []
        sendable, grants = _issue_grants(deliveries=claimed, counts=counts, now=now, claimed_as=sent)
        sendable, messages = _render_batch(deliveries=sendable, grants=grants, counts=counts, clock=clock,
                                           claimed_as=sent)
        for _ in sendable:
            limiter.acquire()
        results = transport.send_many(messages) if messages else []
        counts["sent"] += sum(not isinstance(result, Exception) for result in results)
        _mark_refused(sendable, results, clock(), counts, claimed_as=sent)
    return claimed


def deliveries_send_chunk(*, delivery_ids: list[int], channel: str, transport=None, now: datetime | None = None,
                          clock=timezone.now) -> ChunkResult:
    """Claim, render, grant and send the deliveries of one chunk on one channel.

    Idempotent: ids already sent, skipped or claimed by another worker are left alone, so a
    redelivered task (acks_late) or a duplicate chunk sends nothing twice.

    In-app batches (a ``transactional`` transport) are claimed, written and marked in one
    transaction each (``_claim_and_send_transactional``), except when a campaign of the chunk
    has an offer: issuing grants locks the offer row (its budget), and holding that lock while
    a whole batch renders and writes would let one in-app worker at a time send that campaign.
    Those batches are claimed and granted first, then written and marked in a transaction.

    If the chunk fails on an unexpected error (a database error, the cache behind the rate
    limit down), the deliveries it had not reached are deferred, not left pending for ever
    (``_defer_after_crash``), and the error propagates.
    """
    result = ChunkResult()
    ids = sorted(set(delivery_ids))
    if not ids:
        return result
    policy = ChannelPolicy.objects.filter(channel=channel).first()
    limiter = RateLimiter(channel=channel, per_second=policy.rate_per_second if policy else None)
    transport = transport or transport_for(channel)
    one_transaction = transport.transactional and not Delivery.objects.filter(
        pk__any=ids, campaign__offer__isnull=False).exists()
    batch = CLAIM_BATCH_TRANSACTIONAL if transport.transactional else CLAIM_BATCH
    opened = False
    start = 0
    try:
        for start in range(0, len(ids), batch):
            current = ids[start:start + batch]
            if one_transaction:
                if not opened:
                    transport.open()  # a database transport has nothing that can fail to open
                    opened = True
                claimed = _claim_and_send_transactional(
                    delivery_ids=current, channel=channel, transport=transport, limiter=limiter,
                    counts=result.counts, now=now or clock(), clock=clock,
                )
                result.run_ids.update(d.run_id for d in claimed)
                continue
            claimed = deliveries_claim(delivery_ids=current, channel=channel, now=now or clock(), counts=result.counts)
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
            send = _send_transactional if transport.transactional else _send_batch
            send(transport=transport, deliveries=claimed, grants=grants, limiter=limiter, counts=result.counts,
                 clock=clock)
    except Exception as exc:
        _defer_after_crash(batch_ids=ids[start:start + batch], later_ids=ids[start + batch:], exc=exc, now=clock())
        raise
    finally:
        if opened:
            transport.close()
    logger.info("deliveries_send_chunk channel=%s ids=%d %s", channel, len(ids),
                " ".join(f"{k}={v}" for k, v in sorted(result.counts.items())))
    return result


def _defer_after_crash(*, batch_ids: list[int], later_ids: list[int], exc: Exception, now: datetime) -> None:
    """After an unexpected error in a chunk: hand what it left pending to the retry machinery.

    Nothing else would pick those deliveries up: the task is acknowledged (it failed, it was
    not lost), and ``dispatch_due`` only takes deliveries with a ``not_before``. The batch that
    failed was rolled back; it counts an attempt and gets the back-off (it fails for good after
    ``max_attempts``, so a batch that always fails does not loop). The batches after it were
    not tried; they are due again after the first back-off. Deliveries already claimed
    (``sending``) are the stale release's (``deliveries_release_stale``).
    """
    error = f"chunk failed: {type(exc).__name__}: {exc}"[:1000]
    try:
        with transaction.atomic():
            untried = Delivery.objects.filter(status=Delivery.Status.PENDING, not_before__isnull=True)
            failed_batch = untried.filter(pk__any=batch_ids)
            for attempts in set(failed_batch.values_list("attempts", flat=True)):
                rows = failed_batch.filter(attempts=attempts)
                if attempts + 1 >= max_attempts():
                    rows.update(status=Delivery.Status.FAILED, attempts=attempts + 1, error=error)
                else:
                    rows.update(attempts=attempts + 1, not_before=now + retry_backoff(attempts + 1), error=error)
            untried.filter(pk__any=later_ids).update(not_before=now + retry_backoff(1))
    except Exception:  # noqa: BLE001 - the database may be what failed; the original error is raised anyway
        logger.exception("deliveries_defer_after_crash_failed batch=%d later=%d", len(batch_ids), len(later_ids))
    else:
        logger.error("deliveries_deferred_after_crash batch=%d later=%d error=%s", len(batch_ids), len(later_ids), error)


@transaction.atomic
def deliveries_release_stale(*, now: datetime | None = None) -> int:
    """Deliveries claimed longer than STALE_AFTER ago by a worker that died: back to pending."""
    now = now or timezone.now()
    released = Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_at__lt=now - STALE_AFTER).update(
        status=Delivery.Status.PENDING, not_before=now, error=STALE_NOTE
    )
    if released:
        logger.warning("deliveries_release_stale released=%d", released)
    return released
