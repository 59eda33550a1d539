import re
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns.models import CampaignRun, Delivery, Redemption
from core.tokens import claim_token_make
from reactivation.models import Category
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory, OfferFactory, OfferGrantFactory

pytestmark = pytest.mark.django_db

EXPIRES = datetime(2026, 12, 14, 2, 0, tzinfo=dt_timezone.utc)
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=dt_timezone.utc)


@pytest.fixture(autouse=True)
def _frozen_now(monkeypatch):
    # The rules compare with timezone.now(); the grants below are dated around it.
    monkeypatch.setattr(timezone, "now", lambda: NOW)


@pytest.fixture
def beauty():
    return Category.objects.create(key="beauty", label_zh_hans="美妆", label_en="Beauty")


def make_grant(*, customer=None, offer=None, channel="sms", brand=None, campaign_name="双11 老客回归",
               with_campaign=True, with_delivery=True, **fields):
    customer = customer or CustomerFactory(name="张伟", locale="zh-CN", timezone="Asia/Shanghai")
    offer = offer or OfferFactory(kind="coupon", discount_type="amount", discount_value=Decimal("30"),
                                  min_spend=Decimal("199"))
    campaign = run = delivery = None
    if with_campaign:
        campaign = CampaignFactory(name=campaign_name, brand=brand or BrandFactory(), offer=offer, channels=[channel])
        run = CampaignRun.objects.create(campaign=campaign, number=1)
        if with_delivery:
            delivery = Delivery.objects.create(campaign=campaign, run=run, customer=customer, channel=channel,
                                               address=customer.phone)
    fields.setdefault("granted_at", NOW - timedelta(days=1))
    fields.setdefault("expires_at", EXPIRES)
    return OfferGrantFactory(offer=offer, customer=customer, campaign=campaign, run=run, delivery=delivery, **fields)


def claim_path(grant) -> str:
    return reverse("offers:claim", args=[claim_token_make(grant_id=grant.pk)])


def page_text(response) -> str:
    html = response.content.decode()
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def button_url(response) -> str:
    match = re.search(r'<a class="cta" href="([^"]+)"', response.content.decode())
    return unescape(match.group(1)) if match else ""


# A valid link ------------------------------------------------------------------------------


def test_a_valid_link_shows_the_code_headline_validity_and_a_tagged_shop_button(client):
    grant = make_grant(code="K7QM-3XPA-9RTW")

    response = client.get(claim_path(grant))

    assert response.status_code == 200
    text = page_text(response)
    assert "K7QM-3XPA-9RTW" in text
    assert "满199减30元优惠券" in text
    assert "2026-12-14 10:00 前有效" in text  # 02:00 UTC is 10:00 in Shanghai
    assert "张伟" in text and "青禾生活" in text
    assert "复制" in text  # the copy button
    url = button_url(response)
    assert url.startswith("https://shop.qinghe.example.com/?")
    assert parse_qs(urlsplit(url).query) == {
        "utm_source": ["winback"], "utm_medium": ["sms"], "utm_campaign": ["双11-老客回归"], "utm_content": ["claim-page"],
    }


def test_the_page_keeps_its_token_to_itself(client):
    grant = make_grant()
    path = claim_path(grant)

    response = client.get(path)

    assert response["Referrer-Policy"] == "same-origin"  # no Referer to the shop or the logo host
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert response["Cache-Control"] == "private, no-store"
    token = path.rstrip("/").rsplit("/", 1)[1]
    assert token not in button_url(response)


def test_the_page_shows_no_personal_data_beyond_the_name(client):
    customer = CustomerFactory(name="张伟", email="zhang.wei@example.com", phone="+8613812345678",
                               external_id="CRM-991", locale="zh-CN")
    grant = make_grant(customer=customer)

    html = client.get(claim_path(grant)).content.decode()

    for secret in ("zhang.wei", "13812345678", "CRM-991"):
        assert secret not in html


