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


# Cancel: closing what a cancelled run will never send -----------------------------------------


def run_mid_send():
    """A sending run of 7: 2 sent, 1 claimed by a worker right now, 2 deferred, 2 pending."""
    customers_with_consent(7)
    campaign = campaign_for()
    run = services.campaign_launch(campaign=campaign)
    services.run_execute(run=run)  # materializes; the chunks it queues are never run here
    ids = sorted(Delivery.objects.filter(run=run).values_list("pk", flat=True))
    deliveries_send_chunk(delivery_ids=ids[:2], channel="email")
    Delivery.objects.filter(pk=ids[2]).update(status="sending", claimed_at=timezone.now(), attempts=1)
    Delivery.objects.filter(pk__in=ids[3:5]).update(status="deferred", not_before=timezone.now() + timedelta(hours=3))
    return campaign, run, ids


def delivery_rows(run):
    return {d.pk: (d.status, d.skip_reason, d.sent_at, d.provider_id, d.claimed_at) for d in Delivery.objects.filter(run=run)}


def test_cancel_only_flips_statuses_and_queues_the_closing_of_each_run_on_commit(django_capture_on_commit_callbacks,
                                                                                  monkeypatch):
    campaign, run, _ids = run_mid_send()
    before = delivery_rows(run)
    queued = []
    monkeypatch.setattr("campaigns.tasks.run_close_cancelled.delay", lambda run_id: queued.append(run_id))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert services.campaign_cancel(campaign=campaign) == 1
        assert queued == []  # not before the commit

    assert queued == [run.pk] and len(callbacks) == 1
    assert CampaignRun.objects.get(pk=run.pk).status == "cancelled"
    assert delivery_rows(run) == before  # the deliveries are the task's job, not the request's


def test_closing_a_run_cancelled_mid_send_skips_pending_and_deferred_and_leaves_the_rest():
    campaign, run, ids = run_mid_send()
    services.campaign_cancel(campaign=campaign)

    closed = services.run_close_cancelled(run=run)

    rows = delivery_rows(run)
    assert closed == 4
    assert [rows[pk][:2] for pk in ids] == [
        ("sent", ""), ("sent", ""), ("sending", ""),
        ("skipped", "cancelled"), ("skipped", "cancelled"), ("skipped", "cancelled"), ("skipped", "cancelled"),
    ]
    assert all(rows[pk][2] and rows[pk][3] for pk in ids[:2])  # sent_at and provider id kept
    assert all(rows[pk][4] is not None for pk in ids[3:])  # when they were closed
    run.refresh_from_db()
    assert (run.status, run.targeted, run.sent, run.skipped_cancelled, run.deferred_quiet) == ("cancelled", 7, 2, 4, 0)
    progress = services.run_progress(run=run)
    assert (progress["pending"], progress["sending"], progress["skipped_cancelled"]) == (0, 1, 4)
    assert len(mail.outbox) == 2


def test_closing_twice_changes_nothing_more():
    campaign, run, _ids = run_mid_send()
    services.campaign_cancel(campaign=campaign)
    services.run_close_cancelled(run=run)
    after_first = delivery_rows(run)

    assert services.run_close_cancelled(run=run) == 0

    assert delivery_rows(run) == after_first
    assert CampaignRun.objects.get(pk=run.pk).skipped_cancelled == 4


