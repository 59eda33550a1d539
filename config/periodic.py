"""Periodic work, declared in code. `manage.py setup_periodic_tasks` turns this list into
django-celery-beat rows (never create them by hand in the admin).

Each entry: name, task path, crontab fields (minute, hour, day_of_week, day_of_month,
month_of_year), and a one-line comment saying when it runs.

Format of an entry (a dict; append yours, keep the comment line above it):

    # Every hour at minute 5.
    {
        "name": "system: lifecycle evaluation",     # unique; must start with PERIODIC_TASK_PREFIX
        "task": "reactivation.lifecycle_evaluate",  # the registered Celery task name
        "crontab": {"minute": "5", "hour": "*"},    # celery crontab fields; missing ones are "*"
        "kwargs": {},                               # optional, JSON-serializable keyword arguments
        "queue": "default",                         # optional, a Celery queue name
        "expire_seconds": 3300,                     # optional: drop the run if not started in time
    },

Crontabs are read in settings.TIME_ZONE. setup_periodic_tasks creates and updates these rows and
disables (never deletes) rows whose name starts with PERIODIC_TASK_PREFIX but are no longer listed
here; other rows (e.g. the schedules campaigns create for themselves) are left alone.
"""

PERIODIC_TASK_PREFIX = "system: "

PERIODIC_TASKS: list[dict] = [
    # Every hour at minute 5 (00:05, 01:05, ...): re-classify every customer's lifecycle state.
    {
        "name": "system: lifecycle evaluation",
        "task": "reactivation.lifecycle_evaluate",
        "crontab": {"minute": "5", "hour": "*"},
        # A run still queued when the next one is due is pointless.
        "expire_seconds": 55 * 60,
    },
    # Every day at 03:15: recompute RFM scores, after the night's imports and before office hours.
    {
        "name": "system: RFM scores",
        "task": "reactivation.rfm_recompute",
        "crontab": {"minute": "15", "hour": "3"},
        "expire_seconds": 6 * 60 * 60,
    },
    # Every minute: send deliveries whose quiet-hours deferral or retry back-off has ended.
    {
        "name": "system: dispatch due deliveries",
        "task": "campaigns.dispatch_due",
        "crontab": {"minute": "*"},
        "queue": "default",
        "expire_seconds": 55,
    },
    # Every minute: recover what dead workers held and re-dispatch runs whose chunk messages were lost.
    {
        "name": "system: sweep stranded deliveries",
        "task": "campaigns.sweep",
        "crontab": {"minute": "*"},
        "queue": "default",
        "expire_seconds": 55,
    },
    # Every hour at minute 25: delete uploads nobody confirmed within IMPORT_DRAFT_HOURS (import
    # drafts and django-import-export previews; they hold personal data).
    {
        "name": "system: expire import drafts",
        "task": "reactivation.import_drafts_expire",
        "crontab": {"minute": "25", "hour": "*"},
        "queue": "default",
        "expire_seconds": 55 * 60,
    },
    # Every 10 minutes: recount every segment's cached size (the segment list shows it with its age).
    {
        "name": "system: segment sizes",
        "task": "reactivation.segment_sizes_refresh",
        "crontab": {"minute": "*/10"},
        "queue": "default",
        "expire_seconds": 9 * 60,
    },
    # Every 5 minutes: record SMS replies (TD, 退订, STOP, START...) from providers that only offer
    # polling, so opt-outs are honoured even without a webhook.
    {
        "name": "system: pull SMS replies",
        "task": "consent.sms_replies_pull",
        "crontab": {"minute": "*/5"},
        "queue": "default",
        "expire_seconds": 4 * 60,
    },
]
