"""Reads of the campaigns app that more than one edge needs (querysets, no writes)."""

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from celery.schedules import crontab
from cron_descriptor import Options, get_description
from django.db import DatabaseError, connection
from django.db.models import BigIntegerField, Case, Count, Exists, IntegerField, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.materialize import IN_FLIGHT, MAYBE_SENT, channel_enabled
from campaigns.models import Campaign, CampaignRun, ChannelPolicy, ContactPolicy, Delivery
from consent.models import Channel, Purpose
from consent.selectors import ADDRESS_FIELDS, consent_granted_q, contactable_q
from core.statement_timeout import query_cancelled, statement_timeout
from reactivation.models import Customer

# The estimate counts exactly up to this many customers of the segment; a larger segment is
# sampled (one hash bucket of k) down to about this many and the counts scaled up: within
# about 1 percentage point (95%), in about a second at a million customers.
ESTIMATE_SAMPLE = 10_000
# A slow segment filter must not hold the page (PostgreSQL cancels the statements after this).
ESTIMATE_TIMEOUT_MS = 5_000
# What keeps a run busy for someone other than the clock: a worker's or a dispatch's work.
_BUSY_DELIVERY_STATUSES = (Delivery.Status.PENDING, Delivery.Status.CLAIMED, Delivery.Status.SENDING)


def campaigns_using(*, template) -> QuerySet[Campaign]:
    """Campaigns, not cancelled or completed, that send ``template`` on some channel."""
    return (
        Campaign.objects.filter(Q(email_template=template) | Q(sms_template=template) | Q(in_app_template=template))
        .exclude(status__in=[Campaign.Status.CANCELLED, Campaign.Status.COMPLETED])
        .select_related("offer", "brand", "email_template", "sms_template", "in_app_template")
    )


# Audience estimate -----------------------------------------------------------------------------


def _recent_marketing(*, since: datetime) -> Q:
    """A marketing delivery that counts against caps since ``since`` (materialize's rule: sent
    in the window, or still on its way or of unknown outcome and created in it)."""
    return Q(campaign__is_marketing=True) & (
        Q(status=Delivery.Status.SENT, sent_at__gte=since)
        | Q(status__in=(*IN_FLIGHT, *MAYBE_SENT), created_at__gte=since)
    )


def _count_of(deliveries: QuerySet) -> Coalesce:
    return Coalesce(
        Subquery(deliveries.order_by().values("customer").annotate(n=Count("pk")).values("n")[:1],
                 output_field=IntegerField()),
        Value(0),
    )


def _sample_bucket(stride: int) -> RawSQL:
    """The customer's bucket 0..stride-1: a multiplicative hash of the id (integer arithmetic,
    the same on SQLite and PostgreSQL), so that every k-th bucket does not line up with
    patterns in the ids themselves (imports in batches, rules by id parity)."""
    column = f"{connection.ops.quote_name(Customer._meta.db_table)}.{connection.ops.quote_name('id')}"
    return RawSQL(f"(({column} * 2654435761) %% 4294967291) %% %s", [int(stride)], output_field=BigIntegerField())


def campaign_audience_estimate(*, campaign: Campaign, now: datetime | None = None, sample: int = ESTIMATE_SAMPLE,
                               timeout_ms: int = ESTIMATE_TIMEOUT_MS) -> dict:
    """Who a launch of ``campaign`` (saved or not) would reach now, before it is launched.

    The funnel, each step among the previous one: the segment's size; those with consent and
    an address on a chosen channel that is usable (it has a template and is switched on);
    minus those whose every such address is suppressed; minus those this campaign reached
    within its re-entry days (or is still reaching); minus those over a frequency cap; minus the
    expected holdout. The result is what would be sent (now or, for quiet hours, later).

    Consent and suppression come from ``consent.selectors`` (the one definition of "may
    contact"). The cap and re-entry rules are ``campaigns.materialize``'s, whose SQL writes
    the deliveries and cannot be shared: this function is their only other copy (the tests
    compare it with a materialized run).

    Queries: the two policies, the segment's size, one aggregate (plus, on PostgreSQL, the
    statement timeout set and restored): the same for ten customers and for a million. Above
    ``sample`` customers one hash bucket in k is counted and the counts scaled ("about");
    beyond ``timeout_ms`` PostgreSQL cancels and the answer says so.
    """
    now = now or timezone.now()
    contact = ContactPolicy.current()
    policies = {policy.channel: policy for policy in ChannelPolicy.objects.all()}
    for channel in Channel.values:
        policies.setdefault(channel, ChannelPolicy(channel=channel))
    chosen = [c for c in dict.fromkeys(campaign.channels or []) if c in Channel.values]
    usable_channels = [c for c in chosen if channel_enabled(campaign=campaign, channel=c, contact_policy=contact)]
    try:
        with statement_timeout(timeout_ms):
            customers = campaign.segment.customers().order_by()
            size = customers.count()
            stride = max(1, math.ceil(size / sample)) if sample else 1
            if stride > 1:
                customers = customers.annotate(sample_bucket=_sample_bucket(stride)).filter(sample_bucket=0)
            counts = _audience_counts(customers=customers, campaign=campaign, channels=usable_channels,
                                      policies=policies, contact=contact, now=now)
    except DatabaseError as exc:
        if not query_cancelled(exc):
            raise
        return {"ok": False, "error": f"Counting took more than {timeout_ms / 1000:g} s; the estimate is not available."}

    sampled = counts.pop("sampled")
    scale = size / sampled if stride > 1 and sampled else 1.0
    consent = round(counts["consent"] * scale)
    suppressed = round(counts["suppressed"] * scale)
    reentry = round(counts["reentry"] * scale)
    capped = round(counts["capped"] * scale)
    eligible = max(consent - suppressed - reentry - capped, 0)
    holdout = round(eligible * campaign.holdout_percent / 100)
    return {
        "ok": True, "approximate": stride > 1, "sampled": sampled,
        "channels": chosen, "usable_channels": usable_channels,
        "segment": size, "consent": consent, "suppressed": suppressed, "reentry": reentry, "capped": capped,
        "holdout": holdout, "reachable": eligible - holdout,
    }


