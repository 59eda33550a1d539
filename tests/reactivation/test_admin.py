"""Customer, segment and dormancy-rule admin: masking, search, consent actions, exports, imports."""

import csv
import io

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from openpyxl import load_workbook

from consent.models import ConsentEvent, ConsentState
from consent.services import consent_grant, consent_withdraw
from reactivation.models import DormancyRule, Segment
from tests.factories import (
    ActivityEventFactory,
    CustomerFactory,
    DormancyReasonFactory,
    DormancyRuleFactory,
    SegmentFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


EMAIL = "wang.fang@example.com"
PHONE = "+8613912345678"
CHANGELIST = "admin:reactivation_customer_changelist"


def member_of(group_name):
    user = UserFactory(username=group_name.lower())
    user.groups.add(Group.objects.get(name=group_name))
    return user


@pytest.fixture
def marketer(client):
    return member_of("Marketer")


@pytest.fixture
def compliance():
    return member_of("Compliance")


@pytest.fixture
def customer():
    return CustomerFactory(external_id="U100", name="王芳", email=EMAIL, phone=PHONE)


def export_rows(response) -> list[list[str]]:
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


# Masking ---------------------------------------------------------------------------------------


def test_marketer_sees_masked_email_and_phone_in_list_and_detail(client, marketer, customer):
    ActivityEventFactory(customer=customer)
    DormancyReasonFactory(customer=customer)
    consent_grant(customer=customer, channel="email", source="signup", evidence={"ip": "198.51.100.1"})
    client.force_login(marketer)

    listing = client.get(reverse(CHANGELIST)).content.decode()
    detail = client.get(reverse("admin:reactivation_customer_change", args=[customer.pk])).content.decode()
    history = client.get(reverse("admin:reactivation_customer_history", args=[customer.pk])).content.decode()

    for body in (listing, detail, history):
        assert EMAIL not in body and PHONE not in body and "13912345678" not in body
    assert "w***@e***.com" in listing and "+86*******5678" in listing
    assert "w***@e***.com" in detail and "+86*******5678" in detail
    assert "王芳" in listing  # the rest of the customer is readable


def test_compliance_and_superuser_see_raw_email_and_phone(client, compliance, customer):
    for user in (compliance, UserFactory(username="root", is_superuser=True)):
        client.force_login(user)
        listing = client.get(reverse(CHANGELIST)).content.decode()
        detail = client.get(reverse("admin:reactivation_customer_change", args=[customer.pk])).content.decode()
        assert EMAIL in listing and PHONE in listing
        assert EMAIL in detail and PHONE in detail


def test_detail_page_shows_consent_reasons_and_one_capped_timeline(client, compliance, customer):
    consent_grant(customer=customer, channel="sms", source="signup", notice_version="v7")
    ActivityEventFactory.create_batch(40, customer=customer, category="beauty-cat")
    DormancyReasonFactory(customer=customer, reason="competitor")
    client.force_login(compliance)
    url = reverse("admin:reactivation_customer_change", args=[customer.pk])

    response = client.get(url)

    body = response.content.decode()
    assert "v7" in body and "Went to a competitor" in body
    # the newest 30 of 41 entries (40 events, 1 consent decision), not thousands
    assert len(response.context["timeline"]) == 30
    assert body.count("beauty-cat") == 30
    assert response.context["timeline_more_url"] == "?timeline=60#timeline"
    assert all(not f.has_add_permission and not f.has_change_permission for f in response.context["inline_admin_formsets"])

    more = client.get(url, {"timeline": "60"})
    assert len(more.context["timeline"]) == 41 and more.context["timeline_more_url"] == ""
    assert "SMS consent granted" in more.content.decode()


def test_the_timeline_shows_only_what_the_viewer_may_view(client, marketer, customer):
    from django.contrib.auth.models import Permission

    from campaigns.models import CampaignRun, Delivery
    from tests.factories import CampaignFactory, OfferGrantFactory

    campaign = CampaignFactory(name="想你了 五月")
    Delivery.objects.create(campaign=campaign, run=CampaignRun.objects.create(campaign=campaign, number=1),
                            customer=customer, channel="email", address=EMAIL, status=Delivery.Status.SENT)
    OfferGrantFactory(customer=customer, offer__name="满100减20")
    consent_grant(customer=customer, channel="sms", source="signup")
    ActivityEventFactory(customer=customer, kind="login")
    support = UserFactory()
    support.user_permissions.add(Permission.objects.get(codename="view_customer"))
    url = reverse("admin:reactivation_customer_change", args=[customer.pk])

    client.force_login(support)
    limited = client.get(url)
    client.force_login(marketer)
    full = client.get(url)

    assert limited.status_code == 200 and limited.context["timeline"] == []
    for title in ("Email: 想你了 五月", "Offer granted: 满100减20", "SMS consent granted", "Login"):
        assert title not in limited.content.decode()
        assert title in full.content.decode()


def test_search_results_are_masked_for_marketer(client, marketer, customer):
    CustomerFactory(external_id="OTHER")
    client.force_login(marketer)

    # a phone typed the way people type it finds the customer stored in E.164
    response = client.get(reverse(CHANGELIST), {"q": "139 1234 5678"})

    assert [c.pk for c in response.context["cl"].result_list] == [customer.pk]
    body = response.content.decode()
    assert PHONE not in body and EMAIL not in body


@pytest.mark.parametrize("term", ["U100", "Wang.Fang@Example.com ", "+86 139 1234 5678", "13912345678"])
def test_search_matches_exact_external_id_email_or_phone_in_any_form(client, compliance, customer, term):
    CustomerFactory(external_id="U1000", email="wang.fang@example.org", phone="+8613912345679")
    client.force_login(compliance)

    response = client.get(reverse(CHANGELIST), {"q": term})

    assert [c.pk for c in response.context["cl"].result_list] == [customer.pk]


def test_search_is_exact_and_a_partial_term_finds_nothing(client, compliance, customer):
    client.force_login(compliance)
    response = client.get(reverse(CHANGELIST), {"q": "U10"})
    assert list(response.context["cl"].result_list) == []


def test_search_uses_exact_comparisons_on_indexed_columns(client, compliance, customer):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(compliance)
    client.get(reverse(CHANGELIST), {"q": EMAIL})
    with CaptureQueriesContext(connection) as captured:
        client.get(reverse(CHANGELIST), {"q": EMAIL})
    sql = " ".join(q["sql"] for q in captured if "reactivation_customer" in q["sql"]).upper()
    assert '"EMAIL" = ' in sql.replace("REACTIVATION_CUSTOMER.", "").replace('"REACTIVATION_CUSTOMER".', "")
    # no UPPER()/LIKE: those cannot use the plain B-tree indexes
    assert "LIKE" not in sql and "UPPER(" not in sql


# Consent actions --------------------------------------------------------------------------------


def post_action(client, action, customers, **extra):
    return client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [c.pk for c in customers], **extra},
        follow=True,
    )


