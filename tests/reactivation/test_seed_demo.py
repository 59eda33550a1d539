"""The demo world (reactivation.demo) and the seed_demo command."""

import io
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import Count, F, Max, Min, Q, Sum
from django.test.utils import CaptureQueriesContext

from consent.models import ConsentEvent, ConsentState, Suppression
from core.phones import normalize_phone
from reactivation import demo
from reactivation.demo import demo_world_seed
from reactivation.models import (
    ActivityEvent,
    Customer,
    DormancyReason,
    DormancyRule,
    LifecycleState,
    LifecycleTransition,
    Segment,
)
from reactivation.segment_sizes import segment_size_label
from reactivation.selectors import segment_size
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CREATED_KEYS = ["customers", "events", "rules", "segments", "consent_events", "suppressions", "reasons", "transitions"]
# What a shop that is doing fine looks like, in percent of all customers (demo.PROFILE_WEIGHTS).
MIX_RANGES = {"new": (8, 12), "active": (40, 50), "at_risk": (15, 20), "dormant": (20, 25), "reactivated": (3, 6)}


@pytest.fixture
def world():
    """300 customers: enough for every source, reason and suppression kind with this seed."""
    return demo_world_seed(customers=300, seed=7, now=NOW)


def table_counts() -> dict:
    models = [Customer, ActivityEvent, DormancyRule, Segment, DormancyReason, LifecycleTransition,
              ConsentEvent, ConsentState, Suppression]
    return {model.__name__: model.objects.count() for model in models}


def test_summary_counts_what_was_created(world):
    assert list(world)[:8] == CREATED_KEYS
    assert world["customers"] == Customer.objects.count() == 300
    assert world["events"] == ActivityEvent.objects.count()
    assert world["rules"] == DormancyRule.objects.count() == 2
    assert world["segments"] == Segment.objects.count() == 3
    assert world["consent_events"] == ConsentEvent.objects.count()
    assert world["suppressions"] == Suppression.objects.count() > 0
    assert world["reasons"] == DormancyReason.objects.count() > 0
    assert world["transitions"] == LifecycleTransition.objects.count()
    for state in LifecycleState.values:
        assert world[state] == Customer.objects.filter(lifecycle_state=state).count()
        assert world[f"{state}_pct"] == round(100 * world[state] / 300, 1)


def test_every_lifecycle_state_is_present(world):
    present = set(Customer.objects.values_list("lifecycle_state", flat=True))

    assert present == set(LifecycleState.values)


def test_each_customer_ends_in_the_state_its_activity_was_built_for(world):
    mismatched = [
        (c.external_id, c.attributes["demo_profile"], c.lifecycle_state)
        for c in Customer.objects.all()
        if c.attributes["demo_profile"] != c.lifecycle_state
    ]

    assert mismatched == []


def test_the_mix_looks_like_a_shop_doing_fine(world):
    shares = {state: 100 * world[state] / world["customers"] for state in LifecycleState.values}

    for state, (low, high) in MIX_RANGES.items():
        assert low <= shares[state] <= high, (state, shares[state])


def test_each_rule_decides_at_risk_and_dormant_customers(world):
    decided = Counter(
        Customer.objects.filter(lifecycle_state__in=["at_risk", "dormant"])
        .values_list("lifecycle_state", "lifecycle_rule__name")
    )

    for rule in (demo.ECOMMERCE_RULE, demo.APP_RULE):
        for state in ("at_risk", "dormant"):
            assert decided[(state, rule)] >= 10, (state, rule, decided)
    # The e-commerce rule only ever judges buyers, and judges them by their last order.
    shop = Customer.objects.filter(lifecycle_rule__name=demo.ECOMMERCE_RULE)
    assert not shop.filter(order_count=0).exists()
    assert not shop.filter(last_order_at__gt=NOW - timedelta(days=60)).exists()
    assert not Customer.objects.filter(lifecycle_state__in=["at_risk", "dormant"], lifecycle_rule=None).exists()


