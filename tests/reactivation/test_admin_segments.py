"""Segment admin: the cached size in the list, the recount after a save, the live size while the
form is edited, and the link to a segment's members in the customer list."""

from datetime import timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from reactivation import segment_sizes
from reactivation.admin.segments import SegmentMembersFilter
from reactivation.models import Customer, LifecycleState, Segment
from tests.factories import CustomerFactory, SegmentFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:reactivation_segment_changelist"
EMAIL = "wang.fang@example.com"
PHONE = "+8613912345678"


def member_of(group_name, *, username=None, personal_data=False):
    user = UserFactory(username=username or group_name.lower())
    user.groups.add(Group.objects.get(name=group_name))
    if personal_data:
        user.user_permissions.add(Permission.objects.get(codename="view_personal_data"))
    return user


@pytest.fixture
def marketer(client):
    user = member_of("Marketer")
    client.force_login(user)
    return user


@pytest.fixture
def dormant_spenders():
    """Dormant customers who spent 800 and 20, and an active one."""
    big = CustomerFactory(external_id="U1", lifecycle_state=LifecycleState.DORMANT, total_spent=Decimal("800"),
                          email=EMAIL, phone=PHONE)
    small = CustomerFactory(external_id="U2", lifecycle_state=LifecycleState.DORMANT, total_spent=Decimal("20"))
    active = CustomerFactory(external_id="U3", lifecycle_state=LifecycleState.ACTIVE, total_spent=Decimal("900"))
    return big, small, active


def form_data(**overrides):
    data = {
        "name": "High-value dormant", "description": "", "lifecycle_states": ["dormant"],
        "favourite_categories": [], "locales": [], "dormancy_reasons": [], "consent_channels": [],
    }
    data.update(overrides)
    return data


# The list ------------------------------------------------------------------------------------------


def test_the_list_shows_each_cached_size_with_its_age_and_a_members_link(client, marketer):
    counted = SegmentFactory(name="Counted", size=12345, size_counted_at=timezone.now() - timedelta(minutes=3, seconds=5))
    SegmentFactory(name="New")

    page = client.get(reverse(CHANGELIST)).content.decode()

    assert "12,345 · 3 min ago" in page
    assert "counting…" in page
    members = reverse("admin:reactivation_customer_changelist") + f"?segment={counted.pk}"
    assert f'<a href="{members}">members</a>' in page


def test_the_list_does_not_count_members(client, marketer):
    SegmentFactory.create_batch(5, consent_channels=["email"])
    with patch.object(segment_sizes, "segment_size", side_effect=AssertionError("counted")):
        assert client.get(reverse(CHANGELIST)).status_code == 200


# Recount after a save ---------------------------------------------------------------------------------


def test_saving_new_filters_recounts_the_segment_once_committed(client, marketer, dormant_spenders,
                                                               django_capture_on_commit_callbacks):
    segment = SegmentFactory(name="High-value dormant", lifecycle_states=["dormant"], size=2,
                             size_counted_at=timezone.now())
    url = reverse("admin:reactivation_segment_change", args=[segment.pk])

    # when the marketer narrows the filters, the old count no longer describes the segment
    with patch("reactivation.admin.segments.segment_sizes_refresh_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            response = client.post(url, form_data(spent_min="500"))
        assert response.status_code == 302
        segment.refresh_from_db()
        assert segment.size is None and segment.size_counted_at is None
        delay.assert_not_called()  # not before the commit
        for callback in callbacks:
            callback()
    delay.assert_called_once_with(segment_id=segment.pk)

    # and the recount the task makes lands in the list
    from reactivation.tasks import segment_sizes_refresh_task

    segment_sizes_refresh_task(segment_id=segment.pk)
    segment.refresh_from_db()
    assert segment.size == 1 and segment.size_counted_at is not None


def test_renaming_a_segment_keeps_its_count(client, marketer, django_capture_on_commit_callbacks):
    counted_at = timezone.now() - timedelta(minutes=5)
    segment = SegmentFactory(name="Old name", lifecycle_states=["dormant"], size=7, size_counted_at=counted_at)

    with patch("reactivation.admin.segments.segment_sizes_refresh_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            client.post(reverse("admin:reactivation_segment_change", args=[segment.pk]), form_data(name="New name"))

    segment.refresh_from_db()
    assert segment.name == "New name" and (segment.size, segment.size_counted_at) == (7, counted_at)
    delay.assert_not_called()


def test_a_broker_that_is_down_does_not_fail_the_save(client, marketer, django_capture_on_commit_callbacks):
    with patch("reactivation.admin.segments.segment_sizes_refresh_task.delay", side_effect=OSError("broker down")):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("admin:reactivation_segment_add"), form_data())

    assert response.status_code == 302
    assert Segment.objects.get().size is None  # counted by the next periodic refresh


# Live size -------------------------------------------------------------------------------------------


def live(client, segment=None, **overrides):
    url = (reverse("admin:reactivation_segment_live_size", args=[segment.pk]) if segment
           else reverse("admin:reactivation_segment_live_size"))
    return client.post(url, form_data(**overrides))


def test_the_add_form_counts_its_unsaved_filters(client, marketer, dormant_spenders):
    response = live(client, spent_min="500")

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["exact"], body["label"]) == (1, True, "1")
    assert [row["external_id"] for row in body["sample"]] == ["U1"]
    assert not Segment.objects.exists()  # nothing saved


