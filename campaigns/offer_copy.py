"""What an offer says to a customer: a one-line headline and how to use it, in zh-hans or English.

One sentence per kind, built from the fields the offer has: a field it lacks is left out of the
sentence (never "None", never an empty "满减"), so a half-filled offer still reads naturally.
A category key is shown by its label (``reactivation.models.Category``) in the language asked
for, or as the key itself when it has no label, since a coupon limited to a category must say so.

Every grant of a run shares one Offer instance; the texts are cached on it per language, so the
category label costs one query per offer and language, not one per message.
"""

from decimal import Decimal

from django.conf import settings

from campaigns.models import MessageLanguage, Offer, message_language
from reactivation.categories import category_label

_ZH, _EN = MessageLanguage.ZH_HANS, MessageLanguage.EN
_YUAN = frozenset({"¥", "￥", "元", "CNY", "RMB"})
_ZH_MULTIPLIERS = {Decimal(2): "双倍", Decimal(3): "三倍", Decimal(4): "四倍", Decimal(5): "五倍"}
_EN_MULTIPLIERS = {Decimal(2): "Double", Decimal(3): "Triple", Decimal(4): "Quadruple"}


def offer_headline(offer: Offer, language: str) -> str:
    """One line saying what the offer is, e.g. "满199减30元优惠券" / "¥30 off orders over ¥199"."""
    return _cached(offer, "headline", language, _HEADLINES)


def offer_how_to_use(offer: Offer, language: str) -> list[str]:
    """Short steps, in order, to use the offer (the claim page lists them; messages may too)."""
    return list(_cached(offer, "how_to_use", language, _HOW_TO_USE))


def _cached(offer, what: str, language: str, builders: dict):
    language = _language(language)
    cache = offer.__dict__.setdefault("_copy_cache", {})
    key = (what, language)
    if key not in cache:
        facts = cache.get(("facts", language))
        if facts is None:
            facts = cache[("facts", language)] = _Facts(offer, language)
        cache[key] = builders[language](facts)
    return cache[key]


def _language(language: str) -> str:
    return message_language(language) or _ZH


# Facts: the offer's fields, formatted once --------------------------------------------------


def _number(value) -> str:
    """30.00 -> "30", 12.50 -> "12.5", 1234 -> "1234" (no exponent, no trailing zeros)."""
    return f"{Decimal(value).normalize():f}"


def _money_number(value) -> str:
    # Money with cents keeps both digits (¥12.50); whole amounts show none (¥30).
    value = Decimal(value)
    return _number(value) if value == value.to_integral_value() else f"{value:.2f}"


class _Facts:
    """The offer's fields as text in one language; None where the offer lacks the field."""

    def __init__(self, offer: Offer, language: str):
        self.offer = offer
        self.kind = offer.kind
        self.symbol = getattr(settings, "OFFER_CURRENCY_SYMBOL", "¥") or "¥"
        self.is_percent = offer.discount_type == Offer.DiscountType.PERCENT
        value = offer.discount_value
        self.value = value if value is not None and value > 0 else None
        self.min_spend = offer.min_spend if offer.min_spend is not None and offer.min_spend > 0 else None
        limited = offer.kind in (Offer.Kind.COUPON, Offer.Kind.POINTS)
        self.category = _category_label(offer.category, language) if limited else None
        self.points = offer.points or None
        multiplier = offer.points_multiplier
        self.multiplier = multiplier.normalize() if multiplier is not None and multiplier > 0 else None
        self.multiplier_days = offer.multiplier_days or None
        self.trial_plan = (offer.trial_plan or "").strip() or None
        self.trial_days = offer.trial_days or None
        self.access_title = (offer.access_title or "").strip() or None

    def en_money(self, value) -> str:
        return f"{self.symbol}{_money_number(value)}"

    def zh_money(self, value) -> str:
        # "30元" reads as Chinese; another currency keeps its symbol ("$30").
        return f"{_money_number(value)}元" if self.symbol in _YUAN else self.en_money(value)

    def zh_threshold(self, value) -> str:
        # "满199" is how a Chinese shop writes a minimum spend in yuan.
        return _money_number(value) if self.symbol in _YUAN else self.en_money(value)

    def zh_zhe(self) -> str | None:
        """15% off -> "85折", 10% off -> "9折"; None when the price paid is no whole percent."""
        paid = Decimal(100) - self.value
        if paid <= 0 or paid != paid.to_integral_value():
            return None
        paid = int(paid)
        return f"{paid // 10}折" if paid % 10 == 0 else f"{paid}折"


