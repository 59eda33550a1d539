"""Materialize a campaign run: one INSERT ... SELECT writes a Delivery row for every customer
of the segment, with every exclusion decided in that statement.

The statement (a fixed number of queries whatever the segment's size, see ``run_materialize``):

- takes the segment's customers from the segment queryset, compiled to SQL (``id IN (...)``);
- LEFT JOINs each allowed channel's current consent (``ConsentState`` is unique per customer,
  channel and purpose, so a join never multiplies rows) and suppression (unique per channel and
  address), the customer's recent marketing deliveries (one aggregate per customer: per
  channel and over all channels) and this campaign's earlier deliveries (re-entry). Joins let
  PostgreSQL hash the 1,000,000-row case instead of probing an index per row and per rule;
- chooses the channel: the first of ``campaign.channels`` that is switched on and where the
  customer has consent, an address, and the address is not suppressed;
- decides status and skip reason with CASE, in this order:
  holdout (a deterministic hash of customer and campaign, below ``holdout_percent`` of 100;
  measured against everyone targeted, so it is decided before any other rule) ->
  skipped: no usable channel (``suppressed`` when consent and an address exist but every such
  address is suppressed, ``no_address`` when consent exists but no address, ``channel_off`` when
  the only consent is on a switched-off channel, else ``consent``) -> ``reentry`` -> ``cap`` ->
  ``deferred`` (quiet hours on the chosen channel: ``not_before`` is the window's next opening
  in the customer's time zone, computed in Python per distinct time zone, a handful of values)
  -> ``pending``;
- ``ON CONFLICT (campaign, run, customer) DO NOTHING``: materializing the same run twice (a
  retried task, a double click) adds nothing.

On PostgreSQL a large run (a customer table of ``MATERIALIZE_PARALLEL_MIN_CUSTOMERS`` or more,
outside any open transaction) runs the same statement for ``MATERIALIZE_PARALLEL`` customer-id
ranges at once, each on its own connection; see ``_insert_in_parallel``.

Caps count sent marketing deliveries in the rolling window, plus deliveries of other runs
still on their way (pending, sending, deferred): two campaigns materialized a minute apart must
not both pass a cap that only one of them may use. The daily cap over all channels is a rolling
24 hours, so a customer cannot get a day's allowance at 23:59 and another at 00:01.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, ChannelPolicy, ContactPolicy, Delivery
from campaigns.quiet_hours import customer_zone, window_next_opening
from consent.models import Channel, ConsentState, Purpose, Suppression
from reactivation.models import Customer

MATERIALIZE_WORK_MEM_MB = 128
# Split a large run's INSERT by customer id into this many parts on as many connections
# (PostgreSQL; 1 = one statement). Two parts halved the write time on a 2-core server.
MATERIALIZE_PARALLEL = 2
MATERIALIZE_PARALLEL_MIN_CUSTOMERS = 100_000
ADDRESS_FIELD = {Channel.EMAIL: "email", Channel.SMS: "phone"}
IN_FLIGHT = (Delivery.Status.PENDING, Delivery.Status.CLAIMED, Delivery.Status.SENDING, Delivery.Status.DEFERRED)
# Handed to a provider whose answer was never recorded: it may have arrived, so caps and re-entry
# count it as sent, as of its creation (it has no sent_at).
MAYBE_SENT = (Delivery.Status.UNKNOWN,)

# Holdout hash: (customer id + campaign salt) times the golden-ratio constant, modulo a prime,
# scaled to 0-99 (times 100, divided by the prime). Scaling, not "% 100": the product's low
# digits repeat with a short period over consecutive ids, so "% 100" could hold out 4 of 100
# consecutive customers where 20 were asked; scaled, any 100 consecutive ids give 18-21.
# Integer arithmetic that SQLite and PostgreSQL compute identically (no overflow below 3.4e9
# customers), stable across runs, and different for each campaign.
_HASH_MULTIPLIER = 2654435761
_HASH_PRIME = 4294967291
_HASH_SALT = 7919


def holdout_bucket(*, customer_id: int, campaign_id: int) -> int:
    """The customer's bucket 0-99 for this campaign (the same formula as in the SQL)."""
    return ((customer_id + campaign_id * _HASH_SALT) * _HASH_MULTIPLIER) % _HASH_PRIME * 100 // _HASH_PRIME