def test_compliance_withdraws_email_consent_and_the_action_reports_counts(client, compliance):
    granted = CustomerFactory.create_batch(2)
    for c in granted:
        consent_grant(customer=c, channel="email", source="signup")
    already = CustomerFactory()
    consent_withdraw(customer=already, channel="email", source="unsubscribe_link")
    never = CustomerFactory()
    client.force_login(compliance)

    response = post_action(client, "withdraw_email_consent", [*granted, already, never])

    messages = [str(m) for m in response.context["messages"]]
    assert messages == ["Email consent withdrawn for 3 customer(s); 1 had already withdrawn."]
    events = ConsentEvent.objects.filter(source="admin")
    assert events.count() == 3
    assert set(events.values_list("actor", flat=True)) == {compliance.pk}
    assert set(events.values_list("action", "channel")) == {("withdraw", "email")}
    assert ConsentState.objects.filter(channel="email", status="withdrawn").count() == 4
    # other channels are untouched
    assert not ConsentEvent.objects.filter(source="admin").exclude(channel="email").exists()


@pytest.mark.parametrize("action, channel", [("withdraw_sms_consent", "sms"), ("withdraw_in_app_consent", "in_app")])
def test_withdraw_actions_per_channel(client, compliance, action, channel):
    customer = CustomerFactory()
    consent_grant(customer=customer, channel=channel, source="signup")
    client.force_login(compliance)

    post_action(client, action, [customer])

    assert ConsentState.objects.get(customer=customer, channel=channel).status == "withdrawn"