def _category_label(key: str, language: str) -> str | None:
    """The category's label; the key itself only for an offer saved before its category had
    labels (Offer.clean now refuses that): leaving the scope out would promise the discount on
    everything."""
    key = (key or "").strip()
    if not key:
        return None
    return category_label(key, language) or key


# Headlines ----------------------------------------------------------------------------------


def _zh_headline(f: _Facts) -> str:
    if f.kind == Offer.Kind.COUPON:
        scope = f"{f.category}类商品" if f.category else ""
        threshold = f"满{f.zh_threshold(f.min_spend)}" if f.min_spend else ""
        if f.value is None:
            deal = "可用" if threshold else ""
        elif f.is_percent:
            zhe = f.zh_zhe()
            deal = (f"享{zhe}" if threshold or scope else zhe) if zhe else f"立减{_number(f.value)}%"
        elif threshold:
            deal = f"减{f.zh_money(f.value)}"
        elif scope:
            deal = f"立减{f.zh_money(f.value)}"
        else:
            deal = f"{f.zh_money(f.value)}无门槛"
        if scope:
            return f"{scope}{threshold}{deal}" if threshold or deal else f"{scope}专享优惠券"
        return f"{threshold}{deal}优惠券" if threshold or deal else "专属优惠券"
    if f.kind == Offer.Kind.POINTS:
        parts = []
        if f.points:
            parts.append(f"赠送{f.points}积分")
        if f.multiplier:
            times = _ZH_MULTIPLIERS.get(f.multiplier, f"{_number(f.multiplier)}倍")
            days = f"{f.multiplier_days}天" if f.multiplier_days else ""
            scope = f"{f.category}类商品" if f.category else ""
            parts.append(f"{scope}{days}{times}积分")
        return "，另享".join(parts) if parts else "积分奖励"
    if f.kind == Offer.Kind.FREE_TRIAL:
        plan = _zh_plan(f.trial_plan)
        days = f"{f.trial_days}天" if f.trial_days else ""
        return f"{plan}免费试用{days}"
    if f.kind == Offer.Kind.EXCLUSIVE_ACCESS:
        return f.access_title or "专属活动邀请"
    return f.offer.name


def _zh_plan(plan: str | None) -> str:
    if not plan:
        return "会员"
    return plan if plan.endswith("会员") else f"{plan}会员"


def _en_headline(f: _Facts) -> str:
    if f.kind == Offer.Kind.COUPON:
        orders = f"{f.category} orders" if f.category else "orders"
        over = f" over {f.en_money(f.min_spend)}" if f.min_spend else ""
        if f.value is None:
            return f"A coupon for {orders}{over}" if f.category or over else "A coupon just for you"
        off = f"{_number(f.value)}% off" if f.is_percent else f"{f.en_money(f.value)} off"
        if not f.category and not over:
            return f"{off} your next order"
        return f"{off} {orders}{over}"
    if f.kind == Offer.Kind.POINTS:
        parts = []
        if f.points:
            parts.append(f"{f.points:,} bonus points")
        if f.multiplier:
            times = _EN_MULTIPLIERS.get(f.multiplier)
            phrase = f"{times} points" if times else f"{_number(f.multiplier)}× points"
            if f.category:
                phrase += f" on {f.category}"
            if f.multiplier_days:
                phrase += f" for {f.multiplier_days} {_en_days(f.multiplier_days)}"
            parts.append(phrase if not parts else phrase[0].lower() + phrase[1:])
        return " + ".join(parts) if parts else "Bonus points"
    if f.kind == Offer.Kind.FREE_TRIAL:
        of_plan = f" of {f.trial_plan}" if f.trial_plan else ""
        if f.trial_days:
            return f"{f.trial_days}-day free trial{of_plan}"
        return f"Free trial{of_plan}"
    if f.kind == Offer.Kind.EXCLUSIVE_ACCESS:
        return f.access_title or "Exclusive access"
    return f.offer.name


