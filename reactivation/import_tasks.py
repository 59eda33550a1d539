"""Celery tasks for bulk imports (thin: look the job up, call the service)."""

from celery import shared_task

from reactivation.imports.jobs import WAIT, import_job_execute
from reactivation.imports.jobs import import_drafts_expire as drafts_expire

# How long a job waits before asking again whether the job ahead of it has finished.
WAIT_SECONDS = 10


@shared_task(bind=True, max_retries=None, acks_late=True, ignore_result=True)
def import_job_run(self, job_id: int) -> str:
    """Run one ImportJob. Safe to deliver twice: a finished job is skipped, a queued one waits its turn."""
    outcome = import_job_execute(job_id=job_id)
    if outcome == WAIT:
        raise self.retry(countdown=WAIT_SECONDS)
    return outcome


@shared_task(name="reactivation.import_drafts_expire", ignore_result=True)
def import_drafts_expire() -> dict[str, int]:
    """Beat, hourly: expire import drafts nobody confirmed within IMPORT_DRAFT_HOURS (their
    uploaded files deleted) and stale django-import-export previews; returns their counts."""
    return drafts_expire()
