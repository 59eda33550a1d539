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
from tests.browser.admin_session import log_in
from tests.factories import CampaignFactory, CustomerFactory, UserFactory

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


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
        log_in(page, live_server, "boss")
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


# Every text of an SVG chart, as (text, whether its box lies inside the chart's box).
_CHART_TEXTS_INSIDE = """svg => {
    const frame = svg.getBoundingClientRect();
    return [...svg.querySelectorAll('text')].map(text => {
        const box = text.getBoundingClientRect();
        return [text.textContent.trim(), box.left >= frame.left - 1 && box.right <= frame.right + 1
                && box.top >= frame.top - 1 && box.bottom <= frame.bottom + 1];
    });
}"""

# The cells of a table whose text the browser laid out on more than one line.
_WRAPPED_CELLS = """table => [...table.querySelectorAll('th, td')].filter(cell => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    const lines = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
    return lines.size > 1;
}).map(cell => cell.textContent.trim())"""


def _world_with_a_run():
    cache.clear()
    UserFactory(username="boss", is_superuser=True)
    now = timezone.now()
    for state, n in (("new", 3), ("active", 12), ("at_risk", 4), ("dormant", 6), ("reactivated", 2)):
        CustomerFactory.create_batch(n, lifecycle_state=state)
    for customer in Customer.objects.filter(lifecycle_state="dormant"):
        LifecycleTransition.objects.create(customer=customer, from_state="at_risk", to_state="dormant",
                                           at=now - timedelta(minutes=1))
    Customer.objects.update(created_at=now - timedelta(days=365))
    campaign = CampaignFactory(name="Dormant beauty lovers: 20% off")
    CampaignRun.objects.create(campaign=campaign, number=1, status=CampaignRun.Status.SENDING,
                               targeted=99, sent=80, skipped_consent=3, holdout=10, failed=1, deferred_quiet=5,
                               offers_granted=80)


@pytest.mark.parametrize("width", [1440, 390])
def test_the_home_page_fits_its_charts_and_tables_at_desktop_and_phone_widths(
        live_server, open_browser, shots_dir, width):
    _world_with_a_run()

    with open_browser(width=width, height=900) as page:
        log_in(page, live_server, "boss")
        # every label and legend entry of every chart is drawn inside it ("became dorm…" was cut)
        charts = page.locator("svg.dashboard-chart-svg")
        expect(charts).to_have_count(3)
        for index in range(3):
            texts = charts.nth(index).evaluate(_CHART_TEXTS_INSIDE)
            assert texts and all(inside for _, inside in texts), [t for t, inside in texts if not inside]
        flow_texts = [t for t, _ in charts.nth(2).evaluate(_CHART_TEXTS_INSIDE)]
        assert {"became dormant", "left dormancy", "net change"} <= set(flow_texts)

        # tables keep each date and heading on one line; on a phone they scroll sideways in their
        # box, and the page itself never does
        for table_id in ("dashboard-lifecycle-now", "dashboard-lifecycle-weeks", "dashboard-dormant-flow",
                         "dashboard-upcoming", "dashboard-runs"):
            table = page.locator(f"#{table_id}")
            assert table.evaluate(_WRAPPED_CELLS) == [], table_id
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        if width == 390:
            weeks_box = page.locator("#dashboard-lifecycle-weeks").locator("xpath=..")
            assert weeks_box.evaluate("box => box.scrollWidth > box.clientWidth")

        # the latest run adds up: targeted = sent + skipped + holdout + failed + waiting
        runs = page.locator("#dashboard-runs")
        expect(runs.locator("thead th")).to_have_text(
            ["Campaign", "Run", "Status", "Started", "Targeted", "Sent", "Skipped", "Holdout", "Failed", "Waiting",
             "Offers granted"])
        expect(runs.locator("tbody tr").first.locator("td")).to_have_text(
            ["#1", "Sending", re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"), "99", "80", "3", "10", "1", "5", "80"])
        expect(page.locator("#dashboard-runs-sum")).to_contain_text(
            "Targeted = sent + skipped + holdout + failed + waiting.")
        box = page.locator("#dashboard-runs-sum").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, box  # wraps on a phone, never cut

        # and each part says which minute its figures describe
        for part in ("customers", "campaigns"):
            expect(page.locator(f"#dashboard-{part}-as-of")).to_contain_text(
                re.compile(r"Figures as of \d\d:\d\d \([A-Za-z/_]+\), refreshed every minute\."))
        if shots_dir:
            page.screenshot(path=str(shots_dir / f"dashboard_fit_{width}.png"), full_page=True)
