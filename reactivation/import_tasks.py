"""Celery tasks for bulk imports (thin: look the job up, call the service)."""

from celery import shared_task

from reactivation.imports.jobs import WAIT, import_job_execute

# How long a job waits before asking again whether the job ahead of it has finished.
WAIT_SECONDS = 10


@shared_task(bind=True, max_retries=None, acks_late=True, ignore_result=True)
def import_job_run(self, job_id: int) -> str:
    """Run one ImportJob. Safe to deliver twice: a finished job is skipped, a queued one waits its turn."""
    outcome = import_job_execute(job_id=job_id)
    if outcome == WAIT:
        raise self.retry(countdown=WAIT_SECONDS)
    return outcome
