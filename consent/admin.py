"""Admin for the consent ledger, current consent, suppressions and SMS replies.

The ledger is append-only: its only form is "record a consent decision" (given on the phone,
on paper...), which goes through consent.services with the staff user as actor. Current
consent is derived from the ledger and never edited. Addresses and senders are masked for
staff without ``reactivation.view_personal_data``.
"""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from consent.models import Action, Channel, ConsentEvent, ConsentState, Source, SmsReply, Suppression
from consent.resources import SuppressionResource
from consent.services import consent_grant, consent_withdraw, normalize_address, suppression_add
from core.admin_site import (
    ReadOnlyAdminMixin,
    ImportExportAdmin,
    LargeTableAdminMixin,
    PersonalDataAdminMixin,
    PersonalLookupGuardMixin,
    masked_display,
)
from core.masking import mask_address, mask_personal_text, mask_phone
from core.phones import normalize_phone
from reactivation.admin.customers import CustomerSearchMixin


def mask_evidence(evidence) -> str:
    """Which kinds of evidence exist, not their content (IPs, raw SMS, user agents identify people)."""
    if not evidence:
        return "—"
    return ", ".join(f"{key}: ***" for key in sorted(evidence))


class ConsentRecordForm(forms.ModelForm):
    """Compliance records a decision made outside the product (phone call, paper form)."""

    how = forms.ChoiceField(
        label="How was it given",
        choices=[("phone", "Phone call"), ("paper", "Paper form"), ("email", "Email"), ("in_person", "In person"), ("other", "Other")],
    )
    evidence_note = forms.CharField(
        label="Evidence", widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What the customer said or signed, and when; required (GDPR Art. 7(1): consent must be demonstrable).",
    )
    evidence_reference = forms.CharField(
        label="Reference", required=False, max_length=200,
        help_text="Call recording id, scanned form, ticket number.",
    )

    class Meta:
        model = ConsentEvent
        fields = ["customer", "channel", "action", "notice_version"]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("action") == Action.GRANT and not (cleaned.get("notice_version") or "").strip():
            self.add_error("notice_version", "A grant must name the privacy notice version the customer agreed to.")
        return cleaned


@admin.register(ConsentEvent)
class ConsentEventAdmin(PersonalDataAdminMixin, CustomerSearchMixin, LargeTableAdminMixin, admin.ModelAdmin):
    personal_data_fields = {"evidence": "masked_evidence"}
    list_display = ["at", "customer", "channel", "action", "source", "notice_version", "actor"]
    list_filter = ["channel", "action", "source"]
    list_select_related = ["customer", "actor"]
    search_fields = ["=customer__external_id"]
    autocomplete_fields = ["customer"]
    sortable_by = []
    ordering = ["-id"]
    fields = ["customer", "channel", "purpose", "action", "source", "notice_version", "evidence", "actor", "at"]
    add_fields = ["customer", "channel", "action", "notice_version", "how", "evidence_note", "evidence_reference"]

    @admin.display(description="evidence")
    def masked_evidence(self, event):
        return mask_evidence(event.evidence)

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.add_fields
        return super().get_fields(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ConsentRecordForm
            kwargs["fields"] = ConsentRecordForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        """Never obj.save(): the service appends the event and moves ConsentState with it."""
        data = form.cleaned_data
        record = consent_grant if data["action"] == Action.GRANT else consent_withdraw
        evidence = {"method": data["how"], "note": data["evidence_note"]}
        if data.get("evidence_reference"):
            evidence["reference"] = data["evidence_reference"]
        event = record(
            customer=data["customer"], channel=data["channel"], source=Source.ADMIN,
            notice_version=data.get("notice_version") or "", evidence=evidence, actor=request.user,
        )
        # The admin's success message and log entry refer to the event the service wrote.
        obj.pk, obj.at, obj.source, obj.actor, obj.evidence = event.pk, event.at, event.source, event.actor, event.evidence

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ConsentState)
class ConsentStateAdmin(ReadOnlyAdminMixin, PersonalLookupGuardMixin, CustomerSearchMixin, LargeTableAdminMixin, admin.ModelAdmin):
    """Derived from the ledger in the same transaction as each event: read-only for everyone."""

    list_display = ["customer", "channel", "status", "source", "notice_version", "changed_at"]
    list_filter = ["channel", "status", "source"]
    list_select_related = ["customer"]
    search_fields = ["=customer__external_id"]
    sortable_by = []
    ordering = ["-id"]



