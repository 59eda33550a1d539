"""Races on PostgreSQL: real threads, real connections, real row locks."""

import threading
from collections import Counter

import pytest
from django.db import connection

from campaigns.models import Offer, OfferGrant, Redemption
from campaigns.offers import RedemptionRefused, grants_issue_for_run, redemption_record
from tests.campaigns.offer_helpers import make_run
from tests.factories import CustomerFactory, OfferFactory, OfferGrantFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_at_once(target, args_list):
    """Run target(*args) in one thread per args, released together; return results or exceptions."""
    barrier = threading.Barrier(len(args_list))
    results = [None] * len(args_list)

    def worker(index, args):
        try:
            barrier.wait(timeout=10)
            results[index] = target(*args)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on by the test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, a)) for i, a in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_a_code_redeems_once_under_concurrent_requests():
    # Given one valid code
    grant = OfferGrantFactory()
    # When 8 requests redeem it at the same moment
    results = run_at_once(
        lambda n: redemption_record(code=grant.code, external_id=grant.customer.external_id, order_ref=f"SO-{n}"),
        [(n,) for n in range(8)],
    )
    # Then exactly one succeeds and the others are told it was already redeemed
    successes = [r for r in results if isinstance(r, Redemption)]
    refusals = [r for r in results if isinstance(r, RedemptionRefused)]
    assert len(successes) == 1, results
    assert Counter(r.reason for r in refusals) == {"already_redeemed": 7}
    assert Redemption.objects.filter(grant=grant).count() == 1


def test_concurrent_runs_never_exceed_the_budget():
    # Given a coupon with a budget of 10 and four runs of 5 recipients each
    offer = OfferFactory(budget=10)
    runs = [make_run(offer=offer, customers=CustomerFactory.create_batch(5)) for _ in range(4)]
    # When the four runs issue grants at the same moment
    results = run_at_once(lambda run, deliveries: grants_issue_for_run(run=run, deliveries=deliveries), runs)
    # Then 10 grants exist in all, matching the reserved count
    assert all(isinstance(r, dict) for r in results), results
    assert sum(len(r) for r in results) == 10
    assert OfferGrant.objects.filter(offer=offer).count() == 10
    assert Offer.objects.get(pk=offer.pk).granted_count == 10
    assert OfferGrant.objects.values("code").distinct().count() == 10


def test_concurrent_runs_grant_a_once_per_customer_offer_once():
    # Given two campaigns with the same once-per-customer offer and the same 6 customers
    offer = OfferFactory(usage_mode="once_per_customer")
    customers = CustomerFactory.create_batch(6)
    runs = [make_run(offer=offer, customers=customers) for _ in range(2)]
    results = run_at_once(lambda run, deliveries: grants_issue_for_run(run=run, deliveries=deliveries), runs)
    assert all(isinstance(r, dict) for r in results), results
    per_customer = Counter(OfferGrant.objects.filter(offer=offer).values_list("customer_id", flat=True))
    assert per_customer == {c.pk: 1 for c in customers}
    assert Offer.objects.get(pk=offer.pk).granted_count == 6
