import io
import json
from unittest import mock

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse

from campaigns.models import ApiToken, Campaign, Delivery, MessageTemplate, Redemption
from reactivation.models import Customer, Segment
from campaigns.rendering import EMAIL_STARTING_POINTS
from tests.factories import (
    BrandFactory,
    CampaignFactory,
    CustomerFactory,
    InboxMessageFactory,
    MessageTemplateFactory,
    OfferFactory,
    OfferGrantFactory,
    SegmentFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db



@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client


def staff_with(client, *codenames):
    user = UserFactory()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="campaigns", codename__in=codenames))
    client.force_login(user)
    return client


# Smoke --------------------------------------------------------------------------------------


def test_every_page_opens_for_a_superuser(admin_client):
    grant = OfferGrantFactory()
    redemption = Redemption.objects.create(grant=grant, customer=grant.customer)
    template = MessageTemplateFactory()
    inbox = InboxMessageFactory()
    admin_client.post(reverse("admin:campaigns_apitoken_add"), {"name": "t", "scopes": ["inbox:read"]})
    token = ApiToken.objects.get()
    pages = [
        ("offer", grant.offer.pk), ("offergrant", grant.pk), ("redemption", redemption.pk),
        ("messagetemplate", template.pk), ("apitoken", token.pk), ("inboxmessage", inbox.pk),
    ]
    for model, pk in pages:
        assert admin_client.get(reverse(f"admin:campaigns_{model}_changelist")).status_code == 200, model
        assert admin_client.get(reverse(f"admin:campaigns_{model}_change", args=[pk])).status_code == 200, model
    for model in ("offer", "messagetemplate", "apitoken"):
        assert admin_client.get(reverse(f"admin:campaigns_{model}_add")).status_code == 200, model
    for model in ("offergrant", "redemption", "inboxmessage"):
        assert admin_client.get(reverse(f"admin:campaigns_{model}_add")).status_code == 403, model


def test_offer_list_shows_budget_granted_and_remaining(admin_client):
    OfferFactory(name="Spring coupon", budget=100)
    from campaigns.models import Offer

    Offer.objects.filter(name="Spring coupon").update(granted_count=40)
    response = admin_client.get(reverse("admin:campaigns_offer_changelist"))
    row = response.content.decode().split(">Spring coupon</a>")[1].split("</tr>")[0]
    assert ">100<" in row and ">40<" in row and ">60<" in row


# Codes are shown only to staff who may change offers -----------------------------------------


def test_grant_codes_are_masked_without_change_offer_permission(client):
    grant = OfferGrantFactory(code="K7QM-3XPA-9RTW")
    staff_with(client, "view_offergrant")
    listing = client.get(reverse("admin:campaigns_offergrant_changelist")).content.decode()
    detail = client.get(reverse("admin:campaigns_offergrant_change", args=[grant.pk])).content.decode()
    assert "K7QM-****-****" in listing and "K7QM-****-****" in detail
    assert "3XPA" not in listing and "3XPA" not in detail


def test_grant_codes_are_shown_with_change_offer_permission(client):
    grant = OfferGrantFactory(code="K7QM-3XPA-9RTW")
    staff_with(client, "view_offergrant", "change_offer")
    assert "K7QM-3XPA-9RTW" in client.get(reverse("admin:campaigns_offergrant_changelist")).content.decode()
    assert "K7QM-3XPA-9RTW" in client.get(reverse("admin:campaigns_offergrant_change", args=[grant.pk])).content.decode()


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
    assert "No customer has this external id." in response.content.decode()
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
    assert (sms["body"].chars, sms["body"].parts) == (55, 1)
    # 【品牌】 (4) + 55 + 。(1) + 回复TD退订 (6) = 66 -> still one UCS-2 part; content shows it
    assert sms["full_text"] == "【品牌】" + "中" * 55 + "。回复TD退订"
    assert (sms["full"].chars, sms["full"].encoding, sms["full"].parts) == (66, "UCS-2", 1)
    template.sms_text = "中" * 61
    template.save()
    sms = admin_client.get(preview_url(template)).context["sms"]
    assert (sms["full"].chars, sms["full"].parts, sms["full"].per_part) == (72, 2, 67)
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


