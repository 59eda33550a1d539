"""Events added in the admin go through the activity service; "Re-evaluate lifecycle now"."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from reactivation.models import ActivityEvent, Customer, LifecycleTransition
from tests.factories import ActivityEventFactory, CustomerFactory, DormancyRuleFactory, UserFactory

pytestmark = pytest.mark.django_db

LONG_AGO = timezone.now() - timedelta(days=200)


@pytest.fixture
def rule():
    return DormancyRuleFactory(name="No order for 90 days", signal="last_order", inactive_days=90)


@pytest.fixture
def root(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client


def dormant(**extra):
    return CustomerFactory(lifecycle_state="dormant", order_count=1, total_spent=Decimal("5.00"),
                           last_order_at=LONG_AGO, signup_at=LONG_AGO, **extra)


def add_event(client, customer, **fields):
    at = timezone.localtime(timezone.now() - timedelta(hours=1))
    data = {"customer": customer.pk, "kind": "order", "occurred_at_0": at.strftime("%Y-%m-%d"),
            "occurred_at_1": at.strftime("%H:%M:%S"), "amount": "30.00", "category": "", "item_ref": "",
            "source": "admin", **fields}
    return client.post(reverse("admin:reactivation_activityevent_add"), data)


def test_an_order_added_in_the_admin_moves_rollups_and_reactivates(root, rule, django_capture_on_commit_callbacks):
    customer = dormant()
    with django_capture_on_commit_callbacks(execute=True):
        response = add_event(root, customer)

    assert response.status_code == 302, response.context["adminform"].form.errors
    customer.refresh_from_db()
    assert (customer.order_count, customer.total_spent, customer.lifecycle_state) == (2, Decimal("35.00"), "reactivated")
    assert customer.last_order_at > LONG_AGO
    assert ActivityEvent.objects.get().source == "admin"


@pytest.mark.parametrize(("fields", "field"), [
    ({"amount": "-1"}, "amount"),
    ({"amount": "1.001"}, "amount"),
    ({"occurred_at_0": "2999-01-01"}, "occurred_at"),
])
def test_the_admin_form_refuses_what_the_service_refuses(root, rule, fields, field):
    customer = dormant()
    response = add_event(root, customer, **fields)
    assert response.status_code == 200 and field in response.context["adminform"].form.errors
    assert not ActivityEvent.objects.exists()


def test_events_are_never_edited_in_the_admin(root):
    event = ActivityEventFactory()
    response = root.post(reverse("admin:reactivation_activityevent_change", args=[event.pk]), {"amount": "999"})
    assert response.status_code == 403
    assert root.get(reverse("admin:reactivation_activityevent_change", args=[event.pk])).status_code == 200  # viewable


def test_reevaluate_action_changes_only_the_selected_customers(root, rule):
    came_back = CustomerFactory(lifecycle_state="dormant", order_count=2, last_order_at=timezone.now() - timedelta(days=1),
                                signup_at=LONG_AGO)
    lapsed = CustomerFactory(lifecycle_state="active", order_count=1, last_order_at=LONG_AGO, signup_at=LONG_AGO)
    not_selected = CustomerFactory(lifecycle_state="active", order_count=1, last_order_at=LONG_AGO, signup_at=LONG_AGO)

    response = root.post(reverse("admin:reactivation_customer_changelist"),
                         {"action": "reevaluate_lifecycle", "_selected_action": [came_back.pk, lapsed.pk]}, follow=True)

    assert "Lifecycle re-evaluated: 2 customer(s) changed (1 dormant, 1 reactivated)." in response.content.decode()
    states = dict(Customer.objects.values_list("pk", "lifecycle_state"))
    assert (states[came_back.pk], states[lapsed.pk], states[not_selected.pk]) == ("reactivated", "dormant", "active")
    assert LifecycleTransition.objects.count() == 2


def test_reevaluate_action_is_a_fixed_number_of_statements(root, rule):
    def statements(n):
        customers = [CustomerFactory(lifecycle_state="active", order_count=1, last_order_at=LONG_AGO, signup_at=LONG_AGO)
                     for _ in range(n)]
        with CaptureQueriesContext(connection) as queries:
            root.post(reverse("admin:reactivation_customer_changelist"),
                      {"action": "reevaluate_lifecycle", "_selected_action": [c.pk for c in customers]})
        return len(queries)

    assert statements(2) == statements(25)


def test_staff_who_may_only_view_customers_have_no_reevaluate_action(client):
    from django.contrib.auth.models import Permission

    viewer = UserFactory(username="viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_customer"))
    client.force_login(viewer)
    response = client.get(reverse("admin:reactivation_customer_changelist"))
    assert "reevaluate_lifecycle" not in response.content.decode()
