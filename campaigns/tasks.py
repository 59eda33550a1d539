"""Celery tasks of the campaign pipeline: thin, idempotent, each a call to a service.

Queues: ``run_execute``, ``run_close_cancelled``, ``dispatch_due`` and ``sweep`` on ``default``
(CELERY_TASK_DEFAULT_QUEUE: no route needed); ``send_chunk`` on the channel's queue (``email``,
``sms``, ``in_app``), chosen when the chunk is queued. acks_late (settings): a chunk of a killed
worker is redelivered and redone. None of them has to arrive: a lost message only delays work,
which ``sweep`` finds again in the delivery rows; and none does harm twice: deliveries already
sent, held or of unknown outcome are not claimed again.
"""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from campaigns import services
from campaigns.models import CampaignRun

logger = logging.getLogger(__name__)


@shared_task(name="campaigns.run_execute", acks_late=True, ignore_result=True)
def run_execute(run_id: int) -> None:
    run = CampaignRun.objects.filter(pk=run_id).first()
    if run is None:
        logger.warning("run_execute_missing run=%s", run_id)
        return
    services.run_execute(run=run)


@shared_task(name="campaigns.run_close_cancelled", acks_late=True, ignore_result=True)
def run_close_cancelled(run_id: int) -> int:
    """Queued by campaign_cancel on commit: skip the cancelled run's pending and deferred
    deliveries in batches. Safe to redeliver: a second run closes nothing more."""
    run = CampaignRun.objects.filter(pk=run_id).first()
    if run is None:
        logger.warning("run_close_cancelled_missing run=%s", run_id)
        return 0
    return services.run_close_cancelled(run=run)


# A chunk that fails on a database error (the server restarting, a deadlock, a timeout) is
# retried as a whole, later: it is idempotent. What the failing chunk could still record is
# already deferred (sending._defer_after_crash); this covers the case where the database was
# too far gone to record even that.
@shared_task(name="campaigns.send_chunk", acks_late=True, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=30, retry_backoff_max=600,
             retry_jitter=True, max_retries=8)
def send_chunk(delivery_ids: list[int], channel: str) -> dict:
    result = services.chunk_send(delivery_ids=delivery_ids, channel=channel)
    return dict(result.counts)


@shared_task(name="campaigns.dispatch_due", ignore_result=True)
def dispatch_due() -> int:
    """Beat, every minute: deferred (quiet hours) and retried deliveries that are due."""
    return services.deliveries_dispatch_due()


@shared_task(name="campaigns.sweep", ignore_result=True)
def sweep() -> dict:
    """Beat, every minute: what dead workers held and lost messages stranded (services.runs_sweep)."""
    return services.runs_sweep()


@shared_task(name="campaigns.launch_scheduled", ignore_result=True)
def launch_scheduled(campaign_id: int) -> int | None:
    """Run by the campaign's own beat row (see services.campaign_schedule)."""
    run = services.campaign_launch_scheduled(campaign_id=campaign_id)
    return run.pk if run else None