def test_marketer_has_no_consent_actions(client, marketer, customer):
    consent_grant(customer=customer, channel="email", source="signup")
    client.force_login(marketer)

    actions = client.get(reverse(CHANGELIST)).context["action_form"].fields["action"].choices
    names = {name for name, _ in actions}
    assert "withdraw_email_consent" not in names
    assert "export_selected_csv" in names

    post_action(client, "withdraw_email_consent", [customer])
    assert ConsentState.objects.get(customer=customer).status == "granted"
    assert not ConsentEvent.objects.filter(source="admin").exists()


# Exports ------------------------------------------------------------------------------------------


def test_export_selected_customers_to_csv_omits_personal_data_for_marketer(client, marketer, customer):
    other = CustomerFactory(name="=1+2")
    client.force_login(marketer)

    response = post_action(client, "export_selected_csv", [customer, other])

    rows = export_rows(response)
    assert "email" not in rows[0] and "phone" not in rows[0]
    assert {row[0] for row in rows[1:]} == {"U100", other.external_id}
    assert any(row[1] == "'=1+2" for row in rows[1:])
    assert EMAIL not in str(rows)


def test_export_selected_customers_to_xlsx_with_personal_data_for_compliance(client, compliance, customer):
    client.force_login(compliance)

    response = post_action(client, "export_selected_xlsx", [customer])

    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    header, row = list(sheet.iter_rows(values_only=True))
    cells = dict(zip(header, row))
    assert cells["email"] == EMAIL and cells["phone"] == "'" + PHONE


def test_export_of_the_filtered_changelist_keeps_filters_and_search(client, compliance):
    CustomerFactory(external_id="D1", lifecycle_state="dormant")
    CustomerFactory(external_id="D2", lifecycle_state="dormant")
    CustomerFactory(external_id="A1", lifecycle_state="active")
    client.force_login(compliance)
    listing = client.get(reverse(CHANGELIST), {"lifecycle_state__exact": "dormant"}).content.decode()
    assert "export/csv/?lifecycle_state__exact=dormant" in listing

    response = client.get(
        reverse("admin:reactivation_customer_export", args=["csv"]), {"lifecycle_state__exact": "dormant"}
    )
    searched = client.get(reverse("admin:reactivation_customer_export", args=["csv"]), {"q": "D2"})

    assert sorted(row[0] for row in export_rows(response)[1:]) == ["D1", "D2"]
    assert [row[0] for row in export_rows(searched)[1:]] == ["D2"]


def test_export_view_refuses_bad_input_and_staff_without_view_permission(client, compliance):
    client.force_login(compliance)
    assert client.get(reverse("admin:reactivation_customer_export", args=["pdf"])).status_code == 404
    bad = client.get(reverse("admin:reactivation_customer_export", args=["csv"]), {"no_such_field__exact": "1"})
    assert bad.status_code == 400

    client.force_login(UserFactory(username="nobody"))
    assert client.get(reverse("admin:reactivation_customer_export", args=["csv"])).status_code == 403


# Segments ----------------------------------------------------------------------------------------


