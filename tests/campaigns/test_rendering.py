from datetime import datetime, timezone as dt_timezone
from decimal import Decimal
from unittest import mock

import pytest

from campaigns import rendering
from campaigns.models import Brand, Campaign, MessageTemplate, OfferGrant
from campaigns.rendering import (
    DEFAULT_BRAND,
    RenderedMessage,
    TemplateRenderError,
    html_to_text,
    render_message,
    validate_template,
)
from core.tokens import unsubscribe_token_read
from reactivation.categories import category_label
from reactivation.models import Category
from tests.factories import CustomerFactory, MessageTemplateFactory, OfferFactory

pytestmark = pytest.mark.django_db



def email_template(**fields):
    defaults = {"name": "t", "channel": "email", "subject": "Hi", "html_body": "<p>Hi</p>"}
    return MessageTemplate(**{**defaults, **fields})


def render(template, customer=None, **kwargs):
    return render_message(template=template, customer=customer or CustomerFactory(), **kwargs)


# Restricted context ---------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["customer.email", "customer.phone"])
def test_customer_email_and_phone_are_not_in_the_context(variable):
    # Not in the context, so a template printing them is refused rather than leaking them.
    customer = CustomerFactory(name="Li", email="li@example.com", phone="+8613800000001")
    with pytest.raises(TemplateRenderError) as refused:
        render(email_template(subject=f"{{{{ {variable} }}}}|{{{{ customer.name }}}}"), customer)
    assert refused.value.variable == variable and refused.value.field == "subject"
    message = render(email_template(subject="{{ customer.email|default:'-' }}|{{ customer.name }}"), customer)
    assert message.subject == "-|Li"
    assert "li@example.com" not in message.html + message.text
    assert "+8613800000001" not in message.html + message.text


def test_context_holds_no_model_instances_to_walk():
    # A template cannot reach another table or call a method through the customer.
    customer = CustomerFactory(name="Li")
    message = render(
        email_template(html_body="[{{ customer.pk|default:'' }}][{{ customer.delete|default:'' }}]"
                                 "[{{ customer.consent_events.all|default:'' }}][{{ customer.total_spent|default:'' }}]"
                                 "[{{ campaign.segment|default:'' }}]"),
        customer,
        campaign=Campaign(name="C", brand=Brand(name="B")),
    )
    assert "[][][][][]" in message.html
    customer.refresh_from_db()  # still there


@pytest.mark.parametrize(
    "source",
    [
        "{% load static %}{% static 'x.css' %}",
        "{% load i18n %}",
        "{% debug %}",
        "{% include 'campaigns/email/layout.html' %}",
        "{% extends 'admin/base.html' %}",
        "{% url 'admin:index' %}",
        "{% lorem 100000 w %}",
        "{{ customer._meta }}",
        "{{ customer.__class__ }}",
        "{{ customer|pprint }}",
        "{{ customer.name|ljust:'1000000000' }}",
        "{% if %}",
        "{{ customer.name|nosuchfilter }}",
        "{% for x in %}",
    ],
)
def test_dangerous_or_broken_templates_are_refused_with_the_field_named(source):
    with pytest.raises(TemplateRenderError) as error:
        render(email_template(html_body=source))
    assert error.value.field == "html_body"
    assert str(error.value).startswith("html_body: TemplateSyntaxError")


def test_errors_raised_while_rendering_are_wrapped_too():
    with pytest.raises(TemplateRenderError) as error:
        render(email_template(subject='{% widthratio 1 2 "not a number" %}'))
    assert error.value.field == "subject"
    assert "widthratio" in str(error.value)


def test_html_is_autoescaped_and_text_channels_are_not():
    customer = CustomerFactory(name="<b>Tom & Jerry</b>")
    email = render(email_template(subject="{{ customer.name }}", html_body="<p>{{ customer.name }}</p>"), customer)
    assert "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>" in email.html
    assert email.subject == "<b>Tom & Jerry</b>"
    sms = render(MessageTemplate(name="s", channel="sms", sms_text="{{ customer.name }} 回来吧"), customer)
    assert sms.text == "<b>Tom & Jerry</b> 回来吧"


