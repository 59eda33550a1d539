"""Campaign reads: the audience estimate before a launch, runs waiting for quiet hours, the
schedule in words."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from campaigns.materialize import run_materialize
from campaigns.models import Campaign, CampaignRun, Delivery
from campaigns.selectors import (
    campaign_audience_estimate, campaign_schedule_description, crontab_next_run, runs_waiting_for_quiet_hours,
)
from consent.services import ConsentDecision, consent_record_bulk
from tests.campaigns.pipeline_helpers import NOON_UTC, campaign_for, customers_with_consent, new_run
from tests.factories import CampaignFactory, CustomerFactory, SuppressionFactory

pytestmark = pytest.mark.django_db

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _sent(customer, *, campaign, channel="email", at=NOON_UTC - timedelta(days=1)):
    run = new_run(campaign)
    return Delivery.objects.create(campaign=campaign, run=run, customer=customer, channel=channel, status="sent",
                                   sent_at=at, created_at=at)


def _mixed_audience(campaign):
    """Nine customers: 3 reachable by email, 1 only by SMS, 1 without consent, 1 suppressed,
    1 over the email cap (2 in 7 days), 1 already reached by this campaign (re-entry), and 1
    reachable by email who is suppressed on SMS (still reachable)."""
    reachable = customers_with_consent(3, channels=("email",))
    sms_only = customers_with_consent(1, channels=("sms",))
    CustomerFactory()  # no consent at all
    suppressed = customers_with_consent(1, channels=("email",))[0]
    SuppressionFactory(channel="email", address=suppressed.email)
    capped = customers_with_consent(1, channels=("email",))[0]
    other = campaign_for(name="Another win-back")
    _sent(capped, campaign=other)
    _sent(capped, campaign=other)
    again = customers_with_consent(1, channels=("email",))[0]
    _sent(again, campaign=campaign)
    both = customers_with_consent(1, channels=("email", "sms"))[0]
    SuppressionFactory(channel="sms", address=both.phone)
    return {"reachable": reachable, "sms_only": sms_only}


def test_the_estimate_walks_the_funnel_segment_consent_suppressed_reentry_cap_reachable():
    campaign = campaign_for(channels=("email",), reentry_days=30)
    _mixed_audience(campaign)

    estimate = campaign_audience_estimate(campaign=campaign, now=NOON_UTC)

    assert estimate["ok"] and not estimate["approximate"]
    assert (estimate["segment"], estimate["consent"], estimate["suppressed"], estimate["reentry"], estimate["capped"],
            estimate["reachable"]) == (9, 7, 1, 1, 1, 4)


def test_the_estimate_agrees_with_what_materializing_a_run_decides():
    campaign = campaign_for(channels=("email", "sms"), reentry_days=30, holdout_percent=0)
    _mixed_audience(campaign)

    estimate = campaign_audience_estimate(campaign=campaign, now=NOON_UTC)
    run = new_run(campaign, now=NOON_UTC)
    run_materialize(run=run, now=NOON_UTC)
    run.refresh_from_db()

    to_send = run.sent + Delivery.objects.filter(run=run, status__in=("pending", "deferred")).count()
    assert estimate["reachable"] == to_send == 5  # the SMS-only customer comes back on the second channel
    assert estimate["suppressed"] == run.skipped_suppressed
    assert estimate["reentry"] == run.skipped_reentry
    assert estimate["capped"] == run.skipped_cap
    assert estimate["segment"] - estimate["consent"] == run.skipped_consent + run.skipped_no_address + run.skipped_channel_off


def test_an_unsaved_campaign_with_sms_switched_off_counts_no_one_on_sms():
    customers_with_consent(2, channels=("sms",))
    saved = campaign_for(channels=("sms",))
    draft = Campaign(segment=saved.segment, channels=["sms"], sms_template=saved.sms_template, sms_enabled=False)

    estimate = campaign_audience_estimate(campaign=draft)

    assert (estimate["segment"], estimate["consent"], estimate["reachable"], estimate["usable_channels"]) == (2, 0, 0, [])


def test_the_holdout_is_taken_from_the_reachable():
    customers_with_consent(10)
    campaign = campaign_for(holdout_percent=20)

    estimate = campaign_audience_estimate(campaign=campaign)

    assert (estimate["holdout"], estimate["reachable"]) == (2, 8)


def test_the_estimate_takes_a_fixed_number_of_queries_whatever_the_audience():
    def queries_for(n):
        campaign = campaign_for(channels=("email", "sms"))
        customers_with_consent(n, channels=("email", "sms"))
        campaign_audience_estimate(campaign=campaign)  # creates the contact policy row once
        with CaptureQueriesContext(connection) as captured:
            campaign_audience_estimate(campaign=campaign)
        return len(captured)

    assert queries_for(2) == queries_for(40)


def test_a_large_segment_is_sampled_and_said_to_be_about():
    customers_with_consent(60)
    campaign = campaign_for()

    estimate = campaign_audience_estimate(campaign=campaign, sample=20)

    assert estimate["approximate"] is True
    assert estimate["segment"] == 60  # counted exactly
    assert 0 < estimate["sampled"] < 60  # about a third: one hash bucket in three
    assert estimate["consent"] == estimate["reachable"] == 60  # everyone is alike: the scaled count is exact


@pytest.mark.postgres
def test_a_slow_count_is_cancelled_and_reported(monkeypatch):
    from reactivation.models import Customer, Segment

    customers_with_consent(3)
    campaign = campaign_for()
    slow = Customer.objects.extra(where=["(SELECT 1 FROM pg_sleep(0.2)) = 1"])
    monkeypatch.setattr(Segment, "customers", lambda self: slow)

    estimate = campaign_audience_estimate(campaign=campaign, timeout_ms=50)

    assert estimate == {"ok": False, "error": "Counting took more than 0.05 s; the estimate is not available."}
    assert Campaign.objects.filter(pk=campaign.pk).exists()  # the connection is usable afterwards


def _statement_timeout():
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_the_estimates_timeout_ends_with_the_estimate_inside_a_callers_transaction(monkeypatch):
    from reactivation.models import Customer, Segment

    customers_with_consent(3)
    campaign = campaign_for()
    with transaction.atomic():
        before = _statement_timeout()
        campaign_audience_estimate(campaign=campaign, timeout_ms=1234)
        after_success = _statement_timeout()
        slow = Customer.objects.extra(where=["(SELECT 1 FROM pg_sleep(0.2)) = 1"])
        monkeypatch.setattr(Segment, "customers", lambda self: slow)
        campaign_audience_estimate(campaign=campaign, timeout_ms=50)
        after_cancel = _statement_timeout()

    assert before != "1234ms"
    assert after_success == after_cancel == before


# Quiet hours -----------------------------------------------------------------------------------


def test_a_run_with_only_deferred_deliveries_left_waits_for_quiet_hours():
    customers = customers_with_consent(3)
    campaign = campaign_for()
    waiting, busy = new_run(campaign), new_run(campaign)
    morning = datetime(2024, 6, 4, 0, 0, tzinfo=ZoneInfo("UTC"))
    for run in (waiting, busy):
        Delivery.objects.create(campaign=campaign, run=run, customer=customers[0], status="sent")
        Delivery.objects.create(campaign=campaign, run=run, customer=customers[1], status="deferred", not_before=morning)
        Delivery.objects.create(campaign=campaign, run=run, customer=customers[2], status="deferred",
                                not_before=morning + timedelta(hours=2))
    Delivery.objects.filter(run=busy, customer=customers[0]).update(status="pending")

    waits = runs_waiting_for_quiet_hours(run_ids=[waiting.pk, busy.pk])

    assert list(waits) == [waiting.pk]
    assert (waits[waiting.pk].deferred, waits[waiting.pk].first_at) == (2, morning)


def test_the_wait_is_described_in_the_site_time_zone(settings):
    from campaigns.selectors import QuietHoursWait

    settings.TIME_ZONE = "Asia/Shanghai"
    wait = QuietHoursWait(deferred=12, first_at=datetime(2024, 6, 4, 0, 0, tzinfo=ZoneInfo("UTC")))

    assert wait.describe(now=datetime(2024, 6, 3, 22, 0, tzinfo=SHANGHAI)) == "12 waiting for 08:00 Tue 4 Jun (Asia/Shanghai)"
    assert wait.describe(now=datetime(2024, 6, 4, 1, 0, tzinfo=SHANGHAI)) == "12 waiting for 08:00 (Asia/Shanghai)"


def test_a_wait_across_several_time_zones_names_when_the_last_window_opens(settings):
    from campaigns.selectors import QuietHoursWait

    # given customers in London and Los Angeles held until their 08:00 (08:00 and 16:00 UTC)
    settings.TIME_ZONE = "UTC"
    wait = QuietHoursWait(deferred=22, first_at=datetime(2026, 11, 30, 8, 0, tzinfo=ZoneInfo("UTC")),
                          last_at=datetime(2026, 11, 30, 16, 0, tzinfo=ZoneInfo("UTC")))
    # then the run is said to wait until the last of them, not only the first
    assert wait.describe(now=datetime(2026, 11, 30, 1, 0, tzinfo=ZoneInfo("UTC"))) == "22 waiting for 08:00 to 16:00 (UTC)"
    assert wait.describe(now=datetime(2026, 11, 29, 20, 0, tzinfo=ZoneInfo("UTC"))) == (
        "22 waiting for 08:00 Mon 30 Nov to 16:00 Mon 30 Nov (UTC)")


# Schedule in words -----------------------------------------------------------------------------


@pytest.mark.parametrize("fields, now, expected", [
    ({"minute": "0", "hour": "9", "day_of_week": "1"}, datetime(2026, 12, 3, 12, 0), datetime(2026, 12, 7, 9, 0)),
    ({"minute": "0", "hour": "9", "day_of_week": "1"}, datetime(2026, 12, 7, 8, 59), datetime(2026, 12, 7, 9, 0)),
    ({"minute": "0", "hour": "9", "day_of_week": "1"}, datetime(2026, 12, 7, 9, 0), datetime(2026, 12, 14, 9, 0)),
    ({"minute": "30", "hour": "8,20"}, datetime(2026, 12, 3, 12, 0), datetime(2026, 12, 3, 20, 30)),
    ({"minute": "0", "hour": "10", "day_of_month": "1"}, datetime(2026, 12, 3, 12, 0), datetime(2027, 1, 1, 10, 0)),
    ({"minute": "0", "hour": "10", "day_of_month": "29", "month_of_year": "2"}, datetime(2026, 12, 3, 12, 0),
     datetime(2028, 2, 29, 10, 0)),
])
def test_the_next_run_of_a_crontab_in_the_site_time_zone(fields, now, expected):
    spec = {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*", **fields}

    found = crontab_next_run(**spec, now=now.replace(tzinfo=SHANGHAI), zone=SHANGHAI)

    assert found == (expected.replace(tzinfo=SHANGHAI) if expected else None)


def test_a_recurring_schedule_reads_in_words_with_its_zone_and_next_run(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    campaign = CampaignFactory.build(schedule_kind="recurring", cron_minute="0", cron_hour="9", cron_day_of_week="1")

    text = campaign_schedule_description(campaign=campaign, now=datetime(2026, 12, 3, 12, 0, tzinfo=SHANGHAI))

    assert text == "At 09:00, only on Monday (Asia/Shanghai) — next run Mon 7 Dec 2026 09:00"


def test_a_one_off_schedule_and_a_broken_crontab_read_in_words(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    now = datetime(2026, 12, 3, 12, 0, tzinfo=SHANGHAI)
    once = CampaignFactory.build(schedule_kind="once", scheduled_at=datetime(2026, 12, 4, 1, 30, tzinfo=ZoneInfo("UTC")))
    broken = CampaignFactory.build(schedule_kind="recurring", cron_minute="99")

    assert campaign_schedule_description(campaign=once, now=now) == "Once, on Fri 4 Dec 2026 at 09:30 (Asia/Shanghai)"
    assert campaign_schedule_description(campaign=broken, now=now).startswith("Not a valid crontab")


def test_runs_in_progress_tell_waiting_runs_from_busy_ones():
    from campaigns.selectors import campaign_runs_in_progress

    customer = customers_with_consent(1)[0]
    campaign = campaign_for()
    run = new_run(campaign)
    CampaignRun.objects.filter(pk=run.pk).update(status="sending")
    Delivery.objects.create(campaign=campaign, run=run, customer=customer, status="deferred", not_before=NOON_UTC)

    runs, waits = campaign_runs_in_progress(campaign=campaign)

    assert [r.pk for r in runs] == [run.pk] and list(waits) == [run.pk]


def test_consent_withdrawn_after_a_grant_is_not_counted():
    customer = customers_with_consent(1)[0]
    consent_record_bulk(decisions=[ConsentDecision(customer_id=customer.pk, channel="email", action="withdraw",
                                                   source="import")])

    estimate = campaign_audience_estimate(campaign=campaign_for())

    assert (estimate["segment"], estimate["consent"]) == (1, 0)
