import logging
import threading
import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from celery import current_app
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError

from reactivation import lifecycle
from reactivation.lifecycle import (
    FOLLOW_TASK_NAME, lifecycle_evaluate, lifecycle_evaluate_customers, lifecycle_follow_activity,
)
from reactivation.models import Customer, DormancyRule, LifecycleState, LifecycleTransition
from reactivation.tasks import lifecycle_evaluate_customers_task
from tests.factories import CustomerFactory, DormancyRuleFactory
from tests.reactivation.factories_lifecycle import follow_up_messages, lifecycle_lock_held_elsewhere

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 1, 10, 0, tzinfo=dt_timezone.utc)
NEW, ACTIVE, AT_RISK, DORMANT, REACTIVATED = (
    LifecycleState.NEW, LifecycleState.ACTIVE, LifecycleState.AT_RISK, LifecycleState.DORMANT, LifecycleState.REACTIVATED)


def days_ago(days):
    return NOW - timedelta(days=days)


@pytest.fixture(autouse=True)
def _windows(settings):
    settings.LIFECYCLE_NEW_DAYS = 30
    settings.LIFECYCLE_REACTIVATED_DAYS = 30


@pytest.fixture
def rule():
    """E-commerce: no order for 90 days, at risk after 60."""
    return DormancyRuleFactory(name="No order for 90 days", signal=DormancyRule.Signal.LAST_ORDER,
                               inactive_days=90, at_risk_days=60)


def customer(state=ACTIVE, *, since=None, signup=400, order=None, seen=None, **extra):
    return CustomerFactory(
        lifecycle_state=state, lifecycle_since=since or days_ago(200), signup_at=days_ago(signup) if signup is not None else None,
        last_order_at=days_ago(order) if order is not None else None,
        last_seen_at=days_ago(seen) if seen is not None else None,
        order_count=1 if order is not None else 0, **extra,
    )


def state_of(c):
    c.refresh_from_db()
    return c.lifecycle_state, c.lifecycle_rule_id


def only_transition(c):
    transitions = list(LifecycleTransition.objects.filter(customer=c))
    assert len(transitions) == 1
    t = transitions[0]
    return t.from_state, t.to_state, t.rule_id, t.at


# Every transition -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, order, signup, since_days, expected_state, decided_by_rule",
    [
        pytest.param(NEW, 5, 40, 200, ACTIVE, False, id="new->active (signed up more than NEW_DAYS ago)"),
        pytest.param(NEW, None, 70, 200, AT_RISK, True, id="new->at_risk (never ordered, signed up 70 days ago)"),
        pytest.param(NEW, None, 400, 200, DORMANT, True, id="new->dormant"),
        pytest.param(ACTIVE, 61, 400, 200, AT_RISK, True, id="active->at_risk"),
        pytest.param(ACTIVE, 90, 400, 200, DORMANT, True, id="active->dormant (exactly inactive_days)"),
        pytest.param(AT_RISK, 91, 400, 200, DORMANT, True, id="at_risk->dormant"),
        pytest.param(AT_RISK, 1, 400, 200, ACTIVE, False, id="at_risk->active"),
        pytest.param(DORMANT, 1, 400, 200, REACTIVATED, False, id="dormant->reactivated"),
        pytest.param(REACTIVATED, 1, 400, 31, ACTIVE, False, id="reactivated->active after REACTIVATED_DAYS"),
        pytest.param(REACTIVATED, 65, 400, 5, AT_RISK, True, id="reactivated->at_risk"),
        pytest.param(REACTIVATED, 120, 400, 5, DORMANT, True, id="reactivated->dormant"),
    ],
)
def test_every_transition_is_applied_and_logged(rule, given, order, signup, since_days, expected_state, decided_by_rule):
    # given a customer in state `given`
    c = customer(given, order=order, signup=signup, since=days_ago(since_days))
    # when the lifecycle is evaluated
    result = lifecycle_evaluate(now=NOW)
    # then the customer moved, the deciding rule is stored, and the change is logged
    expected_rule = rule.pk if decided_by_rule else None
    assert state_of(c) == (expected_state, expected_rule)
    c.refresh_from_db()
    assert c.lifecycle_since == NOW
    assert only_transition(c) == (given, expected_state, expected_rule, NOW)
    assert result[expected_state] == 1 and result["total"] == 1


