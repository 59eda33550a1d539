"""The message template admin: saving checks a template renders; the preview and the test send
render it for a chosen customer and campaign exactly as the sender would."""

import json
import re
from html import unescape
from urllib.parse import urlsplit
from unittest import mock

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse

from campaigns.models import Campaign, Delivery, MessageTemplate, MessageTemplateTranslation, OfferGrant
from campaigns.rendering import EMAIL_STARTING_POINTS
from core.tokens import claim_token_make
from reactivation.models import Customer, Segment
from tests.factories import (
    BrandFactory,
    CampaignFactory,
    CustomerFactory,
    MessageTemplateFactory,
    OfferFactory,
    OfferGrantFactory,
    SegmentFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db



def staff_with(client, *codenames):
    user = UserFactory()
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


# Message templates --------------------------------------------------------------------------


TRANSLATIONS_NONE = {"translations-TOTAL_FORMS": 0, "translations-INITIAL_FORMS": 0}


def template_form(**fields):
    return {"name": "Win-back", "channel": "email", "locale": "zh-hans", "subject": "想你了！{{ brand }}",
            "html_body": "<p>hi</p>", "text_body": "", "sms_text": "", "title": "", "body": "", "deep_link": "",
            **TRANSLATIONS_NONE, **fields}


def test_a_template_that_fails_to_render_is_refused_with_the_error(admin_client):
    response = admin_client.post(reverse("admin:campaigns_messagetemplate_add"),
                                 template_form(html_body="<p>{% if %}</p>"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "html_body" in errors and "cannot be rendered" in errors["html_body"][0]
    assert "Unexpected end of expression in if tag" in response.content.decode()
    assert not MessageTemplate.objects.exists()


def test_a_template_loading_a_library_is_refused(admin_client):
    response = admin_client.post(reverse("admin:campaigns_messagetemplate_add"),
                                 template_form(subject="{% load static %}x"))
    assert "subject" in response.context["adminform"].form.errors
    assert not MessageTemplate.objects.exists()


def test_a_template_missing_its_channel_fields_is_refused(admin_client):
    response = admin_client.post(reverse("admin:campaigns_messagetemplate_add"), template_form(channel="sms"))
    assert "sms_text" in response.context["adminform"].form.errors


def test_a_good_template_is_saved(admin_client):
    response = admin_client.post(reverse("admin:campaigns_messagetemplate_add"), template_form())
    assert response.status_code == 302
    assert MessageTemplate.objects.get().subject == "想你了！{{ brand }}"


@pytest.mark.parametrize(("key", "subject"), [
    ("nostalgic", "想你了！{{ brand }} 期待与您重逢"),
    ("offer", "{{ brand }} 为你准备了一份专属惊喜，点击领取！"),
    ("question", "最近还好吗？{{ brand }} 想知道您为什么离开了我们"),
])
def test_starting_points_prefill_the_add_form_and_save(admin_client, key, subject):
    listing = admin_client.get(reverse("admin:campaigns_messagetemplate_changelist")).content.decode()
    assert f"?starting_point={key}" in listing
    response = admin_client.get(reverse("admin:campaigns_messagetemplate_add") + f"?starting_point={key}")
    form = response.context["adminform"].form
    assert form.initial["subject"] == subject and form.initial["channel"] == "email"
    english = response.context["inline_admin_formsets"][0].formset.forms[0].initial
    assert english["locale"] == "en" and english["subject"] == EMAIL_STARTING_POINTS[key]["en"]["subject"]
    saved = admin_client.post(reverse("admin:campaigns_messagetemplate_add"), template_form(
        name=key, subject=subject, html_body=form.initial["html_body"],
        **{"translations-TOTAL_FORMS": 1, "translations-INITIAL_FORMS": 0, "translations-0-locale": "en",
           "translations-0-subject": english["subject"], "translations-0-html_body": english["html_body"]},
    ))
    assert saved.status_code == 302
    assert MessageTemplate.objects.get(name=key).translations.get().locale == "en"


def test_a_language_variant_that_cannot_be_rendered_is_refused(admin_client):
    response = admin_client.post(reverse("admin:campaigns_messagetemplate_add"), template_form(
        **{"translations-TOTAL_FORMS": 1, "translations-INITIAL_FORMS": 0, "translations-0-locale": "en",
           "translations-0-subject": "Hi {{ customer.email }}", "translations-0-html_body": "<p>hi</p>"},
    ))
    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.forms[0].errors
    assert "customer.email" in errors["subject"][0]
    assert not MessageTemplate.objects.exists()


def test_a_language_variant_in_the_templates_own_language_is_refused(admin_client):
    response = admin_client.post(reverse("admin:campaigns_messagetemplate_add"), template_form(
        **{"translations-TOTAL_FORMS": 1, "translations-INITIAL_FORMS": 0, "translations-0-locale": "zh-hans",
           "translations-0-subject": "你好", "translations-0-html_body": "<p>hi</p>"},
    ))
    assert response.status_code == 200
    assert "locale" in response.context["inline_admin_formsets"][0].formset.forms[0].errors
    assert not MessageTemplate.objects.exists()


def test_editing_a_template_is_refused_when_a_campaign_using_it_lacks_the_field(admin_client):
    template = MessageTemplateFactory(channel="in_app", title="t", body="回来看看")
    CampaignFactory(channels=["in_app"], in_app_template=template, offer=OfferFactory(), when_budget_exhausted="skip")
    response = admin_client.post(
        reverse("admin:campaigns_messagetemplate_change", args=[template.pk]),
        template_form(name=template.name, channel="in_app", subject="", html_body="", title="t",
                      body="试用{{ offer.trial_days }}天"),
    )
    assert response.status_code == 200
    assert "offer.trial_days" in str(response.context["adminform"].form.errors)
    template.refresh_from_db()
    assert template.body == "回来看看"


# Preview and test send ----------------------------------------------------------------------


def preview_url(template):
    return reverse("admin:campaigns_messagetemplate_preview", args=[template.pk])


def test_preview_for_a_chosen_customer(admin_client):
    template = MessageTemplateFactory(html_body="<p>{{ customer.name }} {{ customer.email|default:'' }}</p>")
    customer = CustomerFactory(name="王芳", email="wang@example.com")
    response = admin_client.get(preview_url(template), {"external_id": customer.external_id})
    assert response.status_code == 200
    assert response.context["message"].subject == "想你了！品牌 期待与您重逢"
    assert "王芳" in response.context["message"].html
    assert "wang@example.com" not in response.content.decode()
    assert "/preview-email/" in response.context["message"].unsubscribe_url


def test_preview_for_an_unknown_customer_says_so(admin_client):
    response = admin_client.get(preview_url(MessageTemplateFactory()), {"external_id": "nobody"})
    assert "No customer has this external id or a name containing it." in response.content.decode()
    assert response.context["note"] == "sample customer"


def test_preview_for_a_random_customer_of_the_campaign_segment_with_its_offer(admin_client):
    member, outsider = CustomerFactory(name="成员"), CustomerFactory(name="外人")
    segment = SegmentFactory()
    template = MessageTemplateFactory(html_body="<p>{{ customer.name }} {{ grant.code }} {{ offer.discount }}</p>")
    campaign = Campaign.objects.create(name="C", segment=segment, channels=["email"], email_template=template,
                                       brand=BrandFactory(name="小花"), offer=OfferFactory(discount_value=30))
    with mock.patch.object(Segment, "customers", lambda self: Customer.objects.filter(pk=member.pk)):
        response = admin_client.get(preview_url(template), {"campaign": campaign.pk})
    message = response.context["message"]
    assert "成员 SAMP-LE23-CODE ¥30" in message.html
    assert message.subject == "想你了！小花 期待与您重逢"
    assert member.external_id in response.context["note"]


def test_sms_preview_shows_length_and_parts_with_signature_and_opt_out(admin_client):
    template = MessageTemplateFactory(channel="sms", sms_text="中" * 55)
    response = admin_client.get(preview_url(template))
    sms = response.context["sms"]
    assert (sms.body.chars, sms.body.parts) == (55, 1)
    # 【品牌】 (4) + 55 + 。(1) + 回复TD退订 (6) = 66 -> still one UCS-2 part; content shows it
    assert sms.full_text == "【品牌】" + "中" * 55 + "。回复TD退订"
    assert (sms.full.chars, sms.full.encoding, sms.full.parts) == (66, "UCS-2", 1)
    template.sms_text = "中" * 61
    template.save()
    sms = admin_client.get(preview_url(template)).context["sms"]
    assert (sms.full.chars, sms.full.parts, sms.full.per_part) == (72, 2, 67)
    assert "72 characters, UCS-2, 2 parts" in admin_client.get(preview_url(template)).content.decode()


def test_a_broken_saved_template_previews_with_the_error(admin_client):
    template = MessageTemplateFactory()
    MessageTemplate.objects.filter(pk=template.pk).update(html_body="{% if %}")
    response = admin_client.get(preview_url(template))
    assert response.status_code == 200
    assert "cannot be rendered" in response.content.decode()


def test_test_email_goes_to_the_typed_address_and_is_not_a_delivery(admin_client):
    template = MessageTemplateFactory()
    response = admin_client.post(preview_url(template), {"to": "Marketer@Example.com", "send_test": "1"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["marketer@example.com"]
    assert sent.subject == "[TEST] 想你了！品牌 期待与您重逢"
    assert sent.alternatives[0][1] == "text/html"
    assert not Delivery.objects.exists()
    entry = LogEntry.objects.get()
    assert "Test email sent to m***@e***.com" in entry.change_message


def test_test_send_refuses_a_bad_address(admin_client):
    template = MessageTemplateFactory()
    response = admin_client.post(preview_url(template), {"to": "not-an-email", "send_test": "1"})
    assert response.status_code == 200
    assert response.context["send_form"].errors["to"]
    assert mail.outbox == []


def test_test_send_needs_change_permission(client):
    template = MessageTemplateFactory()
    staff_with(client, "view_messagetemplate")
    assert client.get(preview_url(template)).status_code == 200
    assert client.post(preview_url(template), {"to": "a@example.com", "send_test": "1"}).status_code == 403
    assert mail.outbox == []


def test_test_sms_goes_through_the_sms_transport_with_a_normalized_phone(admin_client):
    sent = []

    class FakeSmsTransport:
        def send_test(self, *, to, message, brand=None):
            sent.append((to, message.text, brand))
            return "sent by sms"

    template = MessageTemplateFactory(channel="sms", sms_text="{{ customer.name }}，好久不见")
    with mock.patch("campaigns.previews.transport_for", lambda channel: FakeSmsTransport()):
        response = admin_client.post(preview_url(template), {"to": "138 0013 8000", "send_test": "1"})
    assert response.status_code == 302
    assert sent == [("+8613800138000", "张伟，好久不见", None)]
    assert not Delivery.objects.exists()


def test_a_test_sms_for_a_campaign_is_signed_by_its_brand(admin_client, settings, tmp_path):
    settings.SMS_BACKEND, settings.SMS_FILE_PATH = "file", str(tmp_path / "sms.jsonl")
    template = MessageTemplateFactory(channel="sms", sms_text="好久不见")
    campaign = CampaignFactory(channels=["sms"], sms_template=template, brand=BrandFactory(sms_signature="青禾"))
    response = admin_client.post(preview_url(template) + f"?campaign={campaign.pk}",
                                 {"to": "+8613800138000", "send_test": "1", "campaign": campaign.pk})
    assert response.status_code == 302
    assert json.loads((tmp_path / "sms.jsonl").read_text())["text"] == "【青禾】好久不见。回复TD退订"


def test_a_test_send_the_provider_refuses_reports_the_error(admin_client, settings):
    settings.SMS_BACKEND, settings.SMS_HTTP_URL = "http", ""
    template = MessageTemplateFactory(channel="sms", sms_text="hi")
    response = admin_client.post(preview_url(template), {"to": "+8613800138000", "send_test": "1"}, follow=True)
    assert "The test could not be sent: SMS_HTTP_URL is not set" in response.content.decode()


def test_in_app_templates_preview_without_test_send(admin_client):
    template = MessageTemplateFactory(channel="in_app", title="{{ brand }} 想你了", body="回来吧", deep_link="app://home")
    response = admin_client.get(preview_url(template))
    assert response.context["message"].title == "品牌 想你了"
    assert response.context["can_send"] is False
    assert admin_client.post(preview_url(template), {"to": "a@example.com", "send_test": "1"}).status_code == 403


def test_sms_preview_for_a_campaign_is_signed_by_its_brand(admin_client):
    template = MessageTemplateFactory(channel="sms", sms_text="好久不见")
    campaign = CampaignFactory(channels=["sms"], sms_template=template, email_template=None,
                               brand=BrandFactory(name="青禾生活", sms_signature="青禾"))
    sms = admin_client.get(preview_url(template), {"campaign": campaign.pk}).context["sms"]
    assert sms.full_text == "【青禾】好久不见。回复TD退订"



# As the customer receives it ------------------------------------------------------------------


@pytest.fixture
def english_campaign():
    """A campaign with a brand and a coupon, whose email template has an English variant, and
    an English-speaking customer."""
    template = MessageTemplateFactory(
        subject="想你了！{{ brand }}", html_body="<p>{{ customer.name }}，好久不见</p>{% if grant.code %}<p>{{ grant.code }}</p>{% endif %}",
    )
    MessageTemplateTranslation.objects.create(
        template=template, locale="en", subject="We miss you, {{ customer.first_name }}",
        html_body="<p>Hi {{ customer.first_name }}!</p>{% if grant.code %}<p>Code: {{ grant.code }}</p>{% endif %}",
    )
    brand = BrandFactory(name="Qinghe", from_name="Qinghe Living", from_email="hello@qinghe.example.com",
                         reply_to="care@qinghe.example.com", postal_address="1266 Nanjing Road West, Shanghai")
    campaign = CampaignFactory(email_template=template, brand=brand, offer=OfferFactory(name="Spring coupon"))
    customer = CustomerFactory(name="Emma Clarke", locale="en-GB", email="emma.clarke@example.com")
    return template, campaign, customer


def test_the_preview_renders_for_the_customer_and_campaign_as_the_sender_would(admin_client, english_campaign):
    template, campaign, customer = english_campaign

    response = admin_client.get(preview_url(template), {"customer": customer.external_id, "campaign": campaign.pk})

    preview = response.context["preview"]
    # the customer's language, the campaign's brand (From, Reply-To, postal footer) and offer
    assert preview.message.language == "en"
    assert preview.message.subject == "We miss you, Emma"
    assert (preview.from_email, preview.reply_to) == ("Qinghe Living <hello@qinghe.example.com>", "care@qinghe.example.com")
    assert "1266 Nanjing Road West, Shanghai" in preview.message.html
    assert "Code: SAMP-LE23-CODE" in preview.message.html and preview.grant_is_sample
    assert preview.preheader.startswith("Qinghe Hi Emma! Code: SAMP-LE23-CODE")
    page = response.content.decode()
    assert '<td id="preview-from">Qinghe Living &lt;hello@qinghe.example.com&gt;</td>' in page
    assert "We miss you, Emma" in page
    # a sample grant is never saved
    assert not OfferGrant.objects.exists()


def test_the_test_send_is_rendered_for_the_customer_and_campaign_in_the_url(admin_client, english_campaign):
    # given the preview page of a customer and a campaign, whose test form posts only the address
    template, campaign, customer = english_campaign
    page = admin_client.get(preview_url(template), {"customer": customer.external_id, "campaign": campaign.pk})
    action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.content.decode()).group(1))

    # when the marketer sends a test to their own address
    response = admin_client.post(action, {"to": "marketer@example.com", "send_test": "1"})

    # then it is the message the customer would receive, from the brand, and no delivery
    assert response.status_code == 302
    assert response["Location"] == action
    [sent] = mail.outbox
    assert sent.to == ["marketer@example.com"]
    assert sent.subject == "[TEST] We miss you, Emma"
    assert sent.from_email == "Qinghe Living <hello@qinghe.example.com>"
    assert sent.reply_to == ["care@qinghe.example.com"]
    html = sent.alternatives[0][0]
    assert "Hi Emma!" in html and "Code: SAMP-LE23-CODE" in html and "1266 Nanjing Road West" in html
    assert "/preview-email/" in html  # inert unsubscribe links
    assert not Delivery.objects.exists() and not OfferGrant.objects.exists()
    assert customer.external_id in LogEntry.objects.get().change_message


def test_a_random_customer_of_the_segment_is_drawn_once_and_the_test_names_them(admin_client, english_campaign):
    template, campaign, customer = english_campaign
    with mock.patch.object(Segment, "customers", lambda self: Customer.objects.filter(pk=customer.pk)):
        page = admin_client.get(preview_url(template), {"campaign": campaign.pk})
    assert page.context["preview"].customer == customer
    assert f"customer={customer.external_id}" in page.context["send_action"]
    assert f"campaign={campaign.pk}" in page.context["send_action"]


def test_the_customers_own_grant_is_shown_to_staff_who_may_see_codes(client, english_campaign):
    template, campaign, customer = english_campaign
    OfferGrantFactory(customer=customer, campaign=campaign, offer=campaign.offer, code="K7QM-3XPA-9RTW")
    query = {"customer": customer.external_id, "campaign": campaign.pk}

    staff_with(client, "view_messagetemplate", "view_customer", "change_offer")
    own = client.get(preview_url(template), query).context["preview"]
    staff_with(client, "view_messagetemplate", "view_customer")
    withheld = client.get(preview_url(template), query)

    assert "Code: K7QM-3XPA-9RTW" in own.message.html and not own.grant_is_sample
    preview = withheld.context["preview"]
    assert preview.grant_is_sample and preview.grant_withheld
    assert "K7QM-3XPA-9RTW" not in withheld.content.decode()
    assert "Code: SAMP-LE23-CODE" in preview.message.html


def test_a_test_send_never_carries_the_customers_own_code_or_claim_link(admin_client, english_campaign):
    # given a customer holding a real grant, previewed by staff who may see codes
    template, campaign, customer = english_campaign
    grant = OfferGrantFactory(customer=customer, campaign=campaign, offer=campaign.offer, code="K7QM-3XPA-9RTW")
    page = admin_client.get(preview_url(template), {"customer": customer.external_id, "campaign": campaign.pk})
    assert "Code: K7QM-3XPA-9RTW" in page.context["preview"].message.html  # the screen may show it
    assert "Tests carry a sample code, never the customer's" in page.content.decode()
    action = unescape(re.search(r'<form method="post" action="([^"]+)"', page.content.decode()).group(1))

    # when a test goes to an address someone typed
    admin_client.post(action, {"to": "anyone@example.com", "send_test": "1"})

    # then it carries the sample code and a claim link that opens no grant
    [sent] = mail.outbox
    html, text = sent.alternatives[0][0], sent.body
    assert "K7QM-3XPA-9RTW" not in html + text
    assert "Code: SAMP-LE23-CODE" in html
    own_link = reverse("offers:claim", args=[claim_token_make(grant_id=grant.pk)])
    assert own_link not in html + text
    claim_links = set(re.findall(r"https?://[^\s\"'<>]*/offers/claim/[^\s\"'<>]*", html + text))
    assert claim_links
    for link in claim_links:
        response = admin_client.get(urlsplit(unescape(link)).path)
        assert response.status_code == 404
        assert "K7QM-3XPA-9RTW" not in response.content.decode()


def test_a_part_of_a_name_lists_the_matching_customers_masked_for_staff_without_the_permission(client):
    template = MessageTemplateFactory()
    older = CustomerFactory(name="王芳", email="wang.fang@example.com", phone="+8613812345678")
    newer = CustomerFactory(name="王芳芳", email="fangfang@example.com")
    CustomerFactory(name="李雷")
    staff_with(client, "view_messagetemplate", "view_customer")

    response = client.get(preview_url(template), {"customer": "王芳"})

    assert [row["customer"] for row in response.context["matches"]] == [newer, older]
    assert response.context["preview"].customer == newer  # rendered for the first until one is chosen
    page = response.content.decode()
    assert "w***@e***.com" in page and "+86*******5678" in page
    assert "wang.fang@example.com" not in page and "13812345678" not in page
    assert f'href="?customer={older.external_id}"' in page

    staff_with(client, "view_messagetemplate", "view_customer", "view_personal_data")
    assert "wang.fang@example.com" in client.get(preview_url(template), {"customer": "王芳"}).content.decode()


def test_staff_who_may_not_view_customers_preview_with_the_sample_customer_only(client):
    template = MessageTemplateFactory(html_body="<p>{{ customer.name }}</p>")
    secret = CustomerFactory(name="Zhang Secret Person", external_id="ext-secret")
    campaign = CampaignFactory(email_template=template)
    staff_with(client, "view_messagetemplate")

    by_name = client.get(preview_url(template), {"customer": "Secret"})
    by_id = client.get(preview_url(template), {"customer": "ext-secret"})
    with mock.patch.object(Segment, "customers", lambda self: Customer.objects.filter(pk=secret.pk)):
        drawn = client.get(preview_url(template), {"campaign": campaign.pk})

    for response in (by_name, by_id, drawn):
        page = response.content.decode()
        assert response.status_code == 200
        assert response.context["preview"].customer.pk is None
        assert response.context["matches"] == []
        assert "Zhang Secret Person" not in page
        assert "a real customer needs the permission to view customers" in page
    assert "Rendering for a real customer needs the permission to view customers" in by_name.content.decode()
    assert "ext-secret" not in by_name.content.decode() and "ext-secret" not in drawn.content.decode()
    assert drawn.context["campaign"] == campaign  # its brand and offer still apply


def test_an_exact_external_id_chooses_that_customer_without_a_list(admin_client):
    template = MessageTemplateFactory()
    customer = CustomerFactory(external_id="VIP-1", name="张三")
    CustomerFactory(name="VIP-1 fan")
    response = admin_client.get(preview_url(template), {"customer": "VIP-1"})
    assert response.context["preview"].customer == customer
    assert response.context["matches"] == []


def test_the_campaign_in_the_url_is_preselected(admin_client, english_campaign):
    template, campaign, _ = english_campaign
    page = admin_client.get(preview_url(template), {"campaign": campaign.pk}).content.decode()
    assert f'<option value="{campaign.pk}" selected>' in page


def test_the_html_preview_is_an_escaped_document_in_an_empty_sandbox(admin_client):
    template = MessageTemplateFactory(
        html_body='<p class="x" title="a &quot;b&quot;">{{ customer.name }}</p><script>parent.document.title="x"</script>')
    page = admin_client.get(preview_url(template)).content.decode()
    frame = re.search(r"<iframe[^>]*>", page).group(0)
    assert 'sandbox=""' in frame
    srcdoc = re.search(r'srcdoc="([^"]*)"', frame).group(1)
    document = unescape(srcdoc)
    assert document.startswith("<!DOCTYPE html>") and document.rstrip().endswith("</html>")
    assert '<p class="x" title="a &quot;b&quot;">张伟</p>' in document
