"""The customer timeline: every source merged newest first, one query per source, masked."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from campaigns.models import CampaignRun, Delivery, Redemption
from consent.services import consent_grant, consent_withdraw
from reactivation.models import LifecycleTransition
from reactivation.timeline import (
    LIMIT_MAX,
    TimelineEntry,
    customer_timeline,
    timeline_kinds,
    timeline_source,
)
from tests.factories import ActivityEventFactory, CampaignFactory, CustomerFactory, OfferGrantFactory, UserFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
EMAIL = "cui.yang@example.com"


def ago(minutes):
    return NOW - timedelta(minutes=minutes)


def delivery(customer, *, minutes, status=Delivery.Status.SENT, **extra):
    campaign = CampaignFactory(name=f"想你了 {minutes}")
    run = CampaignRun.objects.create(campaign=campaign, number=1)
    return Delivery.objects.create(campaign=campaign, run=run, customer=customer, channel="email", address=EMAIL,
                                   status=status, created_at=ago(minutes), sent_at=ago(minutes), **extra)


@pytest.fixture
def viewer():
    """A superuser: every source."""
    return UserFactory(is_superuser=True)


def staff_with(*codenames):
    user = UserFactory()
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # a fresh object: no permission cache


@pytest.fixture
def history():
    """One customer with one entry of every kind, a minute apart (the newest first below)."""
    customer = CustomerFactory(name="崔洋", email=EMAIL)
    LifecycleTransition.objects.create(customer=customer, from_state="dormant", to_state="reactivated", at=ago(1))
    grant = OfferGrantFactory(customer=customer, offer__name="满100减20", granted_at=ago(5))
    Redemption.objects.create(grant=grant, customer=customer, order_amount=Decimal("120.00"), order_ref="A-1",
                              redeemed_at=ago(2), source="api")
    ActivityEventFactory(customer=customer, kind="order", occurred_at=ago(3), amount=Decimal("120.00"))
    delivery(customer, minutes=4, opened_at=ago(3))
    consent_grant(customer=customer, channel="email", source="signup", at=ago(6))
    CustomerFactory()  # someone else's history never shows
    return customer


def test_every_source_is_registered_campaigns_included():
    assert set(timeline_kinds()) >= {"activity", "lifecycle", "consent", "message", "offer", "redemption"}


def test_entries_of_every_kind_come_newest_first(history, viewer):
    entries, more = customer_timeline(customer=history, viewer=viewer, limit=30)

    assert [e.kind for e in entries] == ["lifecycle", "redemption", "activity", "message", "offer", "consent"]
    assert [e.at for e in entries] == [ago(m) for m in range(1, 7)]
    assert more is False
    titles = [e.title for e in entries]
    assert titles[0] == "Lifecycle: Dormant → Reactivated"
    assert titles[1] == "Offer redeemed: 满100减20"
    assert titles[3] == "Email: 想你了 4" and "Sent, opened" in entries[3].detail
    assert titles[4] == "Offer granted: 满100减20"
    assert titles[5] == "Email consent granted"
    assert all(e.url.startswith("/admin/") for e in entries)


def test_personal_data_is_masked_unless_the_viewer_may_see_it(history, viewer):
    masked, _ = customer_timeline(customer=history, viewer=viewer, limit=30, personal_data=False)
    shown, _ = customer_timeline(customer=history, viewer=viewer, limit=30, personal_data=True)

    def text(entries):
        return " ".join(f"{e.title} {e.detail}" for e in entries)

    assert EMAIL not in text(masked) and "c***@e***.com" in text(masked)
    assert EMAIL in text(shown)


def test_a_grant_never_spells_out_its_code(history, viewer):
    entries, _ = customer_timeline(customer=history, viewer=viewer, limit=30, personal_data=True)
    grant = history.offer_grants.get()
    assert grant.code not in " ".join(e.detail for e in entries)


def test_the_timeline_is_capped_and_says_there_is_more(history, viewer):
    ActivityEventFactory.create_batch(12, customer=history, occurred_at=ago(30))
    consent_withdraw(customer=history, channel="email", source="admin", at=ago(40))

    entries, more = customer_timeline(customer=history, viewer=viewer, limit=10)

    assert len(entries) == 10 and more is True
    assert customer_timeline(customer=history, viewer=viewer, limit=LIMIT_MAX)[1] is False
    assert len(customer_timeline(customer=history, viewer=viewer, limit=LIMIT_MAX)[0]) == 6 + 12 + 1


def test_one_query_per_source_whatever_the_history(history, viewer, django_assert_num_queries):
    for minutes in range(20):
        delivery(history, minutes=100 + minutes)
    ActivityEventFactory.create_batch(50, customer=history)
    with django_assert_num_queries(len(timeline_kinds())):
        entries, more = customer_timeline(customer=history, viewer=viewer, limit=30)
    assert len(entries) == 30 and more


def test_a_registered_source_joins_the_timeline(history, viewer):
    @timeline_source("survey", permission="reactivation.view_customer")
    def survey(*, customer, limit, personal_data):
        return [TimelineEntry(at=NOW, kind="survey", title="Answered the survey")][:limit]

    try:
        entries, _ = customer_timeline(customer=history, viewer=viewer, limit=3)
        assert entries[0].title == "Answered the survey"
    finally:
        from reactivation import timeline

        timeline._sources.pop("survey")


def test_a_viewer_sees_only_the_sources_they_may_view_and_the_others_cost_no_query(history, django_assert_num_queries):
    support = staff_with("view_customer", "view_activityevent", "view_delivery")
    support.has_perm("reactivation.view_customer")  # loads the permission cache

    with django_assert_num_queries(2):  # activity and messages; no grant, redemption or consent read
        entries, more = customer_timeline(customer=history, viewer=support, limit=30)

    assert [e.kind for e in entries] == ["activity", "message"]
    assert more is False


@pytest.mark.parametrize("kind, permission", [
    ("activity", "reactivation.view_activityevent"),
    ("lifecycle", "reactivation.view_lifecycletransition"),
    ("consent", "consent.view_consentevent"),
    ("message", "campaigns.view_delivery"),
    ("offer", "campaigns.view_offergrant"),
    ("redemption", "campaigns.view_redemption"),
])
def test_each_source_needs_the_view_permission_of_its_model(history, kind, permission):
    codename = permission.split(".")[1]
    without = staff_with("view_customer")
    with_it = staff_with("view_customer", codename)

    assert kind not in {e.kind for e in customer_timeline(customer=history, viewer=without)[0]}
    assert kind in {e.kind for e in customer_timeline(customer=history, viewer=with_it)[0]}
