"""Claim, hand over and mark deliveries: the part of the pipeline that talks to providers.

``deliveries_send_chunk`` is what a chunk task runs. For each batch of the chunk (``CLAIM_BATCH``
deliveries) it:

1. claims the deliveries in one transaction (``deliveries_claim``): rows still ``pending``, of a
   run that is ``sending``, due now, are locked (``SELECT ... FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so two workers never take the same row), consent and suppression are checked,
   and the rest become ``claimed``. A claimed delivery has not been handed to anyone: a worker
   that stops here leaves nothing that could have gone out;
2. issues the offer grants for the claimed deliveries (``campaigns.offers.grants_issue_for_run``);
   those left without one are skipped (``budget``) or sent without an offer, as the campaign says,
   and renders every message;
3. hands the batch to the provider in small groups (at most ``CAMPAIGN_HAND_OVER_GROUP``,
   default 20, and no more than the transport sent in ``HAND_OVER_SECONDS`` on the previous
   group). For each group it first takes the rate-limit permits, then moves exactly those rows
   ``claimed -> sending`` in ONE conditional UPDATE that checks consent, suppression, the SMS
   switch and the run's status again (``deliveries_hand_over``; a row that fails becomes
   ``skipped`` with its reason, or goes back to ``pending`` when the run was paused), then gives
   the rows it moved to the transport, then records the answers in one UPDATE: ``sent`` with the
   provider id; a transient error back to ``pending`` with a ``not_before`` back-off (after
   ``max_attempts`` it fails); a permanent error fails it and, when the address is bad,
   suppresses the address.

A transport that sends concurrently (email's SMTP sessions) is given the next group while it
still sends the previous one (``_send_in_groups``). So a message reaches the provider about half
a second at most after its consent was last read, and the only rows whose fate a crash can hide
are the groups in ``sending``: at most ``CAMPAIGN_HAND_OVER_GROUP`` messages per worker process
(twice that for email). The sweeper (``deliveries_recover_abandoned``) turns those into
``unknown`` (never re-sent without an operator, see ``campaigns.services.deliveries_resend_unknown``)
and returns ``claimed`` rows to ``pending``: both once the holder's lease (``claimed_at``, renewed
while the holder works) is older than ``CAMPAIGN_LEASE_SECONDS``. Every write of a holder is
conditional on its lease token, so a holder that was presumed dead and wakes up changes nothing
another worker now holds.

In-app messages are written to our own database: their batch is claimed (straight to ``sent``),
written and marked in one transaction, exactly once; with an offer, claimed and granted first,
then handed over (the same re-check), written and marked in one transaction.

When something fails in the middle of a chunk (the database, the cache behind the rate limit,
a bug), ``_release_after_crash`` records what it knows: answers the provider gave are marked,
rows it handed over without an answer become ``unknown``, rows it still held as ``claimed`` and
the batches it had not reached go back to ``pending`` with a back-off; then the error propagates.
"""

import functools
import logging
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, CharField, Exists, F, OuterRef, Q, Value, When
from django.db.models.functions import Concat
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
# A group is sized so that the transport sends it in about this long. A message waits at most
# about twice this between its last consent check and the provider (see _send_in_groups).
HAND_OVER_SECONDS = 0.25
# Groups handed to a concurrent transport while it still sends an earlier one.
GROUPS_AHEAD = 1


def chunk_size(channel: str) -> int:
    """How many deliveries a send_chunk task of this channel carries."""
    return CHUNK_SIZES.get(channel, CHUNK_SIZE)


def hand_over_group() -> int:
    """Most messages handed to the provider after one consent check (CAMPAIGN_HAND_OVER_GROUP):
    also the most one worker process can leave ``unknown`` when it dies."""
    return max(int(getattr(settings, "CAMPAIGN_HAND_OVER_GROUP", 20)), 1)


def lease() -> timedelta:
    """How long a holder's claim stays valid without renewal (CAMPAIGN_LEASE_SECONDS)."""
    return timedelta(seconds=int(getattr(settings, "CAMPAIGN_LEASE_SECONDS", 120)))


# What sending reads of a claimed delivery; with MESSAGE_CUSTOMER_FIELDS, all that a claim loads.
# A customer row carries six timestamps and a JSON document that no message needs: loading
# them was a fifth of an in-app message's cost. Reading a field left out costs a query per
# message (the fixed-query tests in tests/campaigns/test_sending.py catch that).
CLAIMED_DELIVERY_FIELDS = ("campaign_id", "run_id", "customer_id", "channel", "address", "status", "attempts",
                           "claimed_at")
