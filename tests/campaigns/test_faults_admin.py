"""Unknown outcomes in the admin: counted on the run and the campaign page, filtered among the
deliveries, and re-sent only by an operator allowed to."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from campaigns.materialize import run_materialize
from campaigns.models import CampaignRun, Delivery
from campaigns.services import campaign_launch, run_refresh_counters
from tests.campaigns.pipeline_helpers import campaign_for, customers_with_consent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_with_unknowns(monkeypatch):
    """A done run of three: one sent, two whose worker died after handing them to the provider."""
    monkeypatch.setattr("campaigns.tasks.send_chunk.apply_async", lambda args, queue: None)
    customers_with_consent(3)
    run = campaign_launch(campaign=campaign_for())
    run_materialize(run=run)
    ids = sorted(Delivery.objects.filter(run=run).values_list("pk", flat=True))
    Delivery.objects.filter(pk=ids[0]).update(status="sent", sent_at=timezone.now())
    Delivery.objects.filter(pk__in=ids[1:]).update(status="unknown", unknown_at=timezone.now(),
                                                   note="Outcome unknown since 2026-06-03 10:00:00 UTC")
    CampaignRun.objects.filter(pk=run.pk).update(status="done", finished_at=timezone.now())
    return run_refresh_counters(run=CampaignRun.objects.select_related("campaign").get(pk=run.pk)), ids


def login(client, *, can_resend):
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name="Marketer"))
    if can_resend:
        user.user_permissions.add(Permission.objects.get(codename="resend_delivery"))
    client.force_login(user)
    return client


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_run_list_and_the_campaign_page_count_unknown_outcomes(client, run_with_unknowns):
    run, _ = run_with_unknowns
    login(client, can_resend=False)

    runs = client.get(reverse("admin:campaigns_campaignrun_changelist"))
    progress = client.get(reverse("admin:campaigns_campaign_progress", args=[run.campaign_id])).json()
    page = client.get(reverse("admin:campaigns_campaign_change", args=[run.campaign_id]))

    link = reverse("admin:campaigns_delivery_changelist") + f"?run__id__exact={run.pk}&amp;status__exact=unknown"
    assert f'<a href="{link}">2</a>' in runs.content.decode()
    assert progress["runs"][0]["unknown"] == 2
    assert "Unknown outcome" in page.content.decode()


def test_deliveries_can_be_filtered_by_unknown_outcome_and_show_why(client, run_with_unknowns):
    run, ids = run_with_unknowns
    login(client, can_resend=False)

    listing = client.get(reverse("admin:campaigns_delivery_changelist") + "?status__exact=unknown")
    detail = client.get(reverse("admin:campaigns_delivery_change", args=[ids[1]]))

    assert "Outcome unknown" in listing.content.decode()  # the filter's choice
    assert sorted(row.pk for row in listing.context["cl"].result_list) == ids[1:]
    assert "Outcome unknown since 2026-06-03 10:00:00 UTC" in detail.content.decode()


def test_an_operator_allowed_to_re_send_puts_unknown_outcomes_back_and_the_run_sends_again(client, run_with_unknowns):
    run, ids = run_with_unknowns
    login(client, can_resend=True)

    response = client.post(reverse("admin:campaigns_delivery_changelist"),
                           {"action": "resend_unknown", "_selected_action": ids}, follow=True)

    assert messages_of(response) == ["2 deliveries with an unknown outcome will be sent again (consent is checked again first)."]
    assert sorted(Delivery.objects.filter(run=run).values_list("status", flat=True)) == ["pending", "pending", "sent"]
    assert CampaignRun.objects.get(pk=run.pk).status == "sending"
    assert "Re-sent by " in Delivery.objects.get(pk=ids[1]).note


def test_the_run_action_re_sends_the_runs_unknown_outcomes(client, run_with_unknowns):
    run, ids = run_with_unknowns
    login(client, can_resend=True)

    client.post(reverse("admin:campaigns_campaignrun_changelist"), {"action": "resend_unknown", "_selected_action": [run.pk]})

    assert Delivery.objects.filter(run=run, status="pending").count() == 2


def test_without_the_permission_there_is_no_re_send_action(client, run_with_unknowns):
    run, ids = run_with_unknowns
    login(client, can_resend=False)

    listing = client.get(reverse("admin:campaigns_delivery_changelist"))
    client.post(reverse("admin:campaigns_delivery_changelist"), {"action": "resend_unknown", "_selected_action": ids})

    assert "resend_unknown" not in listing.content.decode()
    assert Delivery.objects.filter(run=run, status="unknown").count() == 2