# What templates can use ----------------------------------------------------------------------


def test_email_renders_customer_brand_grant_offer_and_links_in_customer_time_zone():
    Category.objects.create(key="beauty", label_zh_hans="美妆", label_en="Beauty")
    customer = CustomerFactory(name="Wei Zhang", favourite_category="beauty", timezone="Asia/Shanghai")
    offer = OfferFactory(discount_type="percent", discount_value=Decimal("15.00"), min_spend=Decimal("99.50"))
    grant = OfferGrant(offer=offer, customer=customer, code="K7QM-3XPA-9RTW",
                       expires_at=datetime(2025, 3, 1, 16, 30, tzinfo=dt_timezone.utc))
    template = email_template(
        subject="想你了！{{ brand }} 期待与您重逢",
        html_body=(
            "<p>{{ customer.first_name }}/{{ customer.external_id }}/{{ favourite_category }}</p>"
            "<p>{{ grant.code }} {{ offer.discount }} 满{{ offer.min_spend }} "
            "至 {{ grant.expires_at|date:'Y-m-d H:i' }}</p>"
        ),
    )
    message = render(template, customer, campaign=Campaign(name="C", brand=Brand(name="小红花")), grant=grant)
    assert message.subject == "想你了！小红花 期待与您重逢"
    assert f"Wei/{customer.external_id}/美妆" in message.html
    # 16:30 UTC is 00:30 the next day in Shanghai
    assert "K7QM-3XPA-9RTW 15% 满99.50 至 2025-03-02 00:30" in message.html
    assert unsubscribe_token_read(message.unsubscribe_url.rstrip("/").rsplit("/", 1)[1]).customer_id == customer.pk
    assert message.unsubscribe_url in message.html and message.unsubscribe_url in message.text
    assert message.preferences_url in message.html


def test_brand_defaults_without_a_campaign_and_offer_is_absent_without_a_grant():
    message = render(email_template(subject="{{ brand }}", html_body="{% if grant %}GIFT{% else %}NOGIFT{% endif %}"))
    assert message.subject == DEFAULT_BRAND
    assert "NOGIFT" in message.html


def test_unsubscribe_link_is_for_the_rendered_channel():
    customer = CustomerFactory()
    message = render(MessageTemplate(name="i", channel="in_app", title="t", body="{{ unsubscribe_url }}"), customer)
    token = message.body.rstrip("/").rsplit("/", 1)[1]
    assert unsubscribe_token_read(token).channel == "in_app"


def test_preview_links_unsubscribe_nobody():
    message = render(email_template(html_body="{{ unsubscribe_url }}"), preview=True)
    assert "/preview-email/" in message.unsubscribe_url


def test_sms_text_is_the_body_without_signature_or_opt_out():
    message = render(MessageTemplate(name="s", channel="sms", sms_text="  {{ brand }}想你了，{{ customer.name }}  "),
                     CustomerFactory(name="李雷"))
    assert message == RenderedMessage(text="品牌想你了，李雷", unsubscribe_url=message.unsubscribe_url,
                                      preferences_url=message.preferences_url, language="zh-hans")
    assert "【" not in message.text and "退订" not in message.text


def test_in_app_title_body_and_deep_link():
    template = MessageTemplate(name="i", channel="in_app", title="{{ brand }}\n送你试用", body="{{ customer.name }}，回来吧",
                               deep_link="app://trial?ref={{ customer.external_id }}")
    customer = CustomerFactory(name="韩梅梅")
    message = render(template, customer)
    assert (message.title, message.body, message.deep_link) == ("品牌 送你试用", "韩梅梅，回来吧",
                                                                f"app://trial?ref={customer.external_id}")


