"""What a customer reads: their language, the brand's voice, an offer they can act on, never "None"."""

import json
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from campaigns.channels.base import OutboundMessage
from campaigns.channels.sms import SmsTransport
from campaigns.models import Campaign, ChannelPolicy, MessageTemplateTranslation
from campaigns.rendering import TemplateRenderError, render_message, validate_campaign_templates, validate_template
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


def test_an_sms_with_an_offer_carries_its_claim_link_as_a_sentence_set_off_by_spaces():
    offer = OfferFactory()
    campaign = CampaignFactory(channels=["sms"], sms_template=MessageTemplateFactory(channel="sms", sms_text="好久不见"),
                               offer=offer)
    customer = CustomerFactory(locale="zh-hans")
    grant = OfferGrantFactory(offer=offer, customer=customer, campaign=campaign)

    message = render_message(template=campaign.sms_template, customer=customer, campaign=campaign, grant=grant)

    assert message.text.startswith("好久不见。 领取：https://winback.example.com/offers/claim/")
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


def test_launch_refuses_a_brand_without_the_postal_address_or_the_shop():
    # As the migration leaves a brand that was only a name: the marketer must complete it.
    campaign = CampaignFactory(brand=BrandFactory(name="品牌", postal_address="", shop_url=""))

    with pytest.raises(ValidationError) as refused:
        campaign_launch(campaign=campaign, sync=True)

    assert "Complete the brand “品牌”" in refused.value.message_dict["brand"][0]
    assert not campaign.runs.exists()


@pytest.mark.parametrize("source", ["{{ shop_url }}", "{{ campaign.name }}", "{% if favourite_category %}{{ favourite_category }}{% endif %}"])
def test_a_template_on_its_own_may_use_what_every_campaign_has(source):
    validate_template(template=MessageTemplateFactory.build(channel="sms", sms_text=f"回来看看 {source}"))


@pytest.mark.parametrize("source, variable", [
    ("你喜欢的{{ favourite_category }}上新了", "favourite_category"),  # not every customer has one
    ("试用{{ offer.trial_days|default_if_none:'14' }}天", "offer.trial_days"),  # missing is "", never None
    ("{{ offer }}", "offer"),  # a dict would print as Python
])
def test_what_would_print_nothing_or_nonsense_for_some_customers_is_refused_on_save(source, variable):
    Category.objects.create(key="beauty", label_zh_hans="美妆", label_en="beauty")
    with pytest.raises(TemplateRenderError) as refused:
        validate_template(template=MessageTemplateFactory.build(channel="sms", sms_text=source), offer=OfferFactory())
    assert refused.value.variable == variable


def test_an_english_sms_ends_with_the_english_opt_out(settings, tmp_path):
    settings.SMS_BACKEND, settings.SMS_FILE_PATH = "file", str(tmp_path / "sms.jsonl")
    ChannelPolicy.objects.filter(channel="sms").update(quiet_hours_enabled=False)
    template = MessageTemplateFactory(channel="sms", locale="en", sms_text="{{ customer.first_name }}, we miss you")
    campaign = CampaignFactory(channels=["sms"], sms_template=template, offer=OfferFactory())
    customer = CustomerFactory(locale="en-US", name="Emma Clarke", phone="+16465550100")
    grant = OfferGrantFactory(offer=campaign.offer, customer=customer, campaign=campaign)
    rendered = render_message(template=template, customer=customer, campaign=campaign, grant=grant)

    SmsTransport().send(OutboundMessage(to=customer.phone, rendered=rendered, customer=customer, campaign=campaign))

    text = json.loads((tmp_path / "sms.jsonl").read_text())["text"]
    assert text.startswith("【青禾生活】Emma, we miss you. Claim: https://winback.example.com/offers/claim/")
    assert text.endswith("/ Reply STOP to opt out") and "退订" not in text


@pytest.mark.parametrize(("customer_locale", "brand_locale", "content_language"), [
    ("", "zh-hans", "zh-CN"),  # no language of their own: the brand's, as the message was
    ("fr", "zh-hans", "zh-CN"),
    ("fr", "en", "en"),
])
def test_the_unsubscribe_and_preference_pages_answer_in_the_messages_language(client, customer_locale, brand_locale,
                                                                               content_language):
    campaign = CampaignFactory(brand=BrandFactory(default_locale=brand_locale), email_template=bilingual_email_template())
    customer = CustomerFactory(locale=customer_locale)
    message = render_message(template=campaign.email_template, customer=customer, campaign=campaign)

    for url in (message.unsubscribe_url, message.preferences_url):
        page = client.get(url.removeprefix("https://winback.example.com"))
        assert page.status_code == 200 and page["Content-Language"] == content_language
