"""Segments and imports in a browser: the segment form's live size, and an import whose missing
notice version is given on the preview."""

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from config.celery import app as celery_app
from consent.models import ConsentEvent
from reactivation.models import Customer, ImportJob, LifecycleState, Segment
from tests.browser.admin_session import log_in
from tests.factories import CustomerFactory, UserFactory

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADMIN_SCREEN = {"width": 1400, "height": 1600}


def _watch_console(page) -> list[str]:
    """Errors the page's scripts raise or log (a Content-Security-Policy violation, an uncaught
    exception). Chromium also logs every 4xx response ("Failed to load resource"): the missing
    favicon, and the live size's 400 answer to invalid filters, which the test expects."""
    problems = []

    def console(message):
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return problems


@pytest.fixture
def eager_celery():
    """Tasks run in the web request that queues them (the live server's thread): no worker."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def test_the_segment_size_follows_the_filters_as_they_are_edited(live_server, open_browser):
    marketer = UserFactory(username="marketer")
    marketer.groups.add(Group.objects.get(name="Marketer"))
    CustomerFactory(external_id="BIG", lifecycle_state=LifecycleState.DORMANT, total_spent=Decimal("800"),
                    email="big.spender@example.com")
    CustomerFactory(external_id="SMALL", lifecycle_state=LifecycleState.DORMANT, total_spent=Decimal("20"))
    CustomerFactory(external_id="ACTIVE", lifecycle_state=LifecycleState.ACTIVE, total_spent=Decimal("900"))
    segment = Segment.objects.create(name="Everyone")
    url = live_server.url + reverse("admin:reactivation_segment_change", args=[segment.pk])

    with open_browser(**ADMIN_SCREEN) as page:
        problems = _watch_console(page)
        log_in(page, live_server, "marketer")
        page.goto(url)
        count = page.locator("#segment-live-count")
        expect(count).to_have_text("3")  # counted when the page was drawn

        # ticking "dormant" recounts without saving
        page.locator('input[name="lifecycle_states"][value="dormant"]').check()
        expect(count).to_have_text("2")
        expect(page.locator("#segment-live-note")).to_contain_text("not saved yet")

        # typing a minimum spend narrows it again, and the sample follows (masked for a marketer)
        page.locator('input[name="spent_min"]').fill("500")
        expect(count).to_have_text("1")
        sample = page.locator("#segment-sample tbody tr")
        expect(sample).to_have_count(1)
        expect(sample.first).to_contain_text("BIG")
        expect(sample.first).to_contain_text("b***@e***.com")
        expect(sample.first).not_to_contain_text("big.spender")

        # an impossible bound is explained next to the count, not answered with an error page
        page.locator('input[name="rfm_monetary_min"]').fill("6")
        errors = page.locator("#segment-live-errors")
        expect(errors).to_be_visible()
        expect(errors).to_contain_text("5")
        expect(count).to_have_text("—")
        page.locator('input[name="rfm_monetary_min"]').fill("")
        expect(count).to_have_text("1")
        expect(errors).to_be_hidden()

        members_link = page.locator("#segment-members-link").get_attribute("href")

    assert problems == []
    assert members_link == reverse("admin:reactivation_customer_changelist") + f"?segment={segment.pk}"
    segment.refresh_from_db()
    assert segment.lifecycle_states == [] and segment.spent_min is None  # nothing was saved


def test_an_import_with_consent_columns_gets_its_notice_version_on_the_preview(live_server, open_browser, eager_celery):
    UserFactory(username="importer", is_superuser=True)
    upload_url = live_server.url + reverse("admin:reactivation_importjob_upload", args=["customers"])
    csv = "external_id,name,email,email_consent\nC1,Li Na,li.na@example.com,yes\nC2,Wang Wei,wang.wei@example.com,no\n"

    with open_browser(**ADMIN_SCREEN) as page:
        problems = _watch_console(page)
        log_in(page, live_server, "importer")
        page.goto(upload_url)
        page.locator('input[name="file"]').set_input_files(
            files=[{"name": "consent.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
        )
        page.get_by_role("button", name="Upload and preview").click()

        # the preview explains what is missing and asks for it
        notice = page.locator("#notice-version")
        expect(notice).to_contain_text("email_consent")
        page.get_by_label("Notice version").fill("privacy-2024-03")
        page.get_by_role("button", name="Confirm and import").click()

        # the progress page follows the job to its end, with no error box
        expect(page).to_have_url(re.compile(r"/progress/$"))
        expect(page.locator("#job-status")).to_have_text("Done")
        expect(page.locator("#job-summary")).to_contain_text("created=2")
        expect(page.locator("#job-error")).to_be_hidden()
        error_box = page.locator(".errornote")
        expect(error_box).to_have_count(0)

    assert problems == []
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.DONE and job.options["notice_version"] == "privacy-2024-03"
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"C1", "C2"}
    assert set(ConsentEvent.objects.values_list("notice_version", flat=True)) == {"privacy-2024-03"}
