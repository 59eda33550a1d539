"""What a customer reads: their language, the brand's voice, an offer they can act on, never "None"."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from campaigns.models import Campaign, MessageTemplateTranslation
from campaigns.rendering import TemplateRenderError, render_message, validate_campaign_templates
from campaigns.services import campaign_launch
from reactivation.models import Category
from tests.factories import (
    BrandFactory,
    CampaignFactory,
    CustomerFactory,
    MessageTemplateFactory,
    OfferFactory,
    OfferGrantFactory,
)

pytestmark = pytest.mark.django_db

EN_SUBJECT = "We miss you at {{ brand }}"


def bilingual_email_template(**fields):
    template = MessageTemplateFactory(
        channel="email", locale="zh-hans", subject="想你了！{{ brand }}",
        html_body="<p>{{ customer.name }}，你喜欢的{{ favourite_category|default:'好物' }}上新了</p>", **fields,
    )
    MessageTemplateTranslation.objects.create(
        template=template, locale="en", subject=EN_SUBJECT,
        html_body="<p>Hi {{ customer.first_name }}, new {{ favourite_category|default:'arrivals' }} for you</p>",
    )
    return template


# One language per customer ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("customer_locale", "brand_locale", "subject", "footer_word"),
    [
        ("en", "zh-hans", "We miss you at 青禾生活", "Unsubscribe"),  # the customer's language
        ("en-GB", "zh-hans", "We miss you at 青禾生活", "Unsubscribe"),
        ("zh-hans", "en", "想你了！青禾生活", "退订"),
        ("fr", "en", "We miss you at 青禾生活", "Unsubscribe"),  # no French variant: the brand's default
        ("fr", "zh-hans", "想你了！青禾生活", "退订"),
        ("", "en", "We miss you at 青禾生活", "Unsubscribe"),
    ],
)
def test_the_customer_language_picks_the_variant_and_the_whole_message_follows(customer_locale, brand_locale,
                                                                               subject, footer_word):
    Category.objects.create(key="beauty", label_zh_hans="美妆", label_en="beauty products")
    campaign = CampaignFactory(brand=BrandFactory(default_locale=brand_locale), email_template=bilingual_email_template())
    customer = CustomerFactory(name="Emma Clarke", locale=customer_locale, favourite_category="beauty")

    message = render_message(template=campaign.email_template, customer=customer, campaign=campaign)

    assert message.subject == subject
    assert footer_word in message.html and footer_word in message.text
    english = subject.startswith("We")
    assert ("new beauty products for you" if english else "你喜欢的美妆上新了") in message.html
    assert "beauty<" not in message.html and "的beauty" not in message.html  # never the raw key
    assert ('lang="en"' if english else 'lang="zh-CN"') in message.html


def test_a_category_without_a_label_is_left_out_not_shown_as_its_key():
    campaign = CampaignFactory(email_template=bilingual_email_template())
    customer = CustomerFactory(locale="zh-hans", favourite_category="outdoor")

    message = render_message(template=campaign.email_template, customer=customer, campaign=campaign)

    assert "你喜欢的好物上新了" in message.html and "outdoor" not in message.html


# The brand and the call to action -----------------------------------------------------------


def test_an_email_with_an_offer_has_the_brand_header_a_claim_button_and_the_postal_address():
    brand = BrandFactory(shop_url="https://shop.qinghe.example.com/?ref=mail")
    offer = OfferFactory(discount_value=Decimal("30"), min_spend=Decimal("199"))
    campaign = CampaignFactory(name="双11 回归", brand=brand, offer=offer)
    customer = CustomerFactory(locale="zh-hans")
    grant = OfferGrantFactory(offer=offer, customer=customer, campaign=campaign)

    message = render_message(template=campaign.email_template, customer=customer, campaign=campaign, grant=grant)

    claim = "https://winback.example.com/offers/claim/"
    assert message.html.count(claim) == 1 and "立即领取" in message.html
    assert f"领取优惠：{claim}" in message.text
    assert "上海市静安区南京西路1266号" in message.html and "上海市静安区南京西路1266号" in message.text
    # The header links to the shop with UTM parameters, keeping the shop's own query.
    assert "https://shop.qinghe.example.com/?ref=mail&amp;utm_source=winback&amp;utm_medium=email&amp;utm_campaign=" in message.html
    assert ">青禾生活<" in message.html


def test_an_email_without_an_offer_leads_to_the_shop():
    campaign = CampaignFactory(brand=BrandFactory())
    customer = CustomerFactory(locale="zh-hans")

    message = render_message(template=campaign.email_template, customer=customer, campaign=campaign)

    assert "去青禾生活逛逛" in message.html and "/offers/claim/" not in message.html
    assert "utm_medium=email" in message.text


def test_an_sms_with_an_offer_carries_its_claim_link_set_off_by_spaces():
    offer = OfferFactory()
    campaign = CampaignFactory(channels=["sms"], sms_template=MessageTemplateFactory(channel="sms", sms_text="好久不见"),
                               offer=offer)
    customer = CustomerFactory(locale="zh-hans")
    grant = OfferGrantFactory(offer=offer, customer=customer, campaign=campaign)

    message = render_message(template=campaign.sms_template, customer=customer, campaign=campaign, grant=grant)

    assert message.text.startswith("好久不见 领取：https://winback.example.com/offers/claim/")
    assert message.text.endswith(" ")


def test_an_in_app_message_with_an_offer_opens_its_claim_page():
    offer = OfferFactory()
    template = MessageTemplateFactory(channel="in_app", deep_link="app://home")
    campaign = CampaignFactory(channels=["in_app"], in_app_template=template, offer=offer)
    customer = CustomerFactory()
    grant = OfferGrantFactory(offer=offer, customer=customer, campaign=campaign)

    message = render_message(template=template, customer=customer, campaign=campaign, grant=grant)

    assert message.deep_link.startswith("https://winback.example.com/offers/claim/")
    assert render_message(template=template, customer=customer, campaign=campaign).deep_link == "app://home"


# Never "None", never an empty value ---------------------------------------------------------


FREE_TRIAL_TEXT = "{{ customer.name }}，{{ offer.trial_plan }} 会员免费试用{{ offer.trial_days }}天"


def test_a_template_printing_a_field_the_offer_lacks_is_refused_at_render_time():
    coupon = OfferFactory()
    template = MessageTemplateFactory(channel="in_app", body=FREE_TRIAL_TEXT)
    customer = CustomerFactory()
    grant = OfferGrantFactory(offer=coupon, customer=customer)

    with pytest.raises(TemplateRenderError) as refused:
        render_message(template=template, customer=customer, grant=grant)

    assert refused.value.variable == "offer.trial_plan" and refused.value.channel == "in_app"


def test_the_campaign_check_names_the_variable_the_channel_and_the_offer():
    campaign = CampaignFactory(
        channels=["email", "in_app"], offer=OfferFactory(name="¥30 off"), when_budget_exhausted="skip",
        in_app_template=MessageTemplateFactory(channel="in_app", body=FREE_TRIAL_TEXT),
    )

    with pytest.raises(ValidationError) as refused:
        validate_campaign_templates(campaign=campaign)

    message = refused.value.message_dict["in_app_template"][0]
    assert "{{ offer.trial_plan }}" in message and "in_app" in message and "¥30 off" in message
    assert "email_template" not in refused.value.message_dict


def test_launch_refuses_such_a_campaign_and_starts_no_run():
    campaign = CampaignFactory(
        channels=["in_app"], offer=OfferFactory(),
        in_app_template=MessageTemplateFactory(channel="in_app", body=FREE_TRIAL_TEXT),
    )

    with pytest.raises(ValidationError, match="offer.trial_plan"):
        campaign_launch(campaign=campaign, sync=True)

    assert not campaign.runs.exists()
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.DRAFT


def test_a_template_needing_a_code_is_refused_when_the_campaign_may_send_without_an_offer():
    # The budget may run out: then the message goes without a grant and must still read well.
    template = MessageTemplateFactory(channel="email", html_body="<p>优惠码 {{ grant.code }}</p>")
    campaign = CampaignFactory(email_template=template, offer=OfferFactory(budget=10),
                               when_budget_exhausted="send_without_offer")
    with pytest.raises(ValidationError, match="grant.code"):
        validate_campaign_templates(campaign=campaign)

    campaign.when_budget_exhausted = "skip"
    validate_campaign_templates(campaign=campaign)  # no grant, no message: fine


def test_a_nameless_customer_is_greeted_in_their_language():
    template = MessageTemplateFactory(channel="sms", sms_text="{{ customer.name }}，好久不见")
    assert render_message(template=template, customer=CustomerFactory(name="")).text == "亲爱的顾客，好久不见"
