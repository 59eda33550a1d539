import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reactivation.models import ActivityEvent, Customer
from reactivation.services import activity_record, activity_record_batch
from reactivation.tasks import lifecycle_evaluate_customers_task
from tests.factories import ActivityEventFactory, CustomerFactory
from tests.reactivation.factories_lifecycle import follow_up_messages, lifecycle_lock_held_elsewhere

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=dt_timezone.utc)


def event(customer, kind, at, amount=None, category=""):
    return ActivityEvent(customer_id=customer.pk, kind=kind, occurred_at=at, amount=amount, category=category,
                         source="test")


def test_batch_inserts_events_and_adds_to_imported_rollups():
    # given a customer whose import set 3 orders / 100.00 without any events
    customer = CustomerFactory(order_count=3, total_spent=Decimal("100.00"), last_seen_at=T0 - timedelta(days=30),
                               last_order_at=T0 - timedelta(days=40))
    # when a batch with two orders, a login and a view arrives
    created = activity_record_batch(events=[
        event(customer, "login", T0 - timedelta(hours=5)),
        event(customer, "order", T0 - timedelta(hours=4), Decimal("50.00"), "beauty"),
        event(customer, "order", T0 - timedelta(hours=2), Decimal("25.50"), "beauty"),
        event(customer, "view_item", T0, category="shoes"),
    ])
    # then the events are saved and the rollups are incremented, not recomputed
    assert all(e.pk for e in created)
    assert ActivityEvent.objects.filter(customer=customer).count() == 4
    customer.refresh_from_db()
    assert customer.order_count == 5
    assert customer.total_spent == Decimal("175.50")
    assert customer.last_seen_at == T0
    assert customer.last_order_at == T0 - timedelta(hours=2)
    assert customer.favourite_category == "beauty"


def test_older_events_do_not_move_the_timestamps_back():
    customer = CustomerFactory(last_seen_at=T0, last_order_at=T0, order_count=1, total_spent=Decimal("10"))
    activity_record_batch(events=[event(customer, "order", T0 - timedelta(days=3), Decimal("5"))])
    customer.refresh_from_db()
    assert (customer.last_seen_at, customer.last_order_at) == (T0, T0)
    assert (customer.order_count, customer.total_spent) == (2, Decimal("15.00"))


def test_first_events_fill_empty_timestamps_and_non_orders_leave_orders_alone():
    customer = CustomerFactory(last_seen_at=None, last_order_at=None)
    activity_record_batch(events=[event(customer, "visit", T0), event(customer, "login", T0 - timedelta(1))])
    customer.refresh_from_db()
    assert customer.last_seen_at == T0
    assert customer.last_order_at is None
    assert (customer.order_count, customer.total_spent) == (0, Decimal("0"))


def test_kinds_are_stripped_and_lower_cased_and_any_kind_means_presence():
    customer = CustomerFactory(last_seen_at=None)
    created = activity_record_batch(events=[event(customer, "  ORDER ", T0 - timedelta(1), Decimal("9.90")),
                                            event(customer, "Share_Post", T0)])
    assert [e.kind for e in created] == ["order", "share_post"]
    assert sorted(ActivityEvent.objects.values_list("kind", flat=True)) == ["order", "share_post"]
    customer.refresh_from_db()
    assert customer.last_seen_at == T0
    assert (customer.order_count, customer.total_spent) == (1, Decimal("9.90"))


def test_an_order_without_amount_counts_as_an_order_worth_nothing():
    customer = CustomerFactory()
    activity_record_batch(events=[event(customer, "order", T0)])
    customer.refresh_from_db()
    assert (customer.order_count, customer.total_spent, customer.last_order_at) == (1, Decimal("0"), T0)


def test_favourite_category_counts_earlier_events_too():
    # given earlier events: 3 x shoes, 1 x beauty
    customer = CustomerFactory(favourite_category="shoes")
    for _ in range(3):
        ActivityEventFactory(customer=customer, kind="view_item", category="shoes", occurred_at=T0 - timedelta(9))
    ActivityEventFactory(customer=customer, kind="view_item", category="beauty", occurred_at=T0 - timedelta(9))
    # when two more beauty events arrive, beauty leads 3 to 3 and is the most recent
    activity_record_batch(events=[event(customer, "view_item", T0, category="beauty"),
                                  event(customer, "order", T0, Decimal("1"), category="beauty")])
    customer.refresh_from_db()
    assert customer.favourite_category == "beauty"


def test_events_without_category_keep_an_imported_favourite():
    customer = CustomerFactory(favourite_category="母婴")
    activity_record_batch(events=[event(customer, "login", T0)])
    customer.refresh_from_db()
    assert customer.favourite_category == "母婴"


