from decimal import Decimal

import pytest

from campaigns.models import Offer
from campaigns.offer_copy import offer_headline, offer_how_to_use
from reactivation.models import Category

pytestmark = pytest.mark.django_db

D = Decimal


def _offer(**fields) -> Offer:
    # Unsaved: the copy reads fields only (and the Category table for a category).
    return Offer(name="offer", **fields)


def _coupon(**fields):
    return _offer(kind="coupon", discount_type=fields.pop("discount_type", "amount"), **fields)


@pytest.fixture
def beauty():
    return Category.objects.create(key="beauty", label_zh_hans="美妆", label_en="Beauty")


HEADLINES = [
    # (id, offer fields, zh-hans, en)
    ("amount+min", dict(kind="coupon", discount_type="amount", discount_value=D("30"), min_spend=D("199")),
     "满199减30元优惠券", "¥30 off orders over ¥199"),
    ("amount", dict(kind="coupon", discount_type="amount", discount_value=D("30.00")),
     "30元无门槛优惠券", "¥30 off your next order"),
    ("amount cents", dict(kind="coupon", discount_type="amount", discount_value=D("12.50"), min_spend=D("99.90")),
     "满99.90减12.50元优惠券", "¥12.50 off orders over ¥99.90"),
    ("percent exact", dict(kind="coupon", discount_type="percent", discount_value=D("15")),
     "85折优惠券", "15% off your next order"),
    ("percent tens", dict(kind="coupon", discount_type="percent", discount_value=D("10"), min_spend=D("100")),
     "满100享9折优惠券", "10% off orders over ¥100"),
    ("percent inexact", dict(kind="coupon", discount_type="percent", discount_value=D("12.5"), min_spend=D("100")),
     "满100立减12.5%优惠券", "12.5% off orders over ¥100"),
    ("coupon without value", dict(kind="coupon", discount_type="", min_spend=D("199")),
     "满199可用优惠券", "A coupon for orders over ¥199"),
    ("empty coupon", dict(kind="coupon", discount_type=""),
     "专属优惠券", "A coupon just for you"),
    ("double points", dict(kind="points", points_multiplier=D("2.00"), multiplier_days=7),
     "7天双倍积分", "Double points for 7 days"),
    ("triple points, no days", dict(kind="points", points_multiplier=D("3")),
     "三倍积分", "Triple points"),
    ("1.5x points", dict(kind="points", points_multiplier=D("1.50"), multiplier_days=1),
     "1天1.5倍积分", "1.5× points for 1 day"),
    ("fixed points", dict(kind="points", points=500),
     "赠送500积分", "500 bonus points"),
    ("fixed and double", dict(kind="points", points=12000, points_multiplier=D("2"), multiplier_days=7),
     "赠送12000积分，另享7天双倍积分", "12,000 bonus points + double points for 7 days"),
    ("empty points", dict(kind="points"),
     "积分奖励", "Bonus points"),
    ("trial", dict(kind="free_trial", trial_plan="Plus", trial_days=14),
     "Plus会员免费试用14天", "14-day free trial of Plus"),
    ("trial plan named 会员", dict(kind="free_trial", trial_plan="黑卡会员", trial_days=30),
     "黑卡会员免费试用30天", "30-day free trial of 黑卡会员"),
    ("trial without plan", dict(kind="free_trial", trial_days=7),
     "会员免费试用7天", "7-day free trial"),
    ("trial without days", dict(kind="free_trial", trial_plan="Plus"),
     "Plus会员免费试用", "Free trial of Plus"),
    ("exclusive", dict(kind="exclusive_access", access_title="老友专场：新品抢先看", access_url="https://x.example/"),
     "老友专场：新品抢先看", "老友专场：新品抢先看"),
    ("exclusive without title", dict(kind="exclusive_access"),
     "专属活动邀请", "Exclusive access"),
]


@pytest.mark.parametrize("language", ["zh-hans", "en"])
@pytest.mark.parametrize("case, fields, zh, en", HEADLINES, ids=[row[0] for row in HEADLINES])
def test_headline(case, fields, zh, en, language):
    assert offer_headline(_offer(**fields), language) == (zh if language == "zh-hans" else en)


CATEGORY_HEADLINES = [
    (dict(kind="coupon", discount_type="amount", discount_value=D("30"), min_spend=D("199")),
     "美妆类商品满199减30元", "¥30 off Beauty orders over ¥199"),
    (dict(kind="coupon", discount_type="amount", discount_value=D("30")),
     "美妆类商品立减30元", "¥30 off Beauty orders"),
    (dict(kind="coupon", discount_type="percent", discount_value=D("20")),
     "美妆类商品享8折", "20% off Beauty orders"),
    (dict(kind="coupon", discount_type=""),
     "美妆类商品专享优惠券", "A coupon for Beauty orders"),
    (dict(kind="points", points_multiplier=D("2"), multiplier_days=7),
     "美妆类商品7天双倍积分", "Double points on Beauty for 7 days"),
]


@pytest.mark.parametrize("fields, zh, en", CATEGORY_HEADLINES)
def test_a_category_is_shown_by_its_label_in_each_language(fields, zh, en, beauty):
    assert offer_headline(_offer(category="beauty", **fields), "zh-hans") == zh
    assert offer_headline(_offer(category="beauty", **fields), "en") == en