def channel_enabled(*, campaign: Campaign, channel: str, contact_policy: ContactPolicy) -> bool:
    """A channel is usable when it has a template and is not switched off."""
    if getattr(campaign, f"{channel}_template_id", None) is None:
        return False
    if channel == Channel.SMS and not (contact_policy.sms_enabled and campaign.sms_enabled):
        return False
    return True


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _table(model) -> str:
    return _q(model._meta.db_table)


def _literal(value: str) -> str:
    # Only for our own constants (channel names, statuses): never for user input.
    assert value.replace("_", "").isalnum(), value
    return f"'{value}'"


def _quiet_hours_case(*, channels: list[str], policies: dict, segment_sql: str, segment_params: list,
                      now: datetime) -> tuple[str, list]:
    """SQL for ``not_before`` of the chosen channel (NULL when its window is open), and params.

    Window openings depend only on the time zone, so they are computed in Python for each
    distinct time zone of the segment (one query) and looked up with CASE in the statement.
    """
    quiet = [c for c in channels if policies[c].quiet_hours_enabled]
    if not quiet:
        return _as_timestamp("NULL"), []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT {_q('timezone')} FROM {_table(Customer)} WHERE {_q('id')} IN ({segment_sql})",
            segment_params,
        )
        zones = sorted({row[0] or "" for row in cursor.fetchall()})
    branches, params = [], []
    for channel in quiet:
        policy = policies[channel]

        def opening(zone):
            return window_next_opening(now=now, zone=customer_zone(zone), start=policy.window_start, end=policy.window_end)

        whens = []
        for zone in zones:
            whens.append("WHEN %s THEN %s")
            params.extend([zone, opening(zone)])
        # A customer who joined the segment after the zone query gets the default zone's rule.
        params.append(opening(""))
        branches.append(f"WHEN m.chosen = {_literal(channel)} THEN CASE m.tz {' '.join(whens)} ELSE %s END")
    return _as_timestamp(f"CASE {' '.join(branches)} ELSE NULL END"), params


def _as_timestamp(sql: str) -> str:
    # PostgreSQL types a CASE whose branches are all NULL or untyped parameters as text.
    # (SQLite must not get the CAST: it would turn an ISO date into the number 2024.)
    return f"CAST({sql} AS timestamp with time zone)" if connection.vendor == "postgresql" else sql


_RANGE_MARK_CAP = "/*range:d.customer_id*/"
_RANGE_MARK_OUTER = "/*range:m.customer_id*/"


def _with_range(sql: str, bounds: tuple[int, int] | None) -> str:
    """The statement limited to customers lo <= id < hi (integers we computed, never input)."""
    def condition(column):
        return f" AND {column} >= {int(bounds[0])} AND {column} < {int(bounds[1])}" if bounds else ""

    return sql.replace(_RANGE_MARK_CAP, condition("d.customer_id")).replace(_RANGE_MARK_OUTER, condition("m.customer_id"))


def _insert(sql: str, params: list, bounds) -> int:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The default 4 MB makes the segment, consent and cap joins of a large run spill
            # their hash tables to disk; this statement alone may use more. JIT compiling this
            # wide, CASE-heavy statement took 5 of 13 s on a million rows, more than it saves.
            cursor.execute(f"SET LOCAL work_mem = '{int(MATERIALIZE_WORK_MEM_MB)}MB'; SET LOCAL jit = off")
        cursor.execute(_with_range(sql, bounds), params)
        return max(cursor.rowcount, 0)