def segment_form_data(**overrides):
    data = {
        "name": "High-value dormant", "description": "", "lifecycle_states": ["dormant"],
        "favourite_categories": [], "locales": [], "dormancy_reasons": [], "consent_channels": ["email"],
    }
    data.update(overrides)
    return data


def test_segment_form_uses_choices_for_its_list_fields_and_saves_lists(client, marketer):
    CustomerFactory(favourite_category="beauty", locale="zh-hans")
    client.force_login(marketer)

    form = client.get(reverse("admin:reactivation_segment_add")).context["adminform"].form
    assert ("beauty", "beauty") in form.fields["favourite_categories"].choices
    assert ("zh-hans", "zh-hans") in form.fields["locales"].choices

    response = client.post(
        reverse("admin:reactivation_segment_add"),
        segment_form_data(favourite_categories=["beauty"], locales=["zh-hans"], dormancy_reasons=["competitor"]),
    )

    assert response.status_code == 302
    segment = Segment.objects.get()
    assert segment.lifecycle_states == ["dormant"]
    assert segment.favourite_categories == ["beauty"]
    assert segment.dormancy_reasons == ["competitor"]
    assert segment.consent_channels == ["email"]
    assert segment.created_by == marketer


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"lifecycle_states": ["sleepy"]}, "lifecycle_states"),
        ({"consent_channels": ["fax"]}, "consent_channels"),
        ({"favourite_categories": ["not-a-category"]}, "favourite_categories"),
        ({"rfm_recency_min": "4", "rfm_recency_max": "2"}, "rfm_recency_max"),
        ({"spent_min": "500", "spent_max": "100"}, "spent_max"),
        ({"rfm_monetary_min": "6"}, "rfm_monetary_min"),
    ],
)
def test_segment_form_rejects_bad_values(client, marketer, overrides, field):
    client.force_login(marketer)
    response = client.post(reverse("admin:reactivation_segment_add"), segment_form_data(**overrides))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not Segment.objects.exists()


def test_segment_page_shows_size_and_a_masked_sample(client, marketer, customer):
    from reactivation.selectors import segment_size

    segment = SegmentFactory()  # no criteria: everyone
    CustomerFactory.create_batch(2)
    client.force_login(marketer)

    response = client.get(reverse("admin:reactivation_segment_change", args=[segment.pk]))

    assert response.context["segment_size"] == segment_size(segment=segment) == 3
    body = response.content.decode()
    assert "U100" in body and "w***@e***.com" in body
    assert EMAIL not in body and PHONE not in body


