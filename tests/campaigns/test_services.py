"""Campaign services: schedule (django-celery-beat rows), launch, pause, resume, cancel."""

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from campaigns import services
from campaigns.models import Campaign, CampaignRun, Delivery
from campaigns.sending import deliveries_send_chunk
from tests.campaigns.pipeline_helpers import (
    campaign_for, customers_with_consent,
)

pytestmark = pytest.mark.django_db


def test_schedule_once_creates_a_one_off_clocked_task_with_json_args(settings):
    campaign = campaign_for(schedule_kind="once", scheduled_at=timezone.now() + timedelta(hours=2))

    services.campaign_schedule(campaign=campaign)

    campaign.refresh_from_db()
    task = campaign.periodic_task
    assert campaign.status == "scheduled"
    assert (task.task, json.loads(task.args), task.one_off, task.enabled) == ("campaigns.launch_scheduled", [campaign.pk], True, True)
    assert task.clocked.clocked_time == campaign.scheduled_at and task.crontab is None


def test_rescheduling_as_recurring_updates_the_same_task_with_a_crontab_in_the_site_time_zone(settings):
    campaign = campaign_for(schedule_kind="once", scheduled_at=timezone.now() + timedelta(hours=2))
    services.campaign_schedule(campaign=campaign)
    first_task_id = Campaign.objects.get(pk=campaign.pk).periodic_task_id
    Campaign.objects.filter(pk=campaign.pk).update(schedule_kind="recurring", cron_minute="30", cron_hour="9",
                                                   cron_day_of_week="1")

    services.campaign_schedule(campaign=Campaign.objects.get(pk=campaign.pk))

    task = PeriodicTask.objects.get(pk=first_task_id)
    assert PeriodicTask.objects.filter(task="campaigns.launch_scheduled").count() == 1
    assert (task.clocked, task.one_off) == (None, False)
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week, str(task.crontab.timezone)) == (
        "30", "9", "1", settings.TIME_ZONE)


@pytest.mark.parametrize("fields, message", [
    ({"schedule_kind": "once", "scheduled_at": None}, "Say when"),
    ({"schedule_kind": "once", "scheduled_at": timezone.now() - timedelta(minutes=1)}, "passed"),
    ({"schedule_kind": "recurring", "cron_hour": "25"}, "crontab"),
    ({"is_marketing": True, "cap_exempt": True, "channels": ["email"]}, "non-marketing"),
])
def test_schedule_refuses_invalid_campaigns_and_creates_no_task(fields, message):
    campaign = campaign_for(**fields)

    with pytest.raises(ValidationError, match=message):
        services.campaign_schedule(campaign=campaign)

    assert not PeriodicTask.objects.filter(task="campaigns.launch_scheduled").exists()
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"


def test_pause_stops_later_claims_and_disables_the_schedule_and_resume_sends_the_rest():
    customers_with_consent(3)
    campaign = campaign_for(schedule_kind="recurring")
    services.campaign_schedule(campaign=campaign)
    run = services.campaign_launch(campaign=campaign, sync=False)  # queued; materialize here
    services.run_execute(run=run, sync=False)
    ids = list(Delivery.objects.filter(run=run).values_list("pk", flat=True))
    changed_before = PeriodicTasks.last_change()

    paused = services.campaign_pause(campaign=campaign)
    result = deliveries_send_chunk(delivery_ids=ids, channel="email")

    campaign.refresh_from_db()
    assert (paused, campaign.status, campaign.periodic_task.enabled) == (1, "paused", False)
    assert PeriodicTasks.last_change() != changed_before
    assert result.counts["sent"] == 0 and not mail.outbox
    with pytest.raises(ValidationError, match="paused"):
        services.campaign_launch(campaign=campaign)

    resumed = services.campaign_resume(campaign=campaign)
    deliveries_send_chunk(delivery_ids=ids, channel="email")

    campaign.refresh_from_db()
    assert (resumed, campaign.status, campaign.periodic_task.enabled) == (1, "scheduled", True)
    assert CampaignRun.objects.get(pk=run.pk).status == "sending"
    assert len(mail.outbox) == 3


