"""The Makefile and Procfile.dev behind the README's two commands.

`make -n` prints what a target would run without running it, so the order of the set-up steps
and what honcho starts are checked without starting servers (the full `make run` is exercised
by hand and in the release notes: it needs a free port and a minute).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make_dry_run(*args: str) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PORT", "HOST", "MAKEFLAGS")}
    result = subprocess.run(
        ["make", "-n", "--always-make", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def position(lines: list[str], needle: str) -> int:
    return next(i for i, line in enumerate(lines) if needle in line)


def test_make_run_sets_up_then_starts_web_worker_and_beat():
    lines = make_dry_run("run", "PORT=8123")

    steps = ["pip install", "manage.py migrate --noinput", "manage.py setup_periodic_tasks",
             "manage.py seed_demo --if-empty", "manage.py ensure_demo_superuser --port 8123", "honcho start -f Procfile.dev"]
    assert [position(lines, step) for step in steps] == sorted(position(lines, step) for step in steps)


def test_make_test_runs_pytest_with_passthrough_arguments():
    lines = make_dry_run("test", "PYTEST_ARGS=-x tests/core")

    assert any(line.endswith("-m pytest -x tests/core") for line in lines)


def test_procfile_runs_one_web_one_worker_on_every_queue_and_beat():
    entries = dict(
        line.split(":", 1) for line in (BASE_DIR / "Procfile.dev").read_text().splitlines() if line.strip()
    )

    assert set(entries) == {"web", "worker", "beat"}
    assert "runserver $WEB_ADDRESS" in entries["web"] and "--noreload" in entries["web"]
    assert "--queues=default,email,sms,in_app" in entries["worker"]
    assert "--prefetch-multiplier=1" in entries["worker"]
    assert entries["beat"].split() == ["celery", "-A", "config", "beat", "--loglevel=INFO"]


def test_beat_uses_the_database_scheduler(settings):
    # beat's command line names no scheduler: it must come from settings.
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
