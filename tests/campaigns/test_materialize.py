"""Materialization: one INSERT ... SELECT applies every exclusion (campaigns.materialize)."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.materialize import holdout_bucket, run_materialize
from campaigns.models import CampaignRun, ContactPolicy, Delivery
from consent.models import Suppression
from consent.services import consent_withdraw
from tests.campaigns.pipeline_helpers import (
    NOON_UTC, campaign_for, channel_policy, customers_with_consent, new_run,
)
from tests.factories import CampaignFactory, CustomerFactory

pytestmark = pytest.mark.django_db


def rows(run):
    return {d.customer_id: d for d in Delivery.objects.filter(run=run)}


def test_channel_is_the_first_allowed_one_with_consent_and_address_else_the_reason_is_recorded():
    # given: a campaign preferring email, then SMS
    campaign = campaign_for(channels=("email", "sms"))
    email_ok = customers_with_consent(1, channels=("email", "sms"))[0]
    sms_only = customers_with_consent(1, channels=("sms",))[0]
    nobody = CustomerFactory()
    suppressed = customers_with_consent(1, channels=("email",))[0]
    Suppression.objects.create(channel="email", address=suppressed.email, reason="hard_bounce")
    no_email = customers_with_consent(1, channels=("email",), email="")[0]
    withdrawn = customers_with_consent(1, channels=("email",))[0]
    consent_withdraw(customer=withdrawn, channel="email", source="unsubscribe_link")
    run = new_run(campaign)

    # when
    inserted = run_materialize(run=run, now=NOON_UTC)

    # then
    got = rows(run)
    assert inserted == 6
    assert (got[email_ok.pk].status, got[email_ok.pk].channel, got[email_ok.pk].address) == ("pending", "email", email_ok.email)
    assert (got[sms_only.pk].status, got[sms_only.pk].channel, got[sms_only.pk].address) == ("pending", "sms", sms_only.phone)
    assert (got[nobody.pk].status, got[nobody.pk].skip_reason) == ("skipped", "consent")
    assert (got[suppressed.pk].status, got[suppressed.pk].skip_reason) == ("skipped", "suppressed")
    assert (got[no_email.pk].status, got[no_email.pk].skip_reason) == ("skipped", "no_address")
    assert (got[withdrawn.pk].status, got[withdrawn.pk].skip_reason) == ("skipped", "consent")
    run.refresh_from_db()
    assert (run.status, run.targeted, run.skipped_consent, run.skipped_suppressed, run.skipped_no_address) == (
        "sending", 6, 2, 1, 1)


def test_a_suppressed_email_falls_back_to_sms():
    campaign = campaign_for(channels=("email", "sms"))
    customer = customers_with_consent(1, channels=("email", "sms"))[0]
    Suppression.objects.create(channel="email", address=customer.email, reason="complaint")
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    delivery = Delivery.objects.get(run=run)
    assert (delivery.channel, delivery.address, delivery.status) == ("sms", customer.phone, "pending")


def test_sms_switched_off_globally_or_per_campaign_falls_back_or_skips_with_channel_off():
    policy = ContactPolicy.current()
    policy.sms_enabled = False
    policy.save()
    sms_campaign = campaign_for(channels=("sms",))
    fallback = campaign_for(channels=("sms", "in_app"))
    customer = customers_with_consent(1, channels=("sms", "in_app"))[0]

    run_materialize(run=(run := new_run(sms_campaign)), now=NOON_UTC)
    run_materialize(run=(run2 := new_run(fallback)), now=NOON_UTC)

    assert Delivery.objects.values_list("status", "skip_reason").get(run=run) == ("skipped", "channel_off")
    assert Delivery.objects.values_list("status", "channel").get(run=run2) == ("pending", "in_app")
    policy.sms_enabled = True
    policy.save()
    per_campaign_off = campaign_for(channels=("sms",), sms_enabled=False)
    run_materialize(run=(run3 := new_run(per_campaign_off)), now=NOON_UTC)
    assert Delivery.objects.values_list("skip_reason", flat=True).get(run=run3) == "channel_off"
    assert customer.pk == Delivery.objects.get(run=run3).customer_id


def test_materializing_the_same_run_twice_adds_nothing():
    campaign = campaign_for()
    customers_with_consent(3)
    run = new_run(campaign)

    first = run_materialize(run=run, now=NOON_UTC)
    CampaignRun.objects.filter(pk=run.pk).update(status="materializing")
    second = run_materialize(run=run, now=NOON_UTC)

    assert (first, second) == (3, 0)
    assert Delivery.objects.filter(run=run).count() == 3


def test_holdout_is_deterministic_per_customer_and_campaign():
    campaign = campaign_for(holdout_percent=20)
    customers = customers_with_consent(100)
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    held = set(Delivery.objects.filter(run=run, status="holdout").values_list("customer_id", flat=True))
    expected = {c.pk for c in customers if holdout_bucket(customer_id=c.pk, campaign_id=campaign.pk) < 20}
    assert held == expected
    assert 5 <= len(held) <= 40
    assert not Delivery.objects.filter(run=run, status="holdout").exclude(skip_reason="").exists()


@pytest.mark.parametrize("campaign_id", [1, 7, 299, 4321])
@pytest.mark.parametrize("first_customer_id", [1, 2836, 99_991, 7_000_003])
def test_holdout_holds_out_the_asked_share_of_any_consecutive_customers(campaign_id, first_customer_id):
    # Customer ids are consecutive after an import: every stretch must give the asked share.
    held = sum(holdout_bucket(customer_id=i, campaign_id=campaign_id) < 20
               for i in range(first_customer_id, first_customer_id + 100))
    assert 17 <= held <= 23


def test_reentry_skips_customers_reached_within_reentry_days_only():
    campaign = campaign_for(reentry_days=30)
    recent, old, never = customers_with_consent(3)
    first = new_run(campaign, now=NOON_UTC - timedelta(days=40))
    Delivery.objects.create(campaign=campaign, run=first, customer=recent, channel="email", status="sent",
                            sent_at=NOON_UTC - timedelta(days=10))
    Delivery.objects.create(campaign=campaign, run=first, customer=old, channel="email", status="sent",
                            sent_at=NOON_UTC - timedelta(days=31))
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    got = rows(run)
    assert (got[recent.pk].status, got[recent.pk].skip_reason) == ("skipped", "reentry")
    assert got[old.pk].status == "pending"
    assert got[never.pk].status == "pending"
    run.refresh_from_db()
    assert run.skipped_reentry == 1


def test_caps_and_re_entry_count_an_unknown_outcome_as_sent_and_a_claim_as_on_its_way():
    # An unknown outcome may have reached the customer; a claimed delivery is about to.
    campaign = campaign_for(reentry_days=30)
    maybe_reached, claimed, long_ago = customers_with_consent(3)
    first = new_run(campaign, now=NOON_UTC - timedelta(days=40))
    for customer, status, created in ((maybe_reached, "unknown", 10), (claimed, "claimed", 1), (long_ago, "unknown", 31)):
        Delivery.objects.create(campaign=campaign, run=first, customer=customer, channel="email", status=status,
                                created_at=NOON_UTC - timedelta(days=created))
    other = campaign_for()
    for _ in range(2):
        Delivery.objects.create(campaign=other, run=new_run(other), customer=long_ago, channel="email", status="unknown",
                                created_at=NOON_UTC - timedelta(days=2))
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    got = rows(run)
    assert [(got[c.pk].status, got[c.pk].skip_reason) for c in (maybe_reached, claimed, long_ago)] == [
        ("skipped", "reentry"), ("skipped", "reentry"), ("skipped", "cap")]


def test_frequency_cap_counts_marketing_sends_of_other_campaigns_on_the_channel():
    # given: two emails from another marketing campaign in the last 7 days for one customer
    capped, fresh, old_sends = customers_with_consent(3)
    other = campaign_for()
    for days in (1, 3):
        Delivery.objects.create(campaign=other, run=new_run(other), customer=capped, channel="email", status="sent",
                                sent_at=NOON_UTC - timedelta(days=days))
    for days in (8, 9):  # outside the rolling 7 days
        Delivery.objects.create(campaign=other, run=new_run(other), customer=old_sends, channel="email", status="sent",
                                sent_at=NOON_UTC - timedelta(days=days))
    campaign = campaign_for()
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    got = rows(run)
    assert (got[capped.pk].status, got[capped.pk].skip_reason) == ("skipped", "cap")
    assert got[fresh.pk].status == "pending"
    assert got[old_sends.pk].status == "pending"


def test_cap_counts_pending_deliveries_of_another_run_and_ignores_other_channels_and_non_marketing():
    customer, sms_sent = customers_with_consent(2, channels=("email", "sms"))
    other = campaign_for()
    other_run = new_run(other)
    Delivery.objects.create(campaign=other, run=other_run, customer=customer, channel="email", status="sent",
                            sent_at=NOON_UTC - timedelta(days=1))
    Delivery.objects.create(campaign=other, run=new_run(other), customer=customer, channel="email", status="pending")
    transactional = campaign_for(is_marketing=False)
    for days in (1, 2):
        Delivery.objects.create(campaign=transactional, run=new_run(transactional), customer=sms_sent, channel="email", status="sent",
                                sent_at=NOON_UTC - timedelta(hours=days * 30))
    campaign = campaign_for()
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    got = rows(run)
    assert got[customer.pk].skip_reason == "cap"
    assert got[sms_sent.pk].status == "pending"


def test_cap_exempt_non_marketing_campaign_ignores_caps():
    customer = customers_with_consent(1)[0]
    other = campaign_for()
    for days in (1, 2, 3):
        Delivery.objects.create(campaign=other, run=new_run(other), customer=customer, channel="email", status="sent",
                                sent_at=NOON_UTC - timedelta(days=days))
    campaign = campaign_for(is_marketing=False, cap_exempt=True)
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    assert Delivery.objects.get(run=run).status == "pending"


def test_daily_cap_over_all_channels():
    policy = ContactPolicy.current()
    policy.daily_cap_all_channels = 2
    policy.save()
    customer = customers_with_consent(1, channels=("email", "sms", "in_app"))[0]
    other = campaign_for()
    other_run = new_run(other)
    Delivery.objects.create(campaign=other, run=other_run, customer=customer, channel="sms", status="sent",
                            sent_at=NOON_UTC - timedelta(hours=3))
    Delivery.objects.create(campaign=other, run=new_run(other), customer=customer, channel="in_app", status="sent",
                            sent_at=NOON_UTC - timedelta(hours=5))
    campaign = campaign_for()
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    assert Delivery.objects.values_list("status", "skip_reason").get(run=run) == ("skipped", "cap")


def test_sms_quiet_hours_defer_to_the_window_opening_in_each_customers_time_zone():
    # given: 22:00 in Shanghai (closed), 10:00 in New York (open); SMS window 08:00-21:00
    now = datetime(2024, 6, 3, 14, 0, tzinfo=dt_timezone.utc)
    shanghai = customers_with_consent(1, channels=("sms",), timezone="Asia/Shanghai")[0]
    new_york = customers_with_consent(1, channels=("sms",), timezone="America/New_York")[0]
    email_shanghai = customers_with_consent(1, channels=("email",), timezone="Asia/Shanghai")[0]
    campaign = campaign_for(channels=("sms", "email"))
    run = new_run(campaign, now=now)

    run_materialize(run=run, now=now)

    got = rows(run)
    assert got[shanghai.pk].status == "deferred"
    # 08:00 in Shanghai the next morning is 00:00 UTC.
    assert got[shanghai.pk].not_before == datetime(2024, 6, 4, 0, 0, tzinfo=dt_timezone.utc)
    assert (got[new_york.pk].status, got[new_york.pk].not_before) == ("pending", None)
    assert (got[email_shanghai.pk].status, got[email_shanghai.pk].not_before) == ("pending", None)  # email: no quiet hours
    run.refresh_from_db()
    assert run.deferred_quiet == 1


def test_quiet_hours_before_the_window_open_the_same_morning_and_can_be_switched_on_for_email():
    # 06:00 in New York (EDT): the window opens at 08:00 local = 12:00 UTC the same day.
    policy = channel_policy("email")
    policy.quiet_hours_enabled = True
    policy.save()
    customer = customers_with_consent(1, timezone="America/New_York")[0]
    campaign = campaign_for()
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    delivery = Delivery.objects.get(run=run, customer=customer)
    assert (delivery.status, delivery.not_before) == ("deferred", datetime(2024, 6, 3, 12, 0, tzinfo=dt_timezone.utc))


def test_only_the_segments_customers_are_targeted(settings):
    from reactivation.models import Segment

    segment = Segment.objects.create(name="Beauty", favourite_categories=["beauty"])
    inside = customers_with_consent(2, favourite_category="beauty")
    customers_with_consent(2, favourite_category="food")
    campaign = CampaignFactory(segment=segment)
    run = new_run(campaign)

    run_materialize(run=run, now=NOON_UTC)

    assert set(Delivery.objects.filter(run=run).values_list("customer_id", flat=True)) == {c.pk for c in inside}


@pytest.mark.parametrize("quiet", [False, True])
def test_materialization_is_a_fixed_number_of_queries(quiet):
    def measure(n):
        Delivery.objects.all().delete()
        customers_with_consent(n, channels=("email", "sms"), timezone="Asia/Shanghai" if n % 2 else "Europe/Paris")
        campaign = campaign_for(channels=("sms", "email") if quiet else ("email", "sms"), holdout_percent=10)
        run = new_run(campaign)
        with CaptureQueriesContext(connection) as ctx:
            run_materialize(run=run, now=NOON_UTC)
        assert Delivery.objects.filter(run=run).count() >= n
        return len(ctx.captured_queries)

    assert measure(3) == measure(40)
