"""Celery tasks of the consent app: thin, idempotent, each a call to a service."""

import logging

from celery import shared_task

from consent import services

logger = logging.getLogger(__name__)


def sms_backend_for_polling():
    """The configured SMS backend (``campaigns.channels.sms``), or None when that module is
    not installed. Looked up at call time so tests and other markets can swap it."""
    try:
        from campaigns.channels.sms import sms_backend
    except ImportError:
        logger.warning("sms_replies_pull_skipped reason=no_sms_backend_module")
        return None
    return sms_backend()


@shared_task(name="consent.sms_replies_pull", ignore_result=True)
def sms_replies_pull() -> dict[str, int]:
    """Beat, every 5 minutes: record replies from SMS providers that only offer polling.

    Safe to run twice or concurrently: replies are unique by provider id. The backend comes
    from ``sms_backend_for_polling`` (tests replace that function with a fake).
    """
    backend = sms_backend_for_polling()
    if backend is None or not callable(getattr(backend, "fetch_replies", None)):
        return {"pulled": 0, "recorded": 0, "duplicate": 0, "failed": 0}
    try:
        counts = services.sms_replies_pull(backend=backend)
    except NotImplementedError:
        # A push-only provider: its replies arrive at /consent/sms/inbound/ instead.
        counts = {"pulled": 0, "recorded": 0, "duplicate": 0, "failed": 0}
    logger.info("sms_replies_pull %s", " ".join(f"{key}={value}" for key, value in counts.items()))
    return counts