@pytest.fixture
def audience_maker():
    """A marketer who may also see personal data (by the groups alone, only superusers may)."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="audience")
    user.groups.add(Group.objects.get(name="Marketer"))
    user.user_permissions.add(Permission.objects.get(codename="view_personal_data"))
    return user


def sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def export_audience(client, segment):
    return client.post(
        reverse("admin:reactivation_segment_changelist"), {"action": "export_ad_audience", "_selected_action": [segment.pk]}
    )


def test_segment_exports_members_and_ad_audience(client, marketer, audience_maker, customer):
    # given a segment of one customer with consent on both channels
    segment = SegmentFactory()
    consent_grant(customer=customer, channel="email", source="signup")
    consent_grant(customer=customer, channel="sms", source="signup")
    changelist = reverse("admin:reactivation_segment_changelist")
    client.force_login(audience_maker)

    # when members and the ad audience are exported
    members = client.post(changelist, {"action": "export_members_csv", "_selected_action": [segment.pk]})
    audience = export_audience(client, segment)

    # then the audience holds both hashes
    assert [row[0] for row in export_rows(members)[1:]] == ["U100"]
    assert export_rows(audience) == [["email_sha256", "phone_sha256"], [sha(EMAIL), sha(PHONE)]]
    assert audience["Content-Disposition"].startswith(f'attachment; filename="audience-segment-{segment.pk}-')

    client.force_login(marketer)
    names = {n for n, _ in client.get(changelist).context["action_form"].fields["action"].choices}
    assert "export_ad_audience" not in names and "export_members_csv" in names


def test_ad_audience_leaves_out_a_one_click_unsubscribe(client, audience_maker, customer):
    from django.test import Client

    from core.tokens import unsubscribe_token_make

    # given a customer with consent on both channels who then unsubscribes from email by
    # RFC 8058 one-click (the mail client's POST, no cookies)
    segment = SegmentFactory()
    consent_grant(customer=customer, channel="email", source="signup")
    consent_grant(customer=customer, channel="sms", source="signup")
    token = unsubscribe_token_make(customer_id=customer.pk, channel="email")
    one_click = Client(enforce_csrf_checks=True).post(
        reverse("consent:unsubscribe", args=[token]), "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert one_click.status_code == 200

    # when the ad audience is exported
    client.force_login(audience_maker)
    audience = export_audience(client, segment)

    # then only the phone hash is left, and the marketer is told what the file holds
    assert export_rows(audience)[1:] == [["", sha(PHONE)]]
    shown = [str(m) for m in client.get(reverse("admin:reactivation_segment_changelist")).context["messages"]]
    assert len(shown) == 1 and "only members with current marketing consent" in shown[0] and "not suppressed" in shown[0]


def test_ad_audience_leaves_out_withdrawn_never_granted_and_suppressed(client, audience_maker):
    from consent.models import Suppression

    # given one customer per situation
    segment = SegmentFactory()
    withdrawn = CustomerFactory(email="withdrawn@example.com", phone="")
    consent_grant(customer=withdrawn, channel="email", source="signup")
    consent_withdraw(customer=withdrawn, channel="email", source="one_click")
    CustomerFactory(email="never@example.com", phone="+8613700000001")
    bounced = CustomerFactory(email="bounced@example.com", phone="+8613700000002")
    consent_grant(customer=bounced, channel="email", source="signup")
    consent_grant(customer=bounced, channel="sms", source="signup")
    Suppression.objects.create(channel="email", address="bounced@example.com", reason=Suppression.Reason.HARD_BOUNCE)
    client.force_login(audience_maker)

    # when the audience is exported, then only the bounced customer's consented phone remains
    assert export_rows(export_audience(client, segment))[1:] == [["", sha("+8613700000002")]]


def test_ad_audience_export_queries_do_not_grow_with_the_segment(client, audience_maker):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    segment = SegmentFactory()
    client.force_login(audience_maker)

    def queries_for_export() -> int:
        with CaptureQueriesContext(connection) as captured:
            rows = export_rows(export_audience(client, segment))
        return len(captured), len(rows) - 1

    def add_customers(count):
        for _ in range(count):
            consent_grant(customer=CustomerFactory(), channel="email", source="signup")

    add_customers(2)
    small, exported_small = queries_for_export()
    add_customers(20)
    large, exported_large = queries_for_export()

    assert (exported_small, exported_large) == (2, 22)
    assert large == small


def test_the_action_and_the_segment_page_say_who_the_audience_leaves_out(client, marketer, audience_maker):
    # given a segment
    segment = SegmentFactory()
    client.force_login(audience_maker)

    # when the audience maker opens the changelist and the segment page
    choices = dict(client.get(reverse("admin:reactivation_segment_changelist")).context["action_form"].fields["action"].choices)
    page = client.get(reverse("admin:reactivation_segment_change", args=[segment.pk]))

    # then the action and the page state the rule
    assert "only customers with current consent, not suppressed" in choices["export_ad_audience"]
    body = page.content.decode()
    assert 'id="segment-ad-audience"' in body
    assert "only customers with current marketing consent whose address is\n    not suppressed are exported" in body

    # and staff who cannot export the audience do not get the note
    client.force_login(marketer)
    page = client.get(reverse("admin:reactivation_segment_change", args=[segment.pk]))
    assert page.status_code == 200 and 'id="segment-ad-audience"' not in page.content.decode()


def test_segment_export_actions_need_exactly_one_segment(client, marketer):
    segments = SegmentFactory.create_batch(2)
    client.force_login(marketer)

    response = client.post(
        reverse("admin:reactivation_segment_changelist"),
        {"action": "export_members_csv", "_selected_action": [s.pk for s in segments]},
        follow=True,
    )

    assert [str(m) for m in response.context["messages"]] == ["Select exactly one segment to export."]


# django-import-export on rules and segments -----------------------------------------------------


def import_file(client, model_name, content: bytes, filename="rules.csv", file_format="0"):
    """Upload, then confirm when the preview has no errors. Returns (preview, confirmation)."""
    url = reverse(f"admin:reactivation_{model_name}_import")
    preview = client.post(url, {"format": file_format, "resource": "0", "import_file": SimpleUploadedFile(filename, content)})
    assert preview.status_code == 200
    confirm_form = preview.context.get("confirm_form")
    if confirm_form is None:
        return preview, None
    confirmation = client.post(
        reverse(f"admin:reactivation_{model_name}_process_import"), confirm_form.initial, follow=True
    )
    return preview, confirmation


RULES_CSV = (
    "name,signal,inactive_days,at_risk_days,min_orders,min_spent,priority,is_active\n"
    "电商：90天未下单,last_order,90,60,1,,10,1\n"
    "App: no login for 7 days,last_seen,7,,,,20,1\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_dormancy_rules_import_from_utf8_and_gbk(client, marketer, encoding):
    client.force_login(marketer)

    preview, confirmation = import_file(client, "dormancyrule", RULES_CSV.encode(encoding))

    assert confirmation is not None, preview.context["result"].base_errors if preview.context.get("result") else preview.context["form"].errors
    assert confirmation.status_code == 200
    assert set(DormancyRule.objects.values_list("name", "inactive_days", "at_risk_days")) == {
        ("电商：90天未下单", 90, 60), ("App: no login for 7 days", 7, None),
    }


def test_dormancy_rule_import_reports_invalid_rows_and_writes_nothing(client, marketer):
    client.force_login(marketer)
    bad = "name,signal,inactive_days,at_risk_days\nR1,last_order,30,60\nR2,telepathy,30,\n".encode()

    preview, confirmation = import_file(client, "dormancyrule", bad)

    assert confirmation is None
    invalid = preview.context["result"].invalid_rows
    assert [row.number for row in invalid] == [1, 2]
    assert "at_risk_days" in invalid[0].error_dict and "signal" in invalid[1].error_dict
    assert not DormancyRule.objects.exists()


def test_undecodable_file_is_an_error_on_the_form_not_a_crash(client, marketer):
    client.force_login(marketer)
    preview, confirmation = import_file(client, "dormancyrule", b"\x81\x30\xff\xfe name\n")
    assert confirmation is None
    assert "import_file" in preview.context["form"].errors


def test_segments_import_lists_with_choices_dates_and_rules_by_name(client, marketer):
    DormancyRuleFactory(name="E-commerce")
    client.force_login(marketer)
    content = (
        "name,lifecycle_states,dormancy_rule,spent_min,favourite_categories,consent_channels\n"
        "High-value dormant,\"dormant, at_risk\",E-commerce,1000,美妆，母婴,email\n"
        "Bad states,sleepy,,,,\n"
        "Bad rule,dormant,No such rule,,,\n"
    ).encode("gbk")

    preview, confirmation = import_file(client, "segment", content)

    assert confirmation is None  # one bad row blocks the whole import; every bad row is listed
    result = preview.context["result"]
    assert [row.number for row in result.invalid_rows] == [2, 3]
    assert "sleepy" in str(result.invalid_rows[0].error_dict["lifecycle_states"])
    assert "No dormancy rule named 'No such rule'" in str(result.invalid_rows[1].error_dict["dormancy_rule"])

    good, _ = content.decode("gbk").split("\nBad states")
    _, confirmation = import_file(client, "segment", (good + "\n").encode("utf-8"))
    segment = Segment.objects.get()
    assert segment.lifecycle_states == ["dormant", "at_risk"]
    assert segment.favourite_categories == ["美妆", "母婴"]
    assert segment.dormancy_rule.name == "E-commerce"
    assert segment.created_by == marketer


def export_all_fields(client, url, file_format="0"):
    """Post django-import-export's export form with every field ticked (format 0 is our CSV)."""
    from django import forms

    form = client.get(url).context["form"]
    ticked = {name: "on" for name, field in form.fields.items() if isinstance(field, forms.BooleanField)}
    response = client.post(url, {"format": file_format, "resource": "0", **ticked})
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment")
    return response


