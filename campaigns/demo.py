"""Three ready campaigns for the demo world (``seed_demo`` calls ``demo_campaigns_seed``).

Idempotent: offers, templates and campaigns are fetched by name, so a second run creates
nothing. The campaigns are drafts with everything set: "Launch now" in the admin (or
``manage.py launch_campaign "Demo: email win-back" --sync``) sends them, the email to the
console/file backend and the SMS to the file backend.
"""

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from campaigns.models import Brand, Campaign, MessageTemplate, MessageTemplateTranslation, Offer
from campaigns.rendering import EMAIL_STARTING_POINTS
from reactivation.categories import category_labels_forget
from reactivation.models import Category, Segment

HIGH_VALUE_DORMANT = "High-value dormant"
DORMANT_BEAUTY_LOVERS = "Dormant beauty lovers"
AT_RISK_APP_USERS = "At-risk app users"

# A fictional lifestyle shop. Its addresses are reserved names (RFC 2606), never a real inbox.
BRAND = {
    "name": "青禾生活",
    "from_name": "青禾生活 Qinghe Living",
    "from_email": "hello@qinghe.example.com",
    "reply_to": "care@qinghe.example.com",
    "sms_signature": "青禾生活",
    "postal_address": "青禾生活（上海）有限公司 · 上海市静安区南京西路1266号 200040\nQinghe Living, 1266 West Nanjing Road, Shanghai 200040, China",
    "shop_url": "https://shop.qinghe.example.com/",
    "default_locale": "zh-hans",
}

# The category keys the demo customers carry (reactivation.demo.CATEGORIES), with their labels.
CATEGORIES = {
    "beauty": ("美妆", "beauty"),
    "fashion": ("服饰", "fashion"),
    "electronics": ("数码", "electronics"),
    "home": ("家居", "home goods"),
    "food": ("美食", "food"),
    "sports": ("运动", "sports gear"),
}

OFFERS = {
    "Demo: ¥30 off ¥199": {
        "kind": Offer.Kind.COUPON, "description": "满199减30", "discount_type": Offer.DiscountType.AMOUNT,
        "discount_value": Decimal("30"), "min_spend": Decimal("199"), "valid_days": 14, "budget": 5000,
        "usage_mode": Offer.UsageMode.ONCE_PER_CUSTOMER,
    },
    "Demo: double points for 7 days": {
        "kind": Offer.Kind.POINTS, "description": "7天双倍积分", "points_multiplier": Decimal("2"), "multiplier_days": 7,
        "usage_mode": Offer.UsageMode.ONCE_PER_CUSTOMER,
    },
    "Demo: 14-day free trial": {
        "kind": Offer.Kind.FREE_TRIAL, "description": "会员免费试用14天", "trial_plan": "Plus", "trial_days": 14,
        "usage_mode": Offer.UsageMode.ONCE_PER_CUSTOMER,
    },
}


def _email(point: str) -> dict:
    starting = EMAIL_STARTING_POINTS[point]
    return {"channel": "email", "subject": starting["subject"], "html_body": starting["html_body"],
            "translations": {"en": dict(starting["en"])}}


# Each template speaks of any offer through {{ offer.headline }}, so it fits whichever offer
# its campaign carries; the claim link is added by the layout (email), the SMS channel and
# the in-app deep link.
TEMPLATES = {
    "Demo email: offer (专属惊喜)": _email("offer"),
    "Demo email: nostalgic (想你了)": _email("nostalgic"),
    "Demo SMS: double points": {
        "channel": "sms",
        "sms_text": "{{ customer.name }}，好久不见！{% if favourite_category %}{{ favourite_category }}{% endif %}"
                    "会员专享{{ offer.headline|default:'新品好礼' }}，今天回来就生效",
        "translations": {"en": {"sms_text": "{{ customer.first_name }}, we miss you! "
                                            "{{ offer.headline|default:'New arrivals' }} for members, starting today"}},
    },
    "Demo in-app: welcome back offer": {
        "channel": "in_app", "title": "{{ brand }} 为你准备了{{ offer.headline|default:'新品好礼' }}",
        "body": "{{ customer.name }}，好久不见！{% if grant %}{{ offer.headline }}已放入你的账户，"
                "{% if grant.expires_at %}{{ grant.expires_at|date:'Y-m-d' }} 前有效，{% endif %}点击查看。"
                "{% else %}新品与好物都在等你，点击看看。{% endif %}",
        "translations": {"en": {
            "title": "{{ brand }}: {{ offer.headline|default:'something new for you' }}",
            "body": "Hi {{ customer.first_name }}, welcome back! {% if grant %}{{ offer.headline }} is waiting in your "
                    "account{% if grant.expires_at %} until {{ grant.expires_at|date:'j M Y' }}{% endif %}. Tap to see it."
                    "{% else %}New arrivals are waiting for you. Tap to see them.{% endif %}",
        }},
    },
}