def _parallel_ranges() -> list[tuple[int, int]]:
    """Customer id ranges to insert side by side, or [] to insert in one statement.

    Only on PostgreSQL, only for large customer tables, and only outside a transaction (a
    caller's open transaction, e.g. a test's, must see and own every row it writes).
    """
    parts = int(MATERIALIZE_PARALLEL)
    if parts < 2 or connection.vendor != "postgresql" or connection.in_atomic_block:
        return []
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN({_q('id')}), MAX({_q('id')}) FROM {_table(Customer)}")
        low, high = cursor.fetchone()
    if low is None or high - low + 1 < MATERIALIZE_PARALLEL_MIN_CUSTOMERS:
        return []
    step = (high - low + parts) // parts
    return [(low + k * step, min(low + (k + 1) * step, high + 1)) for k in range(parts)]


def _insert_in_parallel(sql: str, params: list, ranges) -> int:
    """Run the INSERT for each id range on its own connection (one thread each), at once.

    Writing the rows — heap, five indexes, the customer foreign key check per row — is what a
    million-recipient run spends its time on, and one INSERT uses one core. Each part is its
    own transaction: if one fails, the others may have committed, the run stays
    ``materializing`` and the error propagates; running the materialization again inserts only
    what is missing (``ON CONFLICT DO NOTHING``), so the result is the same as one statement.
    """
    def part(bounds):
        try:
            with transaction.atomic():
                return _insert(sql, params, bounds)
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="materialize") as pool:
        return sum(pool.map(part, ranges))


