"""Admin for runs and deliveries: written by the pipeline only, read-only here; the operator's
re-send of deliveries whose outcome is unknown."""

import json

from django.contrib import admin, messages
from django.db import connections
from django.db.models import F, OrderBy, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from campaigns import services
from campaigns.models import CampaignRun, Delivery
from consent.models import Channel, ConsentState, Purpose, Suppression
from consent.selectors import ADDRESS_FIELDS
from core.admin_site import PersonalDataAdminMixin, ReadOnlyAdminMixin, masked_display
from core.masking import can_view_personal_data, mask_address, mask_personal_text
from core.paginator import EstimatedCountPaginator


# Re-sending is the operator's decision: the provider may have delivered these messages already.
RESEND_PERMISSION = "campaigns.resend_delivery"


def _resend_unknown(modeladmin, request, deliveries):
    count = services.deliveries_resend_unknown(deliveries=deliveries, by=request.user.get_username())
    modeladmin.message_user(
        request, f"{count} deliver{'ies' if count != 1 else 'y'} with an unknown outcome will be sent again "
                 "(consent is checked again first).", messages.SUCCESS if count else messages.WARNING)


class ResendUnknownMixin:
    def has_resend_permission(self, request):
        return request.user.has_perm(RESEND_PERMISSION)


# The delivery list at millions of rows ----------------------------------------------------------


# A filtered list counts its rows exactly up to here (counting 100,000 took 0.3 s of a 0.5 s page
# on 3 million deliveries; 10,000 takes a tenth of that).
FILTERED_EXACT_COUNT_LIMIT = 10_000


class DeliveryPaginator(EstimatedCountPaginator):
    """The planner's estimate for the whole table (``EstimatedCountPaginator``), and for a
    filtered list on PostgreSQL an exact count only up to FILTERED_EXACT_COUNT_LIMIT rows: a run
    or a status can hold millions of deliveries, and counting them all would cost more than
    the page. Beyond the limit the count is the planner's estimate of the filtered rows."""

    @cached_property
    def count(self):
        queryset = self.object_list
        query = getattr(queryset, "query", None)
        if query is None or not query.where or connections[queryset.db].vendor != "postgresql":
            return super().count
        capped = queryset.order_by()[: FILTERED_EXACT_COUNT_LIMIT + 1].count()
        if capped <= FILTERED_EXACT_COUNT_LIMIT:
            return capped
        plan = json.loads(queryset.order_by().explain(format="json"))
        return max(int(plan[0]["Plan"]["Plan Rows"]), capped)


class RunFilter(admin.SimpleListFilter):
    """Runs to filter by, listed from the runs table (never from the deliveries): the chosen
    campaign's runs, else the latest runs of all campaigns. Keeps Django's parameter, so
    ``?run__id__exact=`` links from the run list still work."""

    title = "run"
    parameter_name = "run__id__exact"
    # A recurring campaign makes a run a day: a filter lists the latest, the run list the rest.
    shown = 30

    def lookups(self, request, model_admin):
        runs = CampaignRun.objects.select_related("campaign").order_by("-pk")
        campaign_id = _id_or_none(request.GET.get("campaign__id__exact", ""))
        if campaign_id is not None:
            runs = runs.filter(campaign_id=campaign_id)
        listed = list(runs[: self.shown])
        chosen = _id_or_none(self.value())
        if chosen is not None and all(run.pk != chosen for run in listed):
            listed += list(CampaignRun.objects.select_related("campaign").filter(pk=chosen))
        return [(str(run.pk), f"{run} ({timezone.localtime(run.started_at):%Y-%m-%d %H:%M})" if run.started_at else str(run))
                for run in listed]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        run_id = _id_or_none(value)
        return queryset.filter(run_id=run_id) if run_id is not None else queryset.none()


# The largest primary key (a 64-bit signed integer): SQLite refuses a larger parameter outright.
ID_MAX = 2**63 - 1


