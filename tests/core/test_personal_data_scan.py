"""A Marketer never sees an email address or phone number: every admin page and export a
Marketer can open is scanned for the seeded customers' addresses, wherever they hide (a
provider's bounce text, an SMS a customer typed, a support note, a delivery's error)."""

import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import NoReverseMatch, reverse

from consent.services import consent_grant, email_bounce_record, sms_reply_record
from reactivation.models import DormancyReason
from tests.campaigns.offer_helpers import make_run
from tests.factories import CustomerFactory, DormancyReasonFactory, OfferFactory, SegmentFactory, UserFactory

pytestmark = pytest.mark.django_db

EMAILS = ["member000008@example.net", "zhang.wei@example.com"]
PHONES = ["+8613812345678", "+8613900001111"]


def _forms(phone: str) -> list[str]:
    """How a phone number can appear: E.164, national, spaced."""
    national = phone.removeprefix("+86")
    return [phone, national, f"{national[:3]} {national[3:7]} {national[7:]}"]


NEEDLES = [*EMAILS, *(form for phone in PHONES for form in _forms(phone))]


@pytest.fixture
def world():
    first = CustomerFactory(email=EMAILS[0], phone=PHONES[0])
    second = CustomerFactory(email=EMAILS[1], phone=PHONES[1])
    for customer in (first, second):
        consent_grant(customer=customer, channel="sms", source="signup", evidence={"ip": "203.0.113.9"})
    # a provider's hard bounce, quoting the address
    email_bounce_record(address=EMAILS[0], permanent=True,
                        reason_text=f"smtp;550 5.1.1 <{EMAILS[0]}>: Recipient address rejected")
    # a customer's SMS reply giving their other contact details
    sms_reply_record(sender=PHONES[0], text=f"别发了，找我请发邮件 {EMAILS[1]} 或打 {_forms(PHONES[1])[2]}", provider_id="r1")
    # a support note
    DormancyReasonFactory(customer=second, reason=DormancyReason.Reason.OTHER,
                          detail=f"Called back on {_forms(PHONES[0])[1]}, wrote to {EMAILS[0]}")
    # a delivery the provider refused, quoting the address
    _, (delivery, _) = make_run(offer=OfferFactory(), customers=[first, second])
    type(delivery).objects.filter(pk=delivery.pk).update(
        status="failed", error=f"550 5.1.1 <{EMAILS[0]}> user unknown", provider_id="p-1")
    SegmentFactory()
    return first, second


@pytest.fixture
def marketer_client(client):
    user = UserFactory(username="marketer")
    user.groups.add(Group.objects.get(name="Marketer"))
    client.force_login(user)
    return client, user


def _leaks(text: str) -> list[str]:
    return [needle for needle in NEEDLES if needle in text]


def _pages(client, user):
    """Every changelist and change page of the admin a Marketer may view, with its URL."""
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    for model, model_admin in admin.site._registry.items():
        if not model_admin.has_view_permission(request):
            continue
        info = (model._meta.app_label, model._meta.model_name)
        try:
            changelist = reverse("admin:%s_%s_changelist" % info)
        except NoReverseMatch:
            continue
        yield changelist, client.get(changelist)
        for pk in model_admin.get_queryset(request).values_list("pk", flat=True)[:5]:
            url = reverse("admin:%s_%s_change" % info, args=[pk])
            yield url, client.get(url)


def test_a_marketer_sees_no_address_on_any_admin_page(world, marketer_client):
    client, user = marketer_client
    leaks, opened = {}, 0
    for url, response in _pages(client, user):
        assert response.status_code in (200, 302), url
        if response.status_code == 200:
            opened += 1
            found = _leaks(response.content.decode())
            if found:
                leaks[url] = found
    assert opened > 20  # the scan really opened the pages
    assert leaks == {}


def test_a_marketer_exports_no_address(world, marketer_client):
    from django.test import RequestFactory

    client, user = marketer_client
    request = RequestFactory().get("/admin/")
    request.user = user
    leaks, exported = {}, 0
    for model, model_admin in admin.site._registry.items():
        if not (hasattr(model_admin, "get_export_resource_classes") and model_admin.has_view_permission(request)):
            continue
        for resource_class in model_admin.get_export_resource_classes(request):
            resource = resource_class(**model_admin.get_export_resource_kwargs(request))
            text = resource.export(queryset=model_admin.get_queryset(request)).csv
            exported += 1
            if found := _leaks(text):
                leaks[model._meta.label] = found
    # the customer lists' own CSV export
    response = client.get(reverse("admin:reactivation_customer_changelist") + "export/csv/")
    if response.status_code == 200:
        exported += 1
        content = b"".join(response.streaming_content).decode("utf-8-sig")
        if found := _leaks(content):
            leaks["customers.csv"] = found
    assert exported >= 2
    assert leaks == {}


def test_the_hard_bounce_note_is_stored_masked(world):
    from consent.models import Suppression

    note = Suppression.objects.get(address=EMAILS[0]).note
    assert EMAILS[0] not in note
    assert re.search(r"m\*\*\*@e\*\*\*\.net", note) and "550 5.1.1" in note
