"""Dashboard selectors: lifecycle counts now and rebuilt week by week from the transition log,
campaigns with their next launch in the site's time zone, and the latest runs."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun
from campaigns.services import campaign_schedule
from dashboard import selectors
from reactivation.models import Customer, LifecycleTransition
from tests.factories import CampaignFactory, CustomerFactory

pytestmark = pytest.mark.django_db

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A Wednesday afternoon in Shanghai; its week began on Monday 2025-03-10 00:00 local
# (2025-03-09 16:00 UTC).
NOW = datetime(2025, 3, 12, 15, 30, tzinfo=SHANGHAI)
THIS_MONDAY = datetime(2025, 3, 10, tzinfo=SHANGHAI)


@pytest.fixture(autouse=True)
def _site_zone(settings):
    settings.TIME_ZONE = "Asia/Shanghai"


def _week(back: int, *, days: float = 1) -> datetime:
    """A moment ``days`` into the week that began ``back`` weeks before this one."""
    return THIS_MONDAY - timedelta(weeks=back) + timedelta(days=days)


def _customer(state: str, *, created: datetime | None = None) -> Customer:
    customer = CustomerFactory(lifecycle_state=state)
    Customer.objects.filter(pk=customer.pk).update(created_at=created or _week(20))
    return customer


def _moves(customer: Customer, *moves: tuple[str, str, int, float]) -> None:
    """Transitions (from, to, weeks back, days into that week)."""
    LifecycleTransition.objects.bulk_create(
        LifecycleTransition(customer=customer, from_state=from_state, to_state=to_state, at=_week(back, days=days))
        for from_state, to_state, back, days in moves
    )


def test_week_starts_are_local_mondays_at_midnight_the_current_week_last():
    starts = selectors.week_starts(now=NOW, weeks=12)

    assert len(starts) == 12
    assert starts[-1] == THIS_MONDAY
    assert starts[0] == THIS_MONDAY - timedelta(weeks=11)
    assert all(start.astimezone(SHANGHAI).hour == 0 and start.weekday() == 0 for start in starts)


def test_week_starts_keep_local_midnight_across_a_daylight_saving_change():
    berlin = ZoneInfo("Europe/Berlin")  # clocks went forward on Sunday 2025-03-30
    starts = selectors.week_starts(now=datetime(2025, 4, 2, 12, tzinfo=berlin), weeks=2, zone=berlin)

    assert [timezone.localtime(s, berlin).isoformat() for s in starts] == [
        "2025-03-24T00:00:00+01:00", "2025-03-31T00:00:00+02:00",
    ]


def test_lifecycle_counts_list_every_state_even_empty_ones():
    _customer("dormant")
    _customer("dormant")
    _customer("active")

    assert selectors.lifecycle_counts() == {"new": 0, "active": 1, "at_risk": 0, "dormant": 2, "reactivated": 0}


# Each case: the customer's state now, its transitions (from, to, weeks back, day of week),
# when it was created (weeks back), and its expected state at the end of weeks 3, 2, 1 and 0
# back (week 0 is the current one, which ends now). None: not a customer yet.
CASES = {
    "no history: the same state every week": (
        "active", [], 20, ["active", "active", "active", "active"],
    ),
    "went dormant two weeks ago": (
        "dormant", [("active", "dormant", 2, 3)], 20, ["active", "dormant", "dormant", "dormant"],
    ),
    "at risk, dormant, then back this week": (
        "reactivated",
        [("active", "at_risk", 3, 1), ("at_risk", "dormant", 2, 1), ("dormant", "reactivated", 0, 1)],
        20, ["at_risk", "dormant", "dormant", "reactivated"],
    ),
    "a rule-only change moves nobody": (
        "dormant", [("active", "dormant", 5, 1), ("dormant", "dormant", 1, 2)], 20,
        ["dormant", "dormant", "dormant", "dormant"],
    ),
    "created last week, still new": (
        "new", [], 1, [None, None, "new", "new"],
    ),
    "created last week, active this week": (
        "active", [("new", "active", 0, 0.5)], 1, [None, None, "new", "active"],
    ),
    "changed on the boundary instant: counted in the week it starts": (
        "dormant", [("at_risk", "dormant", 1, 0)], 20, ["at_risk", "at_risk", "dormant", "dormant"],
    ),
    "before the window: only today's state matters": (
        "dormant", [("active", "dormant", 30, 1)], 40, ["dormant", "dormant", "dormant", "dormant"],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_lifecycle_history_rebuilds_each_week_end_from_the_log(case):
    state_now, moves, created_back, expected = case
    customer = _customer(state_now, created=_week(created_back, days=2))
    _moves(customer, *moves)
    # A bystander whose history must not leak into the customer's.
    _customer("active")

    history = selectors.lifecycle_history(now=NOW, weeks=4)

    assert [week.start for week in history] == [_week(back, days=0).date() for back in (3, 2, 1, 0)]
    for week, state in zip(history, expected):
        bystander = {"active": 1}
        wanted = {s: bystander.get(s, 0) + (s == state) for s in selectors.STATES}
        assert week.states == wanted, week.start


def test_dormant_inflow_and_outflow_are_counted_in_the_week_they_happen():
    a, b, c = _customer("reactivated"), _customer("dormant"), _customer("active")
    _moves(a, ("at_risk", "dormant", 2, 1), ("dormant", "reactivated", 0, 1))
    _moves(b, ("active", "dormant", 2, 4), ("dormant", "dormant", 1, 1))
    _moves(c, ("dormant", "active", 3, 1))

    history = selectors.lifecycle_history(now=NOW, weeks=4)

    assert [(w.dormant_in, w.dormant_out, w.dormant_net) for w in history] == [
        (0, 1, -1), (2, 0, 2), (0, 0, 0), (0, 1, -1),
    ]
    assert [w.states["dormant"] for w in history] == [0, 2, 2, 1]


def test_lifecycle_history_takes_three_statements_whatever_the_size(django_assert_num_queries):
    for state in ("active", "dormant", "new"):
        customer = _customer(state)
        _moves(customer, ("at_risk", state, 5, 1), ("active", state, 1, 1))

    with django_assert_num_queries(3):
        selectors.lifecycle_history(now=NOW, weeks=12)


def test_scheduled_and_running_campaigns_with_their_next_launch_in_site_time():
    recurring = CampaignFactory(
        name="Weekly win-back", schedule_kind=Campaign.ScheduleKind.RECURRING,
        cron_minute="0", cron_hour="10", cron_day_of_week="1",  # Mondays 10:00 site time
    )
    once = CampaignFactory(name="Spring sale", scheduled_at=NOW + timedelta(hours=2))
    running = CampaignFactory(name="Launched by hand", status=Campaign.Status.RUNNING)
    CampaignFactory(name="Draft", status=Campaign.Status.DRAFT)
    CampaignFactory(name="Paused", status=Campaign.Status.PAUSED)
    campaign_schedule(campaign=recurring, now=NOW)
    campaign_schedule(campaign=once, now=NOW)

    upcoming = selectors.campaigns_upcoming(now=NOW)

    assert [(c.name, c.status, c.next_run) for c in upcoming] == [
        ("Spring sale", "scheduled", datetime(2025, 3, 12, 17, 30, tzinfo=SHANGHAI)),
        ("Weekly win-back", "scheduled", datetime(2025, 3, 17, 10, 0, tzinfo=SHANGHAI)),
        ("Launched by hand", "running", None),
    ]
    assert [str(c.next_run.tzinfo) for c in upcoming[:2]] == ["Asia/Shanghai", "Asia/Shanghai"]
    assert upcoming[1].schedule == "crontab 0 10 * * 1 (Asia/Shanghai)"
    assert running.pk == upcoming[2].id


def test_a_one_off_campaign_that_already_launched_has_no_next_run():
    once = CampaignFactory(name="Spring sale", scheduled_at=NOW + timedelta(hours=2))
    once = campaign_schedule(campaign=once, now=NOW)
    task = once.periodic_task
    task.last_run_at, task.enabled = NOW + timedelta(hours=2), False
    task.save()

    assert [c.next_run for c in selectors.campaigns_upcoming(now=NOW)] == [None]


def test_latest_runs_newest_first_with_their_counts(django_assert_num_queries):
    campaign = CampaignFactory(name="Weekly win-back")
    old = CampaignRun.objects.create(campaign=campaign, number=1, started_at=NOW - timedelta(days=7),
                                     status=CampaignRun.Status.DONE, targeted=100, sent=80, failed=2)
    new = CampaignRun.objects.create(
        campaign=campaign, number=2, started_at=NOW - timedelta(days=1), status=CampaignRun.Status.SENDING,
        targeted=50, sent=30, skipped_consent=3, skipped_cap=2, skipped_cancelled=1, holdout=5,
        deferred_quiet=4, failed=1, offers_granted=20,
    )

    with django_assert_num_queries(1):
        runs = selectors.runs_latest(limit=10)

    assert [(r.id, r.number, r.status_label) for r in runs] == [(new.pk, 2, "Sending"), (old.pk, 1, "Done")]
    latest = runs[0]
    assert (latest.campaign_name, latest.targeted, latest.sent, latest.skipped, latest.failed, latest.offers_granted) == (
        "Weekly win-back", 50, 30, 6, 1, 20,
    )
    # the holdout is its own column, and what has no outcome yet (4 deferred to quiet hours,
    # 4 still queued) is "waiting", so the columns add up to the targeted customers
    assert (latest.holdout, latest.waiting) == (5, 8)
    assert latest.sent + latest.skipped + latest.holdout + latest.failed + latest.waiting == latest.targeted
    assert (runs[1].holdout, runs[1].waiting) == (0, 18)