@pytest.mark.parametrize(
    "given, order, signup, since_days",
    [
        pytest.param(NEW, None, 10, 10, id="new stays new within NEW_DAYS"),
        pytest.param(ACTIVE, 59, 400, 200, id="active stays active before at_risk_days"),
        pytest.param(REACTIVATED, 1, 400, 29, id="reactivated stays reactivated within REACTIVATED_DAYS"),
    ],
)
def test_no_transition_when_the_state_holds(rule, given, order, signup, since_days):
    c = customer(given, order=order, signup=signup, since=days_ago(since_days))
    assert lifecycle_evaluate(now=NOW)["total"] == 0
    assert state_of(c) == (given, None)
    c.refresh_from_db()
    assert c.lifecycle_since == days_ago(since_days)
    assert not LifecycleTransition.objects.exists()


def test_active_customer_who_was_never_new_recently_does_not_go_back_to_new(rule):
    c = customer(ACTIVE, order=1, signup=3)
    lifecycle_evaluate(now=NOW)
    assert state_of(c) == (ACTIVE, None)


def test_dormant_stays_dormant_without_a_new_log_row(rule):
    c = customer(DORMANT, order=200, lifecycle_rule=rule)
    assert lifecycle_evaluate(now=NOW)["total"] == 0
    assert state_of(c) == (DORMANT, rule.pk)


def test_reference_falls_back_to_signup_then_created_at(rule):
    by_signup = customer(ACTIVE, signup=100)
    by_created = customer(ACTIVE, signup=None)
    Customer.objects.filter(pk=by_created.pk).update(created_at=days_ago(70))
    recent_created = customer(ACTIVE, signup=None)
    Customer.objects.filter(pk=recent_created.pk).update(created_at=days_ago(2))
    lifecycle_evaluate(now=NOW)
    assert state_of(by_signup) == (DORMANT, rule.pk)
    assert state_of(by_created) == (AT_RISK, rule.pk)
    assert state_of(recent_created) == (ACTIVE, None)


def test_new_window_uses_created_at_when_signup_is_unknown(rule):
    c = customer(NEW, signup=None)
    Customer.objects.filter(pk=c.pk).update(created_at=days_ago(3))
    assert lifecycle_evaluate(now=NOW)["total"] == 0
    assert state_of(c) == (NEW, None)


@pytest.mark.parametrize(
    "seen, order, expected",
    [(3, 100, ACTIVE), (100, 3, ACTIVE), (100, 65, AT_RISK), (None, 95, DORMANT), (65, None, AT_RISK)],
)
def test_any_activity_uses_the_later_of_seen_and_order(seen, order, expected):
    DormancyRuleFactory(signal=DormancyRule.Signal.ANY_ACTIVITY, inactive_days=90, at_risk_days=60)
    c = customer(ACTIVE, seen=seen, order=order)
    lifecycle_evaluate(now=NOW)
    assert state_of(c)[0] == expected


def test_last_seen_signal_ignores_orders():
    app = DormancyRuleFactory(signal=DormancyRule.Signal.LAST_SEEN, inactive_days=7, at_risk_days=3)
    c = customer(ACTIVE, seen=8, order=1)
    lifecycle_evaluate(now=NOW)
    assert state_of(c) == (DORMANT, app.pk)


# Rule eligibility, inactive rules, priority ----------------------------------------------------------