def _en_days(n: int) -> str:
    return "day" if n == 1 else "days"


# How to use ---------------------------------------------------------------------------------


def _zh_how_to_use(f: _Facts) -> list[str]:
    if f.kind == Offer.Kind.COUPON:
        items = f"{f.category}类商品" if f.category else "心仪的商品"
        if f.min_spend:
            first = f"挑选{items}，满{f.zh_threshold(f.min_spend)}{'元' if f.symbol in _YUAN else ''}即可使用"
        else:
            first = f"挑选{items}加入购物车"
        return [first, "结算时输入优惠码，请在有效期内使用", "优惠金额将从订单中直接扣除"]
    if f.kind == Offer.Kind.POINTS:
        steps = []
        if f.multiplier:
            times = _ZH_MULTIPLIERS.get(f.multiplier, f"{_number(f.multiplier)}倍")
            when = f"{f.multiplier_days}天内" if f.multiplier_days else "活动期间"
            what = f"购买{f.category}类商品" if f.category else "购物"
            steps.append(f"{when}{what}，即享{times}积分")
        if f.points:
            steps.append(f"{f.points}积分将自动存入您的账户")
        steps.append("积分自动到账，无需输入优惠码")
        return steps
    if f.kind == Offer.Kind.FREE_TRIAL:
        days = f"{f.trial_days}天" if f.trial_days else ""
        return ["打开App或网站的会员页面", f"开通{_zh_plan(f.trial_plan)}，{days}免费试用自开通之日起计算"]
    if f.kind == Offer.Kind.EXCLUSIVE_ACCESS:
        return [f"打开活动链接，进入「{f.access_title}」" if f.access_title else "打开活动链接即可进入"]
    return []


def _en_how_to_use(f: _Facts) -> list[str]:
    if f.kind == Offer.Kind.COUPON:
        items = f"{f.category} items" if f.category else "the items you like"
        worth = f" worth {f.en_money(f.min_spend)} or more" if f.min_spend else ""
        return [
            f"Add {items}{worth} to your cart.",
            "Enter the code at checkout before it expires.",
            "The discount comes straight off your order.",
        ]
    if f.kind == Offer.Kind.POINTS:
        steps = []
        if f.multiplier:
            times = _EN_MULTIPLIERS.get(f.multiplier)
            earn = f"{times.lower()} points" if times else f"{_number(f.multiplier)}× points"
            what = f"Shop {f.category}" if f.category else "Shop as usual"
            when = f" within {f.multiplier_days} {_en_days(f.multiplier_days)}" if f.multiplier_days else " while the offer lasts"
            steps.append(f"{what}{when} to earn {earn}.")
        if f.points:
            steps.append(f"{f.points:,} bonus points are added to your account.")
        steps.append("Points are credited automatically; no code needed.")
        return steps
    if f.kind == Offer.Kind.FREE_TRIAL:
        plan = f.trial_plan or "the membership"
        trial = f"your {f.trial_days}-day free trial" if f.trial_days else "your free trial"
        return ["Open the membership page in the app or on the website.", f"Activate {plan}: {trial} starts on activation."]
    if f.kind == Offer.Kind.EXCLUSIVE_ACCESS:
        return [f"Open the link to access {f.access_title}." if f.access_title else "Open the link to get in."]
    return []


_HEADLINES = {_ZH: _zh_headline, _EN: _en_headline}
_HOW_TO_USE = {_ZH: _zh_how_to_use, _EN: _en_how_to_use}
