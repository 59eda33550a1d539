"""Admin for dormancy rules, segments and categories."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote

from consent.models import Channel
from core.admin_site import (
    ImportExportAdmin,
)
from core.exports import audience_export_response, customers_export_response
from core.masking import can_view_personal_data, mask_email, mask_phone
from reactivation.models import (
    Category,
    Customer,
    DormancyReason,
    DormancyRule,
    LifecycleState,
    Segment,
)
from reactivation.resources import DormancyRuleResource, SegmentResource, segment_range_errors
from reactivation.selectors import segment_audience, segment_sample, segment_size


SEGMENT_SAMPLE_SIZE = 20


# Rules and segments ---------------------------------------------------------------------------


@admin.register(DormancyRule)
class DormancyRuleAdmin(ImportExportAdmin):
    resource_classes = [DormancyRuleResource]
    list_display = ["name", "signal", "inactive_days", "at_risk_days", "min_orders", "min_spent", "priority", "is_active"]
    list_editable = ["priority", "is_active"]
    list_filter = ["signal", "is_active"]
    search_fields = ["name"]
    readonly_fields = ["created_at"]


def _distinct_customer_values(field: str, current) -> list[tuple[str, str]]:
    """Values present on customers (plus those the segment already uses, so none is lost)."""
    values = set(
        Customer.objects.exclude(**{field: ""}).order_by().values_list(field, flat=True).distinct()[:500]
    )
    values.update(current or [])
    return [(value, value) for value in sorted(values)]


class SegmentForm(forms.ModelForm):
    lifecycle_states = forms.MultipleChoiceField(
        choices=LifecycleState.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Any of these states; none selected means every state.",
    )
    dormancy_reasons = forms.MultipleChoiceField(
        choices=DormancyReason.Reason.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Customers who gave any of these reasons.",
    )
    consent_channels = forms.MultipleChoiceField(
        choices=Channel.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Customers with current marketing consent on every one of these channels.",
    )
    favourite_categories = forms.MultipleChoiceField(
        required=False, widget=forms.SelectMultiple(attrs={"size": 8}), help_text="Any of these categories."
    )
    locales = forms.MultipleChoiceField(
        required=False, widget=forms.SelectMultiple(attrs={"size": 6}), help_text="Any of these locales."
    )

    class Meta:
        model = Segment
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        self.fields["favourite_categories"].choices = _distinct_customer_values(
            "favourite_category", instance.favourite_categories if instance.pk else []
        )
        self.fields["locales"].choices = _distinct_customer_values("locale", instance.locales if instance.pk else [])

    def clean(self):
        cleaned = super().clean()
        for field, message in segment_range_errors(cleaned).items():
            if field in self.fields:
                self.add_error(field, message)
        return cleaned


@admin.register(Segment)
class SegmentAdmin(ImportExportAdmin):
    resource_classes = [SegmentResource]
    form = SegmentForm
    list_display = ["name", "states", "dormancy_rule", "created_by", "updated_at"]
    list_filter = ["dormancy_rule"]
    list_select_related = ["dormancy_rule", "created_by"]
    search_fields = ["name"]
    autocomplete_fields = ["dormancy_rule"]
    readonly_fields = ["created_by", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        ("Lifecycle", {"fields": ["lifecycle_states", "dormancy_rule"]}),
        ("RFM scores (1-5)", {"fields": [
            ("rfm_recency_min", "rfm_recency_max"), ("rfm_frequency_min", "rfm_frequency_max"),
            ("rfm_monetary_min", "rfm_monetary_max"),
        ]}),
        ("Spending and orders", {"fields": [("spent_min", "spent_max"), ("orders_min", "orders_max")]}),
        ("Behaviour", {"fields": ["favourite_categories", "locales", "dormancy_reasons"]}),
        ("Consent", {"fields": ["consent_channels"]}),
        ("Record", {"fields": ["created_by", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    actions = ["export_members_csv", "export_members_xlsx", "export_ad_audience"]

    @admin.display(description="lifecycle states")
    def states(self, segment):
        return ", ".join(segment.lifecycle_states) or "any"

    def save_model(self, request, obj, form, change):
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        segment = self.get_object(request, unquote(object_id))
        if segment is not None:
            extra_context = {**(extra_context or {}), **self.members_context(request, segment)}
        return super().change_view(request, object_id, form_url, extra_context=extra_context)

    def members_context(self, request, segment) -> dict:
        """Size and a sample of members for the change page (masked without the permission)."""
        personal = can_view_personal_data(request.user)
        sample = [
            {
                "customer": customer,
                "email": customer.email if personal else mask_email(customer.email),
                "phone": customer.phone if personal else mask_phone(customer.phone),
            }
            for customer in segment_sample(segment=segment, limit=SEGMENT_SAMPLE_SIZE)
        ]
        return {
            "segment_size": segment_size(segment=segment),
            "segment_sample": sample,
            # The page states the rule but does not count who passes it: the consent checks make
            # that count about 2 s per million members, on every opening of the page.
            "can_export_audience": self.has_audience_export_permission(request),
        }

    def _one_segment(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one segment to export.", messages.WARNING)
            return None
        return queryset.get()

    @admin.action(description="Export members to CSV", permissions=["view"])
    def export_members_csv(self, request, queryset):
        if segment := self._one_segment(request, queryset):
            return customers_export_response(
                queryset=segment.customers(), user=request.user, file_format="csv", filename=f"segment-{segment.pk}"
            )

    @admin.action(description="Export members to XLSX", permissions=["view"])
    def export_members_xlsx(self, request, queryset):
        if segment := self._one_segment(request, queryset):
            return customers_export_response(
                queryset=segment.customers(), user=request.user, file_format="xlsx", filename=f"segment-{segment.pk}"
            )

    def has_audience_export_permission(self, request):
        # Hashes still identify people to the ad platform: personal data, not anonymous data.
        return self.has_view_permission(request) and can_view_personal_data(request.user)

    @admin.action(
        description="Export ad audience (SHA-256 hashed email and phone; only customers with current consent, not suppressed)",
        permissions=["audience_export"],
    )
    def export_ad_audience(self, request, queryset):
        if segment := self._one_segment(request, queryset):
            # Shown on the next page the marketer opens: the file itself carries hashes only.
            self.message_user(
                request,
                f"Ad audience of “{segment}”: only members with current marketing consent whose address is not "
                "suppressed are exported, each hash only for a channel (email, SMS) they may be contacted on; "
                "the other members are left out.",
                messages.INFO,
            )
            return audience_export_response(
                customers=segment_audience(segment=segment), user=request.user, filename=f"audience-segment-{segment.pk}"
            )


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["key", "label_zh_hans", "label_en"]
    search_fields = ["key", "label_zh_hans", "label_en"]