def test_cancel_removes_the_periodic_task_and_stops_the_run():
    customers_with_consent(2)
    campaign = campaign_for(schedule_kind="once", scheduled_at=timezone.now() + timedelta(days=1))
    services.campaign_schedule(campaign=campaign)
    task_id = Campaign.objects.get(pk=campaign.pk).periodic_task_id
    run = services.campaign_launch(campaign=campaign)
    services.run_execute(run=run)

    cancelled = services.campaign_cancel(campaign=campaign)

    campaign.refresh_from_db()
    assert (cancelled, campaign.status, campaign.periodic_task) == (1, "cancelled", None)
    assert not PeriodicTask.objects.filter(pk=task_id).exists()
    assert CampaignRun.objects.get(pk=run.pk).status == "cancelled"
    with pytest.raises(ValidationError, match="cancelled"):
        services.campaign_schedule(campaign=campaign)
    assert services.campaign_cancel(campaign=campaign) == 0


def test_schedule_refuses_unknown_channels():
    campaign = campaign_for()
    Campaign.objects.filter(pk=campaign.pk).update(channels=["fax"])

    with pytest.raises(ValidationError, match="Unknown channels"):
        services.campaign_schedule(campaign=campaign)


def test_a_second_launch_while_a_run_is_in_progress_is_refused():
    customers_with_consent(1)
    campaign = campaign_for()
    services.campaign_launch(campaign=campaign)

    with pytest.raises(ValidationError, match="still in progress"):
        services.campaign_launch(campaign=campaign)
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_a_recurring_campaign_picks_up_customers_who_newly_match_and_applies_reentry():
    first = customers_with_consent(2)
    campaign = campaign_for(schedule_kind="recurring", reentry_days=30)
    services.campaign_schedule(campaign=campaign)

    run1 = services.campaign_launch_scheduled(campaign_id=campaign.pk)
    services.run_execute(run=run1, sync=True)
    newcomer = customers_with_consent(1)[0]
    run2 = services.campaign_launch_scheduled(campaign_id=campaign.pk)
    run2 = services.run_execute(run=run2, sync=True)

    assert (run2.number, run2.sent, run2.skipped_reentry) == (2, 1, 2)
    assert Delivery.objects.get(run=run2, status="sent").customer_id == newcomer.pk
    assert {d.customer_id for d in Delivery.objects.filter(run=run1, status="sent")} == {c.pk for c in first}
    assert Campaign.objects.get(pk=campaign.pk).status == "scheduled"


def test_launch_scheduled_skips_a_campaign_that_is_no_longer_scheduled(caplog):
    campaign = campaign_for()

    assert services.campaign_launch_scheduled(campaign_id=campaign.pk) is None
    assert services.campaign_launch_scheduled(campaign_id=999_999) is None
    assert not CampaignRun.objects.exists()
    assert "campaign_launch_scheduled_skipped" in caplog.text


def test_a_run_with_nobody_to_send_to_is_done_at_once():
    campaign = campaign_for()

    run = services.campaign_launch(campaign=campaign, sync=True)

    assert (run.status, run.targeted) == ("done", 0)
    assert Campaign.objects.get(pk=campaign.pk).status == "completed"


def test_failed_materialization_marks_the_run_failed(monkeypatch):
    campaign = campaign_for()
    run = services.campaign_launch(campaign=campaign)

    def boom(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr("campaigns.materialize.run_materialize", boom)
    with pytest.raises(RuntimeError):
        services.run_execute(run=run)

    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", "RuntimeError: database went away")


def test_dispatch_due_queues_deferred_deliveries_whose_window_opened(django_capture_on_commit_callbacks, monkeypatch):
    customers_with_consent(2)
    run = services.campaign_launch(campaign=campaign_for(), sync=False)
    from campaigns.materialize import run_materialize

    run_materialize(run=run)
    opens = timezone.now() + timedelta(hours=3)
    Delivery.objects.filter(run=run).update(status="deferred", not_before=opens)
    queued = []
    monkeypatch.setattr("campaigns.tasks.send_chunk.apply_async", lambda args, queue: queued.append((args, queue)))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_dispatch_due(now=opens - timedelta(minutes=1)) == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_dispatch_due(now=opens) == 2

    assert queued == [([sorted(Delivery.objects.filter(run=run).values_list("pk", flat=True)), "email"], "email")]
    assert set(Delivery.objects.filter(run=run).values_list("status", "not_before")) == {("pending", None)}