_CLAIM_LOADS = (*CLAIMED_DELIVERY_FIELDS, *(f"customer__{name}" for name in MESSAGE_CUSTOMER_FIELDS))
UNKNOWN_NOTE = (
    "Outcome unknown since {now:%Y-%m-%d %H:%M:%S %Z}: handed to the provider at the 'claimed at' time by a worker "
    "that stopped before recording the answer ({why}). The provider may have delivered it; it is not sent again "
    "unless an operator re-sends it."
)


def max_attempts() -> int:
    return int(getattr(settings, "CAMPAIGN_MAX_ATTEMPTS", 5))


def retry_backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 ... minutes, at most an hour: long enough for a provider to recover."""
    base = int(getattr(settings, "CAMPAIGN_RETRY_BASE_SECONDS", 60))
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 3600))


def note_appended(text: str):
    """An expression for ``note`` with ``text`` appended on a line of its own."""
    return Case(When(note="", then=Value(text)), default=Concat(F("note"), Value("\n" + text)),
                output_field=CharField())


@dataclass
class ChunkResult:
    counts: Counter = field(default_factory=Counter)
    run_ids: set = field(default_factory=set)


# Who holds a row: every write of a holder names its lease token ---------------------------------


def _claimed_by(token: datetime) -> Q:
    return Q(status=Delivery.Status.CLAIMED, claimed_at=token)


def _handed_over_by(token: datetime) -> Q:
    # "unknown": the sweeper gave up on the holder, which then came back with the answer.
    return Q(status__in=(Delivery.Status.SENDING, Delivery.Status.UNKNOWN), claimed_at=token)


_SENT_IN_THIS_TRANSACTION = Q(status=Delivery.Status.SENT)


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


def _sms_off_campaigns(campaign_ids) -> set[int]:
    """Campaigns (of ``campaign_ids``) whose SMS is switched off now, by them or the contact policy."""
    contact = ContactPolicy.current()
    return {
        c.pk for c in Campaign.objects.filter(pk__any=set(campaign_ids))
        if not channel_enabled(campaign=c, channel=Channel.SMS, contact_policy=contact)
    }


@transaction.atomic
def deliveries_claim(*, delivery_ids: list[int], channel: str | None = None, now: datetime | None = None,
                     counts: Counter | None = None, claim_as: str = Delivery.Status.CLAIMED) -> list[Delivery]:
    """Claim the given deliveries that may still be sent; return them (customer, campaign and
    templates loaded). Skips, in the same transaction, those whose customer withdrew consent
    or whose address was suppressed since materialization, and SMS switched off since.

    Claimed deliveries become ``claim_as`` with ``claimed_at = now`` (their lease token):
    ``claimed`` (handed over later, group by group, by ``deliveries_hand_over``) or ``sent``,
    for a transport that writes only to our database and is called inside the caller's
    transaction (in-app: see ``_claim_and_send_transactional``).

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

    sms_off_campaigns = set()
    if any(d.channel == Channel.SMS for d in rows):
        sms_off_campaigns = _sms_off_campaigns(d.campaign_id for d in rows if d.channel == Channel.SMS)

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
        changes.update(sent_at=now)
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


# Handing over ---------------------------------------------------------------------------------

# A hand-over verdict per row; those that are not "go" or "halt" are the skip reason itself.
_GO, _HALT = "go", "halt"


def _q(model, column: str | None = None) -> str:
    """A table name, or a column's, quoted, from the model's _meta."""
    if column is None:
        return connection.ops.quote_name(model._meta.db_table)
    return connection.ops.quote_name(model._meta.get_field(column).column)


def _db_datetime(value: datetime):
    """A datetime as the ORM sends it in a raw statement's parameters (naive UTC text on SQLite)."""
    return connection.ops.adapt_datetimefield_value(value)


def _literal(value: str) -> str:
    # Only for our own constants (statuses, reasons, channels): never for user input.
    assert value.replace("_", "").isalnum(), value
    return f"'{value}'"


def _in_list(column: str, count: int | None) -> str:
    """``column`` is one of the values of the next parameter(s): one array parameter on
    PostgreSQL (``count`` None, see core.lookups), else ``count`` placeholders."""
    if count is None:
        return f"{column} = ANY(%s::bigint[])"
    return f"{column} IN ({', '.join(['%s'] * count)})" if count else "1 = 0"