def test_the_transition_log_holds_the_last_weeks_as_the_hourly_evaluation_would_have(world):
    # Given the replayed instants: one a week, the oldest 17 weeks back
    instants = demo.history_instants(NOW)
    assert len(instants) == demo.HISTORY_WEEKS == 17
    assert instants[-1] == NOW - timedelta(weeks=1)

    # Then transitions were logged at those instants and at now only, spanning more than 10 weeks
    times = set(LifecycleTransition.objects.values_list("at", flat=True))
    assert times <= {*instants, NOW}
    span = LifecycleTransition.objects.aggregate(first=Min("at"), last=Max("at"))
    assert span["last"] - span["first"] >= timedelta(weeks=10)

    # And over the last 12 weeks customers lapsed into and came back from dormancy nearly every
    # week (a few a week among 300), at a pace a shop could have: never 5% of the base in a
    # week. Rule-only changes (from == to) move nobody.
    moves = LifecycleTransition.objects.exclude(from_state=F("to_state"))
    weeks = [*instants[-11:], NOW]
    lapsed = [moves.filter(at=at, to_state="dormant").count() for at in weeks]
    came_back = [moves.filter(at=at, from_state="dormant").count() for at in weeks]
    assert sum(n > 0 for n in lapsed) >= 10 and sum(n > 0 for n in came_back) >= 9, (lapsed, came_back)
    assert max(lapsed + came_back) < 15 and 0.5 < sum(lapsed) / sum(came_back) < 2, (lapsed, came_back)


def test_weekly_states_stay_level_over_the_last_twelve_weeks(world):
    """Replaying the log week by week, each state's share of the customers who had signed up
    stays in a band around today's (no ramp left over from how the demo was built)."""
    state, weeks = {}, {}
    moves = LifecycleTransition.objects.order_by("at", "id").values_list("customer_id", "to_state", "at")
    for customer_id, to_state, at in moves:
        state[customer_id] = to_state
        weeks[at] = dict(state)
    signups = dict(Customer.objects.values_list("id", "signup_at"))
    for at in [*demo.history_instants(NOW)[-11:], NOW]:
        members = [pk for pk, signed_up in signups.items() if signed_up <= at]
        counts = Counter(weeks[at].get(pk, "new") for pk in members)
        shares = {name: 100 * counts[name] / len(members) for name in LifecycleState.values}
        assert 4 <= shares["new"] <= 14 and 38 <= shares["active"] <= 58, (at, shares)
        assert 6 <= shares["at_risk"] <= 22 and 17 <= shares["dormant"] <= 33, (at, shares)
        assert 1 <= shares["reactivated"] <= 8, (at, shares)


def test_reactivated_customers_were_dormant_at_an_earlier_evaluation(world):
    reactivated = Customer.objects.filter(lifecycle_state=LifecycleState.REACTIVATED)

    assert reactivated.exists()
    for customer in reactivated:
        history = list(customer.lifecycle_transitions.order_by("at", "id").values_list("from_state", "to_state", "at"))
        assert history[-1][:2] == (LifecycleState.DORMANT, LifecycleState.REACTIVATED)
        back_at = history[-1][2]
        assert NOW - back_at < timedelta(days=30)  # LIFECYCLE_REACTIVATED_DAYS
        # back within the week before the evaluation that saw it, with an order
        assert customer.events.filter(kind="order", occurred_at__gt=back_at - timedelta(weeks=1)).exists()
        assert customer.last_seen_at > back_at - timedelta(weeks=1)


def test_rollups_agree_with_the_events(world):
    rows = Customer.objects.annotate(
        seen=Max("events__occurred_at"),
        ordered=Max("events__occurred_at", filter=Q(events__kind=ActivityEvent.ORDER)),
        orders=Count("events", filter=Q(events__kind=ActivityEvent.ORDER)),
        spent=Sum("events__amount", filter=Q(events__kind=ActivityEvent.ORDER)),
    )
    for c in rows:
        assert c.last_seen_at == c.seen, c.external_id
        assert c.last_order_at == c.ordered, c.external_id
        assert c.order_count == c.orders, c.external_id
        assert c.total_spent == (c.spent or Decimal("0")), c.external_id
        by_category = (
            c.events.filter(kind=ActivityEvent.ORDER).values("category").annotate(n=Count("id")).order_by("-n", "category")
        )
        assert c.favourite_category == (by_category[0]["category"] if by_category else ""), c.external_id


