"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

Django's test client never sends what a browser sends (an ``Origin`` header chosen from the
page's Referrer-Policy, cookies set by a real form round trip), so pages a person clicks are
tested here too. Playwright's own browser builds are never downloaded: the tests use the
system Chromium and are skipped where there is none.

A test arranges rows, then drives the browser inside ``with open_browser() as page:``, then
asserts on rows after the block. The ORM must stay outside the block: Playwright's sync API
marks an asyncio loop as running in this thread from start to stop, even between calls, and
Django then refuses queries (SynchronousOnlyOperation). DJANGO_ALLOW_ASYNC_UNSAFE would only
silence that: with a loop running, Django keeps connections per async context, so the test
thread would open a second connection to the test database, one that neither knows it must
restore the migrated rows after the flush (tests/conftest.py) nor is the connection an
in-memory SQLite database shares with the live server. Django's check therefore stays on and
catches an ORM call made inside a block. Each block starts its own Playwright and Chromium
(about a second), and ends only once the live server has answered every request it received.
"""

import contextlib
import os
import threading
from pathlib import Path

import pytest
from django.core.signals import request_finished, request_started

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# A step that waits longer than this is a bug, not a slow machine: fail while the log is short.
STEP_TIMEOUT_MS = 15_000
SERVER_IDLE_TIMEOUT_S = 10


class _RequestsInFlight:
    """How many requests the live server is answering, from Django's request signals."""

    def __init__(self):
        self._count = 0
        self._changed = threading.Condition()

    def started(self, **kwargs):
        with self._changed:
            self._count += 1

    def finished(self, **kwargs):
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count <= 0, timeout)


@pytest.fixture
def open_browser(live_server):
    """``with open_browser(width=390) as page:`` a fresh Chromium page (no cookies), closed
    with its browser when the block ends."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (requirements.txt)")
    in_flight = _RequestsInFlight()
    request_started.connect(in_flight.started)
    request_finished.connect(in_flight.finished)

    @contextlib.contextmanager
    def opened(*, width: int = 1200, height: int = 900):
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                context = chromium.new_context(locale="en-US", viewport={"width": width, "height": height})
                context.set_default_timeout(STEP_TIMEOUT_MS)
                yield context.new_page()
            finally:
                chromium.close()
        # A request the browser sent last (a favicon, a late asset) may still be running in the
        # server's thread: the test's next query or the flush must not race it.
        assert in_flight.wait_idle(SERVER_IDLE_TIMEOUT_S), "the live server is still answering a request"

    yield opened
    request_started.disconnect(in_flight.started)
    request_finished.disconnect(in_flight.finished)


@pytest.fixture
def shots_dir():
    """Where screenshots go when BROWSER_SCREENSHOTS is set (a folder); None otherwise."""
    folder = os.environ.get("BROWSER_SCREENSHOTS", "")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_terminal_summary(terminalreporter):
    """One line CI reads: how many browser tests ran, so a run that silently skipped them
    (no Chromium) cannot pass for one that exercised the pages."""
    counts = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        reports = terminalreporter.stats.get(outcome, [])
        counts[outcome] = len({r.nodeid for r in reports if "browser" in getattr(r, "keywords", {})})
    terminalreporter.write_line("browser_tests " + " ".join(f"{key}={value}" for key, value in counts.items()))
