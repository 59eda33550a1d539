"""Admin for brands and campaigns: the campaign page (channels in order, the audience
estimate, the schedule in words, buttons for each verb), its actions and its live progress."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from campaigns import services
from campaigns.models import REENTRY_DAYS_MAX, Brand, Campaign, CampaignRun
from campaigns.rendering import validate_campaign_templates
from campaigns.selectors import campaign_audience_estimate, campaign_schedule_description
from consent.models import Channel
from reactivation.models import Segment


# The largest primary key (a 64-bit signed integer).
ID_MAX = 2**63 - 1


def _is_number(text: str) -> bool:
    """Only 0-9: str.isdigit() also accepts characters int() refuses, such as "²"."""
    return text.isascii() and text.isdigit()


class ChannelOrderWidget(forms.Widget):
    """One checkbox per channel and an order number beside it. The page's script hides the
    numbers behind up/down buttons that reorder the rows (and renumber them); without it the
    marketer types the numbers. Posts ``channels`` (the ticked ones) and
    ``channels_order_<channel>``; a single ``channels`` value "email, sms" is read in its order."""

    template_name = "admin/campaigns/campaign/channel_order_widget.html"

    def _render(self, template_name, context, renderer=None):
        # The project's template engine, not the form renderer's (which sees only app folders).
        return mark_safe(render_to_string(template_name, context))

    def format_value(self, value):
        if isinstance(value, dict):  # posted back with an error: show what was ticked, in order
            value = value["channels"]
        return list(value or [])

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        chosen = [c for c in context["widget"]["value"] if c in Channel.values]
        rest = [c for c in Channel.values if c not in chosen]
        context["rows"] = [
            {"value": channel, "label": Channel(channel).label, "checked": channel in chosen,
             "order": chosen.index(channel) + 1 if channel in chosen else "", "id": f"{context['widget']['attrs'].get('id', name)}_{channel}"}
            for channel in [*chosen, *rest]
        ]
        return context

    def value_from_datadict(self, data, files, name):
        raw = data.getlist(name) if hasattr(data, "getlist") else data.get(name, [])
        if isinstance(raw, str):
            raw = [raw]
        ticked = []
        for value in raw:
            ticked.extend(c.strip().lower() for c in str(value).replace(";", ",").split(",") if c.strip())
        orders, bad = {}, []
        for position, channel in enumerate(ticked):
            text = (data.get(f"{name}_order_{channel}") or "").strip()
            if not text:
                orders[channel] = (float("inf"), position)
            elif _is_number(text):
                orders[channel] = (int(text), position)
            else:
                bad.append(channel)
                orders[channel] = (float("inf"), position)
        ordered = sorted(ticked, key=lambda c: orders[c])
        return {"channels": ordered, "bad_order": bad}

    def value_omitted_from_data(self, data, files, name):
        return False  # no box ticked is a choice (of nothing), not an omission


class ChannelsField(forms.Field):
    widget = ChannelOrderWidget
    default_error_messages = {"required": "Choose at least one channel."}

    def to_python(self, value):
        if isinstance(value, dict):
            if value["bad_order"]:
                raise ValidationError(
                    f"Give the order of {', '.join(value['bad_order'])} as a number (1 = tried first).", code="order")
            value = value["channels"]
        channels = list(value or [])
        unknown = [c for c in channels if c not in Channel.values]
        if unknown:
            raise ValidationError(f"Unknown channels: {', '.join(unknown)}. Use {', '.join(Channel.values)}.", code="unknown")
        if len(set(channels)) != len(channels):
            raise ValidationError("Name each channel once.", code="twice")
        return channels


CRON_LABELS = {"cron_minute": "Minute", "cron_hour": "Hour", "cron_day_of_week": "Day of week (0 = Sunday, 1-5 = weekdays)",
               "cron_day_of_month": "Day of month", "cron_month_of_year": "Month"}


class CampaignForm(forms.ModelForm):
    channels = ChannelsField(
        help_text="Tick the channels to use and put them in order: each customer gets the first one where they have "
                  "consent and an address (e.g. email, then SMS when there is no email consent).",
    )

    class Meta:
        model = Campaign
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        zone = timezone.get_default_timezone_name()
        for name, label in CRON_LABELS.items():
            if name in self.fields:
                self.fields[name].label = f"{label} ({zone})" if name == "cron_hour" else label
        if "cron_hour" in self.fields:
            self.fields["cron_hour"].help_text = f"Crontab hours in {zone}, the site's time zone (e.g. 9 or 9,18)."
        if "scheduled_at" in self.fields:
            self.fields["scheduled_at"].label = f"Send at ({zone})"
            self.fields["scheduled_at"].help_text = f"Once, at this date and time in {zone}, the site's time zone."

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


# The buttons of the campaign page: verb -> (label, service, statuses it is offered in).
CONTROLS = {
    "launch": ("Launch now", services.campaign_launch,
               {Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.COMPLETED}),
    "schedule": ("Schedule", services.campaign_schedule,
                 {Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.COMPLETED}),
    "pause": ("Pause", services.campaign_pause, {Campaign.Status.SCHEDULED, Campaign.Status.RUNNING}),
    "resume": ("Resume", services.campaign_resume, {Campaign.Status.PAUSED}),
    "cancel": ("Cancel", services.campaign_cancel,
               {Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.RUNNING, Campaign.Status.PAUSED}),
}


def _estimate_campaign(params) -> Campaign:
    """An unsaved campaign from the page's current (maybe unsaved) choices, for the estimate.
    Raises ValidationError naming the parameter that is not a whole number or is out of range."""
    def number(name, default=0, maximum=None):
        text = (params.get(name) or "").strip()
        if not text:
            return default
        if not _is_number(text):
            raise ValidationError(f"{name.replace('_', ' ').capitalize()} must be a whole number.")
        value = int(text)
        if maximum is not None and value > maximum:
            raise ValidationError(f"{name.replace('_', ' ').capitalize()} must be at most {maximum}.")
        return value

    def identifier(name):
        # Beyond a 64-bit id the database driver refuses the parameter (SQLite raises OverflowError).
        value = number(name)
        if value > ID_MAX:
            raise ValidationError(f"{name.replace('_', ' ').capitalize()} is not a valid id.")
        return value or None

    def checked(name):
        return params.get(name) in ("on", "true", "1")

    campaign = Campaign(
        pk=identifier("campaign"), segment_id=identifier("segment"),
        channels=ChannelOrderWidget().value_from_datadict(params, None, "channels")["channels"],
        email_template_id=identifier("email_template"), sms_template_id=identifier("sms_template"),
        in_app_template_id=identifier("in_app_template"), sms_enabled=checked("sms_enabled"),
        is_marketing=checked("is_marketing"), cap_exempt=checked("cap_exempt"),
        reentry_days=number("reentry_days", maximum=REENTRY_DAYS_MAX), holdout_percent=min(number("holdout_percent"), 100),
    )
    return campaign


# What the Schedule fieldset says: the buttons exist only once the campaign is saved.
SCHEDULE_NOTE_SAVED = "Saving does not schedule: press \"Schedule\" (or \"Launch now\") above."
SCHEDULE_NOTE_NEW = "Saving does not schedule: save, then Launch now or Schedule."

# The estimate's answer for a ticked channel without its template (nothing can be sent on it).
MISSING_TEMPLATE = {
    Channel.EMAIL: "Choose an email template to send by email.",
    Channel.SMS: "Choose an SMS template to send by SMS.",
    Channel.IN_APP: "Choose an in-app template to send in-app messages.",
}


def _launch_note(campaign: Campaign) -> str:
    """What a launch of a campaign that already ran does to those it reached (re-entry)."""
    if not campaign.runs.exists():
        return ""
    if campaign.reentry_days:
        days = f"{campaign.reentry_days} day{'s' if campaign.reentry_days != 1 else ''}"
        return f"This campaign ran before: re-entry skips the customers it reached in the last {days}."
    return "This campaign ran before and re-entry is 0 days: the customers it reached get it again."


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = ["name", "status", "segment", "channels_display", "offer", "schedule_display", "last_run"]
    list_filter = ["status", "schedule_kind"]
    search_fields = ["name"]
    autocomplete_fields = []
    raw_id_fields = []
    readonly_fields = ["status", "periodic_task", "created_by", "created_at", "updated_at", "audience_estimate",
                       "template_previews", "schedule_summary"]
    actions = ["schedule", "launch_now", "pause", "resume", "cancel"]
    change_form_template = "admin/campaigns/campaign/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "description", "status", "segment", "brand"]}),
        ("Channels and messages", {"fields": ["channels", "email_template", "sms_template", "in_app_template", "sms_enabled",
                                              "template_previews"]}),
        ("Audience", {"fields": ["audience_estimate"]}),
        ("Offer", {"fields": ["offer", "when_budget_exhausted"]}),
        ("Rules", {"fields": ["is_marketing", "cap_exempt", "reentry_days", "holdout_percent"]}),
        ("Schedule", {"fields": ["schedule_summary", "schedule_kind", "scheduled_at", "periodic_task"],
                      "description": SCHEDULE_NOTE_SAVED}),
        # The page's script shows this only for a recurring schedule; without it, it stays shown.
        ("Recurring schedule", {"fields": ["cron_minute", "cron_hour", "cron_day_of_week", "cron_day_of_month",
                                           "cron_month_of_year"],
                                "classes": ["cron-schedule"],
                                "description": "Only for a recurring schedule (crontab)."}),
        ("History", {"fields": ["created_by", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    class Media:
        css = {"all": ["campaigns/campaign_page.css"]}
        js = ["campaigns/campaign_page.js"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("segment", "offer", "brand")

    @admin.display(description="Channels")
    def channels_display(self, obj):
        return " → ".join(Channel(c).label if c in Channel.values else c for c in obj.channels or [])

    @admin.display(description="Schedule")
    def schedule_display(self, obj):
        # A finished or cancelled campaign has no schedule left to run on.
        if obj.status in (Campaign.Status.COMPLETED, Campaign.Status.CANCELLED):
            return "—"
        return campaign_schedule_description(campaign=obj)

    @admin.display(description="Last run")
    def last_run(self, obj):
        run = obj.runs.order_by("-number").first()
        return f"#{run.number} {run.get_status_display()}: {run.sent}/{run.targeted} sent" if run else "—"

    @admin.display(description="Schedule in words")
    def schedule_summary(self, obj):
        if obj is None or obj.pk is None:
            return "Shown once the campaign is saved."
        text = campaign_schedule_description(campaign=obj)
        if obj.status == Campaign.Status.SCHEDULED and obj.periodic_task_id:
            return f"{text}. Scheduled."
        return f"{text}. Not scheduled: press \"Schedule\" to send on it."

    @admin.display(description="Estimated audience")
    def audience_estimate(self, obj):
        # Filled in (and refreshed as segment, channels or rules change) by campaign_page.js.
        return format_html(
            '<div id="audience-estimate" data-url="{}" data-campaign="{}" aria-live="polite">'
            '<span class="estimate-note">Choose a segment and channels to see who this campaign would reach.</span></div>',
            reverse("admin:campaigns_campaign_estimate"), obj.pk if obj and obj.pk else "",
        )

    @admin.display(description="Preview and test send")
    def template_previews(self, obj):
        if obj is None or obj.pk is None:
            return "Save the campaign to preview its messages as sent."
        links = [
            (reverse("admin:campaigns_messagetemplate_preview", args=[template_id]) + f"?campaign={obj.pk}",
             f"Preview and test send: {Channel(channel).label}")
            for channel in Channel.values
            if (template_id := getattr(obj, f"{channel}_template_id"))
        ]
        if not links:
            return "—"
        return format_html_join(" · ", '<a class="template-preview" href="{}">{}</a>', links)

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None:
            return fieldsets
        return [(name, {**options, "description": SCHEDULE_NOTE_NEW}) if name == "Schedule" else (name, options)
                for name, options in fieldsets]

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

    # Pages: live progress, the audience estimate, the buttons.

    def get_urls(self):
        return [
            path("<int:object_id>/progress/", self.admin_site.admin_view(self.progress_view), name="campaigns_campaign_progress"),
            path("estimate/", self.admin_site.admin_view(self.estimate_view), name="campaigns_campaign_estimate"),
            path("<int:object_id>/control/<str:verb>/", self.admin_site.admin_view(self.control_view),
                 name="campaigns_campaign_control"),
            *super().get_urls(),
        ]

    def progress_view(self, request, object_id):
        campaign = get_object_or_404(Campaign, pk=object_id)
        if not self.has_view_permission(request, campaign):
            raise PermissionDenied
        runs = list(campaign.runs.select_related("campaign").order_by("-number")[:10])
        progress = [services.run_progress(run=run) for run in runs]
        # The live table is the page's one table of runs: each row links to its run and deliveries.
        see_runs = request.user.has_perm("campaigns.view_campaignrun")
        see_deliveries = request.user.has_perm("campaigns.view_delivery")
        for row in progress:
            row["url"] = reverse("admin:campaigns_campaignrun_change", args=[row["id"]]) if see_runs else ""
            row["deliveries_url"] = (reverse("admin:campaigns_delivery_changelist") + f"?run__id__exact={row['id']}"
                                     if see_deliveries else "")
        return JsonResponse({
            "campaign": campaign.pk, "status": campaign.status, "status_display": campaign.get_status_display(),
            "runs": progress,
            # A run that only waits for quiet hours is polled slowly, like an idle campaign.
            "active": any(p["status"] in services.ACTIVE_RUN_STATUSES and not p["quiet_wait"] for p in progress),
        })

    def estimate_view(self, request):
        if not (self.has_view_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        try:
            campaign = _estimate_campaign(request.GET)
        except ValidationError as exc:
            return JsonResponse({"ok": False, "error": " ".join(exc.messages)}, status=400)
        if campaign.segment_id is None or not Segment.objects.filter(pk=campaign.segment_id).exists():
            return JsonResponse({"ok": False, "error": "Choose a segment."})
        if not campaign.channels:
            return JsonResponse({"ok": False, "error": "Choose at least one channel."})
        chosen = [c for c in campaign.channels if c in Channel.values]
        missing = [MISSING_TEMPLATE[c] for c in chosen if getattr(campaign, f"{c}_template_id") is None]
        if chosen and len(missing) == len(chosen):
            # Nothing can be sent: say what is missing rather than count zero reachable customers.
            return JsonResponse({"ok": False, "error": " ".join(missing)})
        return JsonResponse({**campaign_audience_estimate(campaign=campaign), "missing": missing})

    def control_view(self, request, object_id, verb):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        campaign = get_object_or_404(Campaign, pk=object_id)
        if verb not in CONTROLS:
            raise PermissionDenied
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        label, service, _statuses = CONTROLS[verb]
        try:
            result = service(campaign=campaign)
        except ValidationError as exc:
            self.message_user(request, f"{label}: refused. {' '.join(exc.messages)}", messages.ERROR)
        else:
            self.message_user(request, self._control_message(verb, campaign, result), messages.SUCCESS)
        return redirect("admin:campaigns_campaign_change", campaign.pk)

    @staticmethod
    def _control_message(verb, campaign, result) -> str:
        if verb == "launch":
            return f"Run #{result.number} started: the progress below updates as it sends."
        if verb == "schedule":
            return f"Scheduled: {campaign_schedule_description(campaign=result)}."
        runs = f"{result} run{'s' if result != 1 else ''}"
        if verb == "cancel":
            return f"Cancelled ({runs}). {CANCEL_NOTE}" if result else "Cancelled; the schedule is removed."
        return f"{verb.capitalize()}d ({runs})."

    def _controls(self, request, campaign):
        if not self.has_change_permission(request, campaign):
            return []
        controls = [
            {"verb": verb, "label": label, "url": reverse("admin:campaigns_campaign_control", args=[campaign.pk, verb])}
            for verb, (label, _service, statuses) in CONTROLS.items() if campaign.status in statuses
        ]
        for control in controls:
            if control["verb"] == "launch":
                control["note"] = _launch_note(campaign)
        return controls

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # An id that names no campaign (or is not a number) gets the admin's own "does not exist"
        # answer: the progress and control URLs are built only for a campaign that does.
        campaign = self.get_object(request, unquote(object_id))
        if campaign is not None:
            extra_context = {**(extra_context or {}),
                             "progress_url": reverse("admin:campaigns_campaign_progress", args=[campaign.pk]),
                             "controls": self._controls(request, campaign)}
        return super().change_view(request, object_id, form_url, extra_context)