class SuppressionForm(forms.ModelForm):
    class Meta:
        model = Suppression
        fields = ["channel", "address", "reason", "note"]

    def clean(self):
        cleaned = super().clean()
        channel, address = cleaned.get("channel"), cleaned.get("address")
        if channel and address:
            try:
                cleaned["address"] = normalize_address(channel=channel, address=address)
            except ValidationError as exc:
                self.add_error("address", exc)
        # ModelForm's uniqueness check runs after clean(), on the normalized address, so
        # "A@Example.com" is reported as already suppressed when "a@example.com" is.
        return cleaned


def address_search_q(term: str):
    """Exact lookup on the (channel, address) unique index: the channel follows from the term."""
    from django.db.models import Q

    term = term.strip()
    if "@" in term:
        return Q(channel=Channel.EMAIL, address=term.lower())
    try:
        return Q(channel=Channel.SMS, address=normalize_phone(term))
    except ValidationError:
        return Q(pk__in=[])


@admin.register(Suppression)
class SuppressionAdmin(PersonalDataAdminMixin, ImportExportAdmin):
    resource_classes = [SuppressionResource]
    form = SuppressionForm
    # A note may quote a provider's text or a person's words, addresses included.
    personal_data_fields = {"address": "masked_address", "note": "masked_note"}
    list_display = ["address", "channel", "reason", "created_by", "created_at"]
    list_filter = ["channel", "reason"]
    list_select_related = ["created_by"]
    search_fields = ["=address"]
    search_help_text = "Exact email or phone number (any format)."
    date_hierarchy = "created_at"
    ordering = ["-created_at"]

    masked_address = masked_display("address", mask_address, "address")
    masked_note = masked_display("note", mask_personal_text, "note")

    def get_fields(self, request, obj=None):
        fields = ["channel", "address", "reason", "note"]
        if obj is not None:
            fields += ["created_by", "created_at"]
        return self._masked_names(request, fields)

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            # The address is what is suppressed; a different address is a new suppression.
            readonly += ["channel", "address", "created_by", "created_at"]
        return readonly

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(address_search_q(search_term)), False

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["reason", "note"])
            return
        saved = suppression_add(
            channel=obj.channel, address=obj.address, reason=obj.reason, note=obj.note, actor=request.user
        )
        obj.pk, obj.created_by, obj.created_at = saved.pk, saved.created_by, saved.created_at


class OutcomeFilter(admin.SimpleListFilter):
    title, parameter_name = "outcome", "outcome"
    OUTCOMES = ["withdraw", "grant", "reply", "unknown_sender"]

    def lookups(self, request, model_admin):
        return [(outcome, outcome.replace("_", " ")) for outcome in self.OUTCOMES]

    def queryset(self, request, queryset):
        return queryset.filter(outcome=self.value()) if self.value() else queryset


@admin.register(SmsReply)
class SmsReplyAdmin(PersonalDataAdminMixin, admin.ModelAdmin):
    # The text is what a person typed: it may give another number or an email address.
    personal_data_fields = {"sender": "masked_sender", "text": "masked_text", "short_text": "masked_short_text"}
    list_display = ["received_at", "sender", "customer", "outcome", "short_text", "provider_id"]
    list_filter = [OutcomeFilter]
    list_select_related = ["customer"]
    search_fields = ["=sender", "=provider_id"]
    search_help_text = "Exact sender phone number (any format) or provider message id."
    autocomplete_fields = ["customer"]
    date_hierarchy = "received_at"
    ordering = ["-received_at"]
    fields = ["sender", "text", "customer", "outcome", "provider_id", "received_at"]

    masked_sender = masked_display("sender", mask_phone, "sender")
    masked_text = masked_display("text", mask_personal_text, "text")

    @admin.display(description="text")
    def short_text(self, reply):
        return reply.text if len(reply.text) <= 60 else reply.text[:59] + "…"

    @admin.display(description="text")
    def masked_short_text(self, reply):
        return self.short_text(SmsReply(text=mask_personal_text(reply.text)))

    def get_readonly_fields(self, request, obj=None):
        # The message as received, and what it did to consent, is evidence; only which customer
        # it was matched to may be corrected (a sender shared by two customers, a typo'd number).
        readonly = list(super().get_readonly_fields(request, obj))
        return readonly + [name for name in ("sender", "text", "outcome", "provider_id", "received_at") if name not in readonly]

    def has_add_permission(self, request):
        # Replies arrive from the SMS gateway only; a hand-made one would be forged evidence.
        return False

    def has_delete_permission(self, request, obj=None):
        # Evidence of a withdrawal (GDPR Art. 7(1)) is kept, never deleted from the admin.
        return False

    def get_search_results(self, request, queryset, search_term):
        from django.db.models import Q

        term = search_term.strip()
        if not term:
            return queryset, False
        q = Q(provider_id=term) | Q(sender=term)
        try:
            q |= Q(sender=normalize_phone(term))
        except ValidationError:
            pass
        return queryset.filter(q), False
