"""Admin for the contact rules: the contact policy (one row) and one policy per channel."""

from django.contrib import admin

from campaigns.models import ChannelPolicy, ContactPolicy
from consent.models import Channel


@admin.register(ContactPolicy)
class ContactPolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "daily_cap_all_channels", "sms_enabled", "sms_signature", "sms_opt_out_text", "updated_at"]

    def has_add_permission(self, request):
        return not ContactPolicy.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ChannelPolicy)
class ChannelPolicyAdmin(admin.ModelAdmin):
    list_display = ["channel", "cap_count", "cap_days", "quiet_hours_enabled", "window_start", "window_end", "rate_per_second"]
    list_editable = ["cap_count", "cap_days", "quiet_hours_enabled", "window_start", "window_end", "rate_per_second"]

    def has_add_permission(self, request):
        return ChannelPolicy.objects.count() < len(Channel.values) and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False
