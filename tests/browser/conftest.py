"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

Django's test client never sends what a browser sends (an ``Origin`` header chosen from the
page's Referrer-Policy, cookies set by a real form round trip), so pages a person clicks are
tested here too. Playwright's own browser builds are never downloaded: the tests use the
system Chromium and are skipped where there is none.
"""

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="package")
def browser():
    """One Chromium for the whole package; each test gets a fresh context (no shared cookies).

    Playwright's sync API keeps an asyncio loop marked as running in this thread from
    ``start()`` to ``stop()``, even between calls, so every ORM query of the test thread
    (factories, assertions, pytest-django's flush) would raise SynchronousOnlyOperation.
    Nothing here is concurrent with that loop: the loop only waits for the browser, and the
    live server answers in its own thread. DJANGO_ALLOW_ASYNC_UNSAFE is therefore set for
    exactly as long as Playwright runs: package scope stops both before any test outside
    this package runs, so the rest of the suite keeps Django's check.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright (requirements.txt)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()


@pytest.fixture
def context(browser):
    context = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return context.new_page()


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