@functools.lru_cache(maxsize=256)
def _hand_over_sql(*, to_status: str, ids: int | None, sms_off: int | None) -> str:
    """The hand-over statement: its text depends only on these, so it is built once per process
    (building it cost more than PostgreSQL running it). ``ids`` / ``sms_off``: how many
    placeholders each list takes (None: one array; 0 for ``sms_off``: no list at all).

    Parameters: the SMS-off campaign ids, the delivery ids, the holder's token, the time of the
    hand-over (twice when ``to_status`` is ``sent``), the token again.

    The verdict per row is what the claim checked (``_consent_q``, ``_suppressed_q``: a parity
    test keeps the two forms equal, tests/campaigns/test_sending.py) and the run's status; a
    verdict that is not "go" or "halt" is the skip reason itself.
    """
    D, R, C, SP = Delivery, CampaignRun, ConsentState, Suppression
    S, Why, L = Delivery.Status, Delivery.SkipReason, _literal
    x = lambda column: f"x.{_q(D, column)}"  # noqa: E731
    d = lambda column: f"d.{_q(D, column)}"  # noqa: E731
    verdicts = (
        f"SELECT {x('id')} AS delivery_id, CASE "
        f"WHEN r.{_q(R, 'status')} = {L(R.Status.CANCELLED)} THEN {L(Why.CANCELLED)} "
        f"WHEN r.{_q(R, 'status')} <> {L(R.Status.SENDING)} THEN {L(_HALT)} "
        f"WHEN NOT EXISTS (SELECT 1 FROM {_q(C)} cs WHERE cs.{_q(C, 'customer')} = {x('customer')} "
        f"AND cs.{_q(C, 'channel')} = {x('channel')} AND cs.{_q(C, 'purpose')} = {L(Purpose.MARKETING)} "
        f"AND cs.{_q(C, 'status')} = {L(C.Status.GRANTED)}) THEN {L(Why.CONSENT)} "
        f"WHEN EXISTS (SELECT 1 FROM {_q(SP)} sp WHERE sp.{_q(SP, 'channel')} = {x('channel')} "
        f"AND sp.{_q(SP, 'address')} = {x('address')}) THEN {L(Why.SUPPRESSED)} "
        + (f"WHEN {x('channel')} = {L(Channel.SMS)} AND {_in_list(x('campaign'), sms_off)} THEN {L(Why.CHANNEL_OFF)} "
           if sms_off != 0 else "")
        + f"ELSE {L(_GO)} END AS verdict "
        f"FROM {_q(D)} x JOIN {_q(R)} r ON r.{_q(R, 'id')} = {x('run')} "
        f"WHERE {_in_list(x('id'), ids)} AND {x('status')} = {L(S.CLAIMED)} AND {x('claimed_at')} = %s"
    )
    sent_at = (f", {_q(D, 'sent_at')} = CASE WHEN v.verdict = {L(_GO)} THEN %s ELSE {d('sent_at')} END"
               if to_status == S.SENT else "")
    # SQLite's RETURNING names only the updated table's columns, and unqualified.
    returning = ", ".join(d(c) if connection.vendor == "postgresql" else _q(D, c) for c in ("id", "status", "skip_reason"))
    return (
        # MATERIALIZED: inlined, the verdict's subqueries would run once per column that reads it.
        f"WITH v AS MATERIALIZED ({verdicts}) "
        f"UPDATE {_q(D)} AS d SET "
        f"{_q(D, 'status')} = CASE WHEN v.verdict = {L(_GO)} THEN {L(to_status)} "
        f"WHEN v.verdict = {L(_HALT)} THEN {L(S.PENDING)} ELSE {L(S.SKIPPED)} END, "
        f"{_q(D, 'skip_reason')} = CASE WHEN v.verdict IN ({L(_GO)}, {L(_HALT)}) THEN {d('skip_reason')} "
        f"ELSE v.verdict END, "
        f"{_q(D, 'attempts')} = CASE WHEN v.verdict = {L(_HALT)} THEN {d('attempts')} - 1 ELSE {d('attempts')} END, "
        f"{_q(D, 'claimed_at')} = %s{sent_at} "
        f"FROM v WHERE {d('id')} = v.delivery_id AND {d('status')} = {L(S.CLAIMED)} AND {d('claimed_at')} = %s "
        f"RETURNING {returning}"
    )