CAMPAIGNS = {
    "Demo: email win-back": {
        "segment": HIGH_VALUE_DORMANT, "channels": ["email", "in_app"], "offer": "Demo: ¥30 off ¥199",
        "email_template": "Demo email: offer (专属惊喜)", "in_app_template": "Demo in-app: welcome back offer",
        "holdout_percent": 10, "description": "High-value dormant customers: a coupon by email, in-app when no email consent.",
    },
    "Demo: SMS double points": {
        "segment": DORMANT_BEAUTY_LOVERS, "channels": ["sms", "email"], "offer": "Demo: double points for 7 days",
        "sms_template": "Demo SMS: double points", "email_template": "Demo email: nostalgic (想你了)",
        "holdout_percent": 10, "description": "Beauty lovers: double points by SMS (08:00-21:00 local), email otherwise.",
    },
    "Demo: in-app free trial": {
        "segment": AT_RISK_APP_USERS, "channels": ["in_app"], "offer": "Demo: 14-day free trial",
        "in_app_template": "Demo in-app: welcome back offer", "holdout_percent": 10,
        "description": "At-risk app users: a free trial in the app inbox.",
    },
}


@transaction.atomic
def demo_campaigns_seed(*, segments: dict | None = None, now: datetime | None = None) -> dict[str, int]:
    """Create the demo brand, category labels, offers, templates and campaigns that do not
    exist yet; return counts of rows created: {"brands": n, "categories": n, "offers": n,
    "templates": n, "campaigns": n}. Segments come from ``segments`` (name -> Segment) or are
    fetched (created empty if missing) by name."""
    created = {"brands": 0, "categories": 0, "offers": 0, "templates": 0, "campaigns": 0}
    segments = dict(segments or {})
    brand, created["brands"] = Brand.objects.get_or_create(name=BRAND["name"], defaults=BRAND)
    for key, (label_zh, label_en) in CATEGORIES.items():
        _category, was_created = Category.objects.get_or_create(
            key=key, defaults={"label_zh_hans": label_zh, "label_en": label_en}
        )
        created["categories"] += was_created
    category_labels_forget()
    offers = {}
    for name, fields in OFFERS.items():
        offers[name], was_created = Offer.objects.get_or_create(name=name, defaults=fields)
        created["offers"] += was_created
    templates = {}
    for name, spec in TEMPLATES.items():
        fields = {key: value for key, value in spec.items() if key != "translations"}
        templates[name], was_created = MessageTemplate.objects.get_or_create(name=name, defaults=fields)
        created["templates"] += was_created
        if was_created:
            for locale, translated in spec.get("translations", {}).items():
                MessageTemplateTranslation.objects.create(template=templates[name], locale=locale, **translated)
    for name, spec in CAMPAIGNS.items():
        spec = dict(spec)
        segment_name = spec.pop("segment")
        segment = segments.get(segment_name)
        if segment is None:
            segment, _ = Segment.objects.get_or_create(name=segment_name)
        fields = {
            **spec, "segment": segment, "offer": offers[spec["offer"]], "brand": brand,
            **{key: templates[spec[key]] for key in ("email_template", "sms_template", "in_app_template") if key in spec},
        }
        _campaign, was_created = Campaign.objects.get_or_create(name=name, defaults=fields)
        created["campaigns"] += was_created
    return created
