"""Admin for brands and campaigns: the campaign page, its actions and its live progress."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from campaigns import services
from campaigns.models import Brand, Campaign, CampaignRun
from campaigns.rendering import validate_campaign_templates
from consent.models import Channel


class CampaignForm(forms.ModelForm):
    channels = forms.CharField(
        help_text="In order of preference, comma-separated: email, sms, in_app (e.g. \"email, sms\": SMS when there is "
                  "no email consent).",
    )

    class Meta:
        model = Campaign
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.initial.get("channels"), list):
            self.initial["channels"] = ", ".join(self.initial["channels"])

    def clean_channels(self):
        value = self.cleaned_data["channels"]
        channels = [c.strip().lower() for c in value.replace(";", ",").split(",") if c.strip()]
        unknown = [c for c in channels if c not in Channel.values]
        if unknown:
            raise ValidationError(f"Unknown channels: {', '.join(unknown)}. Use {', '.join(Channel.values)}.")
        if len(set(channels)) != len(channels):
            raise ValidationError("Name each channel once.")
        return channels

    def _post_clean(self):
        super()._post_clean()
        if self.errors:
            return
        # Every template in every language, with this campaign's offer and brand: a message
        # that would print a field the offer lacks is refused here, naming variable and channel.
        try:
            validate_campaign_templates(campaign=self.instance)
        except ValidationError as exc:
            self._update_errors(exc)


class RunInline(admin.TabularInline):
    model = CampaignRun
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["number", "status", "trigger", "started_at", "finished_at", "targeted", "sent", "skipped_consent",
              "skipped_suppressed", "skipped_cap", "skipped_reentry", "skipped_cancelled", "deferred_quiet", "failed",
              "unknown"]
    readonly_fields = fields
    ordering = ["-number"]

    def has_add_permission(self, request, obj=None):
        return False


def _run_action(service, verb, *, note=""):
    """An action calling ``service`` per campaign; ``note`` follows the per-campaign message
    when the service returned a positive number of runs."""

    def action(modeladmin, request, queryset):
        done, refused = 0, []
        for campaign in queryset:
            try:
                result = service(campaign=campaign)
            except ValidationError as exc:
                refused.append(f"{campaign}: {'; '.join(exc.messages)}")
                continue
            done += 1
            if isinstance(result, CampaignRun):
                modeladmin.message_user(request, f"{campaign}: run #{result.number} started.", messages.SUCCESS)
            elif isinstance(result, int) and verb != "scheduled":
                text = f"{campaign}: {verb} ({result} run{'s' if result != 1 else ''})."
                modeladmin.message_user(request, f"{text} {note}" if note and result else text)
        if done:
            modeladmin.message_user(request, f"{done} campaign{'s' if done != 1 else ''} {verb}.", messages.SUCCESS)
        for message in refused:
            modeladmin.message_user(request, message, messages.ERROR)

    action.__name__ = f"action_{verb.replace(' ', '_')}"
    return action


# A million-row run is not closed inside the request: a task does it after the cancel commits.
CANCEL_NOTE = ("Nothing more will be sent; the deliveries still waiting are being closed in the background "
               "(skipped: campaign cancelled) and the run counts update when that is done.")


@admin.register(Brand)
class BrandAdmin(admin.ModelAdmin):
    list_display = ["name", "sms_signature", "from_email", "default_locale", "shop_url"]
    search_fields = ["name"]
    fieldsets = [
        (None, {"fields": ["name", "default_locale", "shop_url", "logo_url"]}),
        ("Email", {"fields": ["from_name", "from_email", "reply_to", "postal_address"]}),
        ("SMS", {"fields": ["sms_signature"]}),
    ]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = ["name", "status", "segment", "channels_display", "offer", "schedule_display", "last_run"]
    list_filter = ["status", "schedule_kind"]
    search_fields = ["name"]
    autocomplete_fields = []
    raw_id_fields = []
    readonly_fields = ["status", "periodic_task", "created_by", "created_at", "updated_at"]
    inlines = [RunInline]
    actions = ["schedule", "launch_now", "pause", "resume", "cancel"]
    change_form_template = "admin/campaigns/campaign/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "description", "status", "segment", "brand"]}),
        ("Channels and messages", {"fields": ["channels", "email_template", "sms_template", "in_app_template", "sms_enabled"]}),
        ("Offer", {"fields": ["offer", "when_budget_exhausted"]}),
        ("Rules", {"fields": ["is_marketing", "cap_exempt", "reentry_days", "holdout_percent"]}),
        ("Schedule", {"fields": ["schedule_kind", "scheduled_at", "cron_minute", "cron_hour", "cron_day_of_week",
                                 "cron_day_of_month", "cron_month_of_year", "periodic_task"],
                      "description": "Saving does not schedule: use the \"Schedule\" action (or \"Launch now\")."}),
        ("History", {"fields": ["created_by", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("segment", "offer", "brand")

    @admin.display(description="Channels")
    def channels_display(self, obj):
        return " → ".join(obj.channels or [])

    @admin.display(description="Schedule")
    def schedule_display(self, obj):
        if obj.schedule_kind == Campaign.ScheduleKind.RECURRING:
            return f"cron {obj.cron_minute} {obj.cron_hour} {obj.cron_day_of_month} {obj.cron_month_of_year} {obj.cron_day_of_week}"
        return obj.scheduled_at or "—"

    @admin.display(description="Last run")
    def last_run(self, obj):
        run = obj.runs.order_by("-number").first()
        return f"#{run.number} {run.get_status_display()}: {run.sent}/{run.targeted} sent" if run else "—"

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    # Actions: thin, each one service call per campaign.

    @admin.action(description="Schedule (once at the time, or on the crontab)", permissions=["change"])
    def schedule(self, request, queryset):
        _run_action(services.campaign_schedule, "scheduled")(self, request, queryset)

    @admin.action(description="Launch now", permissions=["change"])
    def launch_now(self, request, queryset):
        _run_action(services.campaign_launch, "launched")(self, request, queryset)

    @admin.action(description="Pause", permissions=["change"])
    def pause(self, request, queryset):
        _run_action(services.campaign_pause, "paused")(self, request, queryset)

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request, queryset):
        _run_action(services.campaign_resume, "resumed")(self, request, queryset)

    @admin.action(description="Cancel (removes the schedule)", permissions=["change"])
    def cancel(self, request, queryset):
        _run_action(services.campaign_cancel, "cancelled", note=CANCEL_NOTE)(self, request, queryset)

    # Live progress.

    def get_urls(self):
        return [
            path("<int:object_id>/progress/", self.admin_site.admin_view(self.progress_view), name="campaigns_campaign_progress"),
            *super().get_urls(),
        ]

    def progress_view(self, request, object_id):
        campaign = get_object_or_404(Campaign, pk=object_id)
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        runs = list(campaign.runs.order_by("-number")[:10])
        return JsonResponse({
            "campaign": campaign.pk, "status": campaign.status,
            "runs": [services.run_progress(run=run) for run in runs],
            "active": any(run.status in services.ACTIVE_RUN_STATUSES for run in runs),
        })

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}),
                         "progress_url": reverse("admin:campaigns_campaign_progress", args=[object_id])}
        return super().change_view(request, object_id, form_url, extra_context)