def test_the_change_form_counts_the_edited_filters_not_the_saved_ones(client, marketer, dormant_spenders):
    segment = SegmentFactory(name="Dormant", lifecycle_states=["dormant"])

    everyone = live(client, segment, name="Dormant", lifecycle_states=[]).json()

    assert everyone["count"] == 3
    assert Segment.objects.get(pk=segment.pk).lifecycle_states == ["dormant"]


def test_the_sample_is_masked_without_the_personal_data_permission(client, marketer, dormant_spenders):
    row = live(client, spent_min="500").json()["sample"][0]

    assert row["email"] == "w***@e***.com" and row["phone"] == "+86*******5678"
    assert row["url"] == reverse("admin:reactivation_customer_change", args=[dormant_spenders[0].pk])


def test_the_sample_shows_addresses_to_staff_allowed_to_see_them(client, dormant_spenders):
    client.force_login(member_of("Marketer", username="trusted", personal_data=True))

    row = live(client, spent_min="500").json()["sample"][0]

    assert (row["email"], row["phone"]) == (EMAIL, PHONE)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"lifecycle_states": ["sleepy"]}, "lifecycle_states"),
        ({"spent_min": "500", "spent_max": "100"}, "spent_max"),
        ({"rfm_monetary_min": "6"}, "rfm_monetary_min"),
        ({"orders_min": "many"}, "orders_min"),
    ],
)
def test_invalid_filters_come_back_as_field_errors(client, marketer, overrides, field):
    response = live(client, **overrides)

    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_the_name_does_not_decide_the_size(client, marketer, dormant_spenders):
    SegmentFactory(name="Taken")

    for name in ("", "Taken"):  # blank or already used: the count is still answered
        response = live(client, name=name)
        assert response.status_code == 200 and response.json()["count"] == 2


def test_a_count_past_the_time_bound_is_answered_as_an_estimate(client, marketer, dormant_spenders, monkeypatch):
    monkeypatch.setattr(
        "reactivation.admin.segments.segment_size_live",
        lambda *, segment, sample_size: segment_sizes.LiveSize(count=1_234_567, exact=False, sample=[]),
    )

    body = live(client).json()

    assert (body["label"], body["exact"]) == ("about 1,200,000", False)


def test_the_live_size_needs_a_post_and_the_right_to_see_segments(client, dormant_spenders):
    client.force_login(UserFactory(username="nobody"))  # staff without any permission
    assert live(client).status_code == 403

    client.force_login(member_of("Marketer"))
    assert client.get(reverse("admin:reactivation_segment_live_size")).status_code == 405
    missing = reverse("admin:reactivation_segment_live_size", args=[999_999])
    assert client.post(missing, form_data()).status_code == 404


# The change page ---------------------------------------------------------------------------------------


def test_the_change_page_links_the_members_and_the_live_count(client, marketer, dormant_spenders):
    segment = SegmentFactory(lifecycle_states=["dormant"])

    response = client.get(reverse("admin:reactivation_segment_change", args=[segment.pk]))

    page = response.content.decode()
    assert response.context["segment_size"] == 2 and response.context["segment_size_exact"]
    assert reverse("admin:reactivation_customer_changelist") + f"?segment={segment.pk}" in page
    assert reverse("admin:reactivation_segment_live_size", args=[segment.pk]) in page
    assert "reactivation/segment_live_size.js" in page
    assert EMAIL not in page and PHONE not in page