def test_min_orders_and_min_spent_decide_who_a_rule_applies_to():
    DormancyRuleFactory(signal=DormancyRule.Signal.LAST_ORDER, inactive_days=90, at_risk_days=None,
                        min_orders=2, min_spent=Decimal("100"))
    too_few_orders = customer(ACTIVE, order=200, total_spent=Decimal("500"))  # 1 order
    too_little_spent = customer(ACTIVE, order=200, total_spent=Decimal("99.99"))
    Customer.objects.filter(pk=too_little_spent.pk).update(order_count=5)
    both = customer(ACTIVE, order=200, total_spent=Decimal("100"))
    Customer.objects.filter(pk=both.pk).update(order_count=2)
    lifecycle_evaluate(now=NOW)
    assert state_of(too_few_orders)[0] == ACTIVE
    assert state_of(too_little_spent)[0] == ACTIVE
    assert state_of(both)[0] == DORMANT


def test_inactive_rules_are_ignored():
    DormancyRuleFactory(signal=DormancyRule.Signal.LAST_ORDER, inactive_days=10, at_risk_days=5, is_active=False)
    c = customer(ACTIVE, order=50)
    assert lifecycle_evaluate(now=NOW)["total"] == 0
    assert state_of(c) == (ACTIVE, None)


def test_without_rules_nobody_is_dormant_and_dormant_customers_come_back():
    dormant = customer(DORMANT, order=500)
    at_risk = customer(AT_RISK, order=70)
    lifecycle_evaluate(now=NOW)
    assert state_of(dormant) == (REACTIVATED, None)
    assert state_of(at_risk) == (ACTIVE, None)


def test_two_rules_the_lowest_priority_number_decides_and_dormant_beats_at_risk():
    # given an app rule (7 days without login) and a shop rule (90 days without order)
    app = DormancyRuleFactory(name="App", signal=DormancyRule.Signal.LAST_SEEN, inactive_days=7, at_risk_days=3,
                              priority=10)
    shop = DormancyRuleFactory(name="Shop", signal=DormancyRule.Signal.LAST_ORDER, inactive_days=90,
                               at_risk_days=60, priority=20)
    both_dormant = customer(ACTIVE, seen=8, order=100)
    shop_dormant_app_at_risk = customer(ACTIVE, seen=4, order=100)
    only_app_at_risk = customer(ACTIVE, seen=4, order=1)
    only_shop_at_risk = customer(ACTIVE, seen=1, order=61)
    lifecycle_evaluate(now=NOW)
    assert state_of(both_dormant) == (DORMANT, app.pk)
    assert state_of(shop_dormant_app_at_risk) == (DORMANT, shop.pk)
    assert state_of(only_app_at_risk) == (AT_RISK, app.pk)
    assert state_of(only_shop_at_risk) == (AT_RISK, shop.pk)


def test_same_priority_goes_to_the_older_rule():
    first = DormancyRuleFactory(name="First", signal=DormancyRule.Signal.LAST_ORDER, inactive_days=30, priority=5)
    DormancyRuleFactory(name="Second", signal=DormancyRule.Signal.LAST_ORDER, inactive_days=30, priority=5)
    c = customer(ACTIVE, order=40)
    lifecycle_evaluate(now=NOW)
    assert state_of(c) == (DORMANT, first.pk)


def test_a_change_of_deciding_rule_alone_is_logged_and_keeps_since():
    # given a customer dormant under the shop rule since 10 days
    app = DormancyRuleFactory(name="App", signal=DormancyRule.Signal.LAST_SEEN, inactive_days=7, priority=20)
    shop = DormancyRuleFactory(name="Shop", signal=DormancyRule.Signal.LAST_ORDER, inactive_days=90, priority=10)
    c = customer(DORMANT, seen=8, order=100, since=days_ago(10), lifecycle_rule=shop)
    # when marketers make the app rule win
    DormancyRule.objects.filter(pk=app.pk).update(priority=1)
    result = lifecycle_evaluate(now=NOW)
    # then the rule changes, the state and its date do not, and the log says so
    assert state_of(c) == (DORMANT, app.pk)
    c.refresh_from_db()
    assert c.lifecycle_since == days_ago(10)
    assert only_transition(c) == (DORMANT, DORMANT, app.pk, NOW)
    assert result["dormant"] == 1