def test_the_name_is_escaped(client):
    customer = CustomerFactory(name='<script>alert("x")</script>', locale="en")

    html = client.get(claim_path(make_grant(customer=customer))).content.decode()

    assert '<script>alert("x")' not in html
    assert "&lt;script&gt;" in html


def test_a_category_coupon_names_the_category(client, beauty):
    offer = OfferFactory(kind="coupon", discount_type="amount", discount_value=Decimal("30"), min_spend=Decimal("199"),
                         category="beauty")

    text = page_text(client.get(claim_path(make_grant(offer=offer))))

    assert "美妆类商品满199减30元" in text
    assert "挑选美妆类商品，满199元即可使用" in text


# Language and time zone -------------------------------------------------------------------


def test_an_english_customer_gets_english_in_their_time_zone(client):
    customer = CustomerFactory(name="Alice Martin", locale="en-GB", timezone="America/Los_Angeles")
    grant = make_grant(customer=customer, channel="email")

    response = client.get(claim_path(grant))

    text = page_text(response)
    assert response["Content-Language"] == "en"
    assert '<html lang="en">' in response.content.decode()
    assert "Alice, this one is just for you" in text
    assert "¥30 off orders over ¥199" in text
    assert "Valid until 13 Dec 2026, 18:00" in text  # 02:00 UTC on the 14th is still the 13th there
    assert "Enter the code at checkout before it expires." in text
    assert "Copy" in text
    assert "优惠" not in text
    assert parse_qs(urlsplit(button_url(response)).query)["utm_medium"] == ["email"]


@pytest.mark.parametrize(
    "locale, brand_locale, expected",
    [
        ("en", "zh-hans", "en"),
        ("zh_Hans_CN", "en", "zh-CN"),
        ("fr-FR", "en", "en"),  # no page in French: the brand's language
        ("", "en", "en"),
        ("", "zh-hans", "zh-CN"),
    ],
)
def test_the_language_is_the_customers_else_the_brands(client, locale, brand_locale, expected):
    brand = BrandFactory(name=f"Brand {brand_locale}", default_locale=brand_locale)
    grant = make_grant(customer=CustomerFactory(locale=locale), brand=brand)

    assert client.get(claim_path(grant))["Content-Language"] == expected


def test_without_a_campaign_the_page_is_chinese_and_offers_no_button(client):
    grant = make_grant(customer=CustomerFactory(locale="de"), with_campaign=False, code="K7QM-3XPA-9RTW")

    response = client.get(claim_path(grant))

    assert response["Content-Language"] == "zh-CN"
    assert "K7QM-3XPA-9RTW" in page_text(response)
    assert button_url(response) == ""


def test_a_bad_time_zone_falls_back_to_the_sites(client, settings):
    settings.TIME_ZONE = "UTC"
    grant = make_grant(customer=CustomerFactory(locale="zh-CN", timezone="Mars/Olympus_Mons"))

    assert "2026-12-14 02:00 前有效" in page_text(client.get(claim_path(grant)))


def test_a_grant_without_a_delivery_is_tagged_web(client):
    grant = make_grant(with_delivery=False)

    assert parse_qs(urlsplit(button_url(client.get(claim_path(grant)))).query)["utm_medium"] == ["web"]


# States ------------------------------------------------------------------------------------


def test_an_expired_grant_says_so_and_offers_no_copy(client):
    grant = make_grant(granted_at=NOW - timedelta(days=40), expires_at=NOW - timedelta(days=10), code="T5VW-6XYZ-3ABC")

    response = client.get(claim_path(grant))

    text = page_text(response)
    assert "已过期（2026-11-20 17:00 到期）" in text
    assert "前有效" not in text
    assert 'id="copy"' not in response.content.decode()
    assert "T5VW-6XYZ-3ABC" in text  # still shown, struck through: support may ask for it
    assert "看看其他好物" in text  # the button still leads to the shop
    assert "utm_medium=sms" in button_url(response)


def test_an_expired_grant_in_english(client):
    customer = CustomerFactory(locale="en", timezone="Europe/London")
    grant = make_grant(customer=customer, granted_at=NOW - timedelta(days=40), expires_at=NOW - timedelta(days=10))

    assert "Expired on 20 Nov 2026, 09:00" in page_text(client.get(claim_path(grant)))