def run_materialize(*, run: CampaignRun, now: datetime | None = None) -> int:
    """Write the run's deliveries; return how many rows were inserted (0 when already done).

    Queries: the policies (2), the segment's time zones (1, only when a chosen channel has
    quiet hours), the INSERT (1, preceded on PostgreSQL by a SET LOCAL; or one per id range plus
    the MIN/MAX of customer ids), the counters (2) and the run update (1): the same for ten
    customers and for a million.
    """
    now = now or timezone.now()
    campaign = run.campaign
    contact = ContactPolicy.current()
    policies = {policy.channel: policy for policy in ChannelPolicy.objects.all()}
    for channel in Channel.values:
        policies.setdefault(channel, ChannelPolicy(channel=channel, quiet_hours_enabled=channel == Channel.SMS))
    channels = [c for c in dict.fromkeys(campaign.channels or []) if c in Channel.values]
    enabled = {c: channel_enabled(campaign=campaign, channel=c, contact_policy=contact) for c in channels}

    segment_qs = campaign.segment.customers().order_by().values("pk")
    segment_sql, segment_params = segment_qs.query.sql_with_params()
    segment_params = list(segment_params)

    consent_table, suppression_table, delivery_table = _table(ConsentState), _table(Suppression), _table(Delivery)
    joins, join_params = [], []
    usable, reason_suppressed, reason_no_address, reason_channel_off = {}, [], [], []
    for index, channel in enumerate(channels):
        consent_alias = f"cs{index}"
        joins.append(
            f"LEFT JOIN {consent_table} {consent_alias} ON {consent_alias}.customer_id = c.id "
            f"AND {consent_alias}.channel = {_literal(channel)} AND {consent_alias}.purpose = {_literal(Purpose.MARKETING)} "
            f"AND {consent_alias}.status = {_literal(ConsentState.Status.GRANTED)}"
        )
        has_consent = f"{consent_alias}.id IS NOT NULL"
        field = ADDRESS_FIELD.get(channel)
        if field:
            suppression_alias = f"sp{index}"
            joins.append(
                f"LEFT JOIN {suppression_table} {suppression_alias} ON {suppression_alias}.channel = {_literal(channel)} "
                f"AND {suppression_alias}.address = c.{_q(field)}"
            )
            has_address = f"c.{_q(field)} <> ''"
            not_suppressed = f"{suppression_alias}.id IS NULL"
        else:
            has_address, not_suppressed = "1 = 1", "1 = 1"
        if enabled[channel]:
            usable[channel] = (f"({has_consent} AND {has_address} AND {not_suppressed})", f"c.{_q(field)}" if field else "''")
            reason_suppressed.append(f"({has_consent} AND {has_address})")
            reason_no_address.append(f"({has_consent})")
        reason_channel_off.append(f"({has_consent})")

    chosen = " ".join(f"WHEN {cond} THEN {_literal(c)}" for c, (cond, _addr) in usable.items())
    address = " ".join(f"WHEN {cond} THEN {addr}" for _c, (cond, addr) in usable.items())
    chosen_sql = f"CASE {chosen} ELSE '' END" if usable else "''"
    address_sql = f"CASE {address} ELSE '' END" if usable else "''"

    def any_of(conditions):
        return " OR ".join(conditions) if conditions else "1 = 0"

    no_channel_reason = (
        f"CASE WHEN {any_of(reason_suppressed)} THEN {_literal(Delivery.SkipReason.SUPPRESSED)} "
        f"WHEN {any_of(reason_no_address)} THEN {_literal(Delivery.SkipReason.NO_ADDRESS)} "
        f"WHEN {any_of(reason_channel_off)} THEN {_literal(Delivery.SkipReason.CHANNEL_OFF)} "
        f"ELSE {_literal(Delivery.SkipReason.CONSENT)} END"
    )

    # Frequency caps: recent marketing deliveries per customer, per channel and over all channels.
    capped = "1 = 0"
    cap_columns = ""
    if not (campaign.cap_exempt and not campaign.is_marketing):
        day_cut = now - timedelta(hours=24)
        cuts = {c: now - timedelta(days=policies[c].cap_days) for c in Channel.values}
        oldest = min([day_cut, *cuts.values()])
        in_flight = ", ".join(_literal(s) for s in (*IN_FLIGHT, *MAYBE_SENT))
        recent = f"((d.status = {_literal(Delivery.Status.SENT)} AND d.sent_at >= %s) OR (d.status IN ({in_flight}) AND d.created_at >= %s))"
        sums, sum_params = [], []
        for index, channel in enumerate(Channel.values):
            sums.append(f"SUM(CASE WHEN d.channel = {_literal(channel)} AND {recent} THEN 1 ELSE 0 END) AS n{index}")
            sum_params.extend([cuts[channel], cuts[channel]])
        sums.append(f"SUM(CASE WHEN {recent} THEN 1 ELSE 0 END) AS nday")
        sum_params.extend([day_cut, day_cut])
        joins.append(
            f"LEFT JOIN (SELECT d.customer_id, {', '.join(sums)} FROM {delivery_table} d "
            f"JOIN {_table(Campaign)} dc ON dc.id = d.campaign_id "
            f"WHERE dc.is_marketing = %s AND d.run_id <> %s AND "
            f"((d.status = {_literal(Delivery.Status.SENT)} AND d.sent_at >= %s) OR (d.status IN ({in_flight}) AND d.created_at >= %s)) "
            f"AND d.customer_id IN ({segment_sql}){_RANGE_MARK_CAP} "
            f"GROUP BY d.customer_id) cap ON cap.customer_id = c.id"
        )
        join_params.extend([*sum_params, True, run.pk, oldest, oldest, *segment_params])
        cap_columns = ", " + ", ".join(
            [f"COALESCE(cap.n{index}, 0) AS n{index}" for index in range(len(Channel.values))] + ["COALESCE(cap.nday, 0) AS nday"]
        )
        conditions = [
            f"(m.chosen = {_literal(channel)} AND m.n{index} >= {int(policies[channel].cap_count)})"
            for index, channel in enumerate(Channel.values)
        ]
        conditions.append(f"m.nday >= {int(contact.daily_cap_all_channels)}")
        capped = " OR ".join(conditions)

    # Re-entry: this campaign reached the customer within reentry_days (or is about to).
    reentry = "1 = 0"
    reentry_column = ""
    if campaign.reentry_days:
        in_flight = ", ".join(_literal(s) for s in IN_FLIGHT)
        maybe_sent = ", ".join(_literal(s) for s in MAYBE_SENT)
        joins.append(
            f"LEFT JOIN (SELECT DISTINCT r.customer_id FROM {delivery_table} r WHERE r.campaign_id = %s AND r.run_id <> %s "
            f"AND ((r.status = {_literal(Delivery.Status.SENT)} AND r.sent_at >= %s) OR r.status IN ({in_flight}) "
            f"OR (r.status IN ({maybe_sent}) AND r.created_at >= %s))) re "
            f"ON re.customer_id = c.id"
        )
        reentry_cut = now - timedelta(days=campaign.reentry_days)
        join_params.extend([campaign.pk, run.pk, reentry_cut, reentry_cut])
        reentry_column = ", CASE WHEN re.customer_id IS NOT NULL THEN 1 ELSE 0 END AS reentry"
        reentry = "m.reentry = 1"

    holdout = (
        f"((c.id + %s) * {_HASH_MULTIPLIER}) %% {_HASH_PRIME} * 100 / {_HASH_PRIME} < %s" if campaign.holdout_percent
        else "1 = 0"
    )
    holdout_params = [campaign.pk * _HASH_SALT, campaign.holdout_percent] if campaign.holdout_percent else []

    not_before_sql, not_before_params = _quiet_hours_case(
        channels=list(usable), policies=policies, segment_sql=segment_sql,
        segment_params=segment_params, now=now,
    )

    inner = (
        f"SELECT c.id AS customer_id, {chosen_sql} AS chosen, {address_sql} AS address, "
        f"{no_channel_reason} AS no_channel_reason, c.{_q('timezone')} AS tz, "
        f"CASE WHEN {holdout} THEN 1 ELSE 0 END AS holdout{cap_columns}{reentry_column} "
        f"FROM {_table(Customer)} c {' '.join(joins)} WHERE c.id IN ({segment_sql})"
    )
    inner_params = [*holdout_params, *join_params, *segment_params]

    S, R = Delivery.Status, Delivery.SkipReason
    status_sql = (
        f"CASE WHEN m.holdout = 1 THEN {_literal(S.HOLDOUT)} WHEN m.chosen = '' THEN {_literal(S.SKIPPED)} "
        f"WHEN {reentry} THEN {_literal(S.SKIPPED)} WHEN {capped} THEN {_literal(S.SKIPPED)} "
        f"WHEN ({not_before_sql}) IS NOT NULL THEN {_literal(S.DEFERRED)} ELSE {_literal(S.PENDING)} END"
    )
    reason_sql = (
        f"CASE WHEN m.holdout = 1 THEN '' WHEN m.chosen = '' THEN m.no_channel_reason "
        f"WHEN {reentry} THEN {_literal(R.REENTRY)} WHEN {capped} THEN {_literal(R.CAP)} ELSE '' END"
    )
    not_before_outer = (
        f"CASE WHEN m.holdout = 1 OR m.chosen = '' OR {reentry} OR {capped} THEN NULL ELSE {not_before_sql} END"
    )
    columns = ["campaign_id", "run_id", "customer_id", "channel", "address", "status", "skip_reason", "not_before",
               "attempts", "provider_id", "error", "created_at"]
    sql = (
        f"INSERT INTO {delivery_table} ({', '.join(_q(c) for c in columns)}) "
        f"SELECT %s, %s, m.customer_id, m.chosen, m.address, {status_sql}, {reason_sql}, {not_before_outer}, "
        f"0, '', '', %s FROM ({inner}) m WHERE 1 = 1{_RANGE_MARK_OUTER} "
        f"ON CONFLICT ({_q('campaign_id')}, {_q('run_id')}, {_q('customer_id')}) DO NOTHING"
    )
    params = [campaign.pk, run.pk, *not_before_params, *not_before_params, now, *inner_params]

    ranges = _parallel_ranges()
    if ranges:
        # Before the counters: each part commits on its own connection (see _insert_in_parallel).
        inserted = _insert_in_parallel(sql, params, ranges)
    with transaction.atomic():
        if not ranges:
            inserted = _insert(sql, params, None)
        from campaigns.services import run_refresh_counters

        run_refresh_counters(run=run)
        CampaignRun.objects.filter(pk=run.pk, status=CampaignRun.Status.MATERIALIZING).update(
            status=CampaignRun.Status.SENDING, materialized_at=now
        )
    run.refresh_from_db()
    return inserted
