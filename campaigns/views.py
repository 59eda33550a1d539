"""The claim page: what a message carrying an offer links to (``GET /offers/claim/<token>/``).

No login: the token (``core.tokens.claim_token_make``) is the authority, so the page shows
nothing personal beyond the customer's name, and changes nothing (link scanners GET every link).
It is in the customer's language, else the brand's default one, else Chinese, from the string
table below rather than gettext, so it needs no compiled catalogs on the server.
"""

import logging

from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from campaigns.links import shop_link
from campaigns.models import MessageLanguage, OfferGrant, message_language
from campaigns.offer_copy import offer_headline, offer_how_to_use
from campaigns.offers import RedeemRefusal
from campaigns.quiet_hours import customer_zone
from core.tokens import BadToken, claim_token_read

logger = logging.getLogger(__name__)

# utm_content of the page's button: tells clicks from the claim page apart from the message's own links.
UTM_CONTENT = "claim-page"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

STRINGS = {
    MessageLanguage.ZH_HANS: {
        "lang": "zh-CN",
        "title": "您的专属礼遇",
        "greeting": "{name}，这是为您准备的专属礼遇",
        "greeting_anonymous": "这是为您准备的专属礼遇",
        "code_label": "优惠码",
        "copy": "复制",
        "copied": "已复制",
        "copy_failed": "请长按优惠码复制",
        "no_code": "无需优惠码",
        "valid_until": "{date} 前有效",
        "no_expiry": "长期有效",
        "expired": "已过期（{date} 到期）",
        "redeemed": "已使用",
        "ended": "活动已结束",
        "how_to_use": "使用方法",
        "shop": "去{brand}逛逛",
        "shop_anonymous": "立即去使用",
        "open": "立即进入",
        "over_shop": "去{brand}看看其他好物",
        "over_shop_anonymous": "去看看其他好物",
    },
    MessageLanguage.EN: {
        "lang": "en",
        "title": "Your offer",
        "greeting": "{name}, this one is just for you",
        "greeting_anonymous": "This one is just for you",
        "code_label": "Your code",
        "copy": "Copy",
        "copied": "Copied",
        "copy_failed": "Press and hold the code to copy it",
        "no_code": "No code needed",
        "valid_until": "Valid until {date}",
        "no_expiry": "No expiry date",
        "expired": "Expired on {date}",
        "redeemed": "Already used",
        "ended": "This offer has ended",
        "how_to_use": "How to use it",
        "shop": "Shop at {brand}",
        "shop_anonymous": "Shop now",
        "open": "Open now",
        "over_shop": "See what's new at {brand}",
        "over_shop_anonymous": "See what's new",
    },
}


class ClaimStatus:
    VALID = "valid"
    EXPIRED = "expired"
    REDEEMED = "redeemed"
    ENDED = "ended"


# Reasons that depend on the order (amount, category) or on clock skew: the grant is still good.
_STILL_VALID = frozenset({RedeemRefusal.BELOW_MIN_SPEND, RedeemRefusal.WRONG_CATEGORY, RedeemRefusal.NOT_YET_VALID})
_STATUS_BY_REASON = {
    RedeemRefusal.EXPIRED: ClaimStatus.EXPIRED,
    RedeemRefusal.ALREADY_REDEEMED: ClaimStatus.REDEEMED,
    RedeemRefusal.ONCE_PER_CUSTOMER_USED: ClaimStatus.REDEEMED,
    RedeemRefusal.OFFER_INACTIVE: ClaimStatus.ENDED,
}


