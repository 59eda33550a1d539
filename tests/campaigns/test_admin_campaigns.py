"""Campaign admin: form, actions through the services, live progress, masked deliveries."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from campaigns.materialize import run_materialize
from campaigns.models import Campaign, CampaignRun, ChannelPolicy, ContactPolicy, Delivery
from campaigns.services import campaign_launch
from tests.campaigns.pipeline_helpers import (
    campaign_for, customers_with_consent,
)
from tests.factories import BrandFactory, MessageTemplateFactory, SegmentFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(is_superuser=True))
    return client


@pytest.fixture
def marketer_client(client):
    user = UserFactory()
    user.groups.add(Group.objects.get(name="Marketer"))
    client.force_login(user)
    return client


def messages_of(response):
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_add_campaign_with_channels_in_order(superuser_client):
    segment = SegmentFactory()
    email, sms = MessageTemplateFactory(channel="email"), MessageTemplateFactory(channel="sms")
    data = {
        "name": "Win-back", "segment": segment.pk, "brand": BrandFactory().pk, "channels": "email, SMS",
        "email_template": email.pk, "sms_template": sms.pk, "when_budget_exhausted": "send_without_offer",
        "is_marketing": "on", "sms_enabled": "on", "reentry_days": 30, "holdout_percent": 10, "schedule_kind": "once",
        "cron_minute": "0", "cron_hour": "10", "cron_day_of_week": "*", "cron_day_of_month": "*", "cron_month_of_year": "*",
        "runs-TOTAL_FORMS": 0, "runs-INITIAL_FORMS": 0,
    }

    response = superuser_client.post(reverse("admin:campaigns_campaign_add"), data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    campaign = Campaign.objects.get(name="Win-back")
    assert campaign.channels == ["email", "sms"]
    assert campaign.status == "draft"


def test_unknown_channel_and_missing_template_are_shown_as_errors(superuser_client):
    segment = SegmentFactory()
    base = {
        "name": "Bad", "segment": segment.pk, "brand": BrandFactory().pk, "when_budget_exhausted": "skip", "reentry_days": 30,
        "holdout_percent": 0, "schedule_kind": "once", "cron_minute": "0", "cron_hour": "10", "cron_day_of_week": "*",
        "cron_day_of_month": "*", "cron_month_of_year": "*", "runs-TOTAL_FORMS": 0, "runs-INITIAL_FORMS": 0,
    }

    fax = superuser_client.post(reverse("admin:campaigns_campaign_add"), {**base, "channels": "email, fax"})
    no_template = superuser_client.post(reverse("admin:campaigns_campaign_add"), {**base, "channels": "sms"})

    assert "Unknown channels: fax" in fax.content.decode()
    assert "A sms campaign needs a sms template." in no_template.content.decode()
    assert not Campaign.objects.filter(name="Bad").exists()


def test_launch_now_action_starts_a_run_and_queues_it(superuser_client, django_capture_on_commit_callbacks, monkeypatch):
    customers_with_consent(2)
    campaign = campaign_for()
    queued = []
    monkeypatch.setattr("campaigns.tasks.run_execute.delay", lambda run_id: queued.append(run_id))

    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("admin:campaigns_campaign_changelist"), {"action": "launch_now", "_selected_action": [campaign.pk]},
        )

    run = CampaignRun.objects.get(campaign=campaign)
    assert queued == [run.pk]
    assert f"{campaign}: run #1 started." in messages_of(response)


def test_schedule_action_reports_validation_errors_and_successes(superuser_client):
    past = campaign_for(schedule_kind="once", scheduled_at=timezone.now() - timedelta(hours=1))
    future = campaign_for(schedule_kind="once", scheduled_at=timezone.now() + timedelta(hours=1))

    response = superuser_client.post(
        reverse("admin:campaigns_campaign_changelist"), {"action": "schedule", "_selected_action": [past.pk, future.pk]},
    )

    texts = messages_of(response)
    assert any(t.startswith(f"{past}:") and "passed" in t for t in texts)
    assert "1 campaign scheduled." in texts
    assert Campaign.objects.get(pk=future.pk).status == "scheduled"
    assert Campaign.objects.get(pk=past.pk).status == "draft"


def test_pause_and_cancel_actions(superuser_client):
    customers_with_consent(1)
    campaign = campaign_for()
    campaign_launch(campaign=campaign)

    superuser_client.post(reverse("admin:campaigns_campaign_changelist"), {"action": "pause", "_selected_action": [campaign.pk]})
    assert Campaign.objects.get(pk=campaign.pk).status == "paused"
    response = superuser_client.post(
        reverse("admin:campaigns_campaign_changelist"), {"action": "cancel", "_selected_action": [campaign.pk]})

    assert Campaign.objects.get(pk=campaign.pk).status == "cancelled"
    assert "1 campaign cancelled." in messages_of(response)


def test_cancel_action_queues_the_closing_and_says_it_happens_in_the_background(
        superuser_client, django_capture_on_commit_callbacks, monkeypatch):
    customers_with_consent(2)
    campaign = campaign_for()
    run = campaign_launch(campaign=campaign)
    run_materialize(run=run)
    closing = []
    monkeypatch.setattr("campaigns.tasks.run_close_cancelled.delay", lambda run_id: closing.append(run_id))

    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("admin:campaigns_campaign_changelist"), {"action": "cancel", "_selected_action": [campaign.pk]})

    texts = messages_of(response)
    assert closing == [run.pk]
    assert any(t.startswith(f"{campaign}: cancelled (1 run).") and "closed in the background" in t for t in texts)
    # The request itself left the deliveries for the task.
    assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) == {"pending"}


def test_cancelled_deliveries_are_counted_on_the_campaign_and_run_pages(superuser_client):
    from campaigns.services import campaign_cancel, run_close_cancelled

    customers_with_consent(2)
    campaign = campaign_for()
    run = campaign_launch(campaign=campaign)
    run_materialize(run=run)
    campaign_cancel(campaign=campaign)
    run_close_cancelled(run=run)

    progress = superuser_client.get(reverse("admin:campaigns_campaign_progress", args=[campaign.pk])).json()
    page = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    runs = superuser_client.get(reverse("admin:campaigns_campaignrun_changelist")).content.decode()

    assert (progress["runs"][0]["skipped_cancelled"], progress["runs"][0]["pending"], progress["active"]) == (2, 0, False)
    assert "r.skipped_cancelled" in page and "<th>Cancelled</th>" in page
    assert "column-skipped_cancelled" in runs


def test_change_page_polls_a_progress_endpoint_with_run_counts(superuser_client):
    customers_with_consent(3)
    campaign = campaign_for()
    run = campaign_launch(campaign=campaign)
    run_materialize(run=run)

    page = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    progress = superuser_client.get(reverse("admin:campaigns_campaign_progress", args=[campaign.pk])).json()

    assert 'id="run-progress"' in page.content.decode()
    assert progress["active"] is True
    assert (progress["runs"][0]["targeted"], progress["runs"][0]["pending"], progress["runs"][0]["percent_done"]) == (3, 3, 0.0)


def test_progress_endpoint_needs_view_permission(client):
    campaign = campaign_for()
    client.force_login(UserFactory())  # staff without campaign permissions

    response = client.get(reverse("admin:campaigns_campaign_progress", args=[campaign.pk]))

    assert response.status_code == 403


def test_delivery_list_masks_addresses_for_staff_without_the_personal_data_permission(marketer_client):
    customer = customers_with_consent(1, email="zhang.wei@example.com")[0]
    run = campaign_launch(campaign=campaign_for())
    run_materialize(run=run)

    masked = marketer_client.get(reverse("admin:campaigns_delivery_changelist")).content.decode()

    assert "z***@e***.com" in masked and "zhang.wei@example.com" not in masked
    assert customer.external_id in masked
    detail = marketer_client.get(reverse("admin:campaigns_delivery_change", args=[Delivery.objects.get().pk]))
    assert "zhang.wei@example.com" not in detail.content.decode()
    marketer_client.force_login(UserFactory(is_superuser=True))
    full = marketer_client.get(reverse("admin:campaigns_delivery_changelist")).content.decode()
    assert "zhang.wei@example.com" in full


def test_runs_and_deliveries_are_read_only_and_policies_editable(superuser_client):
    assert superuser_client.get(reverse("admin:campaigns_delivery_add")).status_code == 403
    assert superuser_client.get(reverse("admin:campaigns_campaignrun_add")).status_code == 403
    policy = ChannelPolicy.objects.get(channel="sms")
    assert (policy.quiet_hours_enabled, policy.cap_count, policy.cap_days) == (True, 2, 7)
    response = superuser_client.get(reverse("admin:campaigns_contactpolicy_change", args=[ContactPolicy.current().pk]))
    assert response.status_code == 200
    assert superuser_client.get(reverse("admin:campaigns_contactpolicy_add")).status_code == 403


def test_marketer_group_has_campaign_permissions():
    codenames = set(Group.objects.get(name="Marketer").permissions.values_list("codename", flat=True))
    assert {"add_campaign", "change_campaign", "view_campaign", "view_campaignrun", "view_delivery",
            "add_messagetemplate", "change_offer", "view_contactpolicy", "view_channelpolicy"} <= codenames
    assert "delete_campaign" not in codenames and "change_contactpolicy" not in codenames
    assert Permission.objects.filter(codename="view_delivery").exists()
