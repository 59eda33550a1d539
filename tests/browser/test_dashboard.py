"""The admin home page in Chromium: the charts are drawn, their tables hold the figures, the
campaign lines lead to the campaign, and the list of models is still on the page."""

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun
from campaigns.services import campaign_schedule
from reactivation.models import Customer, LifecycleTransition
from tests.factories import CampaignFactory, CustomerFactory, UserFactory

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pass-w0rd-for-tests"  # UserFactory's


def _log_in(page, live_server, username):
    page.goto(live_server.url + reverse("admin:login") + "?next=" + reverse("admin:index"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(live_server.url + reverse("admin:index"))


def test_the_home_page_draws_the_charts_and_tables_of_the_figures(live_server, open_browser, shots_dir):
    cache.clear()
    UserFactory(username="boss", is_superuser=True)
    now = timezone.now()
    for state, n in (("active", 7), ("at_risk", 2), ("dormant", 4), ("reactivated", 3)):
        for _ in range(n):
            customer = CustomerFactory(lifecycle_state=state)
            if state == "dormant":
                LifecycleTransition.objects.create(customer=customer, from_state="at_risk", to_state="dormant",
                                                   at=now - timedelta(minutes=1))
    Customer.objects.update(created_at=now - timedelta(days=365))
    campaign = CampaignFactory(name="Weekly win-back", schedule_kind=Campaign.ScheduleKind.RECURRING,
                               cron_minute="30", cron_hour="9")
    campaign_schedule(campaign=campaign)
    CampaignRun.objects.create(campaign=campaign, number=1, status=CampaignRun.Status.DONE,
                               targeted=4321, sent=4000, skipped_consent=300, failed=21, offers_granted=3210)
    campaign_url = reverse("admin:campaigns_campaign_change", args=[campaign.pk])

    with open_browser(width=1280, height=1000) as page:
        _log_in(page, live_server, "boss")
        expect(page.get_by_role("heading", name="Bring dormant customers back")).to_be_visible()
        charts = page.locator("svg.dashboard-chart-svg[role=img]")
        expect(charts).to_have_count(3)
        for index in range(3):
            expect(charts.nth(index)).to_be_visible()
            box = charts.nth(index).bounding_box()
            assert box["width"] > 300 and box["height"] > 100, box
        expect(page.get_by_role("img", name="Customers by lifecycle state now")).to_be_visible()
        now_table = page.locator("#dashboard-lifecycle-now")
        for label, count in (("Active", "7"), ("At risk", "2"), ("Dormant", "4"), ("Reactivated", "3"), ("Total", "16")):
            expect(now_table.locator("tr", has=page.get_by_role("rowheader", name=label, exact=True)).locator("td")
                   ).to_have_text(count)
        expect(page.locator("#dashboard-lifecycle-weeks tbody tr")).to_have_count(12)
        expect(page.locator("#dashboard-dormant-flow tbody tr").last.locator("td")).to_have_text(["4", "0", "+4"])
        run = page.locator("#dashboard-runs tbody tr").first
        expect(run.locator("td")).to_contain_text(["4,321", "4,000", "300", "21", "3,210"])
        expect(page.locator("#dashboard-upcoming tbody tr").first.locator("td").last).to_have_text(
            re.compile(r"\d{4}-\d\d-\d\d 09:30"))
        expect(page.get_by_role("heading", name="Campaign results")).to_be_visible()
        expect(page.get_by_role("link", name="Customers", exact=True).first).to_be_visible()  # the list of models
        if shots_dir:
            page.screenshot(path=str(shots_dir / "dashboard.png"), full_page=True)
        run.get_by_role("link", name="Weekly win-back").click()
        page.wait_for_url(live_server.url + campaign_url)
        expect(page.get_by_role("heading", name="Weekly win-back").first).to_be_visible()