def test_a_deleted_rule_counts_as_a_change():
    shop = DormancyRuleFactory(signal=DormancyRule.Signal.LAST_ORDER, inactive_days=90, at_risk_days=60)
    c = customer(AT_RISK, order=70, lifecycle_rule=None)
    lifecycle_evaluate(now=NOW)
    assert state_of(c) == (AT_RISK, shop.pk)


# Idempotence, summary, logging --------------------------------------------------------------------------


def test_second_run_at_the_same_time_writes_nothing(rule):
    customers = [customer(ACTIVE, order=d) for d in (1, 61, 91)] + [customer(DORMANT, order=1)]
    first = lifecycle_evaluate(now=NOW)
    states = {c.pk: state_of(c) for c in customers}
    second = lifecycle_evaluate(now=NOW)
    assert first == {"new": 0, "active": 0, "at_risk": 1, "dormant": 1, "reactivated": 1, "total": 3}
    assert second == {"new": 0, "active": 0, "at_risk": 0, "dormant": 0, "reactivated": 0, "total": 0}
    assert LifecycleTransition.objects.count() == 3
    assert {c.pk: state_of(c) for c in customers} == states


def test_summary_is_logged(rule, caplog):
    customer(ACTIVE, order=100)
    with caplog.at_level(logging.INFO, logger="reactivation.lifecycle"):
        lifecycle_evaluate(now=NOW)
    assert "lifecycle evaluated at=2025-06-01T10:00:00+00:00 rules=1" in caplog.text
    assert "dormant=1" in caplog.text and "total=1" in caplog.text


def test_history_is_appended_across_runs(rule):
    c = customer(ACTIVE, order=61)
    lifecycle_evaluate(now=NOW)
    lifecycle_evaluate(now=NOW + timedelta(days=30))
    Customer.objects.filter(pk=c.pk).update(last_order_at=NOW + timedelta(days=31))
    lifecycle_evaluate(now=NOW + timedelta(days=32))
    assert list(LifecycleTransition.objects.filter(customer=c).order_by("at").values_list("from_state", "to_state")) == [
        (ACTIVE, AT_RISK), (AT_RISK, DORMANT), (DORMANT, REACTIVATED)]


# Set-based: a fixed number of statements ----------------------------------------------------------


def _population(n):
    """n customers spread over every state and transition, created in one INSERT."""
    profiles = [
        dict(lifecycle_state=NEW, signup_at=days_ago(5)),
        dict(lifecycle_state=NEW, signup_at=days_ago(400)),
        dict(lifecycle_state=ACTIVE, last_order_at=days_ago(61), order_count=1),
        dict(lifecycle_state=AT_RISK, last_order_at=days_ago(91), order_count=1),
        dict(lifecycle_state=DORMANT, last_order_at=days_ago(1), order_count=1),
        dict(lifecycle_state=REACTIVATED, last_order_at=days_ago(1), order_count=1, lifecycle_since=days_ago(40)),
    ]
    Customer.objects.bulk_create([
        Customer(external_id=f"bulk-{n}-{i}", **{"signup_at": days_ago(300), "lifecycle_since": days_ago(200),
                                                 **profiles[i % len(profiles)]})
        for i in range(n)
    ])


def _evaluation_queries(n):
    Customer.objects.all().delete()
    _population(n)
    with CaptureQueriesContext(connection) as queries:
        result = lifecycle_evaluate(now=NOW)
    return len(queries), result


