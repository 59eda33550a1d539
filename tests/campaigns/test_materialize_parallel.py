"""Materialization split by customer id over several connections (PostgreSQL, large runs):
the same rows as one statement, and a second pass adds nothing."""

import pytest

from campaigns import materialize
from campaigns.materialize import run_materialize
from campaigns.models import Delivery
from consent.models import Suppression
from tests.campaigns.pipeline_helpers import NOON_UTC, campaign_for, customers_with_consent, new_run
from tests.factories import CustomerFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def outcome(run):
    return sorted(Delivery.objects.filter(run=run).values_list("customer_id", "channel", "status", "skip_reason"))


def test_parallel_parts_write_what_one_statement_writes(monkeypatch):
    # given: customers with and without consent, one suppressed, on both sides of any id split
    customers = customers_with_consent(9, channels=("email", "sms"), timezone="Asia/Shanghai")
    CustomerFactory.create_batch(3)
    Suppression.objects.create(channel="email", address=customers[4].email, reason="hard_bounce")
    campaign = campaign_for(channels=("email", "sms"), holdout_percent=20)
    run = new_run(campaign)
    monkeypatch.setattr(materialize, "MATERIALIZE_PARALLEL", 1)
    run_materialize(run=run, now=NOON_UTC)
    expected = outcome(run)
    Delivery.objects.filter(run=run).delete()

    # when: the same run is materialized in three parts on three connections
    monkeypatch.setattr(materialize, "MATERIALIZE_PARALLEL", 3)
    monkeypatch.setattr(materialize, "MATERIALIZE_PARALLEL_MIN_CUSTOMERS", 0)
    assert len(materialize._parallel_ranges()) == 3
    inserted = run_materialize(run=run, now=NOON_UTC)

    # then: the same deliveries, counters refreshed, and a second pass (a retried task) adds nothing
    assert inserted == 12 and outcome(run) == expected
    run.refresh_from_db()
    assert (run.status, run.targeted) == ("sending", 12)
    assert run_materialize(run=run, now=NOON_UTC) == 0
    assert Delivery.objects.filter(run=run).count() == 12


def test_small_tables_and_open_transactions_use_one_statement(monkeypatch):
    CustomerFactory.create_batch(2)
    assert materialize._parallel_ranges() == []  # below MATERIALIZE_PARALLEL_MIN_CUSTOMERS
    monkeypatch.setattr(materialize, "MATERIALIZE_PARALLEL_MIN_CUSTOMERS", 0)
    from django.db import transaction

    with transaction.atomic():
        assert materialize._parallel_ranges() == []
