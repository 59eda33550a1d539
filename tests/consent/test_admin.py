"""Consent admin: recording a decision through the service, a read-only ledger and state,
suppressions (normalized, imported, masked) and SMS replies."""

import csv
import io

import pytest
from django import forms
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from consent.models import ConsentEvent, ConsentState, SmsReply, Suppression
from consent.services import consent_grant
from tests.factories import CustomerFactory, SuppressionFactory, UserFactory

pytestmark = pytest.mark.django_db


def member_of(group_name):
    user = UserFactory(username=group_name.lower())
    user.groups.add(Group.objects.get(name=group_name))
    return user


def admin_request(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


@pytest.fixture
def compliance():
    return member_of("Compliance")


@pytest.fixture
def marketer():
    return member_of("Marketer")


# Ledger -------------------------------------------------------------------------------------------


def test_compliance_records_a_consent_given_by_phone_with_evidence_and_actor(client, compliance):
    customer = CustomerFactory()
    client.force_login(compliance)

    response = client.post(
        reverse("admin:consent_consentevent_add"),
        {
            "customer": customer.pk, "channel": "sms", "action": "grant", "notice_version": "2024-06",
            "how": "phone", "evidence_note": "Customer confirmed on call at 10:02", "evidence_reference": "CALL-881",
        },
    )

    assert response.status_code == 302
    event = ConsentEvent.objects.get()
    assert (event.customer, event.channel, event.action, event.source, event.actor) == (
        customer, "sms", "grant", "admin", compliance,
    )
    assert event.notice_version == "2024-06"
    assert event.evidence == {"method": "phone", "note": "Customer confirmed on call at 10:02", "reference": "CALL-881"}
    state = ConsentState.objects.get(customer=customer, channel="sms")
    assert state.status == "granted" and state.last_event == event


def test_a_withdrawal_on_paper_moves_the_current_state(client, compliance):
    customer = CustomerFactory()
    consent_grant(customer=customer, channel="email", source="signup", notice_version="v1")
    client.force_login(compliance)

    client.post(
        reverse("admin:consent_consentevent_add"),
        {"customer": customer.pk, "channel": "email", "action": "withdraw", "how": "paper", "evidence_note": "Letter of 3 May"},
    )

    assert ConsentState.objects.get(customer=customer, channel="email").status == "withdrawn"
    assert ConsentEvent.objects.filter(customer=customer).count() == 2


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"evidence_note": ""}, "evidence_note"),
        ({"notice_version": ""}, "notice_version"),  # a grant names the notice agreed to
        ({"channel": "fax"}, "channel"),
        ({"how": "telepathy"}, "how"),
    ],
)
def test_recording_refuses_incomplete_evidence(client, compliance, overrides, field):
    customer = CustomerFactory()
    client.force_login(compliance)
    data = {"customer": customer.pk, "channel": "sms", "action": "grant", "notice_version": "v1", "how": "phone",
            "evidence_note": "said yes"}
    data.update(overrides)

    response = client.post(reverse("admin:consent_consentevent_add"), data)

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not ConsentEvent.objects.exists()


def test_ledger_and_state_are_read_only_even_for_a_superuser(client):
    customer = CustomerFactory()
    event = consent_grant(customer=customer, channel="email", source="signup")
    client.force_login(UserFactory(username="root", is_superuser=True))

    change = client.get(reverse("admin:consent_consentevent_change", args=[event.pk]))
    post = client.post(reverse("admin:consent_consentevent_change", args=[event.pk]), {"channel": "sms"})
    delete = client.get(reverse("admin:consent_consentevent_delete", args=[event.pk]))
    state = ConsentState.objects.get()

    assert change.status_code == 200 and change.context["has_change_permission"] is False
    assert post.status_code == 403
    assert delete.status_code == 403
    assert client.get(reverse("admin:consent_consentstate_add")).status_code == 403
    assert client.get(reverse("admin:consent_consentstate_delete", args=[state.pk])).status_code == 403
    event.refresh_from_db()
    assert event.channel == "email"