def test_a_successful_save_does_not_count_the_segment(client, marketer, dormant_spenders,
                                                     django_capture_on_commit_callbacks):
    # given a count that would take the whole time bound
    segment = SegmentFactory(lifecycle_states=["dormant"])
    counted = AssertionError("counted for a page nobody sees")

    # when the marketer saves, the answer is the redirect, with no count behind it
    with patch("reactivation.admin.segments.segment_size_live", side_effect=counted), \
            patch("reactivation.admin.segments.segment_sizes_refresh_task.delay"), \
            django_capture_on_commit_callbacks(execute=True):
        saved = client.post(reverse("admin:reactivation_segment_change", args=[segment.pk]), form_data(spent_min="500"))
        kept_editing = client.post(reverse("admin:reactivation_segment_change", args=[segment.pk]),
                                   form_data(spent_min="600", _continue="1"))

    assert saved.status_code == kept_editing.status_code == 302
    segment.refresh_from_db()
    assert segment.spent_min == Decimal("600")


def test_a_form_sent_back_with_errors_shows_the_size_of_the_segment_as_saved(client, marketer, dormant_spenders):
    segment = SegmentFactory(lifecycle_states=["dormant"])

    # the edited states are valid, the spending range is not
    response = client.post(reverse("admin:reactivation_segment_change", args=[segment.pk]),
                           form_data(lifecycle_states=["active"], spent_min="900", spent_max="100"))

    assert response.status_code == 200 and response.context["adminform"].form.errors
    assert (response.context["segment_size"], response.context["segment_size_exact"]) == (2, True)
    page = response.content.decode()
    assert reverse("admin:reactivation_segment_live_size", args=[segment.pk]) in page
    assert EMAIL not in page and PHONE not in page


def test_the_add_page_has_the_live_count(client, marketer):
    page = client.get(reverse("admin:reactivation_segment_add")).content.decode()

    assert reverse("admin:reactivation_segment_live_size") in page and 'id="segment-live-count"' in page


# Members in the customer list ----------------------------------------------------------------------------


def _filtered(segment_id, queryset=None):
    request = RequestFactory().get("/", {"segment": str(segment_id)})
    request.user = UserFactory(username="filterer", is_superuser=True)
    model_admin = admin.site._registry[Customer]
    members_filter = SegmentMembersFilter(request, {"segment": [str(segment_id)]}, Customer, model_admin)
    return members_filter.queryset(request, Customer.objects.all() if queryset is None else queryset)


def test_the_members_filter_narrows_customers_to_the_segment(dormant_spenders):
    big, small, active = dormant_spenders
    segment = SegmentFactory(lifecycle_states=["dormant"], spent_min=Decimal("500"))

    assert list(_filtered(segment.pk)) == [big]
    assert list(_filtered(999_999)) == []
    assert list(_filtered("nonsense")) == []


def test_the_members_filter_adds_the_criteria_to_the_lists_own_query(dormant_spenders):
    segment = SegmentFactory(lifecycle_states=["dormant"])

    sql = str(_filtered(segment.pk).query)

    assert " IN (SELECT" not in sql.upper()


def test_the_members_filter_works_on_a_distinct_list(dormant_spenders):
    segment = SegmentFactory(lifecycle_states=["dormant"])

    assert _filtered(segment.pk, Customer.objects.distinct()).count() == 2


def test_the_members_filter_offers_every_segment(dormant_spenders):
    first, second = SegmentFactory(name="B"), SegmentFactory(name="A")
    request = RequestFactory().get("/")
    members_filter = SegmentMembersFilter(request, {}, Customer, admin.site._registry[Customer])

    assert members_filter.lookup_choices == [(second.pk, "A"), (first.pk, "B")]


def test_the_customer_list_filtered_by_a_segment(client, marketer, dormant_spenders, monkeypatch):
    # The customer admin lists this filter; here it is added for the test alone.
    customer_admin = admin.site._registry[Customer]
    if SegmentMembersFilter not in customer_admin.list_filter:
        monkeypatch.setattr(customer_admin, "list_filter", [*customer_admin.list_filter, SegmentMembersFilter])
    segment = SegmentFactory(lifecycle_states=["dormant"], spent_min=Decimal("500"))

    response = client.get(reverse("admin:reactivation_customer_changelist"), {"segment": segment.pk})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [dormant_spenders[0]]


@pytest.mark.parametrize("value", ["²", "9" * 30])
def test_a_segment_filter_value_that_is_no_id_lists_nobody_without_an_error(admin_client, value):
    SegmentFactory()
    CustomerFactory()
    response = admin_client.get("/admin/reactivation/customer/", {"segment": value})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0
