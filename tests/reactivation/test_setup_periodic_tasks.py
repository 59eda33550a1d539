import copy
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from config import periodic

pytestmark = pytest.mark.django_db

DECLARED = copy.deepcopy(periodic.PERIODIC_TASKS)
N = len(DECLARED)


def run() -> str:
    out = StringIO()
    call_command("setup_periodic_tasks", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    return lines[0]


def cron(task: PeriodicTask) -> str:
    c = task.crontab
    return f"{c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week} {c.timezone}"


@pytest.fixture
def declared(monkeypatch):
    """A private copy of PERIODIC_TASKS that a test may edit."""
    entries = copy.deepcopy(DECLARED)
    monkeypatch.setattr(periodic, "PERIODIC_TASKS", entries)
    return entries


def test_the_declared_schedule(declared):
    assert {(e["name"], e["task"], tuple(sorted(e["crontab"].items()))) for e in declared} == {
        ("system: lifecycle evaluation", "reactivation.lifecycle_evaluate", (("hour", "*"), ("minute", "5"))),
        ("system: RFM scores", "reactivation.rfm_recompute", (("hour", "3"), ("minute", "15"))),
        ("system: dispatch due deliveries", "campaigns.dispatch_due", (("minute", "*"),)),
        ("system: sweep stranded deliveries", "campaigns.sweep", (("minute", "*"),)),
        ("system: pull SMS replies", "consent.sms_replies_pull", (("minute", "*/5"),)),
        ("system: expire import drafts", "reactivation.import_drafts_expire", (("hour", "*"), ("minute", "25"))),
        ("system: segment sizes", "reactivation.segment_sizes_refresh", (("minute", "*/10"),)),
    }


def test_first_run_creates_the_rows_in_the_project_time_zone(declared, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    assert run() == f"created={N} updated=0 unchanged=0 disabled=0"
    tasks = {t.name: t for t in PeriodicTask.objects.select_related("crontab")}
    assert cron(tasks["system: lifecycle evaluation"]) == "5 * * * * Asia/Shanghai"
    assert cron(tasks["system: RFM scores"]) == "15 3 * * * Asia/Shanghai"
    lifecycle = tasks["system: lifecycle evaluation"]
    assert (lifecycle.task, lifecycle.enabled, lifecycle.args, lifecycle.kwargs, lifecycle.expire_seconds) == (
        "reactivation.lifecycle_evaluate", True, "[]", "{}", 3300)
    assert PeriodicTasks.last_change() is not None


def test_second_run_changes_nothing(declared):
    run()
    last_change = PeriodicTasks.last_change()
    crontabs = CrontabSchedule.objects.count()
    assert run() == f"created=0 updated=0 unchanged={N} disabled=0"
    assert PeriodicTask.objects.count() == N
    assert CrontabSchedule.objects.count() == crontabs
    assert PeriodicTasks.last_change() == last_change


def test_a_changed_crontab_updates_the_task_without_moving_a_shared_schedule(declared):
    run()
    lifecycle = PeriodicTask.objects.get(name="system: lifecycle evaluation")
    shared = lifecycle.crontab
    campaign = PeriodicTask.objects.create(name="campaign: weekly", task="campaigns.launch_scheduled", crontab=shared)
    declared[0]["crontab"] = {"minute": "10", "hour": "*/2"}
    assert run() == f"created=0 updated=1 unchanged={N - 1} disabled=0"
    lifecycle.refresh_from_db()
    campaign.refresh_from_db()
    assert cron(lifecycle).startswith("10 */2 * * *")
    assert cron(campaign).startswith("5 * * * *")


def test_a_task_edited_or_disabled_by_hand_is_put_back(declared):
    run()
    PeriodicTask.objects.filter(name="system: RFM scores").update(enabled=False, kwargs='{"x": 1}')
    assert run() == f"created=0 updated=1 unchanged={N - 1} disabled=0"
    rfm = PeriodicTask.objects.get(name="system: RFM scores")
    assert (rfm.enabled, rfm.kwargs) == (True, "{}")


def test_a_removed_system_task_is_disabled_not_deleted_and_others_are_left_alone(declared):
    run()
    other = PeriodicTask.objects.create(name="campaign: spring", task="campaigns.launch_scheduled",
                                        crontab=CrontabSchedule.objects.first())
    declared[:] = [e for e in declared if e["name"] != "system: RFM scores"]  # RFM is no longer declared
    before = PeriodicTasks.last_change()
    assert run() == f"created=0 updated=0 unchanged={N - 1} disabled=1"
    assert PeriodicTask.objects.get(name="system: RFM scores").enabled is False
    assert PeriodicTask.objects.get(pk=other.pk).enabled is True
    assert PeriodicTasks.last_change() > before
    assert run() == f"created=0 updated=0 unchanged={N - 1} disabled=0"


def test_a_readded_task_is_enabled_again(declared):
    run()
    removed = declared.pop()
    run()
    declared.append(removed)
    assert run() == f"created=0 updated=1 unchanged={N - 1} disabled=0"
    assert PeriodicTask.objects.filter(enabled=True).count() == N


def test_kwargs_queue_and_expiry_are_applied(declared):
    declared.append({"name": "system: extra", "task": "reactivation.rfm_recompute", "crontab": {"minute": "0"},
                     "kwargs": {"b": 2, "a": 1}, "queue": "default"})
    assert run() == f"created={N + 1} updated=0 unchanged=0 disabled=0"
    extra = PeriodicTask.objects.get(name="system: extra")
    assert (extra.kwargs, extra.queue, extra.expire_seconds, cron(extra).rsplit(" ", 1)[0]) == (
        '{"a": 1, "b": 2}', "default", None, "0 * * * *")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "lifecycle again", "task": "reactivation.lifecycle_evaluate", "crontab": {"minute": "1"}},
         "must start with 'system: '"),
        ({"name": "system: typo", "task": "reactivation.lifecycle_evaluat", "crontab": {"minute": "1"}},
         "Unknown Celery tasks"),
        ({"name": "system: bad", "task": "reactivation.rfm_recompute", "crontab": {"minute": "61"}}, "bad crontab"),
        ({"name": "system: bad", "task": "reactivation.rfm_recompute", "crontab": {"minutes": "1"}}, "crontab must be"),
        ({"name": "system: bad", "task": "reactivation.rfm_recompute", "crontab": {}}, "crontab must be"),
        ({"name": "system: bad", "task": "reactivation.rfm_recompute", "crontab": {"minute": "1"}, "when": "x"},
         "unknown keys"),
        ({"name": "system: bad", "task": "reactivation.rfm_recompute", "crontab": {"minute": "1"}, "kwargs": [1]},
         "kwargs must be a dict"),
        ({"name": "system: bad", "task": "reactivation.rfm_recompute", "crontab": {"minute": "1"},
          "expire_seconds": 0}, "expire_seconds"),
        ({"name": "system: RFM scores", "task": "reactivation.rfm_recompute", "crontab": {"minute": "1"}},
         "Duplicate periodic task names"),
    ],
)
def test_a_bad_declaration_is_refused_and_nothing_is_written(declared, entry, message):
    declared.append(entry)
    with pytest.raises(CommandError, match=message):
        call_command("setup_periodic_tasks", stdout=StringIO())
    assert not PeriodicTask.objects.exists()
