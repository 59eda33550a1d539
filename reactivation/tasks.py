"""Celery tasks of the reactivation app: thin, idempotent, each a call to a service.

Each is scheduled by beat from config/periodic.py (the lifecycle follow-up is queued by
``reactivation.lifecycle.lifecycle_follow_activity``) and is safe to run twice or to overlap
(lifecycle evaluations serialize themselves on PostgreSQL and write only what changed;
rfm_recompute is a pure function of the current rollups; a segment's size is a count, stored with
its time).
"""

from celery import shared_task

from reactivation.import_tasks import import_drafts_expire, import_job_run  # noqa: F401  (registers them: autodiscovery reads tasks.py only)
from reactivation.lifecycle import lifecycle_evaluate, lifecycle_evaluate_customers
from reactivation.models import Segment
from reactivation.rfm import rfm_recompute
from reactivation.segment_sizes import segment_sizes_refresh


@shared_task(name="reactivation.lifecycle_evaluate", ignore_result=True)
def lifecycle_evaluate_task() -> dict[str, int]:
    """Re-evaluate every customer's lifecycle state now; returns the transition counts."""
    return lifecycle_evaluate()


@shared_task(name="reactivation.lifecycle_evaluate_customers", ignore_result=True)
def lifecycle_evaluate_customers_task(customer_ids: list[int]) -> dict[str, int]:
    """Re-evaluate these customers, waiting for the lifecycle lock: the follow-up of activity
    that arrived while the full evaluation held it (``lifecycle_follow_activity``)."""
    return lifecycle_evaluate_customers(customer_ids=customer_ids)


@shared_task(name="reactivation.rfm_recompute", ignore_result=True)
def rfm_recompute_task() -> int:
    """Recompute every customer's RFM scores; returns the number of customers scored."""
    return rfm_recompute()


@shared_task(name="reactivation.segment_sizes_refresh", ignore_result=True)
def segment_sizes_refresh_task(segment_id: int | None = None) -> int:
    """Recount every segment's cached size (beat), or only ``segment_id``'s (after it is saved);
    returns the number of segments counted (0 for a segment deleted meanwhile)."""
    segments = Segment.objects.all() if segment_id is None else Segment.objects.filter(pk=segment_id)
    return segment_sizes_refresh(segments=segments)
