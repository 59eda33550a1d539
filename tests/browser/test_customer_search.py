"""The customer list in a browser: search by part of a name, every column in view at 1440 px,
and a customer's page with its one timeline."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from campaigns.models import CampaignRun, Delivery
from reactivation.models import LifecycleTransition
from tests.browser.admin_session import log_in
from tests.factories import CampaignFactory, CustomerFactory, OfferGrantFactory, UserFactory

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDE = {"width": 1440, "height": 1000}
EMAIL = "cui.yang@example.com"


def _search(page, term):
    box = page.locator("#searchbar")
    box.fill(term)
    box.press("Enter")
    page.wait_for_load_state()
    return sorted(page.locator("#result_list td.field-name").all_inner_texts())


@pytest.fixture
def customers():
    now = timezone.now()
    cui = CustomerFactory(external_id="C-2", name="崔洋", email=EMAIL, phone="+8613900000002",
                          total_spent=Decimal("123456.78"), order_count=321, rfm_recency=5, rfm_frequency=4,
                          rfm_monetary=3, last_seen_at=now, last_order_at=now)
    CustomerFactory(external_id="C-1", name="Julian Rivera", email="julian.rivera.long.address@example.com",
                    total_spent=Decimal("99999.99"), rfm_recency=1, rfm_frequency=1, rfm_monetary=1)
    CustomerFactory(external_id="C-3", name="王洋洋")
    CustomerFactory(external_id="C-4", name="Maria López")
    campaign = CampaignFactory(name="想你了 五月")
    run = CampaignRun.objects.create(campaign=campaign, number=1)
    Delivery.objects.create(campaign=campaign, run=run, customer=cui, channel="email", address=EMAIL,
                            status=Delivery.Status.SENT, sent_at=now - timedelta(hours=3))
    OfferGrantFactory(customer=cui, offer__name="满100减20", granted_at=now - timedelta(hours=3))
    LifecycleTransition.objects.create(customer=cui, from_state="dormant", to_state="reactivated",
                                       at=now - timedelta(hours=1))
    return cui


def test_marketer_finds_customers_by_part_of_a_name_and_reads_one_timeline(live_server, open_browser, customers,
                                                                          shots_dir):
    marketer = UserFactory(username="marketer")
    marketer.groups.add(Group.objects.get(name="Marketer"))

    with open_browser(**WIDE) as page:
        log_in(page, live_server, "marketer", next_url=reverse("admin:reactivation_customer_changelist"))
        chinese = _search(page, "洋")
        latin = _search(page, "rivera")
        chinese_pair = _search(page, "崔洋")
        # every column in view beside the navigation and the filters, spend and RFM included
        _search(page, "")
        # the list scrolls inside its own box: a column past that box's edge is cut off
        overflow = page.evaluate(
            "() => { const edge = document.querySelector('#changelist .results').getBoundingClientRect().right;"
            " return [...document.querySelectorAll('#result_list th')]"
            ".filter(th => th.getBoundingClientRect().right > edge + 0.5).map(th => th.innerText); }"
        )
        if shots_dir:
            page.screenshot(path=str(shots_dir / "customer_list_1440.png"), full_page=True)
        expect(page.locator("#result_list td.field-rfm").first).to_be_in_viewport()
        expect(page.locator("#result_list td.field-spent").first).to_be_in_viewport()

        _search(page, "崔洋")
        page.get_by_role("link", name="C-2").click()
        timeline = page.locator("#timeline")
        expect(timeline).to_be_visible()
        expect(timeline.get_by_text("Email: 想你了 五月")).to_be_visible()
        expect(timeline.get_by_text("Offer granted: 满100减20")).to_be_visible()
        expect(timeline.get_by_text("Lifecycle: Dormant → Reactivated")).to_be_visible()
        rows = timeline.locator("tr.timeline-entry").all_inner_texts()
        body = page.content()
        if shots_dir:
            page.screenshot(path=str(shots_dir / "customer_timeline.png"), full_page=True)

    assert chinese == ["崔洋", "王洋洋"]
    assert latin == ["Julian Rivera"]
    assert chinese_pair == ["崔洋"]
    assert overflow == []
    assert "Lifecycle" in rows[0] and "Offer granted" in rows[-1] or "Email" in rows[-1]  # newest first
    assert EMAIL not in body and "c***@e***.com" in body  # masked for a marketer, timeline included
