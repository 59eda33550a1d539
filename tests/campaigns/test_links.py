from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import pytest

from django.urls import reverse, set_script_prefix

from campaigns import links
from campaigns.links import claim_url, shop_link, utm_campaign
from core.tokens import claim_token_make, claim_token_read


@pytest.fixture(autouse=True)
def _fresh_cache():
    links._shop_link.cache_clear()
    yield
    links._shop_link.cache_clear()


def _query(url: str) -> dict:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


# Claim URL ----------------------------------------------------------------------------------


def test_the_claim_url_is_absolute_and_carries_a_token_for_the_grant():
    url = claim_url(grant_id=4321)

    assert url.startswith("https://winback.example.com/offers/claim/")
    assert url.endswith("/")
    token = url.rstrip("/").rsplit("/", 1)[1]
    assert claim_token_read(token) == 4321


@pytest.mark.parametrize("grant_id", [1, 61, 62, 3844, 123_456_789, 2**63 - 1])
def test_the_claim_url_is_exactly_site_url_plus_reverse(grant_id, settings):
    expected = settings.SITE_URL + reverse("offers:claim", args=[claim_token_make(grant_id=grant_id)])

    assert claim_url(grant_id=grant_id) == expected


def test_the_claim_url_follows_the_script_prefix():
    # Mounted under a sub-path (SCRIPT_NAME), reverse() prefixes every path; so must we.
    set_script_prefix("/winback/")
    try:
        url = claim_url(grant_id=9)
    finally:
        set_script_prefix("/")

    assert url.startswith("https://winback.example.com/winback/offers/claim/")
    assert claim_url(grant_id=9).startswith("https://winback.example.com/offers/claim/")


def test_the_claim_url_fits_in_an_sms(settings):
    settings.SITE_URL = "https://m.qinghe.cn"

    # "https://m.qinghe.cn/offers/claim/" + token + "/": short enough to leave room for the text.
    assert len(claim_url(grant_id=12_345_678)) <= 60


# Shop link ----------------------------------------------------------------------------------


def test_a_plain_url_gets_source_medium_and_campaign():
    url = shop_link(url="https://shop.example.com/", channel="email", campaign_name="Spring Win-back")

    assert url == "https://shop.example.com/?utm_source=winback&utm_medium=email&utm_campaign=spring-win-back"


def test_utm_source_comes_from_settings(settings):
    settings.UTM_SOURCE = "crm"

    assert _query(shop_link(url="https://shop.example.com/", channel="sms", campaign_name="x"))["utm_source"] == "crm"


def test_a_blank_utm_source_setting_falls_back_to_winback(settings):
    settings.UTM_SOURCE = ""

    assert _query(shop_link(url="https://shop.example.com/", channel="sms", campaign_name="x"))["utm_source"] == "winback"


@pytest.mark.parametrize("channel", ["email", "sms", "in_app", "web"])
def test_the_medium_is_the_channel(channel):
    assert _query(shop_link(url="https://shop.example.com/", channel=channel, campaign_name="x"))["utm_medium"] == channel


def test_a_chinese_campaign_name_stays_readable_and_is_percent_encoded_in_the_url():
    url = shop_link(url="https://shop.example.com/", channel="sms", campaign_name="双11 回归 Campaign!")

    raw = urlsplit(url).query
    assert raw.isascii()  # percent-encoded UTF-8 in the URL itself
    assert "utm_campaign=%E5%8F%8C11-%E5%9B%9E%E5%BD%92-campaign" in raw
    assert _query(url)["utm_campaign"] == "双11-回归-campaign"  # what analytics shows


@pytest.mark.parametrize(
    "name, slug",
    [
        ("Spring Win-back 2026", "spring-win-back-2026"),
        ("  想你了！老客回归  ", "想你了老客回归"),
        ("VIP 双倍积分 / 7天", "vip-双倍积分-7天"),
        ("Café déjà vu", "café-déjà-vu"),
        ("!!!", ""),
    ],
)
def test_campaign_slugs(name, slug):
    assert utm_campaign(name) == slug


