"""Admin for API tokens: the secret is shown once, at creation."""


from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import reverse

from campaigns.api.tokens import api_token_create, api_tokens_revoke
from campaigns.models import (
    ApiScope,
    ApiToken,
)


# API tokens ---------------------------------------------------------------------------------


class ApiTokenCreateForm(forms.ModelForm):
    """A token's scopes are chosen when it is made and never widened: a token needing more
    is a new token (the old one is revoked), so what a leaked key could do is known."""

    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple,
        help_text="Only what the calling system needs: e.g. an order system needs only redemptions:write.",
    )

    class Meta:
        model = ApiToken
        fields = ["name", "scopes"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "scope_list", "created_by", "created_at", "last_used_at", "revoked_at", "active"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "=prefix"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "scopes"]
        return ["name", "prefix", "scope_list", "created_by", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["prefix", "scope_list", "created_by", "created_at", "last_used_at", "revoked_at"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="Scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes or []) or "—"

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the row says who made the token and when it was last used

    @admin.display(description="Active", boolean=True)
    def active(self, obj):
        return obj.revoked_at is None

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        created = api_token_create(name=obj.name, scopes=form.cleaned_data["scopes"], created_by=request.user)
        obj.pk, obj.prefix, obj.key_hash = created.token.pk, created.token.prefix, created.token.key_hash
        obj.created_by, obj.created_at, obj.scopes = created.token.created_by, created.token.created_at, created.token.scopes
        obj._state.adding, obj._state.db = False, created.token._state.db
        request._api_token_key = created.key

    def response_add(self, request, obj, post_url_continue=None):
        key = getattr(request, "_api_token_key", None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": obj,
            "title": "API token created", "key": key,
            "changelist_url": reverse("admin:campaigns_apitoken_changelist"),
        }
        response = TemplateResponse(request, "admin/campaigns/apitoken/created.html", context)
        response["Cache-Control"] = "no-store"  # the one time the secret is shown
        return response

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        count = api_tokens_revoke(tokens=queryset)
        self.message_user(request, f"{count} token(s) revoked.", messages.SUCCESS)
