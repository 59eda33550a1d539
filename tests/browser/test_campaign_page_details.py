"""The campaign page's details, in Chromium: Launch now asks first (naming the audience and what
re-entry skips), the estimate names a missing template, the Status follows the live table of
runs, which scrolls inside its box, and the crontab fields show only for a recurring schedule."""

import pytest
from celery import current_app
from django.urls import reverse

from campaigns.models import Campaign, CampaignRun
from campaigns.services import campaign_launch
from tests.browser.admin_session import log_in
from tests.browser.test_admin import ADMIN_SCREEN
from tests.campaigns.pipeline_helpers import campaign_for, customers_with_consent
from tests.factories import SegmentFactory, UserFactory

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tasks_run_in_the_request(monkeypatch):
    """A launch materializes and sends in the live server's request, as a worker would."""
    monkeypatch.setitem(current_app.conf, "task_always_eager", True)


class Dialogs:
    """Answers the page's confirm() dialogs (``accept``) and keeps what they asked."""

    def __init__(self, page):
        self.asked, self.accept = [], False
        page.on("dialog", self._answer)

    def _answer(self, dialog):
        self.asked.append(dialog.message)
        dialog.accept() if self.accept else dialog.dismiss()


def test_launch_now_asks_first_naming_the_audience_and_what_re_entry_skips(
        live_server, open_browser, tasks_run_in_the_request):
    UserFactory(username="marketer", is_superuser=True)
    customers_with_consent(3, channels=("email",))
    campaign = campaign_for(name="Spring win-back", reentry_days=30)
    change = live_server.url + reverse("admin:campaigns_campaign_change", args=[campaign.pk])

    with open_browser(**ADMIN_SCREEN) as page:
        log_in(page, live_server, "marketer")
        dialogs = Dialogs(page)
        page.goto(change)
        expect(page.locator("#audience-estimate .estimate-total")).to_contain_text("3")
        page.get_by_role("button", name="Launch now").click()  # dismissed: nothing is sent
        expect(page.locator("#run-progress tbody")).to_contain_text("No runs yet.")
        dialogs.accept = True
        page.get_by_role("button", name="Launch now").click()
        expect(page.locator(".messagelist")).to_contain_text("Run #1 started")
        dialogs.accept = False
        expect(page.locator("#audience-estimate")).to_contain_text("Already reached by this campaign (re-entry): −3")
        page.get_by_role("button", name="Launch now").click()
        expect(page.locator("#run-progress tbody tr").first.locator("td").nth(1)).to_have_text("Done")

    assert dialogs.asked[:2] == ["Send to about 3 customers now?"] * 2
    assert dialogs.asked[2].startswith("Send to about 0 customers now? This campaign ran before: re-entry skips the "
                                       "customers it reached in the last 30 days.")
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_the_estimate_names_the_template_a_ticked_channel_lacks(live_server, open_browser):
    UserFactory(username="marketer", is_superuser=True)
    customers_with_consent(2, channels=("email",))
    SegmentFactory(name="Dormant 90 days")

    with open_browser(**ADMIN_SCREEN) as page:
        log_in(page, live_server, "marketer")
        page.goto(live_server.url + reverse("admin:campaigns_campaign_add"))
        page.locator("#id_segment").select_option(label="Dormant 90 days")
        page.get_by_label("Email", exact=True).check()
        estimate = page.locator("#audience-estimate")
        expect(estimate).to_have_text("Choose an email template to send by email.")
        expect(estimate.locator(".estimate-total")).to_have_count(0)


def test_the_status_follows_the_live_table_whose_rows_link_to_the_run_and_its_deliveries(live_server, open_browser):
    UserFactory(username="marketer", is_superuser=True)
    customers_with_consent(2, channels=("email",))
    campaign = campaign_for()
    run = campaign_launch(campaign=campaign, sync=True)
    # The page is drawn while the campaign still runs; the run has finished when the table polls.
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    change = live_server.url + reverse("admin:campaigns_campaign_change", args=[campaign.pk])
    progress = reverse("admin:campaigns_campaign_progress", args=[campaign.pk])

    def finished(route):
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "status": "completed", "status_display": "Completed"})

    with open_browser(**ADMIN_SCREEN) as page:
        log_in(page, live_server, "marketer")
        page.route(f"**{progress}", finished)
        page.goto(change)
        status = page.locator(".field-status .readonly")
        expect(status).to_have_text("Completed")
        row = page.locator("#run-progress tbody tr").first
        expect(row.get_by_role("link", name="#1")).to_have_attribute(
            "href", reverse("admin:campaigns_campaignrun_change", args=[run.pk]))
        expect(row.get_by_role("link", name="deliveries")).to_have_attribute(
            "href", reverse("admin:campaigns_delivery_changelist") + f"?run__id__exact={run.pk}")
        expect(page.locator("#runs-group")).to_have_count(0)


@pytest.mark.parametrize("width", [1440, 390])
def test_the_runs_table_scrolls_inside_its_box_not_the_page(live_server, open_browser, width):
    UserFactory(username="marketer", is_superuser=True)
    customers_with_consent(2, channels=("email",))
    campaign = campaign_for()
    campaign_launch(campaign=campaign, sync=True)
    change = live_server.url + reverse("admin:campaigns_campaign_change", args=[campaign.pk])

    with open_browser(width=width, height=900) as page:
        log_in(page, live_server, "marketer")
        page.goto(change)
        expect(page.locator("#run-progress tbody tr").first.locator("td").nth(1)).to_have_text("Done")
        box = page.locator(".run-progress-scroll").evaluate(
            "el => ({right: el.getBoundingClientRect().right, client: el.clientWidth, scroll: el.scrollWidth})")
        page_width = page.evaluate("document.documentElement.scrollWidth")

    assert box["right"] <= width
    if width == 1440:
        assert page_width <= width
    else:
        assert box["scroll"] > box["client"]  # the table is wider than a phone: it scrolls in its box


def test_the_crontab_fields_show_only_for_a_recurring_schedule(live_server, open_browser):
    UserFactory(username="marketer", is_superuser=True)

    with open_browser(**ADMIN_SCREEN) as page:
        log_in(page, live_server, "marketer")
        page.goto(live_server.url + reverse("admin:campaigns_campaign_add"))
        cron = page.locator("fieldset.cron-schedule")
        send_at = page.locator(".form-row.field-scheduled_at")
        expect(cron).to_be_hidden()
        expect(send_at).to_be_visible()
        expect(page.get_by_text("Saving does not schedule: save, then Launch now or Schedule.")).to_be_visible()
        page.locator("#id_schedule_kind").select_option("recurring")
        expect(cron).to_be_visible()
        expect(page.get_by_label("Minute")).to_be_visible()
        expect(send_at).to_be_hidden()
