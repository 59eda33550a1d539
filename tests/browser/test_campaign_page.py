"""A marketer builds a campaign on its own page and launches it, in Chromium: channels put in
order with the widget, the audience estimate following the choices, Launch now, and the
progress table reaching done with the offers granted."""

import pytest
from celery import current_app
from django.core import mail
from django.urls import reverse

from campaigns.models import Campaign, CampaignRun, InboxMessage
from tests.browser.admin_session import log_in
from tests.browser.test_admin import ADMIN_SCREEN
from tests.campaigns.pipeline_helpers import customers_with_consent
from tests.factories import BrandFactory, MessageTemplateFactory, OfferFactory, SegmentFactory, UserFactory

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tasks_run_in_the_request(monkeypatch):
    """Celery runs tasks where they are queued (the live server's request thread), as a worker
    would, so a launch materializes and sends before its redirect."""
    monkeypatch.setitem(current_app.conf, "task_always_eager", True)


def test_a_campaign_is_built_estimated_and_launched_from_its_page(live_server, open_browser, tasks_run_in_the_request):
    UserFactory(username="marketer", is_superuser=True)
    customers_with_consent(4, channels=("email",))
    customers_with_consent(1, channels=("in_app",))
    customers_with_consent(1, channels=("sms",))  # SMS is not chosen: never reached
    SegmentFactory(name="Dormant 90 days")
    BrandFactory(name="青禾生活")
    MessageTemplateFactory(name="Miss you", channel="email")
    MessageTemplateFactory(name="Miss you in app", channel="in_app")
    OfferFactory(name="20 off 100")

    with open_browser(**ADMIN_SCREEN) as page:
        log_in(page, live_server, "marketer")
        page.goto(live_server.url + reverse("admin:campaigns_campaign_add"))
        page.get_by_label("Name").fill("Spring win-back")
        page.locator("#id_segment").select_option(label="Dormant 90 days")
        page.locator("#id_brand").select_option(label="青禾生活")
        page.locator("#id_email_template").select_option(label="Miss you (Email)")
        page.locator("#id_in_app_template").select_option(label="Miss you in app (In-app)")
        page.locator("#id_offer").select_option(label="20 off 100")
        estimate = page.locator("#audience-estimate")
        expect(estimate).to_contain_text("Choose at least one channel.")
        page.get_by_label("In-app", exact=True).check()
        expect(estimate.locator(".estimate-total")).to_contain_text("1")
        page.get_by_label("Email", exact=True).check()
        expect(estimate.locator(".estimate-total")).to_contain_text("5")
        expect(estimate).to_contain_text("Customers in the segment: 6")
        # In-app starts below SMS; one click puts it right after email.
        page.get_by_role("button", name="Move In-app up").click()
        order_shown = page.locator(".channel-order-row").evaluate_all("rows => rows.map(r => r.dataset.channel)")
        page.get_by_role("button", name="Save and continue editing").click()
        expect(page.locator("#campaign-controls")).to_be_visible()
        page.once("dialog", lambda dialog: dialog.accept())  # "Send to about 5 customers now?"
        page.get_by_role("button", name="Launch now").click()
        expect(page.locator(".messagelist")).to_contain_text("Run #1 started")
        row = page.locator("#run-progress tbody tr").first
        expect(row.locator("td").nth(1)).to_have_text("Done")
        cells = row.locator("td").all_inner_texts()
        expect(page.get_by_role("link", name="Preview and test send: Email")).to_be_visible()

    assert order_shown == ["email", "in_app", "sms"]
    campaign = Campaign.objects.get(name="Spring win-back")
    assert campaign.channels == ["email", "in_app"]
    run = CampaignRun.objects.get(campaign=campaign)
    assert (run.status, run.targeted, run.sent, run.offers_granted) == ("done", 6, 5, 5)
    # The offers granted stand beside the sent count, in view without scrolling the table.
    assert cells[0] == "#1" and cells[4] == "5" and cells[5] == "5"  # sent, offers
    assert cells[-1] == "deliveries"  # a link to the run's deliveries
    assert len(mail.outbox) == 4 and InboxMessage.objects.count() == 1


def test_the_channels_keep_their_order_numbers_without_javascript(live_server, open_browser):
    UserFactory(username="marketer", is_superuser=True)
    SegmentFactory(name="Everyone")
    BrandFactory(name="青禾生活")
    MessageTemplateFactory(name="Miss you", channel="email")
    MessageTemplateFactory(name="Short", channel="sms")

    with open_browser(**ADMIN_SCREEN) as page:
        log_in(page, live_server, "marketer")
        page.route("**/campaign_page.js", lambda route: route.abort())
        page.goto(live_server.url + reverse("admin:campaigns_campaign_add"))
        page.get_by_label("Name").fill("No script")
        page.locator("#id_segment").select_option(label="Everyone")
        page.locator("#id_brand").select_option(label="青禾生活")
        page.locator("#id_email_template").select_option(label="Miss you (Email)")
        page.locator("#id_sms_template").select_option(label="Short (SMS)")
        page.get_by_label("Email", exact=True).check()
        page.get_by_label("SMS", exact=True).check()
        page.get_by_label("Order of Email").fill("2")
        page.get_by_label("Order of SMS").fill("1")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    assert Campaign.objects.get(name="No script").channels == ["sms", "email"]
