"""Admin for in-app inbox messages: read-only records of what the in-app channel delivered."""


from django.contrib import admin

from campaigns.models import (
    InboxMessage,
)

from campaigns.admin.offers import ReadOnlyAdmin


# Inbox --------------------------------------------------------------------------------------


@admin.register(InboxMessage)
class InboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["title", "customer_ref", "created_at", "read_at"]
    list_select_related = ["customer"]
    search_fields = ["=customer__external_id"]
    list_filter = [("read_at", admin.EmptyFieldListFilter)]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    fields = ["customer_ref", "title", "body", "deep_link", "delivery", "created_at", "read_at"]
    readonly_fields = fields

    @admin.display(description="Customer", ordering="customer__external_id")
    def customer_ref(self, obj):
        return obj.customer.external_id
