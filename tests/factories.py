"""Factories for tests (factory_boy)."""

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from consent.models import Suppression
from reactivation.models import ActivityEvent, Customer, DormancyReason, DormancyRule, Segment


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    @classmethod
    def _after_postgeneration(cls, instance, create, results=None):
        # set_password runs after the row is created; save it explicitly (factory_boy 4 will
        # stop doing it for us).
        if create and results:
            instance.save(update_fields=["password"])

    username = factory.Sequence(lambda n: f"staff{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@staff.example.com")
    password = factory.PostGenerationMethodCall("set_password", "pass-w0rd-for-tests")
    is_staff = True


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    external_id = factory.Sequence(lambda n: f"C{n:07d}")
    name = factory.Faker("name", locale="zh_CN")
    email = factory.Sequence(lambda n: f"customer{n}@example.com")
    phone = factory.Sequence(lambda n: f"+86138{n:08d}")
    locale = "zh-hans"
    timezone = "Asia/Shanghai"
    signup_at = factory.LazyFunction(lambda: timezone.now() - timezone.timedelta(days=400))
    order_count = 0
    total_spent = Decimal("0")


class ActivityEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ActivityEvent

    customer = factory.SubFactory(CustomerFactory)
    kind = ActivityEvent.LOGIN
    occurred_at = factory.LazyFunction(timezone.now)
    source = "test"


class DormancyRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DormancyRule
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Rule {n}")
    signal = DormancyRule.Signal.LAST_ORDER
    inactive_days = 90
    at_risk_days = 60


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    name = factory.Sequence(lambda n: f"Segment {n}")


class DormancyReasonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DormancyReason

    customer = factory.SubFactory(CustomerFactory)
    reason = DormancyReason.Reason.FORGOT
    source = DormancyReason.Source.SURVEY


class SuppressionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Suppression

    channel = "email"
    address = factory.Sequence(lambda n: f"suppressed{n}@example.com")
    reason = Suppression.Reason.MANUAL


# Offers, templates, inbox (campaigns; owner: offers) ---------------------------------------


class OfferFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Offer"

    name = factory.Sequence(lambda n: f"Offer {n}")
    kind = "coupon"
    description = "满100减20"
    discount_type = "amount"
    discount_value = Decimal("20")
    min_spend = None
    valid_days = 14
    budget = None
    usage_mode = "single_use"


class OfferGrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.OfferGrant"

    offer = factory.SubFactory(OfferFactory)
    customer = factory.SubFactory(CustomerFactory)
    code = factory.LazyFunction(lambda: __import__("campaigns.offers", fromlist=["x"]).code_generate_bulk(count=1)[0])
    granted_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda o: o.granted_at + timezone.timedelta(days=14))


class BrandFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.Brand"
        django_get_or_create = ("name",)

    name = "青禾生活"
    from_name = "青禾生活 Qinghe Living"
    from_email = "hello@qinghe.example.com"
    sms_signature = "青禾生活"
    postal_address = "上海市静安区南京西路1266号 200040"
    shop_url = "https://shop.qinghe.example.com/"
    default_locale = "zh-hans"


class MessageTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.MessageTemplate"

    name = factory.Sequence(lambda n: f"Template {n}")
    channel = "email"
    subject = "想你了！{{ brand }} 期待与您重逢"
    html_body = "<p>{{ customer.name }}，好久不见！</p>{% if grant %}<p>优惠码 {{ grant.code }}</p>{% endif %}"
    sms_text = "{{ customer.name }}，好久不见！"
    title = "{{ brand }} 想你了"
    body = "{{ customer.name }}，回来看看吧"


class InboxMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "campaigns.InboxMessage"

    customer = factory.SubFactory(CustomerFactory)
    title = "我们想你了"
    body = "回来看看吧"
    created_at = factory.LazyFunction(timezone.now)


# Campaigns, runs, deliveries (campaigns; owner: pipeline) -------------------------------------


class CampaignFactory(factory.django.DjangoModelFactory):
    """An email campaign over an everyone-segment; pass channels=[...] and the templates you need."""

    class Meta:
        model = "campaigns.Campaign"

    name = factory.Sequence(lambda n: f"Campaign {n}")
    segment = factory.SubFactory(SegmentFactory)
    brand = factory.SubFactory(BrandFactory)
    channels = factory.LazyFunction(lambda: ["email"])
    email_template = factory.SubFactory(MessageTemplateFactory, channel="email")
    sms_template = None
    in_app_template = None
    reentry_days = 30