def test_marketer_sees_the_ledger_without_its_evidence(client, marketer):
    customer = CustomerFactory()
    event = consent_grant(customer=customer, channel="email", source="signup", evidence={"ip": "198.51.100.9"})
    client.force_login(marketer)

    body = client.get(reverse("admin:consent_consentevent_change", args=[event.pk])).content.decode()

    assert "198.51.100.9" not in body
    assert "ip: ***" in body


# Suppressions ------------------------------------------------------------------------------------


def test_adding_a_suppression_normalizes_the_address_and_records_who(client, compliance):
    client.force_login(compliance)

    response = client.post(
        reverse("admin:consent_suppression_add"),
        {"channel": "sms", "address": "139 1234 5678", "reason": "manual", "note": "asked by phone"},
    )

    assert response.status_code == 302
    suppression = Suppression.objects.get()
    assert (suppression.address, suppression.created_by) == ("+8613912345678", compliance)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"channel": "email", "address": "not-an-email"}, "valid email"),
        ({"channel": "sms", "address": "12345"}, "not a valid phone"),
        ({"channel": "email", "address": "Known@Example.com"}, "already exists"),
    ],
)
def test_adding_a_bad_or_duplicate_suppression_shows_an_error(client, compliance, data, message):
    SuppressionFactory(channel="email", address="known@example.com")
    client.force_login(compliance)

    response = client.post(reverse("admin:consent_suppression_add"), {"reason": "manual", **data})

    assert response.status_code == 200
    assert message in str(response.context["adminform"].form.errors)
    assert Suppression.objects.count() == 1


def test_suppression_search_finds_an_address_in_any_form(client, compliance):
    target = SuppressionFactory(channel="sms", address="+8613912345678")
    SuppressionFactory(channel="email", address="someone@example.com")
    client.force_login(compliance)

    for term in ("139-1234-5678", "+86 139 1234 5678"):
        response = client.get(reverse("admin:consent_suppression_changelist"), {"q": term})
        assert list(response.context["cl"].result_list) == [target]
    response = client.get(reverse("admin:consent_suppression_changelist"), {"q": "SomeOne@Example.com"})
    assert [s.address for s in response.context["cl"].result_list] == ["someone@example.com"]


def test_marketer_sees_suppressions_masked_everywhere(client, marketer):
    suppression = SuppressionFactory(channel="email", address="hidden.person@example.com")
    client.force_login(marketer)

    pages = [
        reverse("admin:consent_suppression_changelist"),
        reverse("admin:consent_suppression_change", args=[suppression.pk]),
        reverse("admin:consent_suppression_history", args=[suppression.pk]),
    ]
    for url in pages:
        body = client.get(url).content.decode()
        assert "hidden.person@example.com" not in body, url
        assert "h***@e***.com" in body, url


def import_suppressions(client, content: bytes):
    url = reverse("admin:consent_suppression_import")
    preview = client.post(url, {"format": "0", "resource": "0", "import_file": SimpleUploadedFile("s.csv", content)})
    assert preview.status_code == 200
    confirm_form = preview.context.get("confirm_form")
    if confirm_form is None:
        return preview, None
    return preview, client.post(reverse("admin:consent_suppression_process_import"), confirm_form.initial, follow=True)


def test_suppression_import_normalizes_addresses_and_keeps_existing_ones(client, compliance):
    SuppressionFactory(channel="email", address="old@example.com", reason="complaint", note="kept")
    client.force_login(compliance)
    content = (
        "channel,address,reason,note\n"
        "email, New.Person@Example.COM ,hard_bounce,from old ESP\n"
        "SMS,139 1234 5678,,\n"
        "email,OLD@example.com,manual,should not overwrite\n"
    ).encode("gbk")

    preview, confirmation = import_suppressions(client, content)

    assert confirmation is not None and confirmation.status_code == 200
    assert set(Suppression.objects.values_list("channel", "address", "reason", "created_by")) == {
        ("email", "new.person@example.com", "hard_bounce", compliance.pk),
        ("sms", "+8613912345678", "manual", compliance.pk),
        ("email", "old@example.com", "complaint", None),
    }
    assert Suppression.objects.get(address="old@example.com").note == "kept"


