"""core.lookups: ``__any`` selects exactly what ``__in`` selects, with one array parameter on PostgreSQL."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reactivation.models import Customer
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def test_any_selects_what_in_selects():
    customers = CustomerFactory.create_batch(5)
    wanted = [customers[0].pk, customers[3].pk, customers[3].pk, None, 10**12]

    any_ids = set(Customer.objects.filter(pk__any=wanted).values_list("pk", flat=True))
    in_ids = set(Customer.objects.filter(pk__in=wanted).values_list("pk", flat=True))

    assert any_ids == in_ids == {customers[0].pk, customers[3].pk}


def test_an_empty_list_matches_nothing_without_a_query():
    CustomerFactory()
    with CaptureQueriesContext(connection) as ctx:
        assert list(Customer.objects.filter(pk__any=[])) == []
    assert len(ctx.captured_queries) == 0


def test_any_works_in_updates_and_excludes():
    customers = CustomerFactory.create_batch(3)
    Customer.objects.filter(pk__any=[customers[1].pk]).update(name="changed")
    assert list(Customer.objects.exclude(pk__any=[customers[1].pk]).filter(name="changed")) == []
    assert Customer.objects.get(name="changed") == customers[1]


def test_any_takes_a_subquery_like_in():
    customers = CustomerFactory.create_batch(2)
    assert list(Customer.objects.filter(pk__any=Customer.objects.filter(pk=customers[1].pk).values("pk"))) == [customers[1]]


@pytest.mark.postgres
def test_on_postgresql_the_ids_travel_as_one_array_parameter():
    customers = CustomerFactory.create_batch(300)
    ids = [c.pk for c in customers]
    with CaptureQueriesContext(connection) as ctx:
        assert Customer.objects.filter(pk__any=ids).count() == 300
    sql = ctx.captured_queries[0]["sql"]
    assert "= ANY(" in sql and " IN (" not in sql