def test_nothing_happens_before_signup_or_after_now(world):
    assert not ActivityEvent.objects.filter(occurred_at__lt=F("customer__signup_at")).exists()
    assert not ActivityEvent.objects.filter(occurred_at__gt=NOW).exists()
    assert not Customer.objects.exclude(created_at=F("signup_at")).exists()  # members since they signed up


def test_last_seen_is_a_login_or_visit(world):
    # Whether "last seen" counts only logins and visits or any activity, the demo agrees.
    for c in Customer.objects.exclude(last_seen_at=None):
        assert c.events.filter(occurred_at=c.last_seen_at, kind__in=[ActivityEvent.LOGIN, ActivityEvent.VISIT]).exists()


def test_customers_look_real(world):
    # Chinese names ("崔洋") and Latin ones ("Julian Rivera"), so searching by part of a name
    # can be shown both ways, and family names repeat so a search finds several customers.
    customers = list(Customer.objects.order_by("external_id"))

    assert [c.external_id for c in customers[:2]] == ["DEMO-000001", "DEMO-000002"]
    assert {c.locale for c in customers} == {"zh-hans", "en"}
    chinese = [c.name for c in customers if re.fullmatch(r"[\u4e00-\u9fff]{2,4}", c.name)]
    latin = [c.name for c in customers if re.fullmatch(r"[A-Za-z'\-]+ [A-Za-z'\-]+", c.name)]
    assert len(chinese) + len(latin) == len(customers)
    assert len(chinese) >= 0.6 * len(customers) and len(latin) >= 0.15 * len(customers)
    assert Counter(name[0] for name in chinese).most_common(1)[0][1] >= 3
    assert Counter(name.split()[1] for name in latin).most_common(1)[0][1] >= 2
    phones = [c.phone for c in customers if c.phone]
    assert all(normalize_phone(p) == p for p in phones)  # valid E.164, not merely possible
    assert len(set(phones)) == len(phones)
    assert all(any(p.startswith(code) for p in phones) for code in ("+86", "+1", "+44"))
    assert sum(p.startswith("+86") for p in phones) > len(phones) / 2
    emails = [c.email for c in customers if c.email]
    assert all(e == e.lower() and e.rsplit("@", 1)[1] in {"example.com", "example.net", "example.org"} for e in emails)
    assert len(set(emails)) == len(emails)
    assert {"Asia/Shanghai", "Europe/London"} <= {c.timezone for c in customers}
    signups = [c.signup_at for c in customers]
    assert min(signups) >= NOW - timedelta(days=3 * 365) and max(signups) <= NOW


def test_orders_carry_amounts_and_categories(world):
    orders = ActivityEvent.objects.filter(kind=ActivityEvent.ORDER)

    assert set(orders.values_list("category", flat=True)) == set(demo.CATEGORIES)
    assert not orders.filter(Q(amount=None) | Q(amount__lte=0)).exists()
    assert not ActivityEvent.objects.filter(occurred_at__gt=NOW).exists()
    assert set(ActivityEvent.objects.values_list("kind", flat=True)) == {"login", "visit", "view_item", "order"}


def test_rules_and_segments(world):
    shop = DormancyRule.objects.get(name="E-commerce: no order for 90 days")
    app = DormancyRule.objects.get(name="App: no login for 7 days")
    assert (shop.signal, shop.inactive_days, shop.at_risk_days, shop.is_active) == ("last_order", 90, 60, True)
    assert (app.signal, app.inactive_days, app.at_risk_days, app.is_active) == ("last_seen", 7, 4, True)
    # Buyers only, and first whenever both rules say the same
    assert (shop.min_orders, shop.min_spent, app.min_orders, app.min_spent) == (1, None, None, None)
    assert shop.priority < app.priority

    high_value = Segment.objects.get(name="High-value dormant")
    beauty = Segment.objects.get(name="Dormant beauty lovers")
    at_risk_app = Segment.objects.get(name="At-risk app users")
    assert (high_value.lifecycle_states, high_value.rfm_monetary_min, high_value.rfm_monetary_max) == (["dormant"], 4, 5)
    assert (beauty.lifecycle_states, beauty.favourite_categories) == (["dormant"], ["beauty"])
    assert (at_risk_app.lifecycle_states, at_risk_app.dormancy_rule) == (["at_risk"], app)

    # and each has members to show in the admin
    assert Customer.objects.filter(lifecycle_state="dormant", rfm_monetary__gte=4).exists()
    assert Customer.objects.filter(lifecycle_state="dormant", favourite_category="beauty").exists()
    assert Customer.objects.filter(lifecycle_state="at_risk", lifecycle_rule=app).exists()