def _audience_counts(*, customers, campaign, channels, policies, contact, now) -> dict:
    """One aggregate over ``customers``: the funnel's counts (see campaign_audience_estimate)."""
    if not channels:
        return {"sampled": customers.count(), "consent": 0, "suppressed": 0, "reentry": 0, "capped": 0}
    consented = Q()
    usable = Q()
    for channel in channels:
        has = Q(consent_granted_q(channel=channel, purpose=Purpose.MARKETING))
        if field := ADDRESS_FIELDS.get(channel):
            has &= ~Q(**{field: ""})
        consented |= has
        usable |= contactable_q(channel=channel)

    annotations = {}
    reentry = None
    if campaign.pk and campaign.reentry_days:
        cut = now - timedelta(days=campaign.reentry_days)
        reentry = Q(Exists(Delivery.objects.filter(customer=OuterRef("pk"), campaign_id=campaign.pk).filter(
            Q(status=Delivery.Status.SENT, sent_at__gte=cut) | Q(status__in=IN_FLIGHT)
            | Q(status__in=MAYBE_SENT, created_at__gte=cut))))

    capped = None
    if not (campaign.cap_exempt and not campaign.is_marketing):
        day_cut = now - timedelta(hours=24)
        annotations["cap_day"] = _count_of(Delivery.objects.filter(_recent_marketing(since=day_cut), customer=OuterRef("pk")))
        capped = Q(cap_day__gte=int(contact.daily_cap_all_channels))
        earlier = None
        for channel in channels:
            policy = policies[channel]
            since = now - timedelta(days=policy.cap_days)
            annotations[f"cap_{channel}"] = _count_of(
                Delivery.objects.filter(_recent_marketing(since=since), customer=OuterRef("pk"), channel=channel))
            # The cap that applies is the chosen channel's: the first usable one, as in materialization.
            here = contactable_q(channel=channel)
            chosen_here = here & ~earlier if earlier is not None else here
            capped |= chosen_here & Q(**{f"cap_{channel}__gte": int(policy.cap_count)})
            earlier = here if earlier is None else earlier | here

    # One 0/1 column per step, summed over a subquery: each rule is evaluated once per customer.
    steps = {"consent": consented, "suppressed": consented & ~usable}
    if reentry is not None:
        steps["reentry"] = usable & reentry
    if capped is not None:
        steps["capped"] = usable & ~reentry & capped if reentry is not None else usable & capped
    flags = {f"step_{name}": Case(When(condition, then=Value(1)), default=Value(0)) for name, condition in steps.items()}
    counts = customers.annotate(**annotations, **flags).aggregate(
        sampled=Count("pk"), **{name: Coalesce(Sum(f"step_{name}"), 0) for name in steps})
    return {"reentry": 0, "capped": 0, **counts}


# Runs waiting for quiet hours -----------------------------------------------------------------


@dataclass(frozen=True)
class QuietHoursWait:
    """A sending run whose only deliveries left are deferred to their sending window."""

    deferred: int
    first_at: datetime | None
    last_at: datetime | None = None

    def describe(self, *, now: datetime | None = None) -> str:
        """e.g. "12 waiting for 08:00 (Asia/Shanghai)", or, when the customers' windows open at
        different times (several time zones), "22 waiting for 08:00 to 16:00 (UTC)": the run is
        done only once the last of them is sent. The day is added when it is not today."""
        if self.first_at is None:
            return f"{self.deferred} waiting for quiet hours to end"
        today = timezone.localtime(now or timezone.now()).date()
        zone = timezone.get_current_timezone_name()
        first = self._local(self.first_at, today)
        if self.last_at is None or self.last_at == self.first_at:
            return f"{self.deferred} waiting for {first} ({zone})"
        return f"{self.deferred} waiting for {first} to {self._local(self.last_at, today)} ({zone})"

    @staticmethod
    def _local(at: datetime, today: date) -> str:
        local = timezone.localtime(at)
        return f"{local:%H:%M}" + ("" if local.date() == today else f" {_day(local.date())}")


