"""The worker must know every task that services dispatch and beat schedules."""

import json
import os
import subprocess
import sys
from pathlib import Path

from config.periodic import PERIODIC_TASKS

PROJECT = Path(__file__).resolve().parents[2]

DISPATCHED = {
    "reactivation.import_tasks.import_job_run",  # admin imports
    "campaigns.run_execute",
    "campaigns.send_chunk",
    "campaigns.launch_scheduled",  # each campaign's own beat row
}


def registered_in_a_fresh_worker_process() -> set[str]:
    """What a worker started with `celery -A config worker` registers, by autodiscovery alone."""
    code = (
        "import json, django; django.setup();"
        "from config.celery import app; app.loader.import_default_modules();"
        "print(json.dumps(sorted(app.tasks)))"
    )
    env = {**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_every_dispatched_and_periodic_task_is_registered_by_autodiscovery():
    registered = registered_in_a_fresh_worker_process()

    expected = DISPATCHED | {entry["task"] for entry in PERIODIC_TASKS}
    assert expected - registered == set()
