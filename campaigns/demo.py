"""Three ready campaigns for the demo world (``seed_demo`` calls ``demo_campaigns_seed``).

Idempotent: offers, templates and campaigns are fetched by name, so a second run creates
nothing. The campaigns are drafts with everything set: "Launch now" in the admin (or
``manage.py launch_campaign "Demo: email win-back" --sync``) sends them, the email to the
console/file backend and the SMS to the file backend.
"""

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from campaigns.models import Campaign, MessageTemplate, Offer
from campaigns.rendering import EMAIL_STARTING_POINTS
from reactivation.models import Segment

HIGH_VALUE_DORMANT = "High-value dormant"
DORMANT_BEAUTY_LOVERS = "Dormant beauty lovers"
AT_RISK_APP_USERS = "At-risk app users"

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

TEMPLATES = {
    "Demo email: offer (专属惊喜)": {"channel": "email", **{k: EMAIL_STARTING_POINTS["offer"][k] for k in ("subject", "html_body")}},
    "Demo email: nostalgic (想你了)": {
        "channel": "email", **{k: EMAIL_STARTING_POINTS["nostalgic"][k] for k in ("subject", "html_body")}
    },
    "Demo SMS: double points": {
        "channel": "sms",
        "sms_text": "{{ customer.name }}，好久不见！{{ favourite_category|default:'美妆' }}会员专享7天双倍积分，今天回来就生效",
    },
    "Demo in-app: free trial": {
        "channel": "in_app", "title": "{{ brand }} 送你14天会员",
        "body": "{{ customer.name }}，{{ offer.trial_plan }} 会员免费试用{{ offer.trial_days }}天，点击立即开通。",
        "deep_link": "app://membership/trial",
    },
}

CAMPAIGNS = {
    "Demo: email win-back": {
        "segment": HIGH_VALUE_DORMANT, "channels": ["email", "in_app"], "offer": "Demo: ¥30 off ¥199",
        "email_template": "Demo email: offer (专属惊喜)", "in_app_template": "Demo in-app: free trial",
        "holdout_percent": 10, "description": "High-value dormant customers: a coupon by email, in-app when no email consent.",
    },
    "Demo: SMS double points": {
        "segment": DORMANT_BEAUTY_LOVERS, "channels": ["sms", "email"], "offer": "Demo: double points for 7 days",
        "sms_template": "Demo SMS: double points", "email_template": "Demo email: nostalgic (想你了)",
        "holdout_percent": 10, "description": "Beauty lovers: double points by SMS (08:00-21:00 local), email otherwise.",
    },
    "Demo: in-app free trial": {
        "segment": AT_RISK_APP_USERS, "channels": ["in_app"], "offer": "Demo: 14-day free trial",
        "in_app_template": "Demo in-app: free trial", "holdout_percent": 10,
        "description": "At-risk app users: a free trial in the app inbox.",
    },
}


@transaction.atomic
def demo_campaigns_seed(*, segments: dict | None = None, now: datetime | None = None) -> dict[str, int]:
    """Create the demo offers, templates and campaigns that do not exist yet; return counts of
    rows created: {"offers": n, "templates": n, "campaigns": n}. Segments come from
    ``segments`` (name -> Segment) or are fetched (created empty if missing) by name."""
    created = {"offers": 0, "templates": 0, "campaigns": 0}
    segments = dict(segments or {})
    offers = {}
    for name, fields in OFFERS.items():
        offers[name], was_created = Offer.objects.get_or_create(name=name, defaults=fields)
        created["offers"] += was_created
    templates = {}
    for name, fields in TEMPLATES.items():
        templates[name], was_created = MessageTemplate.objects.get_or_create(name=name, defaults=fields)
        created["templates"] += was_created
    for name, spec in CAMPAIGNS.items():
        spec = dict(spec)
        segment_name = spec.pop("segment")
        segment = segments.get(segment_name)
        if segment is None:
            segment, _ = Segment.objects.get_or_create(name=segment_name)
        fields = {
            **spec, "segment": segment, "offer": offers[spec["offer"]], "brand": "品牌",
            **{key: templates[spec[key]] for key in ("email_template", "sms_template", "in_app_template") if key in spec},
        }
        _campaign, was_created = Campaign.objects.get_or_create(name=name, defaults=fields)
        created["campaigns"] += was_created
    return created
