"""Admin for dormancy rules, segments and categories.

The segment list shows each segment's cached size (reactivation.segment_sizes, recounted in the
background); the segment form recounts live while its filters are edited, through
``<segment>/live-size/`` (``live-size/`` on the add page), within a time bound.
``SegmentMembersFilter`` lists a segment's members in the customer list (``?segment=<id>``).
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

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
from reactivation.segment_sizes import segment_size_label, segment_size_live
from reactivation.selectors import segment_audience
from reactivation.tasks import segment_sizes_refresh_task


SEGMENT_SAMPLE_SIZE = 20
# Members shown under the live count while the form is edited.
LIVE_SAMPLE_SIZE = 5
# Form fields that name or describe a segment without deciding who is in it.
NON_CRITERIA_FIELDS = {"name", "description"}


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


def _masked_member(customer: Customer, personal: bool) -> dict:
    return {
        "customer": customer,
        "email": customer.email if personal else mask_email(customer.email),
        "phone": customer.phone if personal else mask_phone(customer.phone),
    }


def segment_members_url(segment: Segment) -> str:
    return f"{reverse('admin:reactivation_customer_changelist')}?{SegmentMembersFilter.parameter_name}={segment.pk}"


class SegmentMembersFilter(admin.SimpleListFilter):
    """The customer list narrowed to one segment's members: ``?segment=<id>``.

    The segment's criteria are ANDed into the list's own query rather than tested with
    ``pk IN (members)``: the list reads 50 rows in primary-key order, and PostgreSQL can stop
    at the 50th member instead of first collecting every member of a segment of millions.
    """

    title = "segment"
    parameter_name = "segment"

    def lookups(self, request, model_admin):
        return list(Segment.objects.order_by("name").values_list("pk", "name"))

    def queryset(self, request, queryset):
        value = self.value()
        if value in (None, ""):
            return queryset
        # isdigit() alone accepts "²", which int() refuses; 18 digits stay within a 64-bit id.
        text = str(value)
        segment = (Segment.objects.filter(pk=int(text)).first()
                   if text.isascii() and text.isdigit() and len(text) <= 18 else None)
        if segment is None:
            return queryset.none()
        members = segment.customers()
        try:
            return queryset & members
        except TypeError:  # a distinct or sliced list cannot take another query's WHERE
            return queryset.filter(pk__in=members.values("pk"))


@admin.register(Segment)
class SegmentAdmin(ImportExportAdmin):
    resource_classes = [SegmentResource]
    form = SegmentForm
    list_display = ["name", "states", "dormancy_rule", "size_display", "members_link", "created_by", "updated_at"]
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

    @admin.display(description="size", ordering="size")
    def size_display(self, segment):
        return segment_size_label(segment=segment)

    @admin.display(description="members")
    def members_link(self, segment):
        return format_html('<a href="{}">members</a>', segment_members_url(segment))

    def save_model(self, request, obj, form, change):
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        criteria_changed = not change or bool(set(form.changed_data) - NON_CRITERIA_FIELDS)
        if criteria_changed:
            # The cached count described the old filters: the list says "counting…" until the
            # recount below lands.
            obj.size = obj.size_counted_at = None
        super().save_model(request, obj, form, change)
        if criteria_changed:
            # robust: a broker that is down must not turn a saved segment into an error page;
            # the periodic refresh counts the segment later anyway.
            segment_id = obj.pk
            transaction.on_commit(lambda: segment_sizes_refresh_task.delay(segment_id=segment_id), robust=True)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("live-size/", wrap(self.live_size_view), name="reactivation_segment_live_size"),
            path("<int:object_id>/live-size/", wrap(self.live_size_view), name="reactivation_segment_live_size"),
            *super().get_urls(),
        ]

    def live_size_view(self, request, object_id=None):
        """The size of the segment the form describes, saved or not, as JSON.

        Takes the form's fields as they are (POST), validates the criteria with the admin's
        SegmentForm and answers ``{"label", "count", "exact", "sample"}``, or, when a criterion
        is invalid, ``{"errors": {field: [messages]}}`` with status 400. The name and
        description do not change who is in the segment: their errors (blank, taken) are ignored.
        """
        return require_POST(self._live_size)(request, object_id)

    def _live_size(self, request, object_id):
        segment = None
        if object_id is not None:
            segment = self.get_object(request, str(object_id))
            if segment is None:
                raise Http404("No such segment.")
        if not self.has_view_permission(request, segment):
            raise PermissionDenied
        form = self.get_form(request, segment)(request.POST, instance=segment or Segment())
        form.is_valid()
        errors = {
            field: [error["message"] for error in field_errors]
            for field, field_errors in form.errors.get_json_data().items()
            if field not in NON_CRITERIA_FIELDS
        }
        if errors:
            return JsonResponse({"errors": errors}, status=400)
        # The form has copied every valid criterion onto its (unsaved) instance.
        size = segment_size_live(segment=form.instance, sample_size=LIVE_SAMPLE_SIZE)
        personal = can_view_personal_data(request.user)
        return JsonResponse({
            "label": size.label,
            "count": size.count,
            "exact": size.exact,
            "sample": [
                {
                    "external_id": row["customer"].external_id,
                    "name": row["customer"].name,
                    "email": row["email"],
                    "phone": row["phone"],
                    "lifecycle": row["customer"].get_lifecycle_state_display(),
                    "total_spent": str(row["customer"].total_spent),
                    "url": reverse("admin:reactivation_customer_change", args=[row["customer"].pk]),
                }
                for row in (_masked_member(customer, personal) for customer in size.sample)
            ],
        })

    def add_view(self, request, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "live_size_url": reverse("admin:reactivation_segment_live_size")}
        return super().add_view(request, form_url, extra_context=extra_context)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # Counted only for a page that is shown: a successful save redirects and must not wait
        # for a count (up to twice the live bound) nobody sees.
        if change and obj is not None:
            # A form sent back with errors has copied its valid fields onto ``obj``: the page
            # shows the segment as saved, the live count follows the form.
            segment = obj if request.method in ("GET", "HEAD") else self.get_object(request, str(obj.pk))
            if segment is not None:
                context.update(self.members_context(request, segment))
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def members_context(self, request, segment) -> dict:
        """Size and a sample of members for the change page (masked without the permission),
        counted within the same time bound as the live count."""
        personal = can_view_personal_data(request.user)
        size = segment_size_live(segment=segment, sample_size=SEGMENT_SAMPLE_SIZE)
        return {
            "segment_size": size.count,
            "segment_size_label": size.label,
            "segment_size_exact": size.exact,
            "segment_sample": [_masked_member(customer, personal) for customer in size.sample],
            "segment_members_url": segment_members_url(segment),
            "live_size_url": reverse("admin:reactivation_segment_live_size", args=[segment.pk]),
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