def test_a_category_without_a_label_is_shown_as_its_key():
    # A coupon limited to a category must say so, even before the category has labels.
    offer = _coupon(discount_value=D("30"), min_spend=D("199"), category="户外")

    assert offer_headline(offer, "zh-hans") == "户外类商品满199减30元"


def test_the_category_key_matches_whatever_its_case(beauty):
    assert offer_headline(_coupon(discount_value=D("5"), category=" Beauty "), "en") == "¥5 off Beauty orders"


def test_the_currency_symbol_comes_from_settings(settings):
    settings.OFFER_CURRENCY_SYMBOL = "$"
    offer = _coupon(discount_value=D("10"), min_spend=D("50"))

    assert offer_headline(offer, "en") == "$10 off orders over $50"
    assert offer_headline(_coupon(discount_value=D("10"), min_spend=D("50")), "zh-hans") == "满$50减$10优惠券"


@pytest.mark.parametrize("locale, expected", [("en-GB", "¥30 off your next order"), ("zh_Hans_CN", "30元无门槛优惠券"),
                                              ("fr", "30元无门槛优惠券"), ("", "30元无门槛优惠券")])
def test_a_locale_is_normalized_and_anything_else_reads_chinese(locale, expected):
    assert offer_headline(_coupon(discount_value=D("30")), locale) == expected


def test_the_copy_is_built_once_per_offer_and_language(beauty, django_assert_num_queries):
    offer = _coupon(discount_value=D("30"), category="beauty")

    with django_assert_num_queries(1):  # the labels, read once for every language (reactivation.categories)
        for _ in range(50):
            offer_headline(offer, "zh-hans")
            offer_headline(offer, "en")
            offer_how_to_use(offer, "en")


HOW_TO_USE = [
    # (offer fields, zh-hans steps, en steps)
    (dict(kind="coupon", discount_type="amount", discount_value=D("30"), min_spend=D("199"), category="beauty"),
     ["挑选美妆类商品，满199元即可使用", "结算时输入优惠码，请在有效期内使用", "优惠金额将从订单中直接扣除"],
     ["Add Beauty items worth ¥199 or more to your cart.", "Enter the code at checkout before it expires.",
      "The discount comes straight off your order."]),
    (dict(kind="coupon", discount_type="percent", discount_value=D("15")),
     ["挑选心仪的商品加入购物车", "结算时输入优惠码，请在有效期内使用", "优惠金额将从订单中直接扣除"],
     ["Add the items you like to your cart.", "Enter the code at checkout before it expires.",
      "The discount comes straight off your order."]),
    (dict(kind="points", points_multiplier=D("2"), multiplier_days=7),
     ["7天内购物，即享双倍积分", "积分自动到账，无需输入优惠码"],
     ["Shop as usual within 7 days to earn double points.", "Points are credited automatically; no code needed."]),
    (dict(kind="points", points=500),
     ["500积分将自动存入您的账户", "积分自动到账，无需输入优惠码"],
     ["500 bonus points are added to your account.", "Points are credited automatically; no code needed."]),
    (dict(kind="free_trial", trial_plan="Plus", trial_days=14),
     ["打开App或网站的会员页面", "开通Plus会员，14天免费试用自开通之日起计算"],
     ["Open the membership page in the app or on the website.", "Activate Plus: your 14-day free trial starts on activation."]),
    (dict(kind="exclusive_access", access_title="新品抢先看", access_url="https://x.example/"),
     ["打开活动链接，进入「新品抢先看」"],
     ["Open the link to access 新品抢先看."]),
]


@pytest.mark.parametrize("fields, zh, en", HOW_TO_USE)
def test_how_to_use(fields, zh, en, beauty):
    assert offer_how_to_use(_offer(**fields), "zh-hans") == zh
    assert offer_how_to_use(_offer(**fields), "en") == en


def test_the_steps_returned_are_the_callers_to_change():
    offer = _offer(kind="points", points=5)

    offer_how_to_use(offer, "en").append("mine")

    assert offer_how_to_use(offer, "en")[-1] != "mine"


# Whatever the offer lacks, no sentence says "None" or leaves a hole -------------------------

_EMPTY_FIELDS = dict(discount_type="", discount_value=None, min_spend=None, points=None, points_multiplier=None,
                     multiplier_days=None, trial_plan="", trial_days=None, access_title="", access_url="")


@pytest.mark.parametrize("language", ["zh-hans", "en"])
@pytest.mark.parametrize("kind", Offer.Kind.values)
@pytest.mark.parametrize("category", ["", "unlabelled"])
def test_an_offer_missing_every_field_still_reads_naturally(kind, language, category):
    offer = _offer(kind=kind, category=category, **_EMPTY_FIELDS)

    texts = [offer_headline(offer, language), *offer_how_to_use(offer, language)]

    assert all(text and text.strip() == text for text in texts)
    for text in texts:
        for hole in ("None", "null", "  ", "¥ ", "¥0", "0元", "满减", "类商品类", "-day", " of .", "，，", "「」"):
            assert hole not in text, (hole, text)
