"""An activity import moves the rollups and, once committed, the lifecycle of the customers in it."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reactivation.imports import events as event_import
from reactivation.models import Customer, LifecycleTransition
from tests.factories import CustomerFactory, DormancyRuleFactory
from tests.reactivation.imports.test_events import run

pytestmark = pytest.mark.django_db


@pytest.fixture
def dormant_customers():
    DormancyRuleFactory(name="No order for 90 days", signal="last_order", inactive_days=90)
    long_ago = timezone.now() - timedelta(days=200)
    return [
        CustomerFactory(external_id=f"D{n}", lifecycle_state="dormant", order_count=1, total_spent=Decimal("5"),
                        last_order_at=long_ago, signup_at=long_ago)
        for n in range(6)
    ]


def orders_csv(csv_file, customers, per_customer, name):
    day = (timezone.now() - timedelta(days=2)).strftime("%Y-%m-%d")
    rows = "".join(f"{c.external_id},order,{day},10.5\n" for c in customers for _ in range(per_customer))
    return csv_file("external_id,kind,occurred_at,amount\n" + rows, name=name)


def test_imported_orders_reactivate_their_customers_without_the_hourly_run(
        csv_file, dormant_customers, django_capture_on_commit_callbacks):
    bystander = CustomerFactory(external_id="X", lifecycle_state="dormant")
    with django_capture_on_commit_callbacks(execute=True):
        result, errors = run(orders_csv(csv_file, dormant_customers, 2, "orders.csv"))

    assert (result.created, errors) == (12, [])
    assert set(Customer.objects.filter(external_id__startswith="D").values_list(
        "lifecycle_state", "order_count", "total_spent")) == {("reactivated", 3, Decimal("26.00"))}
    assert LifecycleTransition.objects.filter(to_state="reactivated").count() == 6
    bystander.refresh_from_db()
    assert bystander.lifecycle_state == "dormant"  # not in the file: left to the hourly run


def test_lifecycle_is_evaluated_once_per_recorded_batch(
        csv_file, dormant_customers, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(event_import, "RECORD_BATCH", 4)

    def lifecycle_statements(per_customer, name):
        with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
            run(orders_csv(csv_file, dormant_customers, per_customer, name))
        return sum('INSERT INTO "reactivation_lifecycletransition"' in q["sql"] for q in queries.captured_queries)

    # 6 rows: batches of 4 and 2; 24 rows: 6 batches of 4
    assert lifecycle_statements(1, "six.csv") == 2
    assert lifecycle_statements(4, "twenty-four.csv") == 6