def test_every_demo_segment_is_counted_once_seeded(world):
    # The segment list shows each segment's cached size: a fresh demo must not say "counting…"
    # until the background recount.
    segments = list(Segment.objects.order_by("name"))
    assert len(segments) == 3
    for segment in segments:
        assert segment.size_counted_at is not None, segment.name
        assert segment.size == segment_size(segment=segment) > 0, segment.name
        assert "counting" not in str(segment_size_label(segment=segment))

def test_consent_history_from_several_sources(world):
    grants = set(ConsentEvent.objects.filter(action="grant").values_list("source", flat=True))
    withdrawals = set(ConsentEvent.objects.filter(action="withdraw").values_list("source", flat=True))

    assert {"signup", "import", "admin", "preference_center"} <= grants
    assert {"unsubscribe_link", "sms_reply"} <= withdrawals
    assert not ConsentEvent.objects.filter(at__gt=NOW).exists()
    assert not ConsentEvent.objects.exclude(notice_version=demo.NOTICE_VERSION).exists()
    # The current state follows each customer's latest decision.
    unsubscribed = ConsentEvent.objects.filter(source="unsubscribe_link").values_list("customer_id", flat=True)
    assert set(
        ConsentState.objects.filter(channel="email", status="withdrawn").values_list("customer_id", flat=True)
    ) == set(unsubscribed)
    sms_reply = ConsentEvent.objects.filter(source="sms_reply").first()
    assert sms_reply.evidence["text"] in {"TD", "退订", "T"}


def test_suppressions_and_reasons(world):
    assert set(Suppression.objects.values_list("reason", flat=True)) == set(Suppression.Reason.values)
    for suppression in Suppression.objects.all():
        lookup = {"email": suppression.address} if suppression.channel == "email" else {"phone": suppression.address}
        assert Customer.objects.filter(**lookup).exists()

    assert set(DormancyReason.objects.values_list("reason", flat=True)) == set(DormancyReason.Reason.values)
    assert set(DormancyReason.objects.values_list("source", flat=True)) == set(DormancyReason.Source.values)
    assert not DormancyReason.objects.filter(reason="other", detail="").exists()
    assert not DormancyReason.objects.filter(recorded_at__gt=NOW).exists()


def test_a_second_run_creates_nothing(world):
    before = table_counts()

    again = demo_world_seed(customers=300, seed=7, now=NOW)

    assert table_counts() == before
    assert [again[key] for key in CREATED_KEYS] == [0] * 8
    assert {state: again[state] for state in LifecycleState.values} == {
        state: world[state] for state in LifecycleState.values
    }


def test_a_larger_run_adds_only_the_missing_customers():
    demo_world_seed(customers=20, seed=7, now=NOW)
    log = LifecycleTransition.objects.order_by("id").values_list("customer_id", "to_state", "at")
    history = list(log)
    last_id = LifecycleTransition.objects.aggregate(last=Max("id"))["last"]

    summary = demo_world_seed(customers=50, seed=7, now=NOW)

    assert summary["customers"] == 30
    assert Customer.objects.count() == 50
    assert Customer.objects.filter(external_id="DEMO-000050").exists()
    # The past is not replayed over customers that exist: the log up to now is untouched.
    assert list(log.all())[:len(history)] == history
    assert not LifecycleTransition.objects.filter(id__gt=last_id).exclude(at=NOW).exists()


def test_existing_customers_outside_the_demo_are_left_alone():
    customer = CustomerFactory(external_id="SHOP-1", name="Real Customer")

    demo_world_seed(customers=10, seed=1, now=NOW)

    customer.refresh_from_db()
    assert customer.name == "Real Customer"
    assert not customer.events.exists()
    # Nobody was evaluated at a past instant: the real customer's log holds only today.
    assert set(LifecycleTransition.objects.values_list("at", flat=True)) <= {NOW}


