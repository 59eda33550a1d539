import logging
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reactivation.models import Customer
from reactivation.rfm import rfm_recompute
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 1, tzinfo=dt_timezone.utc)


def buyer(*, days_ago, orders, spent, **extra):
    return CustomerFactory(last_order_at=NOW - timedelta(days=days_ago) if days_ago is not None else None,
                           order_count=orders, total_spent=Decimal(spent), **extra)


def scores(customer):
    customer.refresh_from_db()
    return customer.rfm_recency, customer.rfm_frequency, customer.rfm_monetary


def test_ten_buyers_get_quintiles_with_5_for_the_best():
    # given ten buyers: the i-th ordered i days ago, i orders, i * 10 spent
    buyers = [buyer(days_ago=i, orders=i, spent=i * 10) for i in range(1, 11)]
    # when scores are recomputed
    assert rfm_recompute(now=NOW) == 10
    # then recency favours the most recent, frequency and monetary the most
    assert [scores(b) for b in buyers] == [
        (5, 1, 1), (5, 1, 1), (4, 2, 2), (4, 2, 2), (3, 3, 3), (3, 3, 3), (2, 4, 4), (2, 4, 4), (1, 5, 5), (1, 5, 5)]


def test_the_three_scores_are_independent():
    loyal_big_lapsed = buyer(days_ago=400, orders=50, spent="9000")
    fresh_small = [buyer(days_ago=d, orders=1, spent="5") for d in range(1, 5)]
    rfm_recompute(now=NOW)
    assert scores(loyal_big_lapsed) == (1, 5, 5)
    assert scores(fresh_small[0]) == (5, 4, 4)


def test_a_lone_buyer_is_the_best_buyer():
    only = buyer(days_ago=30, orders=1, spent="1")
    assert rfm_recompute(now=NOW) == 1
    assert scores(only) == (5, 5, 5)


def test_customers_without_orders_get_no_scores_even_if_they_had_some():
    never = CustomerFactory(order_count=0, rfm_recency=3, rfm_frequency=3, rfm_monetary=3)
    fresh = CustomerFactory(order_count=0)
    buyer(days_ago=1, orders=1, spent="1")
    assert rfm_recompute(now=NOW) == 1
    assert scores(never) == (None, None, None)
    assert scores(fresh) == (None, None, None)


def test_an_imported_buyer_without_order_date_is_the_least_recent():
    undated = buyer(days_ago=None, orders=3, spent="30")
    dated = [buyer(days_ago=d, orders=1, spent="1") for d in (300, 200, 100, 10)]
    rfm_recompute(now=NOW)
    assert scores(undated)[0] == 1
    assert scores(dated[0])[0] == 2 and scores(dated[-1])[0] == 5


def test_ties_are_split_the_same_way_every_run():
    same = [buyer(days_ago=5, orders=2, spent="20") for _ in range(10)]
    rfm_recompute(now=NOW)
    first = [scores(c) for c in same]
    rfm_recompute(now=NOW)
    assert [scores(c) for c in same] == first
    assert sorted(s[1] for s in first) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_an_unchanged_population_rewrites_nothing(caplog):
    [buyer(days_ago=i, orders=i, spent=i) for i in range(1, 8)]
    rfm_recompute(now=NOW)
    with caplog.at_level(logging.INFO, logger="reactivation.rfm"):
        assert rfm_recompute(now=NOW) == 7
    assert "rfm recomputed at=2025-06-01T00:00:00+00:00 scored=7 changed=0 cleared=0" in caplog.text


def test_scores_follow_new_orders():
    first = buyer(days_ago=100, orders=1, spent="10")
    second = buyer(days_ago=1, orders=9, spent="900")
    rfm_recompute(now=NOW)
    assert (scores(first), scores(second)) == ((4, 4, 4), (5, 5, 5))
    Customer.objects.filter(pk=first.pk).update(last_order_at=NOW, order_count=20, total_spent=Decimal("5000"))
    rfm_recompute(now=NOW)
    assert (scores(first), scores(second)) == ((5, 5, 5), (4, 4, 4))


def _recompute_queries(n):
    Customer.objects.all().delete()
    Customer.objects.bulk_create([
        Customer(external_id=f"rfm-{n}-{i}", order_count=i % 7, total_spent=Decimal(i % 13),
                 last_order_at=NOW - timedelta(days=i % 50) if i % 7 else None,
                 rfm_recency=2 if i % 3 == 0 else None)
        for i in range(n)
    ])
    with CaptureQueriesContext(connection) as queries:
        scored = rfm_recompute(now=NOW)
    return len(queries), scored


def test_recompute_is_a_fixed_number_of_statements():
    small_queries, small = _recompute_queries(10)
    large_queries, large = _recompute_queries(1000)
    assert small_queries == large_queries
    assert (small, large) == (8, 1000 - 143)
    assert not Customer.objects.filter(order_count=0, rfm_recency__isnull=False).exists()
    assert set(Customer.objects.filter(order_count__gt=0).values_list("rfm_frequency", flat=True)) == {1, 2, 3, 4, 5}
