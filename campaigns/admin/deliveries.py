"""Admin for runs and deliveries: written by the pipeline only, read-only here; the operator's
re-send of deliveries whose outcome is unknown."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from campaigns import services
from campaigns.models import CampaignRun, Delivery
from core.admin_site import PersonalDataAdminMixin, ReadOnlyAdminMixin, masked_display
from core.masking import mask_address, mask_personal_text
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


@admin.register(CampaignRun)
class CampaignRunAdmin(ResendUnknownMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "status", "trigger", "started_at", "finished_at", "targeted", "sent", "skipped_consent",
                    "skipped_suppressed", "skipped_cap", "skipped_reentry", "skipped_budget", "skipped_cancelled",
                    "deferred_quiet", "holdout", "failed", "unknown_link", "deliveries_link"]
    list_filter = ["status", "trigger"]
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
    list_filter = ["status", "skip_reason", "channel"]
    # Exact matches only: an icontains over millions of rows needs an index we do not have.
    search_fields = ["=customer__external_id", "=provider_id"]
    list_select_related = ["campaign", "run", "customer"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    fields = ["campaign", "run", "customer_ref", "channel", "address", "status", "skip_reason", "not_before",
              "attempts", "provider_id", "error", "note", "created_at", "claimed_at", "sent_at", "unknown_at",
              "opened_at", "clicked_at"]
    readonly_fields = fields
    actions = ["resend_unknown"]
    # A provider's error often quotes the address it refused.
    personal_data_fields = {"address": "masked_address", "error": "masked_error"}
    masked_address = masked_display("address", mask_address, "Address")
    masked_error = masked_display("error", mask_personal_text, "Error")

    @admin.action(description="Re-send those whose outcome is unknown (they may arrive twice)", permissions=["resend"])
    def resend_unknown(self, request, queryset):
        _resend_unknown(self, request, queryset)

    @admin.display(description="Run", ordering="run__number")
    def run_number(self, obj):
        return f"#{obj.run.number}"

    @admin.display(description="Customer", ordering="customer__external_id")
    def customer_ref(self, obj):
        url = reverse("admin:reactivation_customer_change", args=[obj.customer_id])
        return format_html('<a href="{}">{}</a>', url, obj.customer.external_id)
