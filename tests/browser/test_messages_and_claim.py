"""What a customer sees of a message: the email at phone and desktop width, and the claim page
its button opens, clicked in Chromium down to the shop."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import mail

from campaigns.demo import demo_campaigns_seed
from campaigns.links import claim_url
from campaigns.models import Campaign, Redemption
from campaigns.rendering import render_message
from campaigns.services import campaign_launch
from tests.campaigns.pipeline_helpers import customers_with_consent
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory, OfferFactory, OfferGrantFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOP = "https://shop.qinghe.example.com/"


@pytest.mark.parametrize("width", [390, 1200])
@pytest.mark.parametrize("locale", ["zh-hans", "en"])
def test_a_demo_email_reads_well_at_phone_and_desktop_width(open_browser, shots_dir, settings, width, locale):
    settings.SITE_URL = "https://winback.example.com"
    demo_campaigns_seed(segments={})
    customers_with_consent(1, locale=locale, name="Emma Clarke" if locale == "en" else "王芳",
                           favourite_category="beauty")
    campaign = Campaign.objects.get(name="Demo: email win-back")
    campaign.holdout_percent = 0
    campaign.save()
    run = campaign_launch(campaign=campaign, sync=True)
    assert run.sent == 1
    html = mail.outbox[0].alternatives[0][0]
    label = "Claim your offer" if locale == "en" else "立即领取"

    with open_browser(width=width, height=900) as page:
        page.set_content(html)
        if shots_dir is not None:
            page.screenshot(path=str(shots_dir / f"email-{locale}-{width}.png"), full_page=True)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        button = page.get_by_role("link", name=label)
        box, href = button.bounding_box(), button.get_attribute("href")
        footer_visible = page.get_by_text("上海市静安区南京西路1266号").is_visible()

    assert scroll_width <= width  # no sideways scrolling on a phone
    assert box["x"] >= 0 and box["x"] + box["width"] <= width and box["height"] >= 40
    assert href.startswith("https://winback.example.com/offers/claim/")
    assert footer_visible


def test_the_claim_page_copies_the_code_and_leads_to_the_shop_without_leaking_the_token(live_server, open_browser,
                                                                                         settings):
    settings.SITE_URL = live_server.url
    brand = BrandFactory(shop_url=SHOP)
    offer = OfferFactory()
    customer = CustomerFactory(locale="zh-hans", name="王芳")
    campaign = CampaignFactory(name="Win-back", brand=brand, offer=offer)
    grant = OfferGrantFactory(offer=offer, customer=customer, campaign=campaign)
    link = claim_url(grant_id=grant.pk)
    shop_requests = []

    with open_browser(width=390, height=844) as page:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
        # The shop is another site: answer for it here and record what the browser sent it.
        page.route(f"{SHOP}**", lambda route: (shop_requests.append(route.request),
                                               route.fulfill(status=200, body="shop")))
        page.goto(link)
        page.get_by_role("button", name="复制").click()
        page.get_by_role("button", name="已复制").wait_for()
        copied = page.evaluate("navigator.clipboard.readText()")
        page.get_by_role("link", name="去青禾生活逛逛").click()
        page.wait_for_url(f"{SHOP}**")
        landed = page.url
        referer = shop_requests[0].headers.get("referer")

    assert copied == grant.code
    query = parse_qs(urlsplit(landed).query)
    assert query["utm_source"] == ["winback"] and query["utm_campaign"] == ["win-back"]
    assert referer is None or "/offers/claim/" not in referer  # the token stays on this site
    assert not Redemption.objects.filter(grant=grant).exists()  # looking redeems nothing


def test_the_preview_of_a_rendered_email_has_its_button(open_browser):
    # The rendered document stands alone: no stylesheet or script from elsewhere is needed.
    customer = CustomerFactory(locale="zh-hans", name="王芳")
    campaign = CampaignFactory(brand=BrandFactory(shop_url=SHOP))
    html = render_message(template=campaign.email_template, customer=customer, campaign=campaign, preview=True).html
    with open_browser(width=390) as page:
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.set_content(html)
        visible = page.get_by_role("link", name="去青禾生活逛逛").is_visible()
    assert visible
    assert not [url for url in requests if not url.startswith(("about:", "data:"))]