# Text part ----------------------------------------------------------------------------------


def test_text_part_is_derived_from_html_when_blank():
    message = render(email_template(html_body=(
        "<style>p {color: red}</style><h1>想你了</h1>\n\n<p>点击   <a href='https://shop.example.com/c?x=1&amp;y=2'>这里</a>"
        "领取&nbsp;优惠</p><ul><li>一</li><li>二</li></ul><script>alert(1)</script>"
    )))
    body = message.text.split("\n\n--\n")[0]
    assert body == "想你了\n\n点击 这里 (https://shop.example.com/c?x=1&y=2)领取 优惠\n\n- 一\n- 二"


def test_given_text_body_is_used_instead():
    message = render(email_template(html_body="<p>HTML</p>", text_body="Plain {{ brand }}"))
    assert message.text.startswith("Plain 品牌\n\n--\n")


def test_html_to_text_keeps_a_bare_link_once():
    assert html_to_text('<a href="https://a.example/x">https://a.example/x</a>') == "https://a.example/x"
    assert html_to_text('<a href="https://a.example/x"></a>') == "https://a.example/x"


# Validation ---------------------------------------------------------------------------------


def test_validate_template_renders_both_with_and_without_an_offer():
    template = email_template(html_body="{% if grant %}{{ grant.code }}{% else %}{% widthratio 1 2 'x' %}{% endif %}")
    with pytest.raises(TemplateRenderError):
        validate_template(template=template)
    template = email_template(html_body="{% if grant %}{% widthratio 1 2 'x' %}{% endif %}")
    with pytest.raises(TemplateRenderError):
        validate_template(template=template)


@pytest.mark.parametrize(
    ("channel", "fields", "missing"),
    [
        ("email", {"subject": "", "html_body": "<p>x</p>"}, "subject"),
        ("email", {"subject": "s", "html_body": "  "}, "html_body"),
        ("sms", {"sms_text": ""}, "sms_text"),
        ("in_app", {"title": "t", "body": ""}, "body"),
    ],
)
def test_validate_template_requires_the_channel_fields(channel, fields, missing):
    with pytest.raises(TemplateRenderError) as error:
        validate_template(template=MessageTemplate(name="x", channel=channel, **fields))
    assert error.value.field == missing


def test_validate_template_accepts_a_good_template_and_uses_a_sample_coupon():
    template = MessageTemplateFactory.build(html_body="<p>{{ customer.name }} {{ grant.code }} {{ offer.discount }}</p>")
    message = validate_template(template=template)
    assert "张伟 SAMP-LE23-CODE ¥20" in message.html


def test_compiled_templates_are_cached_between_recipients(django_assert_num_queries):
    template = MessageTemplateFactory(channel="sms", sms_text="{{ customer.name }}")
    template = MessageTemplate.objects.prefetch_related("translations").get(pk=template.pk)  # as the pipeline loads it
    customers = CustomerFactory.create_batch(3)
    category_label("beauty", "en")  # the labels, loaded once a minute per process
    with django_assert_num_queries(0):
        texts = [render_message(template=template, customer=c, preview=True).text for c in customers]
    assert texts == [c.name for c in customers]


def test_preview_unsubscribe_link_is_inert(client):
    # Given a customer with email consent, and the unsubscribe link of a preview
    from consent.models import ConsentState
    from consent.services import consent_grant

    customer = CustomerFactory()
    consent_grant(customer=customer, channel="email", source="admin")
    message = render(email_template(), customer, preview=True)
    path = message.unsubscribe_url.removeprefix("https://winback.example.com")
    # When a marketer follows it (GET) or posts the one-click form
    client.get(path)
    client.post(path, {"List-Unsubscribe": "One-Click"})
    # Then nobody is unsubscribed
    assert ConsentState.objects.get(customer=customer, channel="email").status == "granted"


