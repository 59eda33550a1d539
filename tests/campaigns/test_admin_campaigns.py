"""Campaign admin: form, actions through the services, live progress, masked deliveries."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from campaigns.materialize import run_materialize
from campaigns.models import REENTRY_DAYS_MAX, Campaign, CampaignRun, ChannelPolicy, ContactPolicy, Delivery
from campaigns.services import campaign_launch
from tests.campaigns.pipeline_helpers import (
    campaign_for, customers_with_consent,
)
from tests.factories import BrandFactory, MessageTemplateFactory, SegmentFactory, UserFactory

pytestmark = pytest.mark.django_db




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
    assert "An SMS campaign needs an SMS template." in no_template.content.decode()
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
            "add_messagetemplate", "change_offer", "view_contactpolicy", "view_channelpolicy",
            "view_offergrant", "view_redemption"} <= codenames
    assert "delete_campaign" not in codenames and "change_contactpolicy" not in codenames
    assert "change_offergrant" not in codenames and "add_redemption" not in codenames
    assert Permission.objects.filter(codename="view_delivery").exists()


# The campaign page: channels widget, estimate, buttons, schedule in words, previews ------------


def _form_data(segment, **fields):
    return {
        "name": "Win-back", "segment": segment.pk, "brand": BrandFactory().pk, "when_budget_exhausted": "send_without_offer",
        "is_marketing": "on", "sms_enabled": "on", "reentry_days": 30, "holdout_percent": 0, "schedule_kind": "once",
        "cron_minute": "0", "cron_hour": "10", "cron_day_of_week": "*", "cron_day_of_month": "*", "cron_month_of_year": "*",
        "runs-TOTAL_FORMS": 0, "runs-INITIAL_FORMS": 0, **fields,
    }


def test_channels_are_ticked_and_ordered_by_their_numbers(superuser_client):
    email, sms = MessageTemplateFactory(channel="email"), MessageTemplateFactory(channel="sms")
    data = _form_data(SegmentFactory(), channels=["email", "sms"], channels_order_email="2", channels_order_sms="1",
                      channels_order_in_app="3", email_template=email.pk, sms_template=sms.pk)

    response = superuser_client.post(reverse("admin:campaigns_campaign_add"), data)

    assert response.status_code == 302
    campaign = Campaign.objects.get(name="Win-back")
    assert campaign.channels == ["sms", "email"]
    page = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    # The rows come in the stored order, ticked, numbered; the unticked channel last.
    assert page.index('value="sms" id="id_channels_sms" checked') < page.index('value="email" id="id_channels_email" checked')
    assert 'name="channels_order_sms" value="1"' in page and 'name="channels_order_in_app" value=""' in page


def test_the_add_page_shows_every_channel_unticked_and_the_estimate_box(superuser_client):
    page = superuser_client.get(reverse("admin:campaigns_campaign_add")).content.decode()

    assert 'id="id_channels_email">' in page and "checked" not in page.split('class="channel-order"')[1].split("</ol>")[0]
    assert 'id="audience-estimate"' in page and "campaigns/campaign_page.js" in page
    assert 'id="campaign-controls"' not in page  # nothing to launch before it is saved


@pytest.mark.parametrize("fields, error", [
    ({}, "Choose at least one channel."),
    ({"channels": ["email"], "channels_order_email": "first"}, "Give the order of email as a number (1 = tried first)."),
    ({"channels": ["email", "fax"]}, "Unknown channels: fax."),
    ({"channels": ["sms"]}, "An SMS campaign needs an SMS template."),
])
def test_the_channels_widget_explains_what_is_wrong(superuser_client, fields, error):
    data = _form_data(SegmentFactory(), email_template=MessageTemplateFactory(channel="email").pk, **fields)

    response = superuser_client.post(reverse("admin:campaigns_campaign_add"), data)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Campaign.objects.filter(name="Win-back").exists()


def test_the_estimate_endpoint_counts_the_unsaved_choices_of_the_page(superuser_client):
    customers_with_consent(3, channels=("email",))
    customers_with_consent(2, channels=("sms",))
    segment = SegmentFactory()
    email, sms = MessageTemplateFactory(channel="email"), MessageTemplateFactory(channel="sms")
    url = reverse("admin:campaigns_campaign_estimate")
    base = {"segment": segment.pk, "email_template": email.pk, "sms_template": sms.pk, "is_marketing": "on",
            "reentry_days": "30", "holdout_percent": "0"}

    email_only = superuser_client.get(url, {**base, "channels": "email", "sms_enabled": "on"}).json()
    both = superuser_client.get(url, {**base, "channels": ["email", "sms"], "sms_enabled": "on"}).json()
    sms_off = superuser_client.get(url, {**base, "channels": ["email", "sms"]}).json()
    no_segment = superuser_client.get(url, {"channels": "email"}).json()

    assert (email_only["segment"], email_only["consent"], email_only["reachable"]) == (5, 3, 3)
    assert (both["reachable"], both["usable_channels"]) == (5, ["email", "sms"])
    assert (sms_off["reachable"], sms_off["usable_channels"]) == (3, ["email"])
    assert no_segment == {"ok": False, "error": "Choose a segment."}


@pytest.mark.parametrize("params, error", [
    ({"segment": "²"}, "Segment must be a whole number."),
    ({"reentry_days": "²"}, "Reentry days must be a whole number."),
    ({"holdout_percent": "-5"}, "Holdout percent must be a whole number."),
    ({"reentry_days": "99999999"}, "Reentry days must be at most 3650."),
    ({"campaign": "99999999999999999999"}, "Campaign is not a valid id."),
    ({"email_template": "99999999999999999999"}, "Email template is not a valid id."),
])
def test_the_estimate_endpoint_answers_a_bad_number_with_a_400_naming_it(superuser_client, params, error):
    segment = SegmentFactory()
    query = {"segment": segment.pk, "channels": "email", "email_template": MessageTemplateFactory(channel="email").pk,
             "campaign": campaign_for().pk, **params}

    response = superuser_client.get(reverse("admin:campaigns_campaign_estimate"), query)

    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": error}


def test_the_estimate_endpoint_counts_the_longest_reentry_allowed(superuser_client):
    customers_with_consent(2)
    query = {"segment": SegmentFactory().pk, "channels": "email", "is_marketing": "on",
             "email_template": MessageTemplateFactory(channel="email").pk, "campaign": campaign_for().pk,
             "reentry_days": str(REENTRY_DAYS_MAX)}

    estimate = superuser_client.get(reverse("admin:campaigns_campaign_estimate"), query).json()

    assert (estimate["ok"], estimate["reachable"]) == (True, 2)


def test_reentry_days_beyond_ten_years_are_refused_on_the_form(superuser_client):
    data = _form_data(SegmentFactory(), channels=["email"], email_template=MessageTemplateFactory(channel="email").pk,
                      reentry_days=REENTRY_DAYS_MAX + 1)

    response = superuser_client.post(reverse("admin:campaigns_campaign_add"), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["reentry_days"] == [
        f"Ensure this value is less than or equal to {REENTRY_DAYS_MAX}."]


def test_a_channel_order_int_refuses_is_a_form_error(superuser_client):
    data = _form_data(SegmentFactory(), channels=["email"], channels_order_email="²",
                      email_template=MessageTemplateFactory(channel="email").pk)

    response = superuser_client.post(reverse("admin:campaigns_campaign_add"), data)

    assert response.status_code == 200
    assert "Give the order of email as a number (1 = tried first)." in response.content.decode()
    assert not Campaign.objects.filter(name="Win-back").exists()


@pytest.mark.parametrize("object_id", ["abc", "999999"])
def test_the_change_page_of_a_campaign_that_does_not_exist_redirects_with_the_admins_message(superuser_client, object_id):
    response = superuser_client.get(f"/admin/campaigns/campaign/{object_id}/change/")

    assert response.status_code == 302
    assert response.url == reverse("admin:index")
    assert any("doesn’t exist" in message for message in messages_of(response))


def test_the_estimate_endpoint_needs_campaign_permissions(client):
    client.force_login(UserFactory())  # staff without campaign permissions

    assert client.get(reverse("admin:campaigns_campaign_estimate"), {"segment": SegmentFactory().pk}).status_code == 403


def test_the_page_offers_the_buttons_the_status_allows(superuser_client):
    def buttons(status):
        campaign = campaign_for(status=status)
        page = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
        return [label for verb, label in [("launch", "Launch now"), ("schedule", "Schedule"), ("pause", "Pause"),
                                          ("resume", "Resume"), ("cancel", "Cancel")]
                if f'name="verb" value="{verb}"' in page]

    assert buttons("draft") == ["Launch now", "Schedule", "Cancel"]
    assert buttons("running") == ["Launch now", "Schedule", "Pause", "Cancel"]
    assert buttons("paused") == ["Resume", "Cancel"]
    assert buttons("cancelled") == []


def test_launch_now_on_the_page_starts_a_run_and_says_so(superuser_client, django_capture_on_commit_callbacks, monkeypatch):
    customers_with_consent(2)
    campaign = campaign_for()
    queued = []
    monkeypatch.setattr("campaigns.tasks.run_execute.delay", lambda run_id: queued.append(run_id))
    url = reverse("admin:campaigns_campaign_control", args=[campaign.pk, "launch"])

    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(url, follow=True)

    run = CampaignRun.objects.get(campaign=campaign)
    assert queued == [run.pk]
    assert response.redirect_chain == [(reverse("admin:campaigns_campaign_change", args=[campaign.pk]), 302)]
    assert "Run #1 started: the progress below updates as it sends." in messages_of(response)


def test_a_button_reports_what_the_service_refuses_and_changes_nothing(superuser_client):
    campaign = campaign_for(schedule_kind="once", scheduled_at=timezone.now() - timedelta(hours=1))

    paused = superuser_client.post(reverse("admin:campaigns_campaign_control", args=[campaign.pk, "pause"]), follow=True)
    scheduled = superuser_client.post(reverse("admin:campaigns_campaign_control", args=[campaign.pk, "schedule"]),
                                      follow=True)

    assert "Pause: refused. A draft campaign cannot be paused." in messages_of(paused)
    assert any(t.startswith("Schedule: refused. This time has passed") for t in messages_of(scheduled))
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"


def test_schedule_pause_resume_and_cancel_buttons_call_the_services(superuser_client, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    campaign = campaign_for(schedule_kind="recurring", cron_minute="0", cron_hour="9", cron_day_of_week="1")

    def press(verb):
        url = reverse("admin:campaigns_campaign_control", args=[campaign.pk, verb])
        return messages_of(superuser_client.post(url, follow=True)), Campaign.objects.get(pk=campaign.pk).status

    scheduled, status_scheduled = press("schedule")
    assert status_scheduled == "scheduled"
    assert scheduled[0].startswith("Scheduled: At 09:00, only on Monday (Asia/Shanghai) — next run Mon ")
    assert press("pause") == (["Paused (0 runs)."], "paused")
    assert press("resume") == (["Resumed (0 runs)."], "scheduled")
    assert press("cancel") == (["Cancelled; the schedule is removed."], "cancelled")


def test_buttons_need_a_post_and_the_change_permission(client):
    campaign = campaign_for()
    viewer = UserFactory()
    viewer.user_permissions.add(Permission.objects.get(codename="view_campaign"))
    client.force_login(viewer)
    url = reverse("admin:campaigns_campaign_control", args=[campaign.pk, "launch"])

    page = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    refused = client.post(url)
    client.force_login(UserFactory(is_superuser=True))
    not_a_post = client.get(url)

    assert 'id="campaign-controls"' not in page
    assert (refused.status_code, not_a_post.status_code) == (403, 405)
    assert not CampaignRun.objects.exists()


def test_the_page_shows_the_schedule_in_words_with_its_zone(superuser_client, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    campaign = campaign_for(schedule_kind="recurring", cron_minute="30", cron_hour="9", cron_day_of_week="1-5")

    page = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()

    assert "At 09:30, Monday through Friday (Asia/Shanghai) — next run " in page
    assert "Not scheduled: press" in page
    assert "Hour (Asia/Shanghai)" in page and "Send at (Asia/Shanghai)" in page


def test_the_page_links_each_template_to_its_preview_for_this_campaign(superuser_client):
    campaign = campaign_for(channels=("email", "sms"))

    page = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()

    for template_id in (campaign.email_template_id, campaign.sms_template_id):
        url = reverse("admin:campaigns_messagetemplate_preview", args=[template_id]) + f"?campaign={campaign.pk}"
        assert f'href="{url}"' in page
    assert "Preview and test send: SMS" in page


def test_the_progress_table_gets_offers_granted_and_the_quiet_hours_wait(superuser_client):
    from tests.factories import OfferFactory

    customers_with_consent(2)
    campaign = campaign_for(offer=OfferFactory())
    run = campaign_launch(campaign=campaign, sync=True)
    waiting = campaign_for()
    waiting_run = campaign_launch(campaign=waiting)
    run_materialize(run=waiting_run)
    Delivery.objects.filter(run=waiting_run).update(status="deferred", not_before=timezone.now() + timedelta(hours=3))

    progress = superuser_client.get(reverse("admin:campaigns_campaign_progress", args=[campaign.pk])).json()
    waits = superuser_client.get(reverse("admin:campaigns_campaign_progress", args=[waiting.pk])).json()

    assert (progress["runs"][0]["number"], progress["runs"][0]["offers_granted"]) == (run.number, 2)
    assert waits["runs"][0]["status_display"] == "Waiting for quiet hours"
    assert waits["runs"][0]["quiet_wait"].startswith("2 waiting for ")
    assert waits["active"] is False  # polled slowly: nothing happens before the window opens


def test_the_estimate_names_the_missing_template_instead_of_counting_zero(superuser_client):
    customers_with_consent(3, channels=("email",))
    segment = SegmentFactory()
    url = reverse("admin:campaigns_campaign_estimate")
    base = {"segment": segment.pk, "is_marketing": "on", "reentry_days": "30", "holdout_percent": "0", "sms_enabled": "on"}

    none_chosen = superuser_client.get(url, {**base, "channels": ["email", "in_app"]}).json()
    sms_missing = superuser_client.get(url, {**base, "channels": ["email", "sms"],
                                             "email_template": MessageTemplateFactory(channel="email").pk}).json()

    assert none_chosen == {"ok": False, "error": "Choose an email template to send by email. "
                                                 "Choose an in-app template to send in-app messages."}
    assert (sms_missing["reachable"], sms_missing["missing"]) == (3, ["Choose an SMS template to send by SMS."])


def test_the_change_page_has_one_table_of_runs_whose_rows_link_to_the_run_and_its_deliveries(superuser_client):
    customers_with_consent(2)
    campaign = campaign_for()
    run = campaign_launch(campaign=campaign, sync=True)

    page = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    progress = superuser_client.get(reverse("admin:campaigns_campaign_progress", args=[campaign.pk])).json()

    assert 'id="run-progress"' in page
    assert 'id="runs-group"' not in page and 'id="runs-heading"' not in page  # no server-drawn inline to go stale
    assert (progress["status"], progress["status_display"]) == ("completed", "Completed")
    [row] = progress["runs"]
    assert row["url"] == reverse("admin:campaigns_campaignrun_change", args=[run.pk])
    assert row["deliveries_url"] == reverse("admin:campaigns_delivery_changelist") + f"?run__id__exact={run.pk}"


def test_the_progress_rows_link_only_where_the_viewer_may_go(client):
    user = UserFactory()
    user.user_permissions.add(Permission.objects.get(codename="view_campaign"))
    client.force_login(user)
    customers_with_consent(1)
    campaign = campaign_for()
    campaign_launch(campaign=campaign, sync=True)

    [row] = client.get(reverse("admin:campaigns_campaign_progress", args=[campaign.pk])).json()["runs"]

    assert (row["url"], row["deliveries_url"]) == ("", "")


def test_launching_a_campaign_that_ran_warns_that_re_entry_skips_those_reached(superuser_client):
    customers_with_consent(1)
    fresh = campaign_for()
    ran = campaign_for(reentry_days=30)
    campaign_launch(campaign=ran, sync=True)
    again = campaign_for(reentry_days=0)
    campaign_launch(campaign=again, sync=True)

    def launch_form(campaign):
        page = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
        start = page.index('data-verb="launch"')
        return page[start:page.index(">", start)]

    assert "data-note" not in launch_form(fresh)
    assert 'data-note="This campaign ran before: re-entry skips the customers it reached in the last 30 days."' \
        in launch_form(ran)
    assert "the customers it reached get it again" in launch_form(again)


def test_the_schedule_reads_as_one_sentence_and_the_add_page_says_to_save_first(superuser_client):
    campaign = campaign_for(schedule_kind="once", scheduled_at=None)

    change = superuser_client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk])).content.decode()
    add = superuser_client.get(reverse("admin:campaigns_campaign_add")).content.decode()

    assert "Once, at a time not yet chosen. Not scheduled: press" in change and ".." not in change.split("Not scheduled")[0][-40:]
    assert 'Saving does not schedule: press "Schedule" (or "Launch now") above.' in change
    assert "Saving does not schedule: save, then Launch now or Schedule." in add
    assert "above." not in add.split("Saving does not schedule")[1][:80]
    # the crontab fields are a fieldset of their own, which the page's script shows for a recurring schedule
    assert 'class="module aligned cron-schedule"' in add


def test_the_list_shows_channels_by_label_in_their_order_and_no_schedule_once_completed(superuser_client):
    sms_first = campaign_for(channels=("sms", "email"), name="SMS first")
    done = campaign_for(name="Done", status=Campaign.Status.COMPLETED)

    page = superuser_client.get(reverse("admin:campaigns_campaign_changelist")).content.decode()

    assert '<td class="field-channels_display">SMS → Email</td>' in page
    done_row = page[page.index(f'/{done.pk}/change/'):]
    done_row = done_row[:done_row.index("</tr>")]
    assert '<td class="field-schedule_display">—</td>' in done_row
    sms_row = page[page.index(f'/{sms_first.pk}/change/'):]
    assert '<td class="field-schedule_display">Once, at a time not yet chosen</td>' in sms_row[:sms_row.index("</tr>")]
