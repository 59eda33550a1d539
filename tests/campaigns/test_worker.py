"""A run through a real Celery worker and broker (Redis on CI): queues, acks, commits."""

import time

import pytest
from django.core import mail

from campaigns.models import CampaignRun, InboxMessage
from campaigns.services import campaign_launch
from tests.campaigns.pipeline_helpers import (
    campaign_for, customers_with_consent,
)


@pytest.mark.broker
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_campaign_is_sent_by_a_real_worker_on_the_channel_queues(settings, monkeypatch):
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    customers_with_consent(3, channels=("email",))
    customers_with_consent(2, channels=("in_app",))
    campaign = campaign_for(channels=("email", "in_app"))

    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=30,
                      queues=["default", "email", "sms", "in_app"]):
        run = campaign_launch(campaign=campaign)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.status == CampaignRun.Status.DONE:
                break
            time.sleep(0.2)

    assert (run.status, run.targeted, run.sent) == ("done", 5, 5)
    assert len(mail.outbox) == 3
    assert InboxMessage.objects.count() == 2