@pytest.mark.parametrize("channel", ["email", "sms", "in_app"])
def test_links_are_exactly_those_of_core_tokens(channel):
    from core import tokens

    customer = CustomerFactory()
    template = MessageTemplateFactory.build(channel=channel)
    with mock.patch("time.time", return_value=1_790_000_000.5):  # both signed in the same second
        message = render(template, customer)
        expected = (tokens.unsubscribe_url(customer_id=customer.pk, channel=channel, language="zh-hans"),
                    tokens.preferences_url(customer_id=customer.pk, channel=channel, language="zh-hans"))
    assert (message.unsubscribe_url, message.preferences_url) == expected


def test_offer_context_is_built_once_per_offer_instance():
    offer = OfferFactory()
    grants = [OfferGrant(offer=offer, code=f"AAAA-BBBB-CCC{n}") for n in range(3)]
    template = MessageTemplate(name="s", channel="sms", sms_text="{{ grant.code }} {{ offer.discount }}")
    with mock.patch("campaigns.rendering._offer_context", wraps=rendering._offer_context) as build:
        texts = [render(template, grant=g).text for g in grants]
    # Unsaved grants: the claim link is the preview one, added because the text has none.
    claim = "领取：https://winback.example.com/offers/claim/preview/ "
    assert texts == [f"AAAA-BBBB-CCC0 ¥20。 {claim}", f"AAAA-BBBB-CCC1 ¥20。 {claim}", f"AAAA-BBBB-CCC2 ¥20。 {claim}"]
    assert build.call_count == 1


@pytest.mark.parametrize("source", [
    "{{ customer.name }}，回来看看吧",
    "{{customer.name}} & {{ brand }} <b>{{ customer.first_name }}</b>",
    "plain text, no variables",
    "{{ True }} {{ None }}",  # the engine's builtins: not in the context dict
    "{{ customer.missing }}|{{ nothing.at.all }}",
    "{{ grant.code }} {{ grant.expires_at }}",  # None grant / a datetime: not a str
    "{{ customer.external_id }} {{ campaign.name }}",
    "{{ customer.name|upper }} {% if grant %}x{% endif %}",  # tags and filters: the engine
    "{{ customer._secret }}",
    "{ not a variable } {{ brand }}",
])
@pytest.mark.parametrize("autoescape", [False, True])
def test_the_simple_template_fast_path_renders_exactly_what_the_engine_renders(source, autoescape):
    from django.template import Context

    customer = CustomerFactory.build(pk=7, name="<Ann> & \"Bo\"", external_id="E'1")
    context = rendering.build_context(customer=customer, campaign=Campaign(name="C&A", brand=Brand(name="B<r>")),
                                      unsubscribe_url="https://x/u/?a=1&b=2")
    if "grant.expires_at" in source:
        grant = OfferGrant(offer=OfferFactory.build(), code="AB&C",
                           expires_at=datetime(2024, 6, 3, 10, 0, tzinfo=dt_timezone.utc))
        context = rendering.build_context(customer=customer, grant=grant)
    try:
        strict_template = rendering._compile(source, autoescape)[0]  # the engine path alone, no fast path
        expected = strict_template.render(Context(context, autoescape=autoescape))
    except Exception:  # noqa: BLE001 - the engine refuses it: so must render_string
        with pytest.raises(TemplateRenderError):
            rendering.render_string(source, context, autoescape=autoescape)
        return
    assert rendering.render_string(source, context, autoescape=autoescape) == expected


def test_only_text_and_plain_variables_take_the_fast_path():
    assert rendering._simple_parts("Hi {{ customer.name }}!") == ("Hi ", ("customer", "name"), "!")
    assert rendering._simple_parts("{{ customer.name|upper }}") is None
    assert rendering._simple_parts("{% if grant %}x{% endif %}") is None
    assert rendering._simple_parts("{# note #}{{ brand }}") is None
    assert rendering._simple_parts("{{ items.0 }}") is None