def _id_or_none(value) -> int | None:
    """An id typed in a URL, or None: str.isdigit() also accepts characters int() refuses ("²")."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= ID_MAX else None


# Why a delivery was skipped ------------------------------------------------------------------

_CHANNEL_WORDS = {Channel.EMAIL: "email", Channel.SMS: "SMS", Channel.IN_APP: "in-app"}


def _day(moment) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d}" if moment else "date unknown"


def skip_explanation(*, delivery: Delivery, mask) -> list[str]:
    """What made ``delivery`` skipped, one line per channel it concerns, with addresses through
    ``mask``: "suppressed: email c***@e***.com (hard bounce, 2026-11-02)".

    A delivery skipped when it was claimed keeps the channel and address it was chosen for.
    One skipped at materialization had no usable channel, so it holds neither: the lines are
    derived from the suppressions and consent on record now for the campaign's channels and
    the customer's current addresses (at most one query each).
    """
    reason = delivery.skip_reason
    if delivery.status != Delivery.Status.SKIPPED or not reason:
        return []
    customer = delivery.customer
    if delivery.channel:
        candidates = [(delivery.channel, delivery.address)]
    else:
        candidates = [(channel, getattr(customer, ADDRESS_FIELDS[channel], "") if channel in ADDRESS_FIELDS else "")
                      for channel in dict.fromkeys(delivery.campaign.channels or []) if channel in Channel.values]
    label = delivery.get_skip_reason_display()
    if reason == Delivery.SkipReason.SUPPRESSED:
        addresses = [(channel, address) for channel, address in candidates if address]
        wanted = Q(pk__in=[])
        for channel, address in addresses:
            wanted |= Q(channel=channel, address=address)
        found = {(s.channel, s.address): s for s in Suppression.objects.filter(wanted)} if addresses else {}
        lines = []
        for channel, address in addresses:
            suppression = found.get((channel, address))
            where = f"{_CHANNEL_WORDS[channel]} {mask(address)}"
            if suppression is None:
                lines.append(f"suppressed: {where} (no suppression on record now: lifted since)")
            else:
                lines.append(f"suppressed: {where} ({suppression.get_reason_display().lower()}, {_day(suppression.created_at)})")
        return lines or [f"{reason}: {label}"]
    if reason == Delivery.SkipReason.CONSENT:
        states = {state.channel: state for state in ConsentState.objects.filter(
            customer_id=delivery.customer_id, purpose=Purpose.MARKETING, channel__in=[c for c, _ in candidates])}
        lines = []
        for channel, _address in candidates:
            state = states.get(channel)
            if state is None:
                why = "never given"
            elif state.status == ConsentState.Status.WITHDRAWN:
                why = f"withdrawn {_day(state.changed_at)}, {state.get_source_display().lower()}"
            else:
                why = f"granted again {_day(state.changed_at)}, after this delivery"
            lines.append(f"no consent: {_CHANNEL_WORDS[channel]} ({why})")
        return lines or [f"{reason}: {label}"]
    if reason == Delivery.SkipReason.NO_ADDRESS:
        missing = [_CHANNEL_WORDS[channel] for channel, address in candidates if channel in ADDRESS_FIELDS and not address]
        return [f"no address: no {word} address on the customer" for word in missing] or [f"{reason}: {label}"]
    if reason == Delivery.SkipReason.CHANNEL_OFF:
        return ["channel off: SMS is switched off for this campaign or by the contact policy"]
    return [f"{reason}: {label}"]


@admin.register(CampaignRun)
class CampaignRunAdmin(ResendUnknownMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "status", "trigger", "started_at", "finished_at", "targeted", "sent", "skipped_consent",
                    "skipped_suppressed", "skipped_cap", "skipped_reentry", "skipped_budget", "skipped_cancelled",
                    "deferred_quiet", "holdout", "failed", "unknown_link", "deliveries_link"]
    list_filter = ["campaign", "status", "trigger"]
    search_fields = ["campaign__name"]
    list_select_related = ["campaign"]
    actions = ["resend_unknown"]

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj):
        url = reverse("admin:campaigns_delivery_changelist") + f"?run__id__exact={obj.pk}"
        return format_html('<a href="{}">deliveries</a>', url)

    @admin.display(description="Unknown outcome", ordering="unknown")
    def unknown_link(self, obj):
        if not obj.unknown:
            return 0
        url = reverse("admin:campaigns_delivery_changelist") + f"?run__id__exact={obj.pk}&status__exact=unknown"
        return format_html('<a href="{}">{}</a>', url, obj.unknown)

    @admin.action(description="Re-send the messages whose outcome is unknown (they may arrive twice)",
                  permissions=["resend"])
    def resend_unknown(self, request, queryset):
        _resend_unknown(self, request, Delivery.objects.filter(run__in=queryset))


@admin.register(Delivery)
class DeliveryAdmin(ResendUnknownMixin, PersonalDataAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "campaign", "run_number", "customer_ref", "channel", "address", "status", "skip_reason",
                    "attempts", "not_before", "sent_at", "opened_at"]
    # Each filter lists its choices from a small table or the field's choices, never from the
    # deliveries; facet counts would count the deliveries once per choice.
    list_filter = ["campaign", RunFilter, "channel", "status", "skip_reason"]
    show_facets = admin.ShowFacets.NEVER
    search_fields = ["=customer__external_id"]
    search_help_text = "The customer's exact external id."
    list_select_related = ["campaign", "run", "customer"]
    paginator = DeliveryPaginator
    show_full_result_count = False
    list_per_page = 50
    fields = ["campaign", "run", "customer_ref", "channel", "address", "status", "skip_reason", "why_skipped",
              "not_before", "attempts", "provider_id", "error", "note", "created_at", "claimed_at", "sent_at",
              "unknown_at", "opened_at", "clicked_at"]
    readonly_fields = fields
    actions = ["resend_unknown"]
    # A provider's error often quotes the address it refused.
    personal_data_fields = {"address": "masked_address", "error": "masked_error"}
    masked_address = masked_display("address", mask_address, "Address")
    masked_error = masked_display("error", mask_personal_text, "Error")

    def get_ordering(self, request):
        if request.GET.get(RunFilter.parameter_name):
            # Newest first, sorted rather than read along the primary key: a run's deliveries
            # are written at once, so their ids are contiguous, while the planner assumes them
            # spread out and walks the key backwards through every later run's rows (0.8 s
            # for a run 1.6 million rows from the top). "id + 0" matches no index; the run's
            # rows come from delivery_run_status_idx and a top-50 sort (0.17 s).
            return [OrderBy(F("id") + 0, descending=True)]
        return super().get_ordering(request)

    def get_search_results(self, request, queryset, search_term):
        # An exact match on the customer's unique external id: Django's "=" search is iexact,
        # UPPER(external_id) = UPPER(term), which no index serves on a million customers.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(customer__external_id=term), False

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None or obj.status != Delivery.Status.SKIPPED:
            fields = [name for name in fields if name != "why_skipped"]
        return fields

    def get_queryset(self, request):
        # The page title and "why skipped" read the campaign and the customer.
        return super().get_queryset(request).select_related("campaign", "run", "customer")

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            # Display methods get only the object: it carries how this viewer sees addresses.
            obj.shown_unmasked = can_view_personal_data(request.user)
        return obj

    @admin.action(description="Re-send those whose outcome is unknown (they may arrive twice)", permissions=["resend"])
    def resend_unknown(self, request, queryset):
        _resend_unknown(self, request, queryset)

    @admin.display(description="Run", ordering="run__number")
    def run_number(self, obj):
        return f"#{obj.run.number}"

    @admin.display(description="Customer", ordering="customer__external_id")
    def customer_ref(self, obj):
        url = reverse("admin:reactivation_customer_change", args=[obj.customer_id])
        customer = obj.customer
        return format_html('<a href="{}">{}</a>{}', url, customer.external_id,
                           f" ({customer.name})" if customer.name else "")

    @admin.display(description="Why skipped")
    def why_skipped(self, obj):
        mask = (lambda address: address) if getattr(obj, "shown_unmasked", False) else mask_address
        lines = skip_explanation(delivery=obj, mask=mask)
        return format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines)) or "-"