def test_only_the_customers_in_the_batch_change():
    touched, untouched = CustomerFactory(), CustomerFactory(order_count=2, total_spent=Decimal("8"),
                                                             favourite_category="toys")
    ActivityEventFactory(customer=untouched, kind="view_item", category="books", occurred_at=T0)
    activity_record_batch(events=[event(touched, "order", T0, Decimal("3"), "books")])
    untouched.refresh_from_db()
    assert (untouched.order_count, untouched.total_spent, untouched.favourite_category) == (2, Decimal("8"), "toys")
    assert untouched.last_seen_at is None


def test_several_customers_in_one_batch_each_get_their_own_rollups():
    a, b = CustomerFactory(), CustomerFactory(order_count=1, total_spent=Decimal("1"))
    activity_record_batch(events=[
        event(a, "order", T0, Decimal("10"), "a-cat"), event(b, "order", T0 - timedelta(1), Decimal("20"), "b-cat"),
        event(b, "order", T0 - timedelta(2), Decimal("30"), "b-cat"), event(a, "login", T0 + timedelta(1)),
    ])
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.order_count, a.total_spent, a.last_order_at, a.last_seen_at, a.favourite_category) == (
        1, Decimal("10.00"), T0, T0 + timedelta(1), "a-cat")
    assert (b.order_count, b.total_spent, b.last_order_at, b.last_seen_at, b.favourite_category) == (
        3, Decimal("51.00"), T0 - timedelta(1), T0 - timedelta(1), "b-cat")


def test_activity_record_saves_one_event_and_updates_rollups():
    customer = CustomerFactory()
    saved = activity_record(customer=customer, kind="Order", occurred_at=T0, amount=Decimal("12.30"),
                            category="beauty", item_ref="SKU-9", source="survey")
    assert saved.pk and (saved.kind, saved.item_ref, saved.source) == ("order", "SKU-9", "survey")
    customer.refresh_from_db()
    assert (customer.order_count, customer.total_spent, customer.favourite_category) == (1, Decimal("12.30"), "beauty")


def test_an_empty_batch_runs_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert activity_record_batch(events=[]) == []


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"kind": "  "}, "kind"),
        ({"kind": None}, "kind"),
        ({"kind": "x" * 33}, "kind"),
        ({"amount": Decimal("-0.01")}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": Decimal("NaN")}, "amount"),
        ({"occurred_at": None}, "occurred_at"),
        ({"occurred_at": datetime(2025, 1, 1, 8, 0)}, "occurred_at"),
        ({"customer_id": None}, "customer"),
    ],
)
def test_an_invalid_event_refuses_the_whole_batch(changes, field):
    customer = CustomerFactory()
    good = event(customer, "order", T0, Decimal("5"))
    bad = event(customer, "order", T0, Decimal("5"))
    for name, value in changes.items():
        setattr(bad, name, value)
    with pytest.raises(ValidationError) as error:
        activity_record_batch(events=[good, bad])
    assert field in error.value.message_dict
    assert "Event 1" in str(error.value)
    assert ActivityEvent.objects.count() == 0
    customer.refresh_from_db()
    assert customer.order_count == 0


def test_activity_record_refuses_a_negative_amount():
    customer = CustomerFactory()
    with pytest.raises(ValidationError):
        activity_record(customer=customer, kind="order", occurred_at=T0, amount=Decimal("-1"))
    assert not ActivityEvent.objects.exists()


def _batch_queries(customers, events_per_customer):
    events = [
        event(c, "order" if i % 2 else "view_item", T0 - timedelta(minutes=i), Decimal("1.50"), f"cat{i % 3}")
        for c in customers for i in range(events_per_customer)
    ]
    with CaptureQueriesContext(connection) as queries:
        activity_record_batch(events=events)
    return [q["sql"].strip() for q in queries.captured_queries]


def test_rollups_take_the_same_statements_for_small_and_large_batches():
    small = _batch_queries(CustomerFactory.create_batch(2), 1)
    large = _batch_queries(CustomerFactory.create_batch(60), 10)  # 600 events

    def not_insert(sqls):
        return [s.split()[0] for s in sqls if not s.startswith("INSERT")]

    # Both UPDATEs (rollups, favourite) run once whatever the size; savepoint bookkeeping aside.
    assert not_insert(small) == not_insert(large)
    assert sum(s.startswith("UPDATE") for s in large) == 2
    if connection.vendor == "postgresql":
        assert len(small) == len(large)
    # and the sums are right for every customer of the large batch (5 orders each; the small one had none)
    assert set(Customer.objects.filter(order_count__gt=0).values_list("order_count", "total_spent")) == {
        (5, Decimal("7.50"))}
    assert Customer.objects.filter(order_count=5).count() == 60