def test_suppression_import_shows_invalid_addresses_as_row_errors(client, compliance):
    client.force_login(compliance)
    content = (
        "channel,address,reason\n"
        "email,ok@example.com,manual\n"
        "email,not-an-email,manual\n"
        "sms,12345,manual\n"
        "fax,+8613912345678,manual\n"
        "email,x@example.com,lost\n"
    ).encode()

    preview, confirmation = import_suppressions(client, content)

    assert confirmation is None
    invalid = preview.context["result"].invalid_rows
    assert [(row.number, sorted(row.error_dict)) for row in invalid] == [
        (2, ["address"]), (3, ["address"]), (4, ["channel"]), (5, ["reason"]),
    ]
    assert not Suppression.objects.exists()


def test_suppression_export_is_masked_for_marketer_and_raw_for_compliance(client, marketer, compliance):
    SuppressionFactory(channel="email", address="-person@example.com")
    url = reverse("admin:consent_suppression_export")

    def export_as(user):
        client.force_login(user)
        form = client.get(url).context["form"]
        ticked = {name: "on" for name, field in form.fields.items() if isinstance(field, forms.BooleanField)}
        response = client.post(url, {"format": "0", "resource": "0", **ticked})
        return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))

    marketer_rows, compliance_rows = export_as(marketer), export_as(compliance)

    assert dict(zip(*marketer_rows))["address"] == "'-***@e***.com"
    assert dict(zip(*compliance_rows))["address"] == "'-person@example.com"


# SMS replies ------------------------------------------------------------------------------------


def test_sms_replies_are_masked_for_marketer_and_searchable_by_phone(client, marketer, compliance):
    reply = SmsReply.objects.create(sender="+8613912345678", text="TD", outcome="withdraw", provider_id="p-1")
    SmsReply.objects.create(sender="+8613912340000", text="hi", outcome="reply")

    client.force_login(marketer)
    for url in (reverse("admin:consent_smsreply_changelist"), reverse("admin:consent_smsreply_change", args=[reply.pk])):
        body = client.get(url).content.decode()
        assert "+8613912345678" not in body and "+86*******5678" in body

    client.force_login(compliance)
    for term in ("13912345678", "p-1"):
        response = client.get(reverse("admin:consent_smsreply_changelist"), {"q": term})
        assert list(response.context["cl"].result_list) == [reply]
    # the message as received and what it did are evidence: only the customer match is editable
    form = client.get(reverse("admin:consent_smsreply_change", args=[reply.pk])).context["adminform"].form
    assert list(form.fields) == ["customer"]


def test_sms_replies_can_be_neither_added_nor_deleted_even_by_compliance_or_a_superuser(client, compliance):
    # given a reply that withdrew consent (evidence of the withdrawal)
    reply = SmsReply.objects.create(sender="+8613912345678", text="TD", outcome="withdraw", provider_id="p-1")
    root = UserFactory(username="root", is_superuser=True)

    for user in (compliance, root):
        client.force_login(user)
        # when they try to add one by hand or delete it
        add = client.post(reverse("admin:consent_smsreply_add"), {
            "sender": "+8613900000000", "text": "TD", "outcome": "withdraw", "provider_id": "forged",
        })
        delete = client.post(reverse("admin:consent_smsreply_delete", args=[reply.pk]), {"post": "yes"})
        bulk = client.post(reverse("admin:consent_smsreply_changelist"), {
            "action": "delete_selected", "_selected_action": [reply.pk], "post": "yes",
        })

        # then both are refused and the evidence is untouched
        assert add.status_code == 403 and delete.status_code == 403
        assert bulk.status_code in (200, 302)  # "no action selected": the action is not offered
        assert "delete_selected" not in admin.site._registry[SmsReply].get_actions(admin_request(user))
        assert list(SmsReply.objects.values_list("provider_id", flat=True)) == ["p-1"]


def test_compliance_corrects_which_customer_a_reply_matched_but_not_the_reply(client, compliance):
    # given a reply from a number matched to nobody
    reply = SmsReply.objects.create(sender="+8613912345678", text="TD", outcome="unknown_sender", provider_id="p-1")
    customer = CustomerFactory(phone="+8613912345678")
    client.force_login(compliance)

    # when Compliance links it to the customer and also tries to rewrite the message
    response = client.post(reverse("admin:consent_smsreply_change", args=[reply.pk]), {
        "customer": customer.pk, "text": "hello", "sender": "+8613900000000", "outcome": "reply",
    })

    # then only the match changed
    assert response.status_code == 302
    reply.refresh_from_db()
    assert (reply.customer, reply.text, reply.sender, reply.outcome) == (customer, "TD", "+8613912345678", "unknown_sender")