# API tokens ---------------------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_works(admin_client):
    response = admin_client.post(reverse("admin:campaigns_apitoken_add"), {"name": "shop backend", "scopes": ["inbox:read"]})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = response.context["key"]
    token = ApiToken.objects.get()
    assert key.startswith(token.prefix + ".") and token.created_by.username == "root"
    assert key in response.content.decode()
    # Never again: not in the change page or the list
    assert key.split(".")[1] not in admin_client.get(reverse("admin:campaigns_apitoken_change", args=[token.pk])).content.decode()
    assert key.split(".")[1] not in admin_client.get(reverse("admin:campaigns_apitoken_changelist")).content.decode()
    # And it authenticates
    customer = CustomerFactory()
    api = admin_client.get(reverse("api-inbox", args=[customer.external_id]), HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.status_code == 200


def test_a_token_gets_exactly_the_scopes_chosen_and_needs_at_least_one(admin_client):
    refused = admin_client.post(reverse("admin:campaigns_apitoken_add"), {"name": "nothing"})
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    assert not ApiToken.objects.exists()
    admin_client.post(reverse("admin:campaigns_apitoken_add"), {"name": "orders", "scopes": ["redemptions:write"]})
    token = ApiToken.objects.get()
    assert token.scopes == ["redemptions:write"]
    page = admin_client.get(reverse("admin:campaigns_apitoken_change", args=[token.pk])).content.decode()
    assert "redemptions:write" in page and 'name="scopes"' not in page  # shown, never widened


def test_revoke_action(admin_client):
    admin_client.post(reverse("admin:campaigns_apitoken_add"), {"name": "a", "scopes": ["events:write"]})
    token = ApiToken.objects.get()
    response = admin_client.post(reverse("admin:campaigns_apitoken_changelist"),
                                 {"action": "revoke", "_selected_action": [token.pk]}, follow=True)
    assert "1 token(s) revoked." in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None


# Redemption import --------------------------------------------------------------------------


def test_redemption_csv_import_page(admin_client):
    grant = OfferGrantFactory()
    upload = io.BytesIO(f"code,external_id,order_amount\n{grant.code},{grant.customer.external_id},50\nNOPE,x,1\n".encode())
    upload.name = "redemptions.csv"
    url = reverse("admin:campaigns_redemption_import")
    assert "Import redemptions (CSV)" in admin_client.get(reverse("admin:campaigns_redemption_changelist")).content.decode()
    response = admin_client.post(url, {"file": upload})
    assert response.status_code == 200
    assert response.context["result"].summary() == "created=1 refused=1 invalid=0"
    assert Redemption.objects.get().source == "import"


def test_redemption_import_needs_add_permission(client):
    staff_with(client, "view_redemption")
    assert client.get(reverse("admin:campaigns_redemption_import")).status_code == 403


def test_test_sms_goes_through_the_sms_transport_with_a_normalized_phone(admin_client):
    sent = []

    class FakeSmsTransport:
        def send_test(self, *, to, message, brand=None):
            sent.append((to, message.text, brand))
            return "sent by sms"

    template = MessageTemplateFactory(channel="sms", sms_text="{{ customer.name }}，好久不见")
    with mock.patch("campaigns.admin.templates.transport_for", lambda channel: FakeSmsTransport()):
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


# Offer import/export through the shared ImportExportAdmin ------------------------------------


def _export_offers_csv(client):
    import csv

    from django import forms

    url = reverse("admin:campaigns_offer_export")
    form = client.get(url).context["form"]
    ticked = {name: "on" for name, field in form.fields.items() if isinstance(field, forms.BooleanField)}
    response = client.post(url, {"format": "0", "resource": "0", **ticked})
    assert response.status_code == 200
    text = response.content.decode("utf-8")
    return text, list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))


def test_offer_export_neutralizes_every_formula_cell(admin_client):
    # given an offer whose text fields were typed by someone planting spreadsheet formulas
    OfferFactory(
        name="=HYPERLINK(\"http://evil.example\",\"click\")", description="+1+cmd|' /C calc'!A0",
        category="@SUM(A1:A9)", kind="access", access_title="-2+3", access_url="https://example.com/x",
    )

    # when it is exported from the admin as CSV
    text, rows = _export_offers_csv(admin_client)

    # then the file is UTF-8 with a BOM (Excel reads Chinese) and no cell starts a formula
    assert text.startswith("\ufeff")
    header, row = rows
    offer = dict(zip(header, row))
    assert offer["name"] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    assert offer["description"] == "'+1+cmd|' /C calc'!A0"
    assert offer["category"] == "'@SUM(A1:A9)"
    assert offer["access_title"] == "'-2+3"
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in header + row)


def test_offer_import_reads_a_gbk_file_through_the_shared_storage(admin_client, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from campaigns.models import Offer

    # given a CSV saved by Excel on Chinese Windows (GBK), uploads kept in MEDIA_ROOT
    settings.MEDIA_ROOT = str(tmp_path)
    content = (
        "name,kind,description,discount_type,discount_value,valid_days,usage_mode,is_active\n"
        "春季回归券,coupon,满100减20,amount,20,14,single_use,1\n"
    ).encode("gbk")

    # when it is previewed and confirmed
    preview = admin_client.post(reverse("admin:campaigns_offer_import"), {
        "format": "0", "resource": "0", "import_file": SimpleUploadedFile("offers.csv", content),
    })
    confirm_form = preview.context["confirm_form"]
    assert any(tmp_path.rglob("*")), "the upload waits in MEDIA_ROOT, readable by every web process"
    admin_client.post(reverse("admin:campaigns_offer_process_import"), confirm_form.initial, follow=True)

    # then the offer is created with its Chinese text intact
    offer = Offer.objects.get(name="春季回归券")
    assert (offer.description, offer.discount_value, offer.granted_count) == ("满100减20", 20, 0)


def test_sms_preview_for_a_campaign_is_signed_by_its_brand(admin_client):
    template = MessageTemplateFactory(channel="sms", sms_text="好久不见")
    campaign = CampaignFactory(channels=["sms"], sms_template=template, email_template=None,
                               brand=BrandFactory(name="青禾生活", sms_signature="青禾"))
    sms = admin_client.get(preview_url(template), {"campaign": campaign.pk}).context["sms"]
    assert sms["full_text"] == "【青禾】好久不见。回复TD退订"