def test_rollups_of_a_large_batch_need_not_fit_in_sqlite_parameters():
    # 1,200 customers: a pk__in per customer would be fine, but the deltas are one JSON parameter.
    customers = CustomerFactory.create_batch(1200)
    activity_record_batch(events=[event(c, "order", T0, Decimal("2"), "x") for c in customers])
    assert Customer.objects.filter(order_count=1, total_spent=Decimal("2"), favourite_category="x").count() == 1200


# Bounds (review: far-future times and total_spent overflow) ---------------------------------


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"occurred_at": datetime(2999, 1, 1, tzinfo=dt_timezone.utc)}, "occurred_at"),
        ({"occurred_at": datetime(1969, 12, 31, 23, 59, tzinfo=dt_timezone.utc)}, "occurred_at"),
        ({"amount": Decimal("Infinity")}, "amount"),
        ({"amount": Decimal("10000000000.00")}, "amount"),  # 11 digits before the point
        ({"amount": Decimal("1E+30")}, "amount"),
        ({"amount": Decimal("1.005")}, "amount"),
    ],
)
def test_out_of_bounds_times_and_amounts_refuse_the_whole_batch(changes, field):
    customer = CustomerFactory()
    good = event(customer, "order", T0, Decimal("5"))
    bad = event(customer, "order", T0, Decimal("5"))
    for name, value in changes.items():
        setattr(bad, name, value)
    with pytest.raises(ValidationError) as error:
        activity_record_batch(events=[good, bad])
    assert field in error.value.message_dict and "Event 1" in str(error.value)
    assert ActivityEvent.objects.count() == 0
    customer.refresh_from_db()
    assert (customer.order_count, customer.last_seen_at) == (0, None)


def test_the_bounds_themselves_are_accepted():
    from django.utils import timezone

    customer = CustomerFactory()
    soon = timezone.now() + timedelta(minutes=4)
    activity_record_batch(events=[
        event(customer, "order", soon, Decimal("9999999999.99")),
        event(customer, "login", datetime(1970, 1, 1, tzinfo=dt_timezone.utc)),
    ])
    customer.refresh_from_db()
    assert (customer.total_spent, customer.last_seen_at) == (Decimal("9999999999.99"), soon)


def test_a_batch_that_would_overflow_total_spent_is_refused_naming_the_customer():
    # given one customer close to the numeric(14, 2) limit and one ordinary customer
    rich = CustomerFactory(external_id="rich-1", total_spent=Decimal("999999999000.00"), order_count=7)
    other = CustomerFactory(total_spent=Decimal("10.00"))
    # when a batch would add 1,000.00 to the first (the column holds at most 999,999,999,999.99)
    with pytest.raises(ValidationError) as error:
        activity_record_batch(events=[
            event(other, "order", T0, Decimal("5")),
            event(rich, "order", T0, Decimal("600")),
            event(rich, "order", T0, Decimal("400")),
        ])
    # then nothing is written and the error names the customer
    assert error.value.code == "total_spent_overflow"
    assert error.value.params["customer_ids"] == [rich.pk]
    assert "rich-1" in error.value.messages[0] and "999999999999.99" in error.value.messages[0]
    assert ActivityEvent.objects.count() == 0
    assert sorted(Customer.objects.values_list("order_count", "total_spent")) == [
        (0, Decimal("10.00")), (7, Decimal("999999999000.00"))]
    # and exactly reaching the limit is fine
    activity_record_batch(events=[event(rich, "order", T0, Decimal("999.99"))])
    rich.refresh_from_db()
    assert (rich.order_count, rich.total_spent) == (8, Decimal("999999999999.99"))


def test_many_maximal_events_overflow_the_limit_of_a_fresh_customer():
    # 2 x 999,999,999,999.99 was the review's case; each event is now capped at 10 digits, so
    # the overflow needs many events (here 101 x 9,999,999,999.99 > 999,999,999,999.99).
    customer = CustomerFactory()
    with pytest.raises(ValidationError, match=customer.external_id):
        activity_record_batch(events=[event(customer, "order", T0, Decimal("9999999999.99")) for _ in range(101)])
    assert ActivityEvent.objects.count() == 0
    customer.refresh_from_db()
    assert (customer.order_count, customer.total_spent) == (0, Decimal("0"))


def test_the_overflow_check_is_one_query_whatever_the_batch():
    small = _batch_queries(CustomerFactory.create_batch(2), 2)
    large = _batch_queries(CustomerFactory.create_batch(50), 10)
    assert sum(s.startswith("SELECT") and "total_spent" in s for s in small) == 1
    assert sum(s.startswith("SELECT") and "total_spent" in s for s in large) == 1


# Lifecycle follows at once ---------------------------------------------------------------------