def test_evaluation_is_a_fixed_number_of_statements(rule):
    DormancyRuleFactory(name="App", signal=DormancyRule.Signal.LAST_SEEN, inactive_days=7, priority=200,
                        min_orders=3)
    small_queries, small = _evaluation_queries(10)
    large_queries, large = _evaluation_queries(1000)
    assert small_queries == large_queries
    # everyone moves except the recently signed-up new customers (every 6th)
    assert (small["total"], large["total"]) == (10 - 2, 1000 - 167)
    assert Customer.objects.filter(lifecycle_state=DORMANT).count() == sum(
        1 for i in range(1000) if i % 6 in (1, 3))


# Re-evaluating chosen customers ---------------------------------------------------------------


def test_evaluating_chosen_customers_changes_and_logs_only_them(rule):
    back = customer(DORMANT, order=1)
    lapsed = customer(ACTIVE, order=100)
    untouched = customer(ACTIVE, order=100)

    result = lifecycle_evaluate_customers(customer_ids=[back.pk, lapsed.pk], now=NOW)

    assert result["total"] == 2 and result["reactivated"] == 1 and result["dormant"] == 1
    assert only_transition(back) == (DORMANT, REACTIVATED, None, NOW)
    assert only_transition(lapsed) == (ACTIVE, DORMANT, rule.pk, NOW)
    assert state_of(untouched) == (ACTIVE, None)
    assert not LifecycleTransition.objects.filter(customer=untouched).exists()
    # the full run later finds the chosen customers already right
    assert lifecycle_evaluate(now=NOW)["total"] == 1


def test_chosen_customers_decide_exactly_as_the_full_run(rule):
    """Same decisions, the subset and the full run: two identical populations, one evaluated per
    customer subset, the other by the full run."""
    profiles = [dict(state=s, order=o) for s in (NEW, ACTIVE, AT_RISK, DORMANT, REACTIVATED) for o in (1, 70, 100, None)]
    first = [customer(**p) for p in profiles]
    lifecycle_evaluate_customers(customer_ids=[c.pk for c in first], now=NOW)
    decided = [state_of(c) for c in first]
    Customer.objects.filter(pk__in=[c.pk for c in first]).delete()
    second = [customer(**p) for p in profiles]
    lifecycle_evaluate(now=NOW)
    assert [state_of(c) for c in second] == decided


def test_chosen_customers_can_be_a_queryset(rule):
    lapsed = customer(ACTIVE, order=100, name="lapsed")
    other = customer(ACTIVE, order=100, name="other")
    lifecycle_evaluate_customers(customer_ids=Customer.objects.filter(name="lapsed"), now=NOW)
    assert state_of(lapsed) == (DORMANT, rule.pk)
    assert state_of(other) == (ACTIVE, None)


def test_no_chosen_customer_runs_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert lifecycle_evaluate_customers(customer_ids=[], now=NOW)["total"] == 0