@pytest.mark.parametrize("params", [
    {"sender__startswith": "+86139"},
    {"sender": "+8613912345678"},
    {"sender__regex": "^\\+86139"},
])
def test_marketer_cannot_filter_sms_replies_by_sender(client, marketer, compliance, params):
    SmsReply.objects.create(sender="+8613912345678", text="TD", outcome="withdraw", provider_id="p-1")
    SmsReply.objects.create(sender="+8613800000000", text="hi", outcome="reply", provider_id="p-2")
    url = reverse("admin:consent_smsreply_changelist")

    client.force_login(marketer)
    refused = client.get(url, params)
    assert refused.status_code == 400
    assert b"+8613912345678" not in refused.content and b"p-1" not in refused.content

    client.force_login(compliance)
    allowed = client.get(url, params)
    assert allowed.status_code == 200
    assert [r.provider_id for r in allowed.context["cl"].result_list] == ["p-1"]


def test_marketer_cannot_filter_suppressions_or_consent_evidence_by_personal_data(client, marketer, compliance):
    customer = CustomerFactory(email="secret.person@example.com")
    consent_grant(customer=customer, channel="email", source="signup", notice_version="v1",
                  evidence={"ip": "203.0.113.77"})
    consent_grant(customer=CustomerFactory(), channel="email", source="signup", notice_version="v1",
                  evidence={"ip": "198.51.100.1"})
    SuppressionFactory(channel="email", address="secret.person@example.com")
    SuppressionFactory(channel="email", address="other@example.com")
    probes = [
        (reverse("admin:consent_suppression_changelist"), {"address__startswith": "secret.p"}),
        (reverse("admin:consent_consentevent_changelist"), {"evidence__ip__startswith": "203.0"}),
        (reverse("admin:consent_consentevent_changelist"), {"evidence__ip": "203.0.113.77"}),
        (reverse("admin:consent_consentstate_changelist"), {"customer__email__startswith": "secret.p"}),
    ]

    client.force_login(marketer)
    for url, params in probes:
        response = client.get(url, params)
        assert response.status_code == 400, (url, params)
        assert customer.external_id.encode() not in response.content

    client.force_login(compliance)
    suppressions = client.get(probes[0][0], probes[0][1])
    assert [s.address for s in suppressions.context["cl"].result_list] == ["secret.person@example.com"]
    events = client.get(probes[1][0], probes[1][1])
    assert [e.customer for e in events.context["cl"].result_list] == [customer]


# Small-table imports are bounded -------------------------------------------------------------


def test_an_xlsx_row_bomb_in_a_suppression_import_is_refused_before_parsing(client, compliance):
    import io
    import time

    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["channel", "address", "reason"])
    book.active.cell(row=1_048_576, column=1, value="email")
    data = io.BytesIO()
    book.save(data)
    client.force_login(compliance)
    started = time.monotonic()
    response = client.post(reverse("admin:consent_suppression_import"), {
        "format": "1", "resource": "0", "import_file": SimpleUploadedFile("bomb.xlsx", data.getvalue())})
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert "reaches row 1,048,576" in response.content.decode()
    assert not Suppression.objects.exists()


def test_a_suppression_import_over_the_row_or_size_limit_is_refused(client, compliance, settings):
    settings.ADMIN_IMPORT_MAX_ROWS = 3
    client.force_login(compliance)
    rows = "".join(f"email,user{i}@example.com,manual\n" for i in range(4)).encode()
    preview, _ = import_suppressions(client, b"channel,address,reason\n" + rows)
    assert "at most 3" in preview.content.decode()
    settings.ADMIN_IMPORT_MAX_BYTES = 20
    preview, _ = import_suppressions(client, b"channel,address,reason\n" + rows[:40])
    assert "this import takes at most 20" in preview.content.decode()
    assert not Suppression.objects.exists()