def deliveries_hand_over(*, deliveries: list[Delivery], token: datetime, now: datetime, counts: Counter,
                         to_status: str = Delivery.Status.SENDING) -> list[Delivery]:
    """Move the ``deliveries`` this holder claimed (lease ``token``) to ``to_status``, right
    before the provider gets them; return those moved (their ``claimed_at`` is now ``now``, the
    token of the hand-over).

    ONE UPDATE checks again what the claim checked (consent, suppression, the SMS switch) and
    the run's status: a row whose customer opted out since becomes ``skipped`` with the reason,
    a row of a cancelled run ``skipped`` (``cancelled``), a row of a paused run ``pending`` again
    (its attempt given back). Rows this holder no longer holds (its lease ran out and the
    sweeper released them) are left alone. ``to_status`` ``sent`` also sets ``sent_at``: a
    transport writing to our database in the caller's transaction (in-app). Committed durably
    (no ``_fast_commit``): the provider is called only once the row says so, and a database
    crash must not forget it.
    """
    if not deliveries:
        return []
    S = Delivery.Status
    by_pk = {d.pk: d for d in deliveries}
    ids = list(by_pk)
    sms = [d.campaign_id for d in deliveries if d.channel == Channel.SMS]
    sms_off = sorted(_sms_off_campaigns(sms)) if sms else []
    token_db, at = _db_datetime(token), _db_datetime(now)
    if connection.vendor == "postgresql":
        sql = _hand_over_sql(to_status=to_status, ids=None, sms_off=None if sms_off else 0)
        params = [*([sms_off] if sms_off else []), ids, token_db, at]
    else:
        sql = _hand_over_sql(to_status=to_status, ids=len(ids), sms_off=len(sms_off))
        params = [*sms_off, *ids, token_db, at]
    if to_status == S.SENT:
        params.append(at)
    params.append(token_db)
    # One statement: in autocommit mode its own transaction, committed (durably) when it returns,
    # without a BEGIN and a COMMIT round trip; inside the caller's transaction (in-app), part of it.
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    moved = []
    for pk, status, reason in sorted(rows):
        if status == to_status:
            delivery = by_pk[pk]
            delivery.status, delivery.claimed_at = to_status, now
            moved.append(delivery)
        elif status == S.SKIPPED:
            counts[f"skipped_{reason}"] += 1
    if len(moved) < len(deliveries):
        logger.info("deliveries_hand_over moved=%d of=%d stopped=%s", len(moved), len(deliveries),
                    dict(Counter(reason or status for _, status, reason in rows if status != to_status)))
    return moved


# Offers ---------------------------------------------------------------------------------------


def _issue_grants(*, deliveries: list[Delivery], counts: Counter, now: datetime, holder: Q) -> tuple[list[Delivery], dict]:
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
        Delivery.objects.filter(holder, pk__any=skip_ids).update(
            status=Delivery.Status.SKIPPED, skip_reason=Delivery.SkipReason.BUDGET, sent_at=None
        )
        counts["skipped_budget"] += len(skip_ids)
        skip = set(skip_ids)
        deliveries = [d for d in deliveries if d.pk not in skip]
    return deliveries, grants


# Rendering ------------------------------------------------------------------------------------


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


