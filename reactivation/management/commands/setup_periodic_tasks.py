"""Create or update the django-celery-beat rows declared in config/periodic.py.

Idempotent: run it after every migrate (``make run`` does). Ends with one summary line:
``created=N updated=N unchanged=N disabled=N``.
"""

import json

from celery.schedules import crontab as celery_crontab
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from config import periodic

CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
ENTRY_KEYS = {"name", "task", "crontab", "kwargs", "queue", "expire_seconds"}
DESCRIPTION = "Declared in config/periodic.py: change it there and run `manage.py setup_periodic_tasks`."


class Command(BaseCommand):
    help = "Create or update the Celery beat schedule declared in config/periodic.py."

    def handle(self, *args, **options):
        entries = [_entry_validate(entry, index) for index, entry in enumerate(periodic.PERIODIC_TASKS)]
        names = [entry["name"] for entry in entries]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise CommandError(f"Duplicate periodic task names in config/periodic.py: {', '.join(duplicates)}")
        _tasks_check_registered({entry["task"] for entry in entries})

        counts = dict.fromkeys(("created", "updated", "unchanged", "disabled"), 0)
        with transaction.atomic():
            for entry in entries:
                counts[_task_ensure(entry)] += 1
            counts["disabled"] = (
                PeriodicTask.objects.filter(name__startswith=periodic.PERIODIC_TASK_PREFIX, enabled=True)
                .exclude(name__in=names)
                .update(enabled=False, last_run_at=None)
            )
            if counts["created"] or counts["updated"] or counts["disabled"]:
                # QuerySet.update() sends no signal: tell beat's DatabaseScheduler to reload.
                PeriodicTasks.update_changed()
        self.stdout.write(" ".join(f"{key}={value}" for key, value in counts.items()))


def _entry_validate(entry: dict, index: int) -> dict:
    where = f"config/periodic.py entry {index}"
    if not isinstance(entry, dict):
        raise CommandError(f"{where}: must be a dict.")
    if unknown := set(entry) - ENTRY_KEYS:
        raise CommandError(f"{where}: unknown keys {sorted(unknown)}.")
    name, task = entry.get("name"), entry.get("task")
    if not isinstance(name, str) or not name.startswith(periodic.PERIODIC_TASK_PREFIX):
        raise CommandError(f"{where}: name must start with {periodic.PERIODIC_TASK_PREFIX!r}.")
    if not isinstance(task, str) or not task:
        raise CommandError(f"{where} ({name}): task is required.")
    fields = entry.get("crontab")
    if not isinstance(fields, dict) or not fields or set(fields) - set(CRONTAB_FIELDS):
        raise CommandError(f"{where} ({name}): crontab must be a dict of {', '.join(CRONTAB_FIELDS)}.")
    fields = {field: str(fields.get(field, "*")).strip() for field in CRONTAB_FIELDS}
    try:
        celery_crontab(**fields)  # parses every field: a typo fails here, not silently in beat
    except (ValueError, TypeError) as exc:
        raise CommandError(f"{where} ({name}): bad crontab {fields}: {exc}") from None
    kwargs = entry.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CommandError(f"{where} ({name}): kwargs must be a dict.")
    try:
        kwargs_json = json.dumps(kwargs, sort_keys=True)
    except TypeError as exc:
        raise CommandError(f"{where} ({name}): kwargs must be JSON-serializable: {exc}") from None
    expire_seconds = entry.get("expire_seconds")
    if expire_seconds is not None and (not isinstance(expire_seconds, int) or expire_seconds <= 0):
        raise CommandError(f"{where} ({name}): expire_seconds must be a positive integer.")
    return {"name": name, "task": task, "crontab": fields, "kwargs": kwargs_json,
            "queue": entry.get("queue") or None, "expire_seconds": expire_seconds}


def _tasks_check_registered(task_names: set[str]) -> None:
    from config.celery import app

    app.loader.import_default_modules()  # runs autodiscovery of every app's tasks.py
    if unknown := sorted(task_names - set(app.tasks)):
        raise CommandError(f"Unknown Celery tasks in config/periodic.py: {', '.join(unknown)}")


def _crontab_for(fields: dict) -> CrontabSchedule:
    # Point at a matching row rather than editing the task's current one: crontab rows can be
    # shared with other tasks (campaign schedules), whose timing must not move with ours.
    schedule = CrontabSchedule.objects.filter(**fields, timezone=settings.TIME_ZONE).order_by("id").first()
    return schedule or CrontabSchedule.objects.create(**fields, timezone=settings.TIME_ZONE)


def _task_ensure(entry: dict) -> str:
    """Create or update one declared task; returns "created", "updated" or "unchanged"."""
    desired = {
        "task": entry["task"],
        "crontab": _crontab_for(entry["crontab"]),
        "interval": None,
        "solar": None,
        "clocked": None,
        "args": "[]",
        "kwargs": entry["kwargs"],
        "queue": entry["queue"],
        "expire_seconds": entry["expire_seconds"],
        "expires": None,
        "one_off": False,
        "enabled": True,
        "description": DESCRIPTION,
    }
    task = PeriodicTask.objects.filter(name=entry["name"]).first()
    if task is None:
        PeriodicTask.objects.create(name=entry["name"], **desired)
        return "created"
    changed = [field for field, value in desired.items() if getattr(task, field) != value]
    if not changed:
        return "unchanged"
    for field in changed:
        setattr(task, field, desired[field])
    task.save()  # save() (not update()) runs beat's validation and change signal
    return "updated"
