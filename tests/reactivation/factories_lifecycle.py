"""Test helpers for the lifecycle follow-up: its task messages, and a second PostgreSQL
connection holding the lifecycle lock as the hourly full evaluation does while it runs."""

import contextlib
import threading

from celery import current_app
from django.db import connections

from reactivation.lifecycle import ADVISORY_LOCK_ID, FOLLOW_TASK_NAME


def follow_up_messages(monkeypatch) -> list[dict]:
    """The lifecycle follow-up task's messages (apply_async keyword arguments), kept in the
    returned list instead of sent to the broker."""
    messages = []
    monkeypatch.setattr(current_app.tasks[FOLLOW_TASK_NAME], "apply_async",
                        lambda *args, **kwargs: messages.append(kwargs))
    return messages


@contextlib.contextmanager
def lifecycle_lock_held_elsewhere(*, timeout: float = 10.0):
    """Hold the lifecycle advisory lock from another connection for the duration of the block."""
    held, release = threading.Event(), threading.Event()
    failure = []

    def hold():
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_ID])
                held.set()
                release.wait(timeout)
                cursor.execute("COMMIT")
        except Exception as exc:  # surfaced in the test thread below
            failure.append(exc)
            held.set()
        finally:
            other.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(timeout), "the other connection never got the lock"
    if failure:
        raise failure[0]
    try:
        yield release
    finally:
        release.set()
        thread.join(timeout)
