"""The admin site as a whole: index order, groups, large tables, and every page of every model.

The smoke test iterates ``admin.site._registry``, so models registered later (campaigns, imports)
are covered without touching this file.
"""


import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from consent.models import ConsentEvent, ConsentState, SmsReply
from consent.services import consent_grant
from core.paginator import EstimatedCountPaginator
from reactivation.models import ActivityEvent, Customer, LifecycleTransition
from tests.factories import (
    ActivityEventFactory,
    CustomerFactory,
    DormancyReasonFactory,
    DormancyRuleFactory,
    SegmentFactory,
    SuppressionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

SECRET_EMAIL = "secret.person@example.com"
SECRET_PHONE = "+8613912345678"
SECRET_IP = "203.0.113.77"


def staff(group_name: str | None = None, *, superuser: bool = False):
    user = UserFactory(username=group_name or "root", is_superuser=superuser)
    if group_name:
        user.groups.add(Group.objects.get(name=group_name))
    return user


@pytest.fixture
def world():
    """One of everything this back office registers, carrying recognisable personal data."""
    rule = DormancyRuleFactory(name="E-commerce: no order for 90 days")
    customer = CustomerFactory(name="秘密 客户", email=SECRET_EMAIL, phone=SECRET_PHONE, lifecycle_rule=rule)
    ActivityEventFactory(customer=customer)
    LifecycleTransition.objects.create(customer=customer, from_state="active", to_state="dormant", rule=rule)
    DormancyReasonFactory(customer=customer)
    SegmentFactory(name="High-value dormant", lifecycle_states=["dormant"], dormancy_rule=rule)
    consent_grant(customer=customer, channel="email", source="signup", notice_version="v1",
                  evidence={"ip": SECRET_IP, "user_agent": "Mozilla/5.0"})
    SuppressionFactory(channel="email", address=SECRET_EMAIL)
    SuppressionFactory(channel="sms", address=SECRET_PHONE)
    SmsReply.objects.create(sender=SECRET_PHONE, text="TD", customer=customer, outcome="withdraw")
    _beat_objects()
    return customer


def _beat_objects():
    from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

    interval = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    CrontabSchedule.objects.create(minute="0", hour="3")
    ClockedSchedule.objects.create(clocked_time=timezone.now())
    SolarSchedule.objects.create(event="sunrise", latitude=31.23, longitude=121.47)
    PeriodicTask.objects.create(name="smoke", task="celery.backend_cleanup", interval=interval)


def admin_request(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def pages(model, model_admin):
    """(kind, url) for the changelist, add page and the change page of one existing row."""
    info = (model._meta.app_label, model._meta.model_name)
    yield "changelist", reverse("admin:%s_%s_changelist" % info)
    yield "add", reverse("admin:%s_%s_add" % info)
    obj = model._default_manager.order_by("pk").first()
    if obj is not None:
        yield "change", reverse("admin:%s_%s_change" % info, args=[obj.pk])


def expected_status(kind, model_admin, request):
    if kind == "add":
        allowed = model_admin.has_add_permission(request)
    else:
        allowed = model_admin.has_view_or_change_permission(request)
    return 200 if allowed else 403


@pytest.mark.parametrize("group_name", [None, "Marketer", "Compliance"])
def test_every_page_of_every_registered_model_opens_as_the_permissions_say(client, world, group_name):
    # given a superuser, a Marketer or a Compliance officer
    user = staff(group_name, superuser=group_name is None)
    client.force_login(user)
    request = admin_request(user)
    opened = 0

    for model, model_admin in admin.site._registry.items():
        for kind, url in pages(model, model_admin):
            # when the page is opened
            response = client.get(url)
            # then it answers as the model admin's permissions say (a superuser sees everything
            # except the forms that must not exist: adding to append-only or derived tables)
            expected = expected_status(kind, model_admin, request)
            assert response.status_code == expected, f"{group_name or 'superuser'} {kind} {url}: {response.status_code}"
            if group_name is None and kind != "add":
                assert response.status_code == 200, url
            if group_name == "Marketer" and response.status_code == 200:
                # and a Marketer never reads raw personal data anywhere
                body = response.content.decode()
                assert SECRET_EMAIL not in body, url
                assert SECRET_PHONE not in body and "13912345678" not in body, url
                assert SECRET_IP not in body, url
            opened += response.status_code == 200
    assert opened >= 10  # the run really opened pages, not only 403s


def test_marketer_permissions_match_the_issue(client, world):
    client.force_login(staff("Marketer"))

    def status(name, *args):
        return client.get(reverse(f"admin:{name}", args=args)).status_code

    assert status("reactivation_customer_changelist") == 200
    assert status("reactivation_customer_add") == 403
    assert status("reactivation_segment_add") == 200
    assert status("reactivation_dormancyrule_add") == 200
    assert status("consent_consentevent_changelist") == 200
    assert status("consent_consentevent_add") == 403
    assert status("consent_suppression_add") == 403
    assert status("django_celery_beat_periodictask_changelist") == 403
    assert status("auth_user_changelist") == 403


def test_compliance_permissions_match_the_issue(client, world):
    client.force_login(staff("Compliance"))

    def status(name, *args):
        return client.get(reverse(f"admin:{name}", args=args)).status_code

    assert status("consent_consentevent_add") == 200
    assert status("consent_suppression_add") == 200
    assert status("consent_smsreply_add") == 403  # replies arrive from the gateway only
    assert status("reactivation_customer_change", world.pk) == 200
    assert status("reactivation_customer_add") == 403
    assert status("reactivation_segment_add") == 403
    assert status("django_celery_beat_periodictask_changelist") == 403


def test_groups_are_created_by_the_migration_with_exactly_their_permissions():
    marketer = set(Group.objects.get(name="Marketer").permissions.values_list("content_type__app_label", "codename"))
    compliance = set(Group.objects.get(name="Compliance").permissions.values_list("content_type__app_label", "codename"))

    assert ("reactivation", "view_customer") in marketer
    assert ("reactivation", "change_customer") not in marketer
    assert ("reactivation", "view_personal_data") not in marketer
    assert {("reactivation", f"{a}_segment") for a in ("add", "change", "delete", "view")} <= marketer
    assert {("reactivation", f"{a}_dormancyrule") for a in ("add", "change", "delete", "view")} <= marketer
    assert {codename for app, codename in marketer if app == "consent"} == {
        "view_consentevent", "view_consentstate", "view_suppression", "view_smsreply",
    }
    assert not any(app == "django_celery_beat" for app, _ in marketer)

    assert ("reactivation", "view_personal_data") in compliance
    assert {codename for app, codename in compliance if app == "consent"} == {
        "add_consentevent", "view_consentevent", "view_consentstate",
        "add_suppression", "change_suppression", "delete_suppression", "view_suppression",
        "add_smsreply", "change_smsreply", "delete_smsreply", "view_smsreply",
    }
    assert ("consent", "change_consentevent") not in compliance
    assert ("consent", "delete_consentevent") not in compliance
    assert ("reactivation", "change_customer") not in compliance


def test_group_helper_refuses_a_permission_that_does_not_exist():
    from django.apps import apps

    from core.migrations._group_permissions import grant_group_permissions

    with pytest.raises(LookupError, match="view_nothing"):
        grant_group_permissions(apps, {"Marketer": {"reactivation.customer": ["view_nothing"]}})


def test_index_lists_apps_and_models_in_the_order_a_marketer_works(client):
    client.force_login(staff(superuser=True))

    app_list = client.get(reverse("admin:index")).context["app_list"]

    labels = [app["app_label"] for app in app_list]
    known = [label for label in ["reactivation", "campaigns", "consent", "django_celery_beat", "auth"] if label in labels]
    assert labels[: len(known)] == known
    reactivation_models = [m["object_name"] for m in app_list[0]["models"]]
    expected = ["Customer", "Segment", "DormancyRule", "DormancyReason", "ActivityEvent", "LifecycleTransition"]
    assert reactivation_models[: len(expected)] == expected
    consent_models = [m["object_name"] for m in next(a for a in app_list if a["app_label"] == "consent")["models"]]
    assert consent_models == ["ConsentEvent", "ConsentState", "Suppression", "SmsReply"]


@pytest.mark.parametrize("model", [Customer, ActivityEvent, LifecycleTransition, ConsentEvent, ConsentState])
def test_large_tables_use_the_estimated_paginator_without_a_full_count(client, model):
    model_admin = admin.site._registry[model]
    assert model_admin.paginator is EstimatedCountPaginator
    assert model_admin.show_full_result_count is False

    client.force_login(staff(superuser=True))
    response = client.get(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
    assert response.status_code == 200
    assert isinstance(response.context["cl"].paginator, EstimatedCountPaginator)
    assert response.context["cl"].show_full_result_count is False


def test_customer_changelist_runs_no_count_beyond_the_paginators(client, django_assert_max_num_queries):
    """Filtered list: one COUNT (the paginator's) and no "of N total" COUNT(*)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    CustomerFactory.create_batch(5, lifecycle_state="dormant")
    client.force_login(staff(superuser=True))
    url = reverse("admin:reactivation_customer_changelist") + "?lifecycle_state__exact=dormant"
    client.get(url)  # warm the session and permission caches
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    counts = [q["sql"] for q in captured if "COUNT(" in q["sql"].upper() and "reactivation_customer" in q["sql"]]
    assert response.status_code == 200
    assert len(counts) == 1, counts


def test_every_registered_admin_url_reverses():
    for model in admin.site._registry:
        try:
            reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        except NoReverseMatch:  # pragma: no cover - the assertion message names the model
            pytest.fail(f"{model._meta.label} has no changelist URL")


# Filtering and sorting by personal data through the URL ----------------------------------------


def _delivery_to(customer, address):
    from campaigns.models import CampaignRun, Delivery
    from tests.factories import CampaignFactory

    campaign = CampaignFactory()
    run = CampaignRun.objects.create(campaign=campaign, number=1, started_at=timezone.now())
    return Delivery.objects.create(campaign=campaign, run=run, customer=customer, channel="email", address=address)


PERSONAL_PROBES = [
    ("reactivation_customer_changelist", {"email__startswith": "secret.p"}),
    ("reactivation_customer_changelist", {"email": SECRET_EMAIL}),
    ("reactivation_customer_changelist", {"phone__startswith": "+86139"}),
    ("reactivation_customer_changelist", {"phone__contains": "1234"}),
    ("campaigns_delivery_changelist", {"address__startswith": "secret.p"}),
    ("campaigns_delivery_changelist", {"customer__email__startswith": "secret.p"}),
    ("consent_suppression_changelist", {"address__startswith": "secret.p"}),
    ("consent_smsreply_changelist", {"sender__startswith": "+86139"}),
    ("consent_consentevent_changelist", {"evidence__ip__startswith": "203.0"}),
    ("consent_consentevent_changelist", {"customer__phone__startswith": "+86139"}),
    ("consent_consentstate_changelist", {"customer__email__startswith": "secret.p"}),
    ("reactivation_activityevent_changelist", {"customer__email__startswith": "secret.p"}),
]


@pytest.mark.parametrize("name, params", PERSONAL_PROBES)
def test_marketer_cannot_filter_any_list_by_personal_data(client, world, name, params):
    # given a Marketer, who sees email, phone, addresses and evidence masked
    _delivery_to(world, SECRET_EMAIL)
    client.force_login(staff("Marketer"))

    # when they narrow a list by a prefix of someone's personal data in the URL
    response = client.get(reverse(f"admin:{name}"), params)

    # then Django refuses the lookup (DisallowedModelAdminLookup: 400), listing nobody
    assert response.status_code == 400, (name, params)
    assert world.external_id.encode() not in response.content
    assert response.context is None or "cl" not in response.context


ALLOWED_PROBES = [
    ("reactivation_customer_changelist", {"email__startswith": "secret.p"}),
    ("reactivation_customer_changelist", {"phone__startswith": "+86139"}),
    ("consent_suppression_changelist", {"address__startswith": "secret.p"}),
    ("consent_smsreply_changelist", {"sender__startswith": "+86139"}),
    ("consent_consentevent_changelist", {"evidence__ip__startswith": "203.0"}),
]


def _is_about_the_secret_person(row, person):
    if isinstance(row, Customer):
        return row.pk == person.pk
    if getattr(row, "customer_id", None) is not None:
        return row.customer_id == person.pk
    return row.address in (SECRET_EMAIL, SECRET_PHONE)


@pytest.mark.parametrize("group_name, name, params", [
    *[("Compliance", name, params) for name, params in ALLOWED_PROBES],
    *[(None, name, params) for name, params in ALLOWED_PROBES],
    # Compliance does not see deliveries at all; a superuser filters them.
    (None, "campaigns_delivery_changelist", {"address__startswith": "secret.p"}),
])
def test_staff_who_may_see_personal_data_keep_filtering_by_it(client, world, group_name, name, params):
    # given someone else whose data does not match, and staff with view_personal_data
    other = CustomerFactory(email="other@example.com", phone="+8613800000000")
    consent_grant(customer=other, channel="email", source="signup", notice_version="v1", evidence={"ip": "198.51.100.1"})
    SuppressionFactory(channel="email", address="other@example.com")
    SmsReply.objects.create(sender="+8613800000000", text="hi", customer=other, outcome="reply")
    _delivery_to(world, SECRET_EMAIL)
    _delivery_to(other, "other@example.com")
    client.force_login(staff(group_name, superuser=group_name is None))

    # when they filter by it
    response = client.get(reverse(f"admin:{name}"), params)

    # then the list narrows to the matching person's rows
    assert response.status_code == 200
    rows = list(response.context["cl"].result_list)
    assert rows and all(_is_about_the_secret_person(row, world) for row in rows), rows


def _column(response, name):
    return response.context["cl"].list_display.index(name)


def test_marketer_cannot_sort_customers_by_email_or_phone(client):
    # given two customers whose id order is the reverse of their email order
    first = CustomerFactory(email="aaa@example.com", phone="+8613800000001")
    second = CustomerFactory(email="zzz@example.com", phone="+8613800000002")
    url = reverse("admin:reactivation_customer_changelist")
    client.force_login(staff("Marketer"))
    listing = client.get(url)
    assert "masked_email" not in listing.context["cl"].sortable_by
    assert "masked_phone" not in listing.context["cl"].sortable_by

    for column in ("masked_email", "masked_phone"):
        # when a Marketer asks for the list sorted by the masked column anyway
        response = client.get(url, {"o": str(_column(listing, column))})
        # then the ordering is ignored: the default newest-first order stays
        assert response.status_code == 200
        assert list(response.context["cl"].result_list) == [second, first]
        assert "email" not in str(response.context["cl"].queryset.query.order_by)

    # and the ascending/descending variants of it are ignored too
    response = client.get(url, {"o": f"-{_column(listing, 'masked_email')}"})
    assert list(response.context["cl"].result_list) == [second, first]


def test_compliance_sorts_customers_by_email(client):
    first = CustomerFactory(email="zzz@example.com")
    second = CustomerFactory(email="aaa@example.com")
    url = reverse("admin:reactivation_customer_changelist")
    client.force_login(staff("Compliance"))
    listing = client.get(url)
    assert "email" in listing.context["cl"].sortable_by

    response = client.get(url, {"o": str(_column(listing, "email"))})

    assert list(response.context["cl"].result_list) == [second, first]


def test_marketer_cannot_sort_deliveries_by_address(client):
    older = _delivery_to(CustomerFactory(), "aaa@example.com")
    newer = _delivery_to(CustomerFactory(), "zzz@example.com")
    url = reverse("admin:campaigns_delivery_changelist")
    client.force_login(staff("Marketer"))
    listing = client.get(url)
    default = list(listing.context["cl"].result_list)

    response = client.get(url, {"o": f"-{_column(listing, 'masked_address')}"})
    assert list(response.context["cl"].result_list) == default
    assert "masked_address" not in response.context["cl"].sortable_by

    client.force_login(staff(superuser=True))
    listing = client.get(url)
    response = client.get(url, {"o": str(_column(listing, "address"))})
    assert list(response.context["cl"].result_list) == [older, newer]
    response = client.get(url, {"o": f"-{_column(listing, 'address')}"})
    assert list(response.context["cl"].result_list) == [newer, older]


def test_every_admin_with_personal_data_or_customers_guards_lookups():
    """A model admin registered later with an email/phone/address/sender/evidence field, or a
    customer foreign key, must refuse those lookups to staff without the permission."""
    from core.admin_site import PersonalLookupGuardMixin, PERSONAL_DATA_FIELD_NAMES

    unguarded = []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label in ("auth", "django_celery_beat"):
            continue
        names = {field.name for field in model._meta.get_fields()}
        if names & (PERSONAL_DATA_FIELD_NAMES | {"customer"}) and not isinstance(model_admin, PersonalLookupGuardMixin):
            unguarded.append(model.__name__)
    assert unguarded == []
