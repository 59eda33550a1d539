import io

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from campaigns.models import ApiToken, Redemption
from tests.factories import (
    CustomerFactory,
    InboxMessageFactory,
    MessageTemplateFactory,
    OfferFactory,
    OfferGrantFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db




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