def _chosen_queries(n):
    Customer.objects.all().delete()
    _population(n)
    ids = list(Customer.objects.values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        result = lifecycle_evaluate_customers(customer_ids=ids, now=NOW)
    return len(queries), result


def test_evaluating_chosen_customers_is_a_fixed_number_of_statements(rule):
    small_queries, small = _chosen_queries(10)
    large_queries, large = _chosen_queries(1000)
    assert small_queries == large_queries
    assert large["total"] > small["total"] > 0


# Following activity without waiting behind the full run ------------------------------------------


def just_ordered(state=DORMANT):
    """A customer whose order a minute ago is the activity just recorded."""
    now = timezone.now()
    return CustomerFactory(lifecycle_state=state, lifecycle_since=now - timedelta(days=200),
                           signup_at=now - timedelta(days=400), last_order_at=now - timedelta(minutes=1),
                           order_count=2)


@pytest.fixture
def queued(monkeypatch):
    """The follow-up task's messages, kept here instead of sent to the broker."""
    return follow_up_messages(monkeypatch)


@pytest.fixture
def lock_busy(monkeypatch):
    """Every evaluation that only tries the lock finds it taken (as PostgreSQL answers while the
    full run holds it)."""
    evaluate = lifecycle.lifecycle_evaluate_customers

    def busy(**kwargs):
        return None if kwargs.get("wait") is False else evaluate(**kwargs)

    monkeypatch.setattr(lifecycle, "lifecycle_evaluate_customers", busy)


def test_the_follow_up_task_is_registered_under_the_name_the_follow_up_sends():
    assert lifecycle_evaluate_customers_task.name == FOLLOW_TASK_NAME == "reactivation.lifecycle_evaluate_customers"
    assert FOLLOW_TASK_NAME in current_app.tasks


def test_follow_up_evaluates_at_once_when_the_lock_is_free(rule, queued, django_capture_on_commit_callbacks):
    back = just_ordered()
    with django_capture_on_commit_callbacks(execute=True):
        result = lifecycle_follow_activity(customer_ids=[back.pk])
    assert (result["reactivated"], result["total"]) == (1, 1)
    assert state_of(back) == (REACTIVATED, None)
    assert queued == []


def test_follow_up_with_the_lock_busy_queues_the_customers_in_chunks_once_committed(
        rule, queued, lock_busy, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(lifecycle, "FOLLOW_TASK_CHUNK", 2)
    customers = [just_ordered() for _ in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        assert lifecycle_follow_activity(customer_ids=[c.pk for c in reversed(customers)]) is None
        assert queued == []  # nothing is sent for a transaction that may still roll back
    ids = sorted(c.pk for c in customers)
    assert [message["kwargs"] for message in queued] == [
        {"customer_ids": ids[0:2]}, {"customer_ids": ids[2:4]}, {"customer_ids": ids[4:5]}]
    assert all(state_of(c) == (DORMANT, None) for c in customers)
    # a worker runs each task: every customer follows
    for message in queued:
        lifecycle_evaluate_customers_task(**message["kwargs"])
    assert all(state_of(c) == (REACTIVATED, None) for c in customers)


def test_follow_up_with_the_broker_down_logs_and_leaves_the_customers_to_the_full_run(
        rule, lock_busy, monkeypatch, caplog, django_capture_on_commit_callbacks):
    def refused(*args, **kwargs):
        raise OperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(current_app.tasks[FOLLOW_TASK_NAME], "apply_async", refused)
    back = just_ordered()
    with caplog.at_level(logging.ERROR, logger="reactivation.lifecycle"), \
            django_capture_on_commit_callbacks(execute=True):
        assert lifecycle_follow_activity(customer_ids=[back.pk]) is None
    assert "lifecycle follow-up not queued customers=1" in caplog.text
    assert state_of(back) == (DORMANT, None)
    lifecycle_evaluate()
    assert state_of(back) == (REACTIVATED, None)


@pytest.mark.postgres
def test_follow_up_never_waits_for_the_full_run_and_its_task_applies_the_transitions(
        rule, queued, django_capture_on_commit_callbacks):
    back = just_ordered()
    with lifecycle_lock_held_elsewhere():
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            assert lifecycle_follow_activity(customer_ids=[back.pk]) is None
        took = time.monotonic() - started
    assert took < 0.5
    assert state_of(back) == (DORMANT, None)
    assert [message["kwargs"] for message in queued] == [{"customer_ids": [back.pk]}]

    lifecycle_evaluate_customers_task(**queued[0]["kwargs"])
    assert state_of(back) == (REACTIVATED, None)
    assert only_transition(back)[:2] == (DORMANT, REACTIVATED)


@pytest.mark.postgres
def test_the_follow_up_task_waits_for_the_full_run_to_finish(rule):
    back = just_ordered()
    with lifecycle_lock_held_elsewhere() as release:
        threading.Timer(0.5, release.set).start()
        started = time.monotonic()
        lifecycle_evaluate_customers_task(customer_ids=[back.pk])
        waited = time.monotonic() - started
    assert waited >= 0.4
    assert state_of(back) == (REACTIVATED, None)
