"""The estimated-count paginator (core.paginator)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import paginator as paginator_module
from core.paginator import EstimatedCountPaginator
from reactivation.models import Customer
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def count_queries(queryset):
    with CaptureQueriesContext(connection) as captured:
        count = EstimatedCountPaginator(queryset.order_by("pk"), 10).count  # ordered, as the admin passes it
    return count, [q["sql"] for q in captured if "COUNT(" in q["sql"].upper()]


def test_small_tables_and_filtered_lists_get_the_exact_count():
    CustomerFactory.create_batch(3, lifecycle_state="dormant")
    CustomerFactory(lifecycle_state="active")

    assert count_queries(Customer.objects.all())[0] == 4
    count, counts = count_queries(Customer.objects.filter(lifecycle_state="dormant"))
    assert count == 3 and len(counts) == 1


def test_sqlite_always_counts_exactly(monkeypatch):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite behaviour")
    monkeypatch.setattr(paginator_module, "EXACT_COUNT_LIMIT", 0)
    CustomerFactory.create_batch(2)
    assert count_queries(Customer.objects.all())[0] == 2


@pytest.mark.postgres
def test_large_unfiltered_tables_use_the_planner_estimate_without_count(monkeypatch):
    # given a table the planner has statistics for, above the exact-count limit
    CustomerFactory.create_batch(30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE reactivation_customer")
    monkeypatch.setattr(paginator_module, "EXACT_COUNT_LIMIT", 5)

    # when the unfiltered list is paginated
    count, counts = count_queries(Customer.objects.all())

    # then no COUNT(*) runs and the estimate is the table's
    assert counts == []
    assert count > 5
    # a filtered list still counts exactly
    assert count_queries(Customer.objects.filter(lifecycle_state="dormant"))[0] == 0
