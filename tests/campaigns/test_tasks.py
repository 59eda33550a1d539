"""Celery tasks of the pipeline: thin wrappers, per-channel queues, acks_late."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from campaigns import tasks
from campaigns.models import CampaignRun, Delivery
from campaigns.services import campaign_cancel, campaign_launch, campaign_schedule, run_dispatch
from campaigns.materialize import run_materialize
from tests.campaigns.pipeline_helpers import (
    campaign_for, customers_with_consent,
)

pytestmark = pytest.mark.django_db


def test_sending_tasks_acknowledge_late_so_a_killed_workers_chunk_is_redone():
    assert tasks.send_chunk.acks_late is True
    assert tasks.run_execute.acks_late is True
    assert tasks.send_chunk.name == "campaigns.send_chunk"
    assert tasks.dispatch_due.name == "campaigns.dispatch_due"


def test_closing_a_cancelled_run_acknowledges_late_on_the_default_queue():
    from config.celery import app

    assert (tasks.run_close_cancelled.name, tasks.run_close_cancelled.acks_late) == ("campaigns.run_close_cancelled", True)
    assert app.amqp.router.route({}, tasks.run_close_cancelled.name)["queue"].name == "default"


def test_chunks_go_to_their_channels_queue(monkeypatch, django_capture_on_commit_callbacks):
    customers_with_consent(2, channels=("email",))
    customers_with_consent(3, channels=("in_app",))
    run = campaign_launch(campaign=campaign_for(channels=("email", "in_app")))
    run_materialize(run=run)
    queued = []
    monkeypatch.setattr(tasks.send_chunk, "apply_async", lambda args, queue: queued.append((queue, len(args[0]), args[1])))

    with django_capture_on_commit_callbacks(execute=True):
        chunks = run_dispatch(run=run)

    assert chunks == 2
    assert sorted(queued) == [("email", 2, "email"), ("in_app", 3, "in_app")]


def test_run_execute_and_send_chunk_tasks_run_the_pipeline(settings, django_capture_on_commit_callbacks, monkeypatch):
    from config.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = True
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    customers_with_consent(3)
    run = campaign_launch(campaign=campaign_for())

    with django_capture_on_commit_callbacks(execute=True):
        tasks.run_execute(run.pk)

    run.refresh_from_db()
    assert (run.status, run.sent) == ("done", 3)
    assert len(mail.outbox) == 3
    # Running the chunk again (a redelivered message) sends nothing more.
    counts = tasks.send_chunk(list(Delivery.objects.filter(run=run).values_list("pk", flat=True)), "email")
    assert counts == {} and len(mail.outbox) == 3


def test_run_execute_for_a_missing_run_is_logged_not_raised(caplog):
    tasks.run_execute(999_999)
    assert "run_execute_missing run=999999" in caplog.text


def test_launch_scheduled_task_starts_a_run_for_a_scheduled_campaign(django_capture_on_commit_callbacks, monkeypatch):
    campaign = campaign_for(schedule_kind="once", scheduled_at=timezone.now() + timedelta(minutes=5))
    campaign_schedule(campaign=campaign)
    monkeypatch.setattr(tasks.run_execute, "delay", lambda run_id: None)

    with django_capture_on_commit_callbacks(execute=True):
        run_id = tasks.launch_scheduled(campaign.pk)

    assert CampaignRun.objects.get(pk=run_id).trigger == "schedule"


def test_dispatch_due_task_returns_the_number_queued():
    assert tasks.dispatch_due() == 0


def test_the_sweep_task_runs_the_sweeper_on_the_default_queue(monkeypatch):
    from config.celery import app

    assert (tasks.sweep.name, app.amqp.router.route({}, tasks.sweep.name)["queue"].name) == ("campaigns.sweep", "default")
    assert tasks.sweep() == {"released": 0, "failed": 0, "unknown": 0, "finished": 0, "dispatched": 0,
                             "rematerialized": 0, "closing": 0}


def test_a_cancelled_campaigns_queued_chunk_sends_nothing_and_the_close_task_skips_its_deliveries(
        monkeypatch, django_capture_on_commit_callbacks):
    customers_with_consent(3)
    campaign = campaign_for()
    run = campaign_launch(campaign=campaign)
    run_materialize(run=run)
    chunks, closing = [], []
    monkeypatch.setattr(tasks.send_chunk, "apply_async", lambda args, queue: chunks.append(args))
    monkeypatch.setattr(tasks.run_close_cancelled, "delay", lambda run_id: closing.append(run_id))
    with django_capture_on_commit_callbacks(execute=True):
        run_dispatch(run=run)
    with django_capture_on_commit_callbacks(execute=True):
        campaign_cancel(campaign=campaign)
    [[ids, channel]] = chunks

    # when: the chunk queued before the cancel reaches a worker, before and after the close task
    before_close = tasks.send_chunk(ids, channel)
    closed = [tasks.run_close_cancelled(run_id) for run_id in closing]
    after_close = tasks.send_chunk(ids, channel)
    closed_again = tasks.run_close_cancelled(run.pk)  # a redelivered close task

    assert (before_close, after_close) == ({}, {})
    assert not mail.outbox
    assert (closing, closed, closed_again) == ([run.pk], [3], 0)
    assert set(Delivery.objects.filter(run=run).values_list("status", "skip_reason")) == {("skipped", "cancelled")}
    run.refresh_from_db()
    assert (run.status, run.sent, run.skipped_cancelled) == ("cancelled", 0, 3)


def test_close_task_for_a_missing_run_is_logged_not_raised(caplog):
    assert tasks.run_close_cancelled(999_999) == 0
    assert "run_close_cancelled_missing run=999999" in caplog.text


def test_a_chunk_that_fails_on_a_database_error_is_retried_by_celery(monkeypatch):
    from django.db import OperationalError

    from campaigns import services

    class RetryRequested(Exception):
        pass

    def database_gone(*, delivery_ids, channel):
        raise OperationalError("server closed the connection unexpectedly")

    def retry(*args, **kwargs):
        raise RetryRequested(kwargs)

    monkeypatch.setattr(services, "chunk_send", database_gone)
    monkeypatch.setattr(tasks.send_chunk, "retry", retry)

    with pytest.raises(RetryRequested) as raised:
        tasks.send_chunk.run([1, 2], "email")

    requested = raised.value.args[0]
    # Full jitter: anywhere from now to the first back-off (30 s).
    assert isinstance(requested["exc"], OperationalError) and 0 <= requested["countdown"] <= 30
    assert tasks.send_chunk.max_retries == 8


def test_a_chunk_that_fails_on_a_bug_is_not_retried_by_celery(monkeypatch):
    from campaigns import services

    def bug(*, delivery_ids, channel):
        raise KeyError("a bug, not the database")

    monkeypatch.setattr(services, "chunk_send", bug)
    monkeypatch.setattr(tasks.send_chunk, "retry", lambda *a, **k: pytest.fail("retried"))

    with pytest.raises(KeyError):
        tasks.send_chunk.run([1, 2], "email")


def test_in_app_chunks_carry_twice_as_many_deliveries_as_email_and_sms():
    from campaigns.services import _chunks_by_channel

    rows = [(pk, "in_app") for pk in range(2500)] + [(pk, "email") for pk in range(2500, 3700)]

    sizes = [(channel, len(ids)) for channel, ids in _chunks_by_channel(rows)]

    assert sizes == [("in_app", 1000), ("in_app", 1000), ("email", 500), ("email", 500), ("in_app", 500), ("email", 200)]