def test_a_name_that_slugs_to_nothing_leaves_utm_campaign_out():
    url = shop_link(url="https://shop.example.com/", channel="email", campaign_name="!!!")

    assert "utm_campaign" not in _query(url)
    assert _query(url)["utm_source"] == "winback"


def test_utm_content_only_when_given():
    plain = shop_link(url="https://shop.example.com/", channel="email", campaign_name="x")
    with_content = shop_link(url="https://shop.example.com/", channel="email", campaign_name="x", content="hero button")

    assert "utm_content" not in _query(plain)
    assert _query(with_content)["utm_content"] == "hero button"
    assert "utm_content=hero%20button" in with_content


def test_existing_query_and_fragment_are_kept_byte_for_byte():
    original = "https://shop.example.com/list?cat=%E7%BE%8E%E5%A6%86&sort=new&sig=a%2Bb#/promo?tab=1"

    url = shop_link(url=original, channel="email", campaign_name="spring")

    parts = urlsplit(url)
    assert parts.query.startswith("cat=%E7%BE%8E%E5%A6%86&sort=new&sig=a%2Bb&")
    assert parts.fragment == "/promo?tab=1"
    assert url.startswith("https://shop.example.com/list?")
    assert _query(url)["utm_medium"] == "email"


def test_utm_parameters_already_in_the_url_win():
    url = shop_link(
        url="https://shop.example.com/?utm_source=newsletter&UTM_CAMPAIGN=hand-made&x=1",
        channel="sms", campaign_name="Spring", content="banner",
    )

    pairs = parse_qsl(urlsplit(url).query)
    keys = [key.lower() for key, _ in pairs]
    assert keys.count("utm_source") == 1 and keys.count("utm_campaign") == 1
    assert ("utm_source", "newsletter") in pairs and ("UTM_CAMPAIGN", "hand-made") in pairs
    assert ("utm_medium", "sms") in pairs and ("utm_content", "banner") in pairs


def test_a_url_carrying_every_utm_parameter_is_returned_unchanged():
    original = "https://shop.example.com/?utm_source=a&utm_medium=b&utm_campaign=c&utm_content=d"

    assert shop_link(url=original, channel="email", campaign_name="x", content="y") == original


@pytest.mark.parametrize("url", ["", "mailto:help@shop.example.com", "tel:+8640012345", "javascript:alert(1)"])
def test_blank_and_non_web_links_are_left_alone(url):
    assert shop_link(url=url, channel="email", campaign_name="x") == url


def test_app_deep_links_are_tagged_too():
    url = shop_link(url="qinghe://home/coupons", channel="in_app", campaign_name="x")

    assert url == "qinghe://home/coupons?utm_source=winback&utm_medium=in_app&utm_campaign=x"


def test_special_characters_in_values_cannot_break_the_query():
    url = shop_link(url="https://shop.example.com/", channel="email", campaign_name="a&b=c", content="x&utm_source=evil#frag")

    query = _query(url)
    assert query["utm_source"] == "winback"
    assert unquote(query["utm_content"]) == "x&utm_source=evil#frag"
    assert urlsplit(url).fragment == ""


def test_the_link_is_computed_once_per_url_channel_and_campaign(settings):
    first = shop_link(url="https://shop.example.com/", channel="email", campaign_name="Spring")
    for _ in range(99):
        assert shop_link(url="https://shop.example.com/", channel="email", campaign_name="Spring") == first

    info = links._shop_link.cache_info()
    assert (info.misses, info.hits) == (1, 99)

    # A changed setting is part of the key, never served stale.
    settings.UTM_SOURCE = "crm"
    assert "utm_source=crm" in shop_link(url="https://shop.example.com/", channel="email", campaign_name="Spring")
