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


def make_run_with_fakes(tmp_path, *args: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Run `make run` for real with a fake venv whose python and honcho only write down the
    environment they were given: what web, worker and beat would get, without starting them."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "honcho"):
        fake = venv / "bin" / name
        fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "WEB_ADDRESS=$WEB_ADDRESS" "SITE_URL=$SITE_URL" > "{tmp_path}/{name}.env"\n')
        fake.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in ("PORT", "HOST", "SITE_URL", "MAKEFLAGS")}
    result = subprocess.run(
        ["make", "run", f"VENV={venv}", *args], cwd=BASE_DIR, env={**env, **(environ or {})},
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in (tmp_path / "honcho.env").read_text().splitlines())


@pytest.mark.parametrize(
    ("args", "environ", "site_url"),
    [
        (["PORT=18801"], {}, "http://localhost:18801"),
        (["HOST=0.0.0.0", "PORT=9000"], {}, "http://localhost:9000"),
        (["HOST=192.0.2.10"], {}, "http://192.0.2.10:8000"),
        (["PORT=18801"], {"SITE_URL": "https://winback.example.com"}, "https://winback.example.com"),
        (["PORT=18801", "SITE_URL=https://cli.example.com"], {}, "https://cli.example.com"),
        (["PORT=18801"], {"SITE_URL": ""}, "http://localhost:18801"),
    ],
)
def test_make_run_points_message_links_at_its_own_server_unless_site_url_is_set(tmp_path, args, environ, site_url):
    processes_env = make_run_with_fakes(tmp_path, *args, environ=environ)

    assert processes_env["SITE_URL"] == site_url


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