def _day(value: date) -> str:
    return f"{value:%a} {value.day} {value:%b}"


def runs_waiting_for_quiet_hours(*, run_ids) -> dict[int, QuietHoursWait]:
    """{run id: wait} for those of the (sending) runs whose unfinished deliveries are all
    deferred by quiet hours: no worker, dispatch or retry has anything of theirs to do before a
    window opens. One grouped query over the unfinished deliveries (the run-status index)."""
    run_ids = list(run_ids)
    if not run_ids:
        return {}
    rows = (
        Delivery.objects.filter(run_id__in=run_ids, status__in=(*_BUSY_DELIVERY_STATUSES, Delivery.Status.DEFERRED))
        .order_by().values_list("run_id", "status")
        .annotate(n=Count("pk"), first=Min("not_before"), last=Max("not_before"))
    )
    busy, deferred = set(), {}
    for run_id, status, n, first, last in rows:
        if status == Delivery.Status.DEFERRED:
            deferred[run_id] = QuietHoursWait(deferred=n, first_at=first, last_at=last)
        else:
            busy.add(run_id)
    return {run_id: wait for run_id, wait in deferred.items() if run_id not in busy}


def campaign_runs_in_progress(*, campaign: Campaign) -> tuple[list[CampaignRun], dict[int, QuietHoursWait]]:
    """The campaign's runs materializing or sending, and which of them only wait for quiet hours."""
    runs = list(campaign.runs.filter(status__in=(CampaignRun.Status.MATERIALIZING, CampaignRun.Status.SENDING)))
    waits = runs_waiting_for_quiet_hours(run_ids=[r.pk for r in runs if r.status == CampaignRun.Status.SENDING])
    return runs, waits


# Schedule in words ----------------------------------------------------------------------------


def crontab_next_run(*, minute: str, hour: str, day_of_week: str, day_of_month: str, month_of_year: str,
                     now: datetime | None = None, zone=None) -> datetime | None:
    """The first time after ``now`` the crontab fires in ``zone`` (default: settings.TIME_ZONE),
    with celery beat's rules (every field must match; day of week 0 = Sunday). None when it
    never fires within four years (e.g. 31 February)."""
    zone = zone or timezone.get_default_timezone()
    spec = crontab(minute=minute, hour=hour, day_of_week=day_of_week, day_of_month=day_of_month,
                   month_of_year=month_of_year)
    local = (now or timezone.now()).astimezone(zone)
    times = sorted((h, m) for h in spec.hour for m in spec.minute)
    day = local.date()
    for offset in range(4 * 366 + 1):
        current = day + timedelta(days=offset)
        if (current.month not in spec.month_of_year or current.day not in spec.day_of_month
                or (current.weekday() + 1) % 7 not in spec.day_of_week):
            continue
        for h, m in times:
            candidate = datetime(current.year, current.month, current.day, h, m, tzinfo=zone)
            if candidate > local:
                return candidate
    return None


def campaign_schedule_description(*, campaign: Campaign, now: datetime | None = None) -> str:
    """The schedule in words with its next run in the site's time zone, e.g. "At 09:00, only on
    Monday (Asia/Shanghai) — next run Mon 7 Dec 2026 09:00"."""
    zone_name = timezone.get_default_timezone_name()
    now = now or timezone.now()
    if campaign.schedule_kind == Campaign.ScheduleKind.ONCE:
        if not campaign.scheduled_at:
            return "Once, at a time not yet chosen"
        local = campaign.scheduled_at.astimezone(timezone.get_default_timezone())
        passed = " (passed)" if campaign.scheduled_at <= now else ""
        return f"Once, on {_day(local.date())} {local.year} at {local:%H:%M} ({zone_name}){passed}"
    options = Options()
    options.use_24hour_time_format = True
    expression = " ".join([campaign.cron_minute, campaign.cron_hour, campaign.cron_day_of_month,
                           campaign.cron_month_of_year, campaign.cron_day_of_week])
    try:
        words = get_description(expression, options)
        next_run = crontab_next_run(minute=campaign.cron_minute, hour=campaign.cron_hour,
                                    day_of_week=campaign.cron_day_of_week, day_of_month=campaign.cron_day_of_month,
                                    month_of_year=campaign.cron_month_of_year, now=now)
    except Exception:  # noqa: BLE001 - cron_descriptor and celery raise their own kinds for a bad field
        return f"Not a valid crontab: {expression}"
    when = f"next run {_day(next_run.date())} {next_run.year} {next_run:%H:%M}" if next_run else "never runs"
    return f"{words} ({zone_name}) — {when}"