def test_rule_and_segment_exports_neutralize_every_cell(client, marketer):
    DormancyRuleFactory(name="-rule", signal="last_seen")
    SegmentFactory(name="@segment", description="=HYPERLINK(\"http://x\")", favourite_categories=["+cat"])
    client.force_login(marketer)

    rules = export_all_fields(client, reverse("admin:reactivation_dormancyrule_export"))
    segments = export_all_fields(client, reverse("admin:reactivation_segment_export"))

    rule_rows = list(csv.reader(io.StringIO(rules.content.decode("utf-8-sig"))))
    segment_rows = list(csv.reader(io.StringIO(segments.content.decode("utf-8-sig"))))
    assert rules.content.startswith(b"\xef\xbb\xbf")
    assert rule_rows[1][0] == "'-rule"
    cells = dict(zip(segment_rows[0], segment_rows[1]))
    assert cells["name"] == "'@segment"
    assert cells["description"] == "'=HYPERLINK(\"http://x\")"
    assert cells["favourite_categories"] == "'+cat"


def test_superuser_edits_a_customer_with_many_events_and_history_stays_intact(client, customer):
    ActivityEventFactory.create_batch(25, customer=customer)
    consent_grant(customer=customer, channel="email", source="signup")
    client.force_login(UserFactory(username="root", is_superuser=True))
    url = reverse("admin:reactivation_customer_change", args=[customer.pk])
    page = client.get(url)
    data = {}
    for formset in page.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        data.update({f"{management.prefix}-{name}": value for name, value in management.initial.items()})
        data[f"{management.prefix}-MAX_NUM_FORMS"] = management.initial.get("MAX_NUM_FORMS", 1000)
    data.update({"external_id": "U100", "name": "王芳芳", "email": " New@Example.com", "phone": "139 1234 0000",
                 "locale": "zh-hans", "timezone": "Asia/Shanghai", "attributes": "{}"})

    response = client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    customer.refresh_from_db()
    assert (customer.name, customer.email, customer.phone) == ("王芳芳", "new@example.com", "+8613912340000")
    assert customer.events.count() == 25
    assert ConsentState.objects.get(customer=customer).status == "granted"


def test_customer_form_refuses_an_invalid_phone(client, customer):
    client.force_login(UserFactory(username="root", is_superuser=True))
    response = client.post(reverse("admin:reactivation_customer_add"), {"external_id": "U2", "phone": "12345", "attributes": "{}"})
    assert response.status_code == 200
    assert "phone" in response.context["adminform"].form.errors


# Import entry point ------------------------------------------------------------------------------


def test_customer_list_offers_the_import_only_to_staff_who_may_import(client, admin_user, marketer):
    upload_url = reverse("admin:reactivation_importjob_upload", args=["customers"])

    client.force_login(admin_user)
    assert upload_url in client.get(reverse("admin:reactivation_customer_changelist")).content.decode()

    client.force_login(marketer)
    assert upload_url not in client.get(reverse("admin:reactivation_customer_changelist")).content.decode()
