"""Admin for offers, grants and redemptions.

Grants and redemptions are append-only records: read-only here. Coupon codes are not personal
data but they are worth money, so only staff who may change offers see them in full; others see
the first group.
"""


from django import forms
from django.db import models
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.response import TemplateResponse
from django.urls import path

from campaigns.models import (
    Offer,
    OfferGrant,
    Redemption,
)
from campaigns.offers import redemptions_import_csv
from campaigns.resources import OfferResource
from core.admin_site import ImportExportAdmin, PersonalLookupGuardMixin, ReadOnlyAdminMixin
from core.paginator import EstimatedCountPaginator


CODE_PERMISSION = "campaigns.change_offer"
REDEMPTION_UPLOAD_MAX_BYTES = 20 * 1024 * 1024


def can_see_codes(user) -> bool:
    return bool(user and user.is_active and user.has_perm(CODE_PERMISSION))


def mask_code(code: str | None) -> str:
    if not code:
        return "—"
    head, _, rest = code.partition("-")
    return head + "-" + "-".join("****" for _ in rest.split("-")) if rest else "****"


class ReadOnlyAdmin(ReadOnlyAdminMixin, PersonalLookupGuardMixin, admin.ModelAdmin):
    paginator = EstimatedCountPaginator
    show_full_result_count = False


# Offers -------------------------------------------------------------------------------------


@admin.register(Offer)
class OfferAdmin(ImportExportAdmin):
    resource_classes = [OfferResource]
    # Links typed without a scheme are https (Django 6's default; silences its 5.2 warning).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["name", "kind", "usage_mode", "budget", "granted_count", "remaining", "is_active", "created_at"]
    list_filter = ["kind", "usage_mode", "is_active"]
    search_fields = ["name"]
    readonly_fields = ["granted_count", "remaining", "redeemed", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "description", "is_active"]}),
        ("Budget and usage", {"fields": ["budget", "granted_count", "remaining", "redeemed", "usage_mode"]}),
        ("Coupon", {"fields": ["discount_type", "discount_value", "min_spend", "category", "valid_days"]}),
        ("Points", {"fields": ["points", "points_multiplier", "multiplier_days"]}),
        ("Free trial", {"fields": ["trial_plan", "trial_days"]}),
        ("Exclusive access", {"fields": ["access_title", "access_url"]}),
        ("History", {"fields": ["created_at"]}),
    ]

    @admin.display(description="Remaining")
    def remaining(self, obj):
        if obj.budget is None:
            return "∞"
        return max(0, obj.budget - obj.granted_count)

    @admin.display(description="Redeemed")
    def redeemed(self, obj):
        if obj.pk is None:
            return 0
        return Redemption.objects.filter(grant__offer=obj).count()

    def has_delete_permission(self, request, obj=None):
        # Grants point at their offer (PROTECT); an offer with grants is switched off, not deleted.
        if obj is not None and obj.granted_count:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(OfferGrant)
class OfferGrantAdmin(ReadOnlyAdmin):
    list_display = ["masked_code", "offer", "customer_ref", "campaign", "run", "granted_at", "expires_at", "redeemed"]
    list_filter = ["offer", "campaign"]
    list_select_related = ["offer", "customer", "campaign", "run", "run__campaign", "redemption"]
    search_fields = ["=code", "=customer__external_id"]
    date_hierarchy = "granted_at"
    ordering = ["-granted_at"]

    def get_fields(self, request, obj=None):
        code = "code" if can_see_codes(request.user) else "masked_code"
        return [code, "offer", "customer_ref", "campaign", "run", "delivery", "granted_at", "expires_at", "redeemed"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def get_list_display(self, request):
        visible = can_see_codes(request.user)

        @admin.display(description="Code", ordering="code")
        def code_display(obj):
            return (obj.code or "—") if visible else mask_code(obj.code)

        return [code_display, *self.list_display[1:]]

    @admin.display(description="Code")
    def masked_code(self, obj):
        return mask_code(obj.code)

    @admin.display(description="Customer", ordering="customer__external_id")
    def customer_ref(self, obj):
        return obj.customer.external_id

    @admin.display(description="Redeemed", boolean=True)
    def redeemed(self, obj):
        return hasattr(obj, "redemption")


class RedemptionImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header row: code, external_id[, order_amount, order_ref, at, category].")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > REDEMPTION_UPLOAD_MAX_BYTES:
            raise ValidationError(f"The file is larger than {REDEMPTION_UPLOAD_MAX_BYTES // (1024 * 1024)} MB.")
        return upload


@admin.register(Redemption)
class RedemptionAdmin(ReadOnlyAdmin):
    list_display = ["masked_code", "offer", "customer_ref", "order_amount", "order_ref", "source", "redeemed_at"]
    list_filter = ["source", "grant__offer"]
    list_select_related = ["grant", "grant__offer", "customer"]
    search_fields = ["=grant__code", "=customer__external_id", "=order_ref"]
    date_hierarchy = "redeemed_at"
    ordering = ["-redeemed_at"]
    change_list_template = "admin/campaigns/redemption/change_list.html"

    def get_fields(self, request, obj=None):
        code = "grant_code" if can_see_codes(request.user) else "masked_code"
        return [code, "offer", "customer_ref", "order_amount", "order_ref", "source", "redeemed_at", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    def get_list_display(self, request):
        visible = can_see_codes(request.user)

        @admin.display(description="Code", ordering="grant__code")
        def code_display(obj):
            return obj.grant.code if visible else mask_code(obj.grant.code)

        return [code_display, *self.list_display[1:]]

    @admin.display(description="Code")
    def grant_code(self, obj):
        return obj.grant.code

    @admin.display(description="Code")
    def masked_code(self, obj):
        return mask_code(obj.grant.code)

    @admin.display(description="Offer", ordering="grant__offer__name")
    def offer(self, obj):
        return obj.grant.offer

    @admin.display(description="Customer", ordering="customer__external_id")
    def customer_ref(self, obj):
        return obj.customer.external_id

    def get_urls(self):
        return [
            path("import-csv/", self.admin_site.admin_view(self.import_csv_view), name="campaigns_redemption_import"),
            *super().get_urls(),
        ]

    def import_csv_view(self, request):
        if not request.user.has_perm("campaigns.add_redemption"):
            raise PermissionDenied
        form = RedemptionImportForm(request.POST or None, request.FILES or None)
        result = None
        if request.method == "POST" and form.is_valid():
            try:
                result = redemptions_import_csv(file=form.cleaned_data["file"], source="import")
            except (ValueError, UnicodeDecodeError) as exc:
                form.add_error("file", str(exc))
            else:
                self.message_user(request, f"Redemptions imported: {result.summary()}",
                                  messages.SUCCESS if not result.errors else messages.WARNING)
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": "Import redemptions",
            "form": form, "result": result,
        }
        return TemplateResponse(request, "admin/campaigns/redemption/import.html", context)