@pytest.fixture
def no_order_for_90_days():
    from tests.factories import DormancyRuleFactory

    return DormancyRuleFactory(name="No order for 90 days", signal="last_order", inactive_days=90, at_risk_days=60)


def test_a_dormant_customer_who_orders_is_reactivated_when_the_batch_commits(
        no_order_for_90_days, django_capture_on_commit_callbacks):
    from reactivation.models import LifecycleTransition

    now = timezone.now()
    back = CustomerFactory(lifecycle_state="dormant", lifecycle_rule=no_order_for_90_days, order_count=1,
                           last_order_at=now - timedelta(days=200), signup_at=now - timedelta(days=400))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        activity_record(customer=back, kind="order", occurred_at=now - timedelta(minutes=1), amount=Decimal("30"))
        back.refresh_from_db()
        assert back.lifecycle_state == "dormant"  # not before the events are committed

    assert len(callbacks) == 1
    back.refresh_from_db()
    assert (back.lifecycle_state, back.lifecycle_rule_id) == ("reactivated", None)
    assert (back.order_count, back.total_spent) == (2, Decimal("30.00"))
    transition = LifecycleTransition.objects.get(customer=back)
    assert (transition.from_state, transition.to_state) == ("dormant", "reactivated")


def test_only_the_batch_customers_are_re_evaluated(no_order_for_90_days, django_capture_on_commit_callbacks):
    now = timezone.now()
    lapsed_elsewhere = CustomerFactory(lifecycle_state="active", order_count=1, last_order_at=now - timedelta(days=200),
                                       signup_at=now - timedelta(days=400))
    visitor = CustomerFactory(lifecycle_state="active", order_count=1, last_order_at=now - timedelta(days=200),
                              signup_at=now - timedelta(days=400))
    with django_capture_on_commit_callbacks(execute=True):
        # a visit is no order: by the last-order rule the visitor is dormant, decided at once
        activity_record(customer=visitor, kind="visit", occurred_at=now)
    visitor.refresh_from_db()
    lapsed_elsewhere.refresh_from_db()
    assert visitor.lifecycle_state == "dormant"
    assert lapsed_elsewhere.lifecycle_state == "active"  # left to the hourly run


def _committed_batch_queries(customers, events_per_customer, capture):
    now = timezone.now()
    events = [event(c, "order", now - timedelta(minutes=i + 1), Decimal("2.00"), "cat")
              for c in customers for i in range(events_per_customer)]
    with CaptureQueriesContext(connection) as queries, capture(execute=True):
        activity_record_batch(events=events)
    return [q["sql"].strip() for q in queries.captured_queries if not q["sql"].startswith("INSERT INTO \"reactivation_activityevent\"")]


def test_a_batch_and_its_lifecycle_take_the_same_statements_whatever_the_size(
        no_order_for_90_days, django_capture_on_commit_callbacks):
    dormant = dict(lifecycle_state="dormant", order_count=1, last_order_at=timezone.now() - timedelta(days=200))
    small = _committed_batch_queries(CustomerFactory.create_batch(2, **dormant), 1, django_capture_on_commit_callbacks)
    large = _committed_batch_queries(CustomerFactory.create_batch(100, **dormant), 5, django_capture_on_commit_callbacks)

    assert [s.split()[0] for s in small] == [s.split()[0] for s in large]
    assert sum("INSERT INTO \"reactivation_lifecycletransition\"" in s for s in large) == 1
    assert Customer.objects.filter(lifecycle_state="reactivated").count() == 102


@pytest.mark.postgres
def test_a_batch_does_not_wait_while_the_hourly_evaluation_holds_the_lifecycle_lock(
        no_order_for_90_days, monkeypatch, django_capture_on_commit_callbacks):
    # A request stuck behind the full run times out, and its client's retry records the events twice.
    queued = follow_up_messages(monkeypatch)
    now = timezone.now()
    back = CustomerFactory(lifecycle_state="dormant", lifecycle_rule=no_order_for_90_days, order_count=1,
                           last_order_at=now - timedelta(days=200), signup_at=now - timedelta(days=400))

    with lifecycle_lock_held_elsewhere():
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            activity_record(customer=back, kind="order", occurred_at=now - timedelta(minutes=1), amount=Decimal("9"))
        took = time.monotonic() - started

    assert took < 0.5
    back.refresh_from_db()
    assert (back.order_count, back.lifecycle_state) == (2, "dormant")
    assert [message["kwargs"] for message in queued] == [{"customer_ids": [back.pk]}]
    # the worker picks the task up once the full run has released the lock
    lifecycle_evaluate_customers_task(**queued[0]["kwargs"])
    back.refresh_from_db()
    assert back.lifecycle_state == "reactivated"