@require_safe
def claim(request, token: str):
    try:
        grant_id = claim_token_read(token)
    except BadToken:
        return _not_found(request)
    grant = (
        OfferGrant.objects.select_related("offer", "customer", "campaign__brand", "delivery")
        .filter(pk=grant_id).first()
    )
    if grant is None:
        return _not_found(request)

    customer, offer = grant.customer, grant.offer
    campaign = grant.campaign
    brand = campaign.brand if campaign is not None else None
    language = (
        message_language(customer.locale)
        or (message_language(brand.default_locale) if brand is not None else None)
        or MessageLanguage.ZH_HANS
    )
    t = STRINGS[language]
    status = _status(grant)
    expires_at = timezone.localtime(grant.expires_at, customer_zone(customer.timezone)) if grant.expires_at else None

    name = _display_name(customer.name, language)
    # Exclusive access leads to its own page while it lasts; everything else to the shop.
    opens_access = offer.kind == offer.Kind.EXCLUSIVE_ACCESS and bool(offer.access_url) and status == ClaimStatus.VALID
    target = offer.access_url if opens_access else (brand.shop_url if brand is not None else "")
    channel = grant.delivery.channel if grant.delivery is not None and grant.delivery.channel else "web"
    campaign_name = campaign.name if campaign is not None else ""
    button_url = shop_link(url=target, channel=channel, campaign_name=campaign_name, content=UTM_CONTENT) if target else ""

    context = {
        "t": t,
        "brand": brand,
        "greeting": t["greeting"].format(name=name) if name else t["greeting_anonymous"],
        "headline": offer_headline(offer, language),
        "how_to_use": offer_how_to_use(offer, language),
        "code": grant.code or "",
        "status": status,
        "is_valid": status == ClaimStatus.VALID,
        "validity": _validity(t, status, expires_at),
        "button_url": button_url,
        "button_label": _button_label(t, brand, status, opens_access=opens_access),
    }
    return _private(render(request, "campaigns/claim.html", context), t)


def _status(grant) -> str:
    # The order-dependent rules are met by assumption (an order at the minimum spend, in the
    # right category): the page answers "can I still use this?", not "does this order qualify?".
    ok, reason = grant.is_redeemable(grant.customer, order_amount=grant.offer.min_spend)
    if ok or reason in _STILL_VALID:
        return ClaimStatus.VALID
    return _STATUS_BY_REASON.get(reason, ClaimStatus.ENDED)


def _validity(t: dict, status: str, expires_at) -> str:
    if status == ClaimStatus.REDEEMED:
        return t["redeemed"]
    if status == ClaimStatus.ENDED:
        return t["ended"]
    if expires_at is None:
        return t["no_expiry"]
    # With the time of day: a grant made at 10:03 for 14 days ends at 10:03, not at midnight.
    if t["lang"] == "en":
        date = f"{expires_at.day} {_MONTHS[expires_at.month - 1]} {expires_at.year}, {expires_at:%H:%M}"
    else:
        date = f"{expires_at:%Y-%m-%d %H:%M}"
    return t["expired" if status == ClaimStatus.EXPIRED else "valid_until"].format(date=date)


def _button_label(t: dict, brand, status: str, *, opens_access: bool) -> str:
    if opens_access:
        return t["open"]
    key = "shop" if status == ClaimStatus.VALID else "over_shop"
    return t[key].format(brand=brand.name) if brand is not None else t[f"{key}_anonymous"]


def _display_name(name: str, language: str) -> str:
    # English greets by the first word of a Western name; a Chinese name (no space) stays whole.
    name = (name or "").strip()
    return name.split()[0] if language == MessageLanguage.EN and " " in name else name


def _not_found(request):
    # Forged, damaged and unknown tokens look the same: nothing says which it was. Only invalid
    # tokens reach here, so Django's "Not Found: <path>" log line holds no working one.
    logger.info("offer_claim_not_found")
    response = render(request, "campaigns/claim_invalid.html", status=404)
    response["Content-Language"] = "zh-CN, en"
    return _private(response)


def _private(response, t: dict | None = None):
    # The token in the URL is the key to this page. same-origin, not no-referrer: the token must
    # not reach the shop (or the logo's host) in a Referer, and no-referrer would also make a
    # browser post "Origin: null" from this page, which CSRF checks refuse.
    response["Referrer-Policy"] = "same-origin"
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Cache-Control"] = "private, no-store"
    if t is not None:
        # LocaleMiddleware would label the page with the browser's language; it is the customer's.
        response["Content-Language"] = t["lang"]
    return response