def test_a_redeemed_grant_says_it_was_used(client):
    grant = make_grant()
    Redemption.objects.create(grant=grant, customer=grant.customer, order_amount=Decimal("250"))

    response = client.get(claim_path(grant))

    assert "已使用" in page_text(response)
    assert 'id="copy"' not in response.content.decode()


def test_a_switched_off_offer_says_it_ended(client):
    offer = OfferFactory(is_active=False)

    assert "活动已结束" in page_text(client.get(claim_path(make_grant(offer=offer))))


def test_a_minimum_spend_does_not_make_the_page_say_unusable(client):
    # is_redeemable refuses a min-spend coupon without an order amount; the page is not an order.
    offer = OfferFactory(kind="coupon", discount_type="percent", discount_value=Decimal("15"), min_spend=Decimal("500"),
                         category="beauty")

    response = client.get(claim_path(make_grant(offer=offer)))

    assert "前有效" in page_text(response)
    assert 'id="copy"' in response.content.decode()


def test_a_grant_without_expiry(client):
    assert "长期有效" in page_text(client.get(claim_path(make_grant(expires_at=None))))


# Kinds without a code ----------------------------------------------------------------------


def test_a_points_grant_has_no_code_box(client):
    offer = OfferFactory(kind="points", discount_type="", discount_value=None, points_multiplier=Decimal("2"),
                         multiplier_days=7)

    response = client.get(claim_path(make_grant(offer=offer, code=None)))

    text = page_text(response)
    assert "7天双倍积分" in text and "无需优惠码" in text
    assert 'id="code"' not in response.content.decode()


def test_exclusive_access_opens_its_own_link_tagged(client):
    offer = OfferFactory(kind="exclusive_access", discount_type="", discount_value=None, access_title="老友专场",
                         access_url="https://events.qinghe.example.com/vip?ref=mail")

    response = client.get(claim_path(make_grant(offer=offer, code=None)))

    assert "立即进入" in page_text(response)
    url = button_url(response)
    assert url.startswith("https://events.qinghe.example.com/vip?ref=mail&utm_source=winback&utm_medium=sms")


# Invalid links -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["1.AAAAAAAAAAAAAAAA", "garbage", "a" * 300, "%E2%9C%93"],
    ids=["forged", "garbage", "long", "non-ascii"],
)
def test_a_forged_token_is_a_404_in_both_languages(client, token):
    response = client.get(f"/offers/claim/{token}/")

    assert response.status_code == 404
    text = page_text(response)
    assert "链接无效或已失效" in text and "This link is not valid" in text
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert response["Cache-Control"] == "private, no-store"


def test_a_valid_token_for_a_missing_grant_looks_like_any_bad_link(client):
    grant = make_grant()
    forged = client.get("/offers/claim/1.AAAAAAAAAAAAAAAA/")
    path = claim_path(grant)
    grant.delete()

    gone = client.get(path)

    assert gone.status_code == 404
    assert gone.content == forged.content


# Safe methods, queries ---------------------------------------------------------------------


def test_get_and_head_change_nothing_and_other_methods_are_refused(client):
    grant = make_grant()
    path = claim_path(grant)

    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
        assert client.head(path).status_code == 200
    assert all(q["sql"].lstrip().upper().startswith("SELECT") for q in queries.captured_queries)
    assert client.post(path).status_code == 405
    assert "Set-Cookie" not in client.get(path).headers  # no session, no CSRF cookie


def test_queries_are_bounded(client, beauty, django_assert_max_num_queries):
    # The grant with its offer, customer, campaign, brand and delivery in one query; the
    # redemption checks of the offer rules (two for once-per-customer); the category label.
    offer = OfferFactory(category="beauty", usage_mode="once_per_customer", min_spend=Decimal("199"))
    grant = make_grant(offer=offer)
    path = claim_path(grant)

    with django_assert_max_num_queries(4):
        assert client.get(path).status_code == 200