def test_closing_updates_in_batches_of_primary_key_ranges(monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    campaign, run, ids = run_mid_send()  # to close: ids[3:7], four consecutive keys
    services.campaign_cancel(campaign=campaign)
    monkeypatch.setattr(services, "CLOSE_BATCH", 3)

    with CaptureQueriesContext(connection) as ctx:
        closed = services.run_close_cancelled(run=run)

    updates = [q["sql"] for q in ctx.captured_queries
               if q["sql"].startswith("UPDATE") and "campaigns_delivery" in q["sql"].split("SET")[0]]
    assert closed == 4
    assert len(updates) == 2  # keys ids[3]..ids[6] in ranges of 3: [ids[3], ids[5]], [ids[6]]
    assert set(Delivery.objects.filter(pk__in=ids[3:]).values_list("status", "skip_reason")) == {("skipped", "cancelled")}


def test_closing_leaves_runs_that_are_not_cancelled_alone():
    campaign, run, _ids = run_mid_send()
    before = delivery_rows(run)

    assert services.run_close_cancelled(run=run) == 0

    assert delivery_rows(run) == before


def test_a_worker_finishing_after_the_close_keeps_its_outcome_and_stragglers_are_closed_when_due(
        monkeypatch, django_capture_on_commit_callbacks):
    campaign, run, ids = run_mid_send()
    services.campaign_cancel(campaign=campaign)
    services.run_close_cancelled(run=run)
    now = timezone.now()
    # The worker that held ids[2] got a transient error: back to pending, retry in a minute
    # (sending._mark_error). A cancelled run must not keep it waiting for ever.
    Delivery.objects.filter(pk=ids[2]).update(status="pending", not_before=now + timedelta(minutes=1))
    queued = []
    monkeypatch.setattr("campaigns.tasks.send_chunk.apply_async", lambda args, queue: queued.append(args))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_dispatch_due(now=now) == 0
    assert Delivery.objects.get(pk=ids[2]).status == "pending"  # not due yet
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_dispatch_due(now=now + timedelta(minutes=2)) == 0

    assert queued == []
    assert (Delivery.objects.get(pk=ids[2]).status, Delivery.objects.get(pk=ids[2]).skip_reason) == ("skipped", "cancelled")
    assert CampaignRun.objects.get(pk=run.pk).skipped_cancelled == 5


def test_a_run_cancelled_while_materializing_closes_what_the_materialization_wrote(monkeypatch):
    from campaigns import materialize

    customers_with_consent(3)
    campaign = campaign_for()
    run = services.campaign_launch(campaign=campaign)
    real_materialize = materialize.run_materialize

    def cancelled_meanwhile(*, run, now=None):
        # The cancel commits while the INSERT is still uncommitted: its close task finds nothing.
        services.campaign_cancel(campaign=campaign)
        assert services.run_close_cancelled(run=run) == 0
        return real_materialize(run=run, now=now)

    monkeypatch.setattr(materialize, "run_materialize", cancelled_meanwhile)

    run = services.run_execute(run=run)

    assert run.status == "cancelled"
    assert set(Delivery.objects.filter(run=run).values_list("status", "skip_reason")) == {("skipped", "cancelled")}
    assert (run.targeted, run.skipped_cancelled) == (3, 3)


# The sweeper: nothing stranded whatever message was lost or worker killed ---------------------


@pytest.fixture
def queued(monkeypatch):
    """Chunk messages the code queues (after commit), instead of a broker; queues start empty."""
    chunks = []
    monkeypatch.setattr("campaigns.tasks.send_chunk.apply_async",
                        lambda args, queue: chunks.append((queue, sorted(args[0]))))
    monkeypatch.setattr(services, "broker_queue_length", lambda *, queue: 0)
    return chunks


def sending_run(n=3, **campaign_fields):
    from campaigns.materialize import run_materialize

    customers_with_consent(n)
    run = services.campaign_launch(campaign=campaign_for(**campaign_fields))
    run_materialize(run=run)
    return run


def test_the_sweep_recovers_a_dead_workers_claims_and_counts_what_it_had_handed_over(
        settings, queued, django_capture_on_commit_callbacks):
    from collections import Counter

    from campaigns.sending import deliveries_claim, deliveries_hand_over

    # given: a worker claimed two deliveries, handed one to the provider, and died
    settings.CAMPAIGN_LEASE_SECONDS = 60
    run = sending_run(3)
    ids = sorted(Delivery.objects.filter(run=run).values_list("pk", flat=True))
    claimed = deliveries_claim(delivery_ids=ids[:2])
    deliveries_hand_over(deliveries=claimed[:1], token=claimed[0].claimed_at, now=timezone.now(), counts=Counter())
    later = timezone.now() + timedelta(seconds=61)

    # when: a lease later
    with django_capture_on_commit_callbacks(execute=True):
        done = services.runs_sweep(now=later)

    # then: the one handed over is unknown (counted), the other and the untouched one go out again
    assert (done["released"], done["unknown"], done["dispatched"]) == (1, 1, 1)
    assert dict(Delivery.objects.filter(run=run).values_list("pk", "status")) == {
        ids[0]: "unknown", ids[1]: "pending", ids[2]: "pending"}
    assert queued == [("email", ids[1:])]
    run.refresh_from_db()
    assert (run.status, run.unknown, run.active_at) == ("sending", 1, later)


def test_the_sweep_leaves_a_run_someone_works_on(queued, django_capture_on_commit_callbacks):
    run = sending_run(2)
    CampaignRun.objects.filter(pk=run.pk).update(active_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_sweep(now=timezone.now() + timedelta(seconds=30))["dispatched"] == 0

    assert queued == []


def test_a_run_whose_messages_may_still_wait_in_its_queue_is_dispatched_again_only_after_a_long_wait(
        settings, monkeypatch, queued, django_capture_on_commit_callbacks):
    settings.CAMPAIGN_LEASE_SECONDS = 60
    run = sending_run(2)
    CampaignRun.objects.filter(pk=run.pk).update(active_at=timezone.now())
    monkeypatch.setattr(services, "broker_queue_length", lambda *, queue: 7 if queue == "email" else 0)

    with django_capture_on_commit_callbacks(execute=True):
        soon = services.runs_sweep(now=timezone.now() + timedelta(minutes=5))["dispatched"]
        late = services.runs_sweep(now=timezone.now() + timedelta(minutes=11))["dispatched"]

    assert (soon, late) == (0, 1) and len(queued) == 1


def test_a_run_whose_last_worker_died_after_sending_everything_is_finished_by_the_sweep(queued):
    run = sending_run(2)
    Delivery.objects.filter(run=run).update(status="sent", sent_at=timezone.now())

    assert services.runs_sweep()["finished"] == 1

    run.refresh_from_db()
    assert (run.status, run.sent) == ("done", 2)


def test_unknown_outcomes_do_not_keep_a_run_from_finishing(queued):
    run = sending_run(2)
    Delivery.objects.filter(run=run).update(status="unknown", unknown_at=timezone.now())

    services.runs_sweep()

    run.refresh_from_db()
    assert (run.status, run.unknown) == ("done", 2)


def test_a_run_that_lost_its_run_execute_message_is_materialized_again(settings, monkeypatch,
                                                                        django_capture_on_commit_callbacks):
    settings.CAMPAIGN_LEASE_SECONDS = 60
    customers_with_consent(1)
    run = services.campaign_launch(campaign=campaign_for())  # its run_execute message is lost
    requeued = []
    monkeypatch.setattr("campaigns.tasks.run_execute.delay", lambda run_id: requeued.append(run_id))

    with django_capture_on_commit_callbacks(execute=True):
        early = services.runs_sweep(now=timezone.now() + timedelta(minutes=5))["rematerialized"]
        late = services.runs_sweep(now=timezone.now() + timedelta(minutes=11))["rematerialized"]

    assert (early, late, requeued) == (0, 1, [run.pk])


def test_a_cancelled_run_whose_closing_message_was_lost_is_closed(settings, monkeypatch,
                                                                   django_capture_on_commit_callbacks):
    settings.CAMPAIGN_LEASE_SECONDS = 60
    run = sending_run(2)
    monkeypatch.setattr("campaigns.tasks.run_close_cancelled.delay", lambda run_id: None)  # lost
    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_cancel(campaign=run.campaign)
    closing = []
    monkeypatch.setattr("campaigns.tasks.run_close_cancelled.delay", lambda run_id: closing.append(run_id))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_sweep(now=timezone.now() + timedelta(seconds=61))["closing"] == 1

    assert closing == [run.pk]


def test_dispatching_marks_the_run_active_so_the_sweep_does_not_dispatch_it_twice(queued,
                                                                                 django_capture_on_commit_callbacks):
    run = sending_run(2)
    CampaignRun.objects.filter(pk=run.pk).update(active_at=None)

    with django_capture_on_commit_callbacks(execute=True):
        services.run_dispatch(run=run)
        assert services.runs_sweep(now=timezone.now() + timedelta(seconds=30))["dispatched"] == 0

    assert len(queued) == 1 and CampaignRun.objects.get(pk=run.pk).active_at is not None


def test_the_broker_queue_length_is_read_from_the_broker():
    # The filesystem broker of the test settings: an empty queue, or one the broker never saw.
    assert services.broker_queue_length(queue="email") == 0


# Unknown outcomes: re-sent only by an operator -------------------------------------------------


def test_re_sending_unknown_outcomes_reopens_the_run_and_notes_who_decided(queued, django_capture_on_commit_callbacks):
    run = sending_run(3)
    ids = sorted(Delivery.objects.filter(run=run).values_list("pk", flat=True))
    Delivery.objects.filter(pk=ids[0]).update(status="sent", sent_at=timezone.now())
    Delivery.objects.filter(pk__in=ids[1:]).update(status="unknown", unknown_at=timezone.now(), claimed_at=timezone.now(),
                                                   note="Outcome unknown since 10:00")
    services.runs_sweep()
    assert CampaignRun.objects.get(pk=run.pk).status == "done"

    with django_capture_on_commit_callbacks(execute=True):
        resent = services.deliveries_resend_unknown(deliveries=Delivery.objects.filter(pk__in=ids), by="alice")

    run.refresh_from_db()
    assert (resent, run.status, run.finished_at, run.unknown) == (2, "sending", None, 0)
    assert queued == [("email", ids[1:])]
    delivery = Delivery.objects.get(pk=ids[1])
    assert (delivery.status, delivery.claimed_at) == ("pending", None)
    assert delivery.note.startswith("Outcome unknown since 10:00\nRe-sent by alice at ")


def test_unknown_outcomes_of_a_cancelled_run_are_not_re_sent(queued):
    run = sending_run(1)
    Delivery.objects.filter(run=run).update(status="unknown")
    CampaignRun.objects.filter(pk=run.pk).update(status="cancelled")

    assert services.deliveries_resend_unknown(deliveries=Delivery.objects.all(), by="alice") == 0
    assert Delivery.objects.get(run=run).status == "unknown"


def test_progress_counts_unknown_outcomes_and_claims_as_on_their_way():
    run = sending_run(4)
    ids = sorted(Delivery.objects.filter(run=run).values_list("pk", flat=True))
    Delivery.objects.filter(pk=ids[0]).update(status="claimed")
    Delivery.objects.filter(pk=ids[1]).update(status="unknown")

    progress = services.run_progress(run=run)

    assert (progress["pending"], progress["sending"], progress["unknown"], progress["percent_done"]) == (2, 1, 1, 25.0)


def test_a_chunk_finishes_its_run_even_when_the_cache_is_down(monkeypatch):
    from django.core.cache import cache

    run = sending_run(1)
    Delivery.objects.filter(run=run).update(status="sent")

    def down(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(cache, "add", down)
    services.runs_after_chunk(run_ids={run.pk})

    assert CampaignRun.objects.get(pk=run.pk).status == "done"


# Quiet hours: a run that only waits for its customers' sending window ---------------------------


def _sms_outbox(settings):
    from pathlib import Path

    path = Path(settings.SMS_FILE_PATH)
    return [json.loads(line)["to"] for line in path.read_text().splitlines()] if path.exists() else []


def _run_waiting_for_new_york_mornings(**campaign_fields):
    """An SMS run launched at 18:00 Shanghai / 06:00 New York: Shanghai is sent at once, New York
    waits for 08:00 local (SMS quiet hours)."""
    from tests.campaigns.pipeline_helpers import NOON_UTC

    shanghai = customers_with_consent(2, channels=("sms",), timezone="Asia/Shanghai")
    new_york = customers_with_consent(3, channels=("sms",), timezone="America/New_York")
    campaign = campaign_for(channels=("sms",), **campaign_fields)
    run = services.campaign_launch(campaign=campaign, now=NOON_UTC, sync=True, transports=_sms_at(NOON_UTC))
    return campaign, run, shanghai, new_york


def _sms_at(moment):
    """The SMS transport checking quiet hours at ``moment`` rather than at the real time."""
    from campaigns.channels.sms import SmsTransport

    return {"sms": SmsTransport(clock=lambda: moment)}


def test_a_run_left_only_with_quiet_hours_deferrals_says_so_and_does_not_block_a_new_launch(settings):
    from tests.campaigns.pipeline_helpers import NOON_UTC

    settings.TIME_ZONE = "Asia/Shanghai"
    campaign, first, shanghai, new_york = _run_waiting_for_new_york_mornings(reentry_days=30)
    progress = services.run_progress(run=first, now=NOON_UTC)

    second = services.campaign_launch(campaign=campaign, now=NOON_UTC + timedelta(minutes=1), sync=True,
                                      transports=_sms_at(NOON_UTC + timedelta(minutes=1)))

    assert (first.status, first.sent, first.deferred_quiet) == ("sending", 2, 3)
    assert progress["status_display"] == "Waiting for quiet hours"
    assert progress["quiet_wait"] == "3 waiting for 20:00 (Asia/Shanghai)"  # 08:00 in New York
    assert progress["percent_done"] == 40.0
    # The new run skips everyone the first one reached or still has on its way.
    assert (second.status, second.targeted, second.sent, second.skipped_reentry) == ("done", 5, 0, 5)
    assert CampaignRun.objects.get(pk=first.pk).status == "sending"
    assert Campaign.objects.get(pk=campaign.pk).status == "running"


def test_nobody_is_contacted_twice_when_a_new_run_launches_while_the_old_one_waits(
        settings, monkeypatch, django_capture_on_commit_callbacks):
    from tests.campaigns.pipeline_helpers import NOON_UTC

    settings.SMS_BACKEND = "file"
    campaign, first, shanghai, new_york = _run_waiting_for_new_york_mornings(reentry_days=30)
    # One more customer joins the segment before the second launch: only they are new to it.
    late = customers_with_consent(1, channels=("sms",), timezone="Asia/Shanghai")
    second = services.campaign_launch(campaign=campaign, now=NOON_UTC + timedelta(minutes=1), sync=True,
                                      transports=_sms_at(NOON_UTC + timedelta(minutes=1)))
    morning = NOON_UTC + timedelta(hours=2, minutes=1)  # 08:01 in New York

    def send_in_the_morning(args, queue):
        result = deliveries_send_chunk(delivery_ids=args[0], channel=args[1], now=morning,
                                       transport=_sms_at(morning)["sms"], clock=lambda: morning)
        services.runs_after_chunk(run_ids=result.run_ids, force=True)

    monkeypatch.setattr("campaigns.tasks.send_chunk.apply_async", send_in_the_morning)

    # New York's morning: the per-minute pickup sends what waited.
    with django_capture_on_commit_callbacks(execute=True):
        due = services.deliveries_dispatch_due(now=morning)

    sent_to = _sms_outbox(settings)
    assert due == 3
    assert sorted(sent_to) == sorted(c.phone for c in [*shanghai, *new_york, *late])  # each exactly once
    assert (second.sent, second.skipped_reentry) == (1, 5)
    assert set(CampaignRun.objects.filter(campaign=campaign).values_list("status", flat=True)) == {"done"}
    assert Campaign.objects.get(pk=campaign.pk).status == "completed"


def test_without_a_re_entry_period_a_waiting_run_still_blocks_a_new_launch():
    from tests.campaigns.pipeline_helpers import NOON_UTC

    campaign, first, _shanghai, _new_york = _run_waiting_for_new_york_mornings(reentry_days=0)

    with pytest.raises(ValidationError, match=r"Run #1 waits for quiet hours \(3 waiting for .*set a re-entry period"):
        services.campaign_launch(campaign=campaign, now=NOON_UTC + timedelta(minutes=1))

    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_a_run_with_deliveries_still_pending_besides_deferred_ones_blocks_a_new_launch():
    from tests.campaigns.pipeline_helpers import NOON_UTC

    campaign, first, _shanghai, new_york = _run_waiting_for_new_york_mornings(reentry_days=30)
    Delivery.objects.filter(run=first, customer=new_york[0]).update(status="pending", not_before=None)

    with pytest.raises(ValidationError, match="still in progress"):
        services.campaign_launch(campaign=campaign, now=NOON_UTC + timedelta(minutes=1))


# Progress: offers granted ----------------------------------------------------------------------


def test_progress_counts_the_offers_granted_by_the_run_as_it_sends():
    from tests.factories import OfferFactory

    customers_with_consent(3)
    campaign = campaign_for(offer=OfferFactory())
    run = services.campaign_launch(campaign=campaign, sync=True)
    # The stored counter lags while chunks are sent; the live progress counts the grants.
    CampaignRun.objects.filter(pk=run.pk).update(offers_granted=0, status=CampaignRun.Status.SENDING)

    progress = services.run_progress(run=CampaignRun.objects.select_related("campaign").get(pk=run.pk))

    assert (progress["sent"], progress["offers_granted"]) == (3, 3)


def test_progress_of_a_finished_run_reads_the_offers_granted_stored_when_it_finished(django_assert_num_queries):
    from tests.factories import OfferFactory

    customers_with_consent(3)
    campaign = campaign_for(offer=OfferFactory())
    run = services.campaign_launch(campaign=campaign, sync=True)
    run = CampaignRun.objects.select_related("campaign").get(pk=run.pk)
    assert (run.status, run.offers_granted) == (CampaignRun.Status.DONE, 3)  # run_finish_if_done stored it

    # Polled every 2 s for up to ten runs: a finished run's grants are not counted again.
    with django_assert_num_queries(1):  # the grouped count of its deliveries
        progress = services.run_progress(run=run)

    assert progress["offers_granted"] == 3