def test_negative_count_is_refused():
    with pytest.raises(ValueError, match="zero or more"):
        demo_world_seed(customers=-1, seed=1, now=NOW)


def _non_insert_sql(statements) -> list[str]:
    return [sql for sql in statements if not sql.lstrip().upper().startswith("INSERT")]


class _RolledBack(Exception):
    pass


def statements_seeding(customers: int) -> list[str]:
    """The statements of seeding ``customers`` into a database without customers, rolled back
    afterwards so the next call starts from the same database."""
    try:
        with transaction.atomic():
            with CaptureQueriesContext(connection) as captured:
                demo_world_seed(customers=customers, seed=3, now=NOW)
            assert Customer.objects.count() == customers
            raise _RolledBack
    except _RolledBack:
        pass
    return [query["sql"] for query in captured.captured_queries]


def test_seeding_is_set_based():
    # Given the rules, segments and campaigns in place
    demo_world_seed(customers=0, seed=3, now=NOW)

    # When seeding 10 or 150 customers (both within one chunk), history replay included
    small, large = statements_seeding(10), statements_seeding(150)

    # Then everything but the inserts is the same statements, the weekly roll-forwards and
    # lifecycle evaluations and the RFM evaluation included (SQLite splits a bulk INSERT into
    # pieces of 999 parameters; PostgreSQL runs one per table, see the test below).
    assert len(_non_insert_sql(large)) == len(_non_insert_sql(small))
    assert sum("UPDATE" in sql and "GROUP BY" in sql for sql in large) == demo.HISTORY_WEEKS


@pytest.mark.postgres
def test_seeding_is_a_fixed_number_of_statements_on_postgresql():
    demo_world_seed(customers=0, seed=3, now=NOW)

    # 110 or 610 customers: each run has suppressions and reasons to insert
    small, large = statements_seeding(110), statements_seeding(610)

    assert len(large) == len(small)


# The command -------------------------------------------------------------------------------


def seed(*args) -> str:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def parse_summary(output: str) -> dict:
    pairs = (pair.split("=") for pair in output.strip().splitlines()[-1].split())
    return {key: float(value) if "." in value else int(value) for key, value in pairs}


def test_command_seeds_and_ends_with_a_summary_line():
    output = seed("--customers", "25", "--seed", "5")

    summary = parse_summary(output)
    assert summary["customers"] == 25 == Customer.objects.count()
    assert summary["rules"] == 2 and summary["segments"] == 3
    assert sum(summary[state] for state in LifecycleState.values) == 25
    assert summary["transitions"] == LifecycleTransition.objects.count() > 25
    # the mix, in percent
    assert summary["new_pct"] == round(100 * summary["new"] / 25, 1)
    assert 99.5 <= sum(summary[f"{state}_pct"] for state in LifecycleState.values) <= 100.5
    # and the line says what was created and the mix, nothing about counting the segments
    assert list(summary) == [
        *CREATED_KEYS, "brands", "categories", "offers", "templates", "campaigns",
        *LifecycleState.values, *(f"{state}_pct" for state in LifecycleState.values),
    ]


def test_command_if_empty_does_nothing_when_customers_exist():
    CustomerFactory()

    output = seed("--customers", "25", "--if-empty")

    assert Customer.objects.count() == 1
    assert not DormancyRule.objects.exists()
    assert "not seeding" in output
    assert parse_summary(output) == {"skipped": 1, "new": 1, "active": 0, "at_risk": 0, "dormant": 0, "reactivated": 0,
                                     "new_pct": 100.0, "active_pct": 0.0, "at_risk_pct": 0.0, "dormant_pct": 0.0,
                                     "reactivated_pct": 0.0}


def test_command_if_empty_seeds_an_empty_database():
    output = seed("--customers", "12", "--if-empty")

    assert parse_summary(output)["customers"] == 12


def test_command_refuses_a_negative_count():
    with pytest.raises(CommandError, match="zero or more"):
        seed("--customers", "-5")