def _caused_by_database(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, DatabaseError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _render_batch(*, deliveries, grants, counts, clock, holder: Q) -> tuple[list[Delivery], list[OutboundMessage]]:
    messages, sendable = [], []
    for delivery in deliveries:
        try:
            messages.append(_outbound(delivery, _render(delivery, grants.get(delivery.pk))))
            sendable.append(delivery)
        except Exception as exc:  # noqa: BLE001 - a template that fails for this customer fails this delivery
            if _caused_by_database(exc):
                raise  # not the template's fault: the chunk's crash path releases the batch
            _mark_error(delivery, TransportError(f"render failed: {exc}", permanent=True), clock(), counts,
                        holder=holder)
    return sendable, messages


# Marking --------------------------------------------------------------------------------------


def _fast_commit() -> None:
    """Let this transaction's COMMIT return before its WAL is flushed (PostgreSQL).

    Marks are frequent small commits; waiting for an fsync each time would cap a worker. Only a
    crash of the database server itself could forget the last fraction of a second of marks,
    and a forgotten mark leaves its delivery ``sending``, which the sweeper then reports as
    ``unknown``: nothing is sent twice. Never used for a hand-over (see ``deliveries_hand_over``).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _mark_sent_many(sent: list[tuple[Delivery, str]], now: datetime, token: datetime) -> None:
    """Mark what the provider accepted in one UPDATE, each row with its provider id.

    On PostgreSQL the ids and provider ids travel as two arrays (``UPDATE ... FROM unnest``):
    the ORM's equivalent, a CASE with a WHEN per row, cost more to build in Python than the
    messages' SMTP exchange. Elsewhere (SQLite in development) the CASE is fine. ``error`` and
    ``note`` are kept: they explain the delivery's history (a retry, an unknown outcome).
    """
    if not sent:
        return
    ids = [delivery.pk for delivery, _ in sent]
    provider_ids = [(provider_id or "")[:200] for _, provider_id in sent]
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Delivery._meta.db_table)
        with connection.cursor() as cursor:
            # One round trip: two statements in one query string run as one transaction, so the
            # SET LOCAL of _fast_commit holds for the UPDATE without a BEGIN and a COMMIT of their
            # own. Each round trip of this thread can wait for the GIL while the SMTP sessions work.
            cursor.execute(
                f"SET LOCAL synchronous_commit TO OFF; "
                f"UPDATE {table} AS d SET status = %s, sent_at = %s, provider_id = u.provider_id "
                "FROM unnest(%s::bigint[], %s::text[]) AS u(id, provider_id) "
                "WHERE d.id = u.id AND d.status IN (%s, %s) AND d.claimed_at = %s",
                [Delivery.Status.SENT, now, ids, provider_ids, Delivery.Status.SENDING, Delivery.Status.UNKNOWN,
                 token],
            )
        return
    by_pk = Case(*[When(pk=pk, then=Value(provider_id)) for pk, provider_id in zip(ids, provider_ids)],
                 default=Value(""), output_field=CharField())
    Delivery.objects.filter(_handed_over_by(token), pk__any=ids).update(
        status=Delivery.Status.SENT, sent_at=now, provider_id=by_pk
    )


def _mark_error(delivery: Delivery, exc: Exception, now: datetime, counts: Counter, *, holder: Q) -> None:
    """Record a failed attempt: retry later, defer to the window, or fail for good. ``holder``:
    the condition under which the row is still this worker's to write."""
    error = (getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")[:1000]
    retry_at = getattr(exc, "retry_at", None)
    permanent = getattr(exc, "permanent", False)
    rows = Delivery.objects.filter(holder, pk=delivery.pk)
    if retry_at is not None and not permanent:
        # Not the provider's fault: the window is closed. Waiting costs no attempt.
        rows.update(status=Delivery.Status.DEFERRED, not_before=retry_at, error=error, attempts=F("attempts") - 1,
                    sent_at=None)
        counts["deferred_quiet"] += 1
        return
    if permanent or delivery.attempts >= max_attempts():
        rows.update(status=Delivery.Status.FAILED, error=error, sent_at=None)
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
    rows.update(status=Delivery.Status.PENDING, not_before=now + retry_backoff(delivery.attempts), error=error,
                sent_at=None)
    counts["retry"] += 1
    logger.info("delivery_retry delivery=%s attempts=%s error=%s", delivery.pk, delivery.attempts, error)


def _mark_refused(sendable, results, now, counts, *, holder: Q) -> None:
    """Record each message the transport returned an exception for (``_mark_error``)."""
    for delivery, result in zip(sendable, results):
        if isinstance(result, Exception):
            if not isinstance(result, TransportError):
                logger.error("transport_error delivery=%s", delivery.pk, exc_info=result)
            _mark_error(delivery, result, now, counts, holder=holder)


def _record_answers(*, handed: list[Delivery], results: list, token: datetime, counts: Counter, clock) -> None:
    """Mark a handed-over group with the provider's answers: sent in one UPDATE, each refusal as
    ``_mark_error`` decides."""
    now = clock()
    sent = [(d, result) for d, result in zip(handed, results) if not isinstance(result, Exception)]
    _mark_sent_many(sent, now, token)
    counts["sent"] += len(sent)
    _mark_refused(handed, results, now, counts, holder=_handed_over_by(token))


# The chunk ------------------------------------------------------------------------------------


@dataclass
class _Group:
    """Deliveries handed over together (``sending``, lease ``token``), answers not yet recorded."""

    deliveries: list
    token: datetime
    sending: object = None  # the transport's Sending, once started
    started: float = 0.0  # time.monotonic() when handed to the transport


@dataclass
class _Holding:
    """What a chunk holds at any moment: what ``_release_after_crash`` must put right."""

    batch_ids: list = field(default_factory=list)
    later_ids: list = field(default_factory=list)
    token: datetime | None = None  # the lease of this batch's rows still ``claimed``
    renewed: float = 0.0  # time.monotonic() of the claim or last renewal
    in_flight: deque = field(default_factory=deque)  # _Groups, oldest first
    counts: Counter = field(default_factory=Counter)
    group_size: int = 0  # from the transport's pace, carried to the next batch
    heartbeat: float | None = None  # time.monotonic() of this chunk's last runs_heartbeat
    last_done: float = 0.0  # time.monotonic() when the last group's answers came back


def runs_heartbeat(*, run_ids, now: datetime) -> None:
    """Tell the sweeper these runs are being worked on (``CampaignRun.active_at``): one small
    UPDATE, outside any batch's transaction."""
    CampaignRun.objects.filter(pk__in=list(run_ids)).update(active_at=now)


def _heartbeat_if_due(holding: _Holding, run_ids, clock) -> None:
    """A chunk's first batch, then every quarter lease: the runs it works on stay active."""
    if run_ids and (holding.heartbeat is None or time.monotonic() - holding.heartbeat >= lease().total_seconds() / 4):
        runs_heartbeat(run_ids=run_ids, now=clock())
        holding.heartbeat = time.monotonic()


def _renew_lease(holding: _Holding, run_ids, clock) -> None:
    """A batch waiting long on rate-limit permits or a slow provider keeps its claims, and its
    runs stay active, every quarter lease."""
    if time.monotonic() - holding.renewed < lease().total_seconds() / 4:
        return
    now = clock()
    Delivery.objects.filter(_claimed_by(holding.token), pk__any=holding.batch_ids).update(claimed_at=now)
    holding.token, holding.renewed = now, time.monotonic()
    runs_heartbeat(run_ids=run_ids, now=now)
    holding.heartbeat = holding.renewed


def _record_oldest_group(holding: _Holding, counts, clock) -> None:
    group = holding.in_flight[0]
    answers = group.sending.wait()
    done = time.monotonic()
    _record_answers(handed=group.deliveries, results=answers, token=group.token, counts=counts, clock=clock)
    holding.in_flight.popleft()
    # The transport's pace on this group (from when it could start on it), times the time budget.
    took = done - max(group.started, holding.last_done)
    pace = len(group.deliveries) / took if took > 0 else float("inf")
    holding.group_size = max(1, min(hand_over_group(), int(pace * HAND_OVER_SECONDS)))
    holding.last_done = done


def _send_in_groups(*, transport, deliveries, messages, limiter, holding: _Holding, counts, clock) -> None:
    """Hand a claimed, rendered batch to the provider group by group (see the module docstring):
    permits, then the hand-over (consent checked again), then the transport, then the marks.

    A transport that sends concurrently (``start_many`` returns before the messages are out:
    email) gets the next group while it still sends the previous one, so its sessions never
    wait for the database: at most two groups are handed over and not yet recorded, and a
    message waits at most about two groups' sending time (``2 * HAND_OVER_SECONDS``) between its
    check and the provider. Any other transport is given one group at a time.
    """
    message_of = dict(zip((d.pk for d in deliveries), messages))
    queue = list(deliveries)
    run_ids = {d.run_id for d in deliveries}
    while queue or holding.in_flight:
        if queue and len(holding.in_flight) <= GROUPS_AHEAD:
            _renew_lease(holding, run_ids, clock)
            wanted = min(holding.group_size or max(hand_over_group() // 5, 1), len(queue))
            granted = limiter.acquire(wanted)  # before the check: waiting here widens nothing
            group, queue = queue[:granted], queue[granted:]
            moved = deliveries_hand_over(deliveries=group, token=holding.token, now=clock(), counts=counts)
            if not moved:
                continue
            entry = _Group(deliveries=moved, token=moved[0].claimed_at, started=time.monotonic())
            holding.in_flight.append(entry)
            entry.sending = transport.start_many([message_of[d.pk] for d in moved])
            if queue and not entry.sending.done():
                continue  # prepare the next group while this one goes out
        _record_oldest_group(holding, counts, clock)


def _send_transactional(*, transport, deliveries, messages, limiter, holding: _Holding, counts, clock) -> None:
    """Hand over, write and mark a claimed batch in one transaction (in-app, when the batch's
    campaign has an offer: see ``deliveries_send_chunk``)."""
    for _ in deliveries:
        limiter.acquire()
    now = clock()
    by_pk = dict(zip((d.pk for d in deliveries), messages))
    with transaction.atomic():
        moved = deliveries_hand_over(deliveries=deliveries, token=holding.token, now=now, counts=counts,
                                     to_status=Delivery.Status.SENT)
        results = transport.send_many([by_pk[d.pk] for d in moved]) if moved else []
        counts["sent"] += sum(not isinstance(result, Exception) for result in results)
        _mark_refused(moved, results, now, counts, holder=_SENT_IN_THIS_TRANSACTION)


def _claim_and_send_transactional(*, delivery_ids, channel, transport, limiter, counts, now, clock) -> list[Delivery]:
    """Claim, render and send a batch in ONE transaction (in-app: our own database); return
    the claimed deliveries.

    The claim marks the deliveries ``sent`` at once and the transport's INSERT commits with
    it: a crash rolls both back (the deliveries are pending again, no message was written), so
    each message is written exactly once, and each delivery row is updated once instead of
    twice (claimed, then sent), which was a fifth of an in-app message's cost. The consent
    check and the write share the transaction, so there is no window to re-check. A delivery
    that fails to render or that the transport refuses is then changed from ``sent`` to what
    ``_mark_error`` decides, in the same transaction.
    """
    sent = Delivery.Status.SENT
    with transaction.atomic():
        _fast_commit()
        claimed = deliveries_claim(delivery_ids=delivery_ids, channel=channel, now=now, counts=counts, claim_as=sent)
        if not claimed:
            return []
        sendable, grants = _issue_grants(deliveries=claimed, counts=counts, now=now, holder=_SENT_IN_THIS_TRANSACTION)
        sendable, messages = _render_batch(deliveries=sendable, grants=grants, counts=counts, clock=clock,
                                           holder=_SENT_IN_THIS_TRANSACTION)
        for _ in sendable:
            limiter.acquire()
        results = transport.send_many(messages) if messages else []
        counts["sent"] += sum(not isinstance(result, Exception) for result in results)
        _mark_refused(sendable, results, clock(), counts, holder=_SENT_IN_THIS_TRANSACTION)
    return claimed


def deliveries_send_chunk(*, delivery_ids: list[int], channel: str, transport=None, now: datetime | None = None,
                          clock=timezone.now) -> ChunkResult:
    """Claim, grant, render, hand over and mark the deliveries of one chunk on one channel.

    Idempotent: ids already sent, skipped, unknown or held by another worker are left alone,
    so a redelivered or duplicated chunk message sends nothing twice.

    In-app batches (a ``transactional`` transport) are claimed, written and marked in one
    transaction each (``_claim_and_send_transactional``), except when a campaign of the chunk
    has an offer: issuing grants locks the offer row (its budget), and holding that lock while
    a whole batch renders and writes would let one in-app worker at a time send that campaign.
    Those batches are claimed and granted first, then handed over, written and marked in a
    transaction.

    If the chunk fails on an unexpected error (the database, the cache behind the rate limit, a
    bug), ``_release_after_crash`` records what is known and puts the rest back for a retry,
    and the error propagates.
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
    holding = _Holding(counts=result.counts)
    opened = False
    try:
        for start in range(0, len(ids), batch):
            holding.batch_ids, holding.later_ids, holding.token = ids[start:start + batch], ids[start + batch:], None
            if one_transaction:
                if not opened:
                    transport.open()  # a database transport has nothing that can fail to open
                    opened = True
                claimed = _claim_and_send_transactional(
                    delivery_ids=holding.batch_ids, channel=channel, transport=transport, limiter=limiter,
                    counts=result.counts, now=now or clock(), clock=clock,
                )
                result.run_ids.update(d.run_id for d in claimed)
                _heartbeat_if_due(holding, result.run_ids, clock)
                continue
            claimed = deliveries_claim(delivery_ids=holding.batch_ids, channel=channel, now=now or clock(),
                                       counts=result.counts)
            if not claimed:
                continue
            holding.token, holding.renewed = claimed[0].claimed_at, time.monotonic()
            result.run_ids.update(d.run_id for d in claimed)
            _heartbeat_if_due(holding, result.run_ids, clock)
            holder = _claimed_by(holding.token)
            claimed, grants = _issue_grants(deliveries=claimed, counts=result.counts, now=now or clock(), holder=holder)
            sendable, messages = _render_batch(deliveries=claimed, grants=grants, counts=result.counts, clock=clock,
                                               holder=holder)
            if not sendable:
                continue
            if not opened:
                try:
                    transport.open()
                    opened = True
                except TransportError as exc:
                    for delivery in sendable:
                        _mark_error(delivery, exc, clock(), result.counts, holder=holder)
                    continue
            send = _send_transactional if transport.transactional else _send_in_groups
            send(transport=transport, deliveries=sendable, messages=messages, limiter=limiter, holding=holding,
                 counts=result.counts, clock=clock)
    except Exception as exc:
        _release_after_crash(holding=holding, exc=exc, now=clock(), clock=clock)
        raise
    finally:
        if opened:
            transport.close()
    logger.info("deliveries_send_chunk channel=%s ids=%d %s", channel, len(ids),
                " ".join(f"{k}={v}" for k, v in sorted(result.counts.items())))
    return result


# After a failure ------------------------------------------------------------------------------


def _release_after_crash(*, holding: _Holding, exc: Exception, now: datetime, clock) -> None:
    """After an unexpected error in a chunk: record what is known, put the rest back.

    In this order, each step on its own (the database may be what failed; a step that cannot
    write is left to the sweeper, ``deliveries_recover_abandoned``):

    1. the groups handed to the provider: their answers are awaited (briefly: the sessions carry
       on) and recorded; a group whose answers cannot be had (the transport itself failed)
       becomes ``unknown``;
    2. the rows of the batch still ``claimed`` by this chunk were never handed over: back to
       ``pending`` after the back-off, the attempt counted (a batch that always fails ends
       ``failed`` after ``max_attempts`` instead of looping);
    3. a batch whose claim was rolled back, likewise (it counts an attempt too);
    4. the batches not reached: due again after the first back-off, no attempt counted.

    Nothing else would pick these up soon: the task is acknowledged (it failed, it was not lost).
    """
    error = f"chunk failed: {type(exc).__name__}: {exc}"[:1000]
    for group in holding.in_flight:
        failure, answers = exc, None
        try:
            if group.sending is not None:
                try:
                    # The sessions carry on after the failure: their answers come back in moments.
                    answers = group.sending.wait(timeout=lease().total_seconds() / 4)
                except Exception as waited:  # noqa: BLE001 - the transport's own failure: no answers
                    failure = waited
            if answers is not None:
                _record_answers(handed=group.deliveries, results=answers, token=group.token, counts=holding.counts,
                                clock=clock)
            else:
                deliveries_mark_unknown(ids=[d.pk for d in group.deliveries], token=group.token, now=now,
                                        why=f"the transport failed: {type(failure).__name__}: {failure}"[:300])
        except Exception:  # noqa: BLE001 - the original error is raised anyway
            logger.exception("deliveries_release_after_crash in_flight=%d: not recorded, left to the sweeper",
                             len(group.deliveries))
    try:
        with transaction.atomic():
            batch = Delivery.objects.filter(pk__any=holding.batch_ids)
            held = batch.filter(_claimed_by(holding.token)) if holding.token else batch.none()
            rolled_back = batch.filter(status=Delivery.Status.PENDING, not_before__isnull=True)
            for rows, tried in ((held, 0), (rolled_back, 1)):
                for attempts in set(rows.values_list("attempts", flat=True)):
                    same = rows.filter(attempts=attempts)
                    if attempts + tried >= max_attempts():
                        same.update(status=Delivery.Status.FAILED, attempts=attempts + tried, error=error)
                    else:
                        same.update(status=Delivery.Status.PENDING, attempts=attempts + tried, error=error,
                                    not_before=now + retry_backoff(attempts + tried))
            Delivery.objects.filter(pk__any=holding.later_ids, status=Delivery.Status.PENDING,
                                    not_before__isnull=True).update(not_before=now + retry_backoff(1))
    except Exception:  # noqa: BLE001 - the database may be what failed; the original error is raised anyway
        logger.exception("deliveries_release_after_crash_failed batch=%d later=%d", len(holding.batch_ids),
                         len(holding.later_ids))
    else:
        logger.error("deliveries_released_after_crash batch=%d later=%d error=%s", len(holding.batch_ids),
                     len(holding.later_ids), error)


def deliveries_mark_unknown(*, ids, token: datetime | None = None, now: datetime, why: str) -> int:
    """Turn handed-over rows (``sending``) into ``unknown``, with the time and ``why`` in their
    note; only those of the holder ``token`` when given. Returns the number marked."""
    rows = Delivery.objects.filter(pk__any=list(ids), status=Delivery.Status.SENDING)
    if token is not None:
        rows = rows.filter(claimed_at=token)
    marked = rows.update(status=Delivery.Status.UNKNOWN, unknown_at=now,
                         note=note_appended(UNKNOWN_NOTE.format(now=now, why=why)))
    if marked:
        logger.warning("deliveries_marked_unknown count=%d why=%s", marked, why)
    return marked


@transaction.atomic
def deliveries_recover_abandoned(*, now: datetime | None = None) -> dict:
    """What holders whose lease ran out (``CAMPAIGN_LEASE_SECONDS`` without renewal) left behind:

    - ``claimed``: never handed over, so safe to send: back to ``pending``, due now (``failed``
      once claimed ``max_attempts`` times, so a batch that kills its worker does not loop);
    - ``sending``: handed over, answer never recorded: ``unknown``, with the time and reason.

    Returns {"released": n, "failed": n, "unknown": n, "run_ids": {...}}. Two statements on the
    small partial index ``delivery_held_idx``, plus one per distinct attempt count released.
    """
    now = now or timezone.now()
    expired = now - lease()
    held = Delivery.objects.filter(status=Delivery.Status.CLAIMED, claimed_at__lt=expired)
    handed = Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_at__lt=expired)
    run_ids = set(held.values_list("run_id", flat=True).distinct()) | set(handed.values_list("run_id", flat=True).distinct())
    if not run_ids:
        return {"released": 0, "failed": 0, "unknown": 0, "run_ids": set()}
    failed = held.filter(attempts__gte=max_attempts()).update(
        status=Delivery.Status.FAILED,
        error=f"Claimed {max_attempts()} times by workers that stopped before handing it to the provider; never sent.",
    )
    released = held.update(status=Delivery.Status.PENDING, not_before=None)
    unknown = deliveries_mark_unknown(
        ids=handed.values_list("pk", flat=True), now=now,
        why=f"no answer recorded within {int(lease().total_seconds())} s",
    )
    if released or failed:
        logger.warning("deliveries_released_abandoned_claims released=%d failed=%d", released, failed)
    return {"released": released, "failed": failed, "unknown": unknown, "run_ids": run_ids}
