"""The questions the admin home page asks: how many customers are in each lifecycle state, how
that changed week by week, which campaigns run next and what the latest runs did.

Every figure is an aggregate computed in a fixed number of statements whatever the number of
customers or transitions:

- ``lifecycle_counts``: one GROUP BY over customers (PostgreSQL answers it from the
  ``customer_lifecycle_idx`` index, whose first column is the state);
- ``lifecycle_history``: that GROUP BY, plus one grouped SELECT over the transitions of the
  window and one over the customers created in it (three in all);
- ``campaigns_upcoming``: one SELECT joining each campaign's beat row and its schedule;
- ``runs_latest``: one SELECT.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Case, Count, F, IntegerField, Value, When
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun
from reactivation.models import Customer, LifecycleState, LifecycleTransition

STATES: tuple[str, ...] = tuple(LifecycleState.values)
HISTORY_WEEKS = 12

# A run's skipped customers, whatever the reason (quiet-hours deferrals are not skips: they are
# sent later; the holdout is counted apart).
SKIPPED_FIELDS = (
    "skipped_consent", "skipped_suppressed", "skipped_cap", "skipped_reentry", "skipped_budget",
    "skipped_no_address", "skipped_channel_off", "skipped_cancelled",
)


@dataclass(frozen=True)
class LifecycleWeek:
    """One week of the lifecycle history: the states at its end (at ``now`` for the current
    week) and the customers who entered and left dormancy during it."""

    start: date
    states: dict[str, int]
    dormant_in: int
    dormant_out: int

    @property
    def dormant_net(self) -> int:
        return self.dormant_in - self.dormant_out


@dataclass(frozen=True)
class UpcomingCampaign:
    id: int
    name: str
    status: str
    status_label: str
    schedule: str
    next_run: datetime | None  # in settings.TIME_ZONE; None when beat will not launch it again


@dataclass(frozen=True)
class RunSummary:
    id: int
    campaign_id: int
    campaign_name: str
    number: int
    status_label: str
    started_at: datetime
    targeted: int
    sent: int
    skipped: int
    holdout: int
    failed: int
    offers_granted: int

    @property
    def waiting(self) -> int:
        """Targeted customers with no outcome to show yet: queued, held for quiet hours, or
        handed over by a worker that stopped before the answer came (unknown), so that
        targeted = sent + skipped + holdout + failed + waiting."""
        return max(self.targeted - self.sent - self.skipped - self.holdout - self.failed, 0)


def site_zone() -> tzinfo:
    return ZoneInfo(settings.TIME_ZONE)


def lifecycle_counts() -> dict[str, int]:
    """Customers in each lifecycle state now, every state present (one GROUP BY)."""
    rows = Customer.objects.order_by().values_list("lifecycle_state").annotate(n=Count("*"))
    counts = dict.fromkeys(STATES, 0)
    for state, n in rows:
        counts[state] = counts.get(state, 0) + n
    return counts


def week_starts(*, now: datetime, weeks: int = HISTORY_WEEKS, zone: tzinfo | None = None) -> list[datetime]:
    """The Mondays 00:00 (site time) that start the last ``weeks`` weeks, the current one last.

    Midnight is built from the local date, not by subtracting hours, so a week that crosses a
    daylight-saving change still starts at local midnight.
    """
    zone = zone or site_zone()
    local = timezone.localtime(now, zone)
    this_monday = local.date() - timedelta(days=local.weekday())
    return [
        datetime.combine(this_monday - timedelta(weeks=back), datetime.min.time(), tzinfo=zone)
        for back in range(weeks - 1, -1, -1)
    ]


def _week_index(field: str, starts: list[datetime]) -> Case:
    """The index in ``starts`` of the week a timestamp falls in, as SQL (rows before the
    first week are filtered out by the caller). The boundaries are computed here, in Python,
    so both databases cut weeks at the same instants whatever their time zone tables say;
    anything after the last start (including a clock ahead of ``now``) is the current week."""
    return Case(
        *[When(**{f"{field}__gte": start}, then=Value(index)) for index, start in reversed(list(enumerate(starts)))],
        default=Value(-1),
        output_field=IntegerField(),
    )


def lifecycle_history(*, now: datetime | None = None, weeks: int = HISTORY_WEEKS) -> list[LifecycleWeek]:
    """Customers by state at the end of each of the last ``weeks`` weeks (the current week
    ends now), with dormant inflow and outflow per week, rebuilt from the transition log.

    The state at a boundary is today's count minus what happened after it: for each later
    week, transitions into a state are taken back and transitions out of it are put back.
    Customers start as "new" without a logged transition, so those created after a boundary
    are taken out of its "new" count: they were not customers yet. A transition that only
    changed the deciding rule (from == to) moves nobody. Three statements in all.
    """
    now = now or timezone.now()
    starts = week_starts(now=now, weeks=weeks)
    current = lifecycle_counts()

    moves = (
        LifecycleTransition.objects.order_by()
        .filter(at__gte=starts[0])
        .exclude(from_state=F("to_state"))
        .annotate(week=_week_index("at", starts))
        .values_list("week", "from_state", "to_state")
        .annotate(n=Count("*"))
    )
    net = [dict.fromkeys(STATES, 0) for _ in starts]  # per week: in - out, by state
    dormant_in = [0] * len(starts)
    dormant_out = [0] * len(starts)
    for week, from_state, to_state, n in moves:
        if to_state in net[week]:
            net[week][to_state] += n
        if from_state in net[week]:
            net[week][from_state] -= n
        if to_state == LifecycleState.DORMANT:
            dormant_in[week] += n
        if from_state == LifecycleState.DORMANT:
            dormant_out[week] += n

    joined = [0] * len(starts)
    created = (
        Customer.objects.order_by()
        .filter(created_at__gte=starts[0])
        .annotate(week=_week_index("created_at", starts))
        .values_list("week")
        .annotate(n=Count("*"))
    )
    for week, n in created:
        joined[week] += n

    history = []
    states = dict(current)
    # Walk back from now: the end of week i is the end of week i+1 minus week i+1's changes.
    for index in range(len(starts) - 1, -1, -1):
        history.append(LifecycleWeek(
            start=starts[index].date(), states=dict(states),
            dormant_in=dormant_in[index], dormant_out=dormant_out[index],
        ))
        for state in STATES:
            states[state] -= net[index][state]
        states[LifecycleState.NEW] -= joined[index]
    history.reverse()
    return history


def _crontab_text(crontab) -> str:
    return " ".join((crontab.minute, crontab.hour, crontab.day_of_month, crontab.month_of_year, crontab.day_of_week))


def _next_run(task, now: datetime, zone: tzinfo) -> datetime | None:
    """When beat launches ``task`` next (celery's own crontab arithmetic, in the crontab's zone)."""
    if task is None or not task.enabled:
        return None
    if task.clocked_id:
        if task.one_off and task.last_run_at:
            return None
        return timezone.localtime(task.clocked.clocked_time, zone)
    if task.crontab_id:
        schedule = task.crontab.schedule
        # After the later of now and the task's start time: beat launches nothing before it.
        after = max(now, task.start_time) if task.start_time else now
        last, delta, _ = schedule.remaining_delta(after)
        return timezone.localtime(last + delta, zone)
    return None


def campaigns_upcoming(*, now: datetime | None = None, limit: int = 20) -> list[UpcomingCampaign]:
    """Running and scheduled campaigns, soonest next launch first (one SELECT).

    A running campaign launched by hand has no beat row and no next run: it is listed after
    those that have one.
    """
    now = now or timezone.now()
    zone = site_zone()
    campaigns = (
        Campaign.objects.filter(status__in=[Campaign.Status.RUNNING, Campaign.Status.SCHEDULED])
        .select_related("periodic_task__crontab", "periodic_task__clocked")
        .only(
            "id", "name", "status", "schedule_kind",
            "periodic_task__enabled", "periodic_task__one_off", "periodic_task__last_run_at",
            "periodic_task__start_time", "periodic_task__clocked_id", "periodic_task__crontab_id",
            "periodic_task__clocked__clocked_time",
            "periodic_task__crontab__minute", "periodic_task__crontab__hour",
            "periodic_task__crontab__day_of_week", "periodic_task__crontab__day_of_month",
            "periodic_task__crontab__month_of_year", "periodic_task__crontab__timezone",
        )
        .order_by("name")
    )
    upcoming = []
    for campaign in campaigns:
        task = campaign.periodic_task
        if task is not None and task.crontab_id:
            schedule = f"crontab {_crontab_text(task.crontab)} ({task.crontab.timezone})"
        elif task is not None and task.clocked_id:
            schedule = "once"
        else:
            schedule = "launched by hand"
        upcoming.append(UpcomingCampaign(
            id=campaign.pk, name=campaign.name, status=campaign.status,
            status_label=campaign.get_status_display(), schedule=schedule,
            next_run=_next_run(task, now, zone),
        ))
    far = datetime.max.replace(tzinfo=zone)
    upcoming.sort(key=lambda item: (item.next_run is None, item.next_run or far, item.name))
    return upcoming[:limit]


def runs_latest(*, limit: int = 10) -> list[RunSummary]:
    """The latest campaign runs with their counters (one SELECT)."""
    skipped = sum((F(name) for name in SKIPPED_FIELDS[1:]), F(SKIPPED_FIELDS[0]))
    runs = (
        CampaignRun.objects.order_by("-started_at", "-id")
        .annotate(skipped_total=skipped)
        .values(
            "id", "campaign_id", "campaign__name", "number", "status", "started_at",
            "targeted", "sent", "skipped_total", "holdout", "failed", "offers_granted",
        )[:limit]
    )
    labels = dict(CampaignRun.Status.choices)
    return [
        RunSummary(
            id=run["id"], campaign_id=run["campaign_id"], campaign_name=run["campaign__name"],
            number=run["number"], status_label=labels.get(run["status"], run["status"]),
            started_at=run["started_at"], targeted=run["targeted"], sent=run["sent"],
            skipped=run["skipped_total"], holdout=run["holdout"], failed=run["failed"],
            offers_granted=run["offers_granted"],
        )
        for run in runs
    ]
