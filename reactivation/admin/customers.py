"""Admin for customers, their activity, lifecycle transitions and dormancy reasons.

Email and phone are masked for staff without ``reactivation.view_personal_data``
(core.admin_site.PersonalDataAdminMixin). Tables that grow to millions of rows never COUNT(*) or
sort on an unindexed column.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef, Q
from django.http import Http404, HttpResponseBadRequest
from django.urls import path
from django.utils import timezone

from consent.models import Action, Channel, ConsentEvent, ConsentState, Source
from consent.services import ConsentDecision, consent_record_bulk
from core.admin_site import (
    ReadOnlyAdminMixin,
    LargeTableAdminMixin,
    PersonalDataAdminMixin,
    PersonalLookupGuardMixin,
    masked_display,
)
from core.exports import customers_export_response
from core.masking import can_view_personal_data, mask_email, mask_personal_text, mask_phone
from core.phones import normalize_email, normalize_phone
from reactivation.lifecycle import lifecycle_evaluate_customers
from reactivation.admin.segments import SegmentMembersFilter
from reactivation.models import (
    ActivityEvent,
    Customer,
    LifecycleState,
    DormancyReason,
    LifecycleTransition,
)
from reactivation.selectors import name_search_q
from reactivation.services import TOTAL_SPENT_MAX, activity_record_batch, amount_problem, occurred_at_problem
from reactivation.timeline import LIMIT_MAX, TimelineEntry, admin_url, customer_timeline, timeline_source


INLINE_LIMIT = 20
WITHDRAW_BATCH = 1000


# Search --------------------------------------------------------------------------------------


def customer_search_q(term: str, *, prefix: str = "") -> Q:
    """Exact match on the customer's indexed identifiers, whatever form the term is typed in.

    Django's "=field" search is ``iexact``, i.e. UPPER(col) = UPPER(term), which cannot use the
    plain B-tree indexes on external_id, email and phone; we normalize the term instead (emails
    are stored lower-case, phones in E.164) and compare exactly.
    """
    term = term.strip()
    q = Q(**{f"{prefix}external_id": term})
    if "@" in term:
        q |= Q(**{f"{prefix}email": term.lower()})
    else:
        phone = _phone_or_blank(term)
        if phone:
            q |= Q(**{f"{prefix}phone": phone})
    return q


def _phone_or_blank(term: str) -> str:
    try:
        return normalize_phone(term)
    except ValidationError:
        return ""


def customer_list_search_q(term: str) -> Q:
    """The customer list's search: an exact identifier (as ``customer_search_q``) or part of a
    name. A term that is an email address or a phone number is only an identifier: a name never
    contains one, and the identifier alone keeps the lookup on its B-tree index."""
    term = term.strip()
    q = customer_search_q(term)
    if "@" in term or _phone_or_blank(term):
        return q
    return q | name_search_q(term)


class CustomerSearchMixin:
    """Search a model by its customer's external id, email or phone (exact, indexed)."""

    customer_lookup_prefix = "customer__"
    search_help_text = "Exact external id, email or phone number (any format)."

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(customer_search_q(search_term, prefix=self.customer_lookup_prefix)), False


# Filters -------------------------------------------------------------------------------------


class ScoreFilter(admin.SimpleListFilter):
    """RFM score 1-5 without Django's SELECT DISTINCT over the whole customer table."""

    field = ""

    def lookups(self, request, model_admin):
        return [(str(score), str(score)) for score in range(1, 6)]

    def queryset(self, request, queryset):
        if self.value() in {str(score) for score in range(1, 6)}:
            return queryset.filter(**{self.field: int(self.value())})
        return queryset


class RecencyFilter(ScoreFilter):
    title, parameter_name, field = "RFM recency", "rfm_r", "rfm_recency"


class FrequencyFilter(ScoreFilter):
    title, parameter_name, field = "RFM frequency", "rfm_f", "rfm_frequency"


class MonetaryFilter(ScoreFilter):
    title, parameter_name, field = "RFM monetary", "rfm_m", "rfm_monetary"


def consent_filter(channel: str, label: str):
    """A "<channel> consent: granted / withdrawn / never recorded" filter (uses ConsentState's index)."""

    class ConsentFilter(admin.SimpleListFilter):
        title = f"{label} consent"
        parameter_name = f"consent_{channel}"

        def lookups(self, request, model_admin):
            return [("granted", "Granted"), ("withdrawn", "Withdrawn"), ("none", "Never recorded")]

        def queryset(self, request, queryset):
            states = ConsentState.objects.filter(customer=OuterRef("pk"), channel=channel)
            if self.value() in (ConsentState.Status.GRANTED, ConsentState.Status.WITHDRAWN):
                return queryset.filter(Exists(states.filter(status=self.value())))
            if self.value() == "none":
                return queryset.filter(~Exists(states))
            return queryset

    return ConsentFilter


class KindFilter(admin.SimpleListFilter):
    """The common event kinds, without a SELECT DISTINCT over millions of events."""

    title, parameter_name = "kind", "kind"

    def lookups(self, request, model_admin):
        return [(kind, kind.replace("_", " ")) for kind in ActivityEvent.COMMON_KINDS]

    def queryset(self, request, queryset):
        return queryset.filter(kind=self.value()) if self.value() else queryset


# Customer ------------------------------------------------------------------------------------


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


class RecentFormSet(forms.BaseInlineFormSet):
    """Only the newest ``INLINE_LIMIT`` rows: a customer can have thousands of events."""

    def get_queryset(self):
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset()[:INLINE_LIMIT]
        return self._recent


class ConsentStateInline(ReadOnlyInline):
    model = ConsentState
    fields = ["channel", "status", "source", "notice_version", "changed_at", "last_event"]
    readonly_fields = fields
    verbose_name_plural = "Consent now (from the ledger)"


class DormancyReasonInline(ReadOnlyInline):
    model = DormancyReason
    formset = RecentFormSet
    ordering = ["-recorded_at"]
    fields = ["recorded_at", "reason", "detail", "source"]
    readonly_fields = [*fields, "masked_detail"]
    verbose_name_plural = f"Dormancy reasons (newest {INLINE_LIMIT})"

    masked_detail = masked_display("detail", mask_personal_text, "detail")

    def get_fields(self, request, obj=None):
        # The detail is free text from support or a survey: it may quote an address.
        if can_view_personal_data(request.user):
            return self.fields
        return [("masked_detail" if name == "detail" else name) for name in self.fields]


# Timeline -------------------------------------------------------------------------------------

TIMELINE_PAGE = 30


CONSENT_VERBS = {Action.GRANT: "granted", Action.WITHDRAW: "withdrawn"}


@timeline_source("consent", permission="consent.view_consentevent")
def consent_entries(*, customer, limit: int, personal_data: bool) -> list[TimelineEntry]:
    """Consent decisions from the ledger. Registered here, where the customer page already reads
    consent: reactivation's models and services do not import consent. The evidence (IP
    addresses, raw SMS) stays on the ledger's own page."""
    events = ConsentEvent.objects.filter(customer=customer).order_by("-at", "-id")[:limit]
    return [
        TimelineEntry(
            at=event.at, kind="consent",
            title=f"{event.get_channel_display()} consent {CONSENT_VERBS.get(event.action, event.action)}",
            detail=" · ".join(part for part in (
                event.get_source_display(), event.get_purpose_display(),
                f"notice {event.notice_version}" if event.notice_version else "") if part),
            url=admin_url(event),
        )
        for event in events
    ]


def timeline_limit(request) -> int:
    try:
        return max(TIMELINE_PAGE, min(int(request.GET.get("timeline", TIMELINE_PAGE)), LIMIT_MAX))
    except ValueError:
        return TIMELINE_PAGE


class CustomerForm(forms.ModelForm):
    """Email and phone are stored normalized (lower-case, E.164): search and suppression match
    on the exact stored value."""

    class Meta:
        model = Customer
        fields = "__all__"

    def clean_email(self):
        return normalize_email(self.cleaned_data.get("email", ""))

    def clean_phone(self):
        return normalize_phone(self.cleaned_data.get("phone", ""))


@admin.register(Customer)
class CustomerAdmin(PersonalDataAdminMixin, LargeTableAdminMixin, admin.ModelAdmin):
    form = CustomerForm
    personal_data_fields = {"email": "masked_email", "phone": "masked_phone"}
    # Dates without their time and short headers: at 1440 px beside the navigation and the
    # filters, the spend and RFM columns were cut off.
    list_display = [
        "ext_id", "name", "email", "phone", "state", "last_seen", "last_order", "orders", "spent", "rfm",
    ]
    list_filter = [
        "lifecycle_state", "lifecycle_rule", RecencyFilter, FrequencyFilter, MonetaryFilter,
        consent_filter(Channel.EMAIL, "Email"), consent_filter(Channel.SMS, "SMS"),
        consent_filter(Channel.IN_APP, "In-app"), SegmentMembersFilter,
    ]
    # Declared for the search box and autocomplete; the lookup itself is customer_list_search_q.
    search_fields = ["=external_id", "=email", "=phone", "name"]
    search_help_text = "Part of the name, or the exact external id, email or phone number (any format)."
    # Only indexed columns: sorting millions of rows on another column is a full sort.
    sortable_by = ["ext_id", "email", "phone", "state", "last_seen", "last_order"]
    ordering = ["-id"]
    fieldsets = [
        (None, {"fields": ["external_id", "name", "email", "phone", "locale", "timezone"]}),
        ("Activity", {"fields": ["signup_at", "last_seen_at", "last_order_at", "order_count", "total_spent", "favourite_category"]}),
        ("Lifecycle and RFM", {"fields": ["lifecycle_state", "lifecycle_since", "lifecycle_rule", "rfm_recency", "rfm_frequency", "rfm_monetary"]}),
        ("Extra columns from imports", {"fields": ["attributes"], "classes": ["collapse"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    # Rollups, lifecycle and scores are computed set-based from events; editing them by hand
    # would be overwritten by the next evaluation.
    readonly_fields = [
        "last_seen_at", "last_order_at", "order_count", "total_spent", "favourite_category",
        "lifecycle_state", "lifecycle_since", "lifecycle_rule", "rfm_recency", "rfm_frequency", "rfm_monetary",
        "created_at", "updated_at",
    ]
    # Activity, messages, offers, consent decisions and lifecycle changes are one timeline below
    # the form (change_form.html); the inlines keep the current consent and the reasons.
    inlines = [ConsentStateInline, DormancyReasonInline]
    actions = [
        "reevaluate_lifecycle", "withdraw_email_consent", "withdraw_sms_consent", "withdraw_in_app_consent",
        "export_selected_csv", "export_selected_xlsx",
    ]

    masked_email = masked_display("email", mask_email, "email")
    masked_phone = masked_display("phone", mask_phone, "phone")

    @admin.display(description="ID", ordering="external_id")
    def ext_id(self, customer):
        return customer.external_id

    @admin.display(description="state", ordering="lifecycle_state")
    def state(self, customer):
        return customer.get_lifecycle_state_display()

    @admin.display(description="last seen", ordering="last_seen_at")
    def last_seen(self, customer):
        return _date(customer.last_seen_at)

    @admin.display(description="last order", ordering="last_order_at")
    def last_order(self, customer):
        return _date(customer.last_order_at)

    @admin.display(description="orders")
    def orders(self, customer):
        return customer.order_count

    @admin.display(description="spent")
    def spent(self, customer):
        return customer.total_spent

    @admin.display(description="RFM")
    def rfm(self, customer):
        scores = (customer.rfm_recency, customer.rfm_frequency, customer.rfm_monetary)
        return "".join(str(score) for score in scores) if all(scores) else "—"

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(customer_list_search_q(search_term)), False

    class Media:
        css = {"all": ["reactivation/customer_admin.css"]}

    # Customer page: the timeline --------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        customer = self.get_object(request, unquote(object_id)) if object_id else None
        if customer is not None and self.has_view_permission(request, customer):
            limit = timeline_limit(request)
            entries, more = customer_timeline(
                customer=customer, viewer=request.user, limit=limit, personal_data=can_view_personal_data(request.user)
            )
            more_url = ""
            if more and limit < LIMIT_MAX:
                query = request.GET.copy()
                query["timeline"] = str(min(limit * 2, LIMIT_MAX))
                more_url = f"?{query.urlencode()}#timeline"
            extra_context = {**(extra_context or {}), "timeline_shown": True, "timeline": entries,
                             "timeline_more_url": more_url}
        return super().change_view(request, object_id, form_url, extra_context=extra_context)

    # Lifecycle ----------------------------------------------------------------------------------

    @admin.action(description="Re-evaluate lifecycle now", permissions=["change"])
    def reevaluate_lifecycle(self, request, queryset):
        result = lifecycle_evaluate_customers(customer_ids=queryset)
        moved = ", ".join(f"{result[state]} {state.replace('_', ' ')}" for state in LifecycleState.values if result[state])
        self.message_user(
            request,
            f"Lifecycle re-evaluated: {result['total']} customer(s) changed" + (f" ({moved})." if moved else "."),
            messages.SUCCESS,
        )

    # Consent actions (Compliance) -------------------------------------------------------------

    def has_record_consent_permission(self, request):
        return request.user.has_perm("consent.add_consentevent")

    def _withdraw(self, request, queryset, channel, label):
        already_withdrawn = ConsentState.objects.filter(
            customer=OuterRef("pk"), channel=channel, status=ConsentState.Status.WITHDRAWN
        )
        to_withdraw = queryset.exclude(Exists(already_withdrawn)).order_by().values_list("pk", flat=True)
        evidence = {"note": "Withdrawn from the customer list in the admin."}
        withdrawn, batch = 0, []
        # One ledger event per customer, each with its actor (the record a regulator asks for),
        # written set-based in batches so "select all" over millions stays a few statements a batch.
        for customer_id in to_withdraw.iterator(chunk_size=WITHDRAW_BATCH):
            batch.append(ConsentDecision(customer_id=customer_id, channel=channel, action=Action.WITHDRAW,
                                         source=Source.ADMIN, evidence=evidence))
            if len(batch) == WITHDRAW_BATCH:
                withdrawn += consent_record_bulk(decisions=batch, actor=request.user)
                batch = []
        withdrawn += consent_record_bulk(decisions=batch, actor=request.user)
        already = queryset.count() - withdrawn
        self.message_user(
            request,
            f"{label} consent withdrawn for {withdrawn} customer(s); {already} had already withdrawn.",
            messages.SUCCESS,
        )

    @admin.action(description="Withdraw email consent", permissions=["record_consent"])
    def withdraw_email_consent(self, request, queryset):
        self._withdraw(request, queryset, Channel.EMAIL, "Email")

    @admin.action(description="Withdraw SMS consent", permissions=["record_consent"])
    def withdraw_sms_consent(self, request, queryset):
        self._withdraw(request, queryset, Channel.SMS, "SMS")

    @admin.action(description="Withdraw in-app consent", permissions=["record_consent"])
    def withdraw_in_app_consent(self, request, queryset):
        self._withdraw(request, queryset, Channel.IN_APP, "In-app")

    # Exports ------------------------------------------------------------------------------------

    @admin.action(description="Export selected customers to CSV", permissions=["view"])
    def export_selected_csv(self, request, queryset):
        return customers_export_response(queryset=queryset, user=request.user, file_format="csv", filename="customers")

    @admin.action(description="Export selected customers to XLSX", permissions=["view"])
    def export_selected_xlsx(self, request, queryset):
        return customers_export_response(queryset=queryset, user=request.user, file_format="xlsx", filename="customers")

    def get_urls(self):
        return [
            path(
                "export/<str:file_format>/",
                self.admin_site.admin_view(self.export_changelist_view),
                name="reactivation_customer_export",
            ),
            *super().get_urls(),
        ]

    def export_changelist_view(self, request, file_format):
        """Export what the changelist shows with the same filters and search (its query string)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if file_format not in ("csv", "xlsx"):
            raise Http404(f"Unknown export format {file_format!r}.")
        try:
            queryset = self.changelist_queryset(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("The filters in this link are not valid for the customer list.")
        return customers_export_response(queryset=queryset, user=request.user, file_format=file_format, filename="customers")

    def changelist_queryset(self, request):
        """The changelist's filtered queryset, without its pagination and counts."""
        ChangeList = self.get_changelist(request)

        class ExportChangeList(ChangeList):
            def get_results(self, request):
                pass

        list_display = self.get_list_display(request)
        changelist = ExportChangeList(
            request, self.model, list_display, self.get_list_display_links(request, list_display),
            self.get_list_filter(request), self.date_hierarchy, self.get_search_fields(request),
            self.get_list_select_related(request), self.list_per_page, self.list_max_show_all,
            self.list_editable, self, self.get_sortable_by(request), self.search_help_text,
        )
        return changelist.queryset


def _date(value):
    return timezone.localtime(value).date().isoformat() if value else "—"


# Activity, lifecycle, reasons ----------------------------------------------------------------


class ActivityEventForm(forms.ModelForm):
    """The service's bounds, checked on the form so a bad value is a message, not an error page."""

    class Meta:
        model = ActivityEvent
        fields = "__all__"

    def clean_occurred_at(self):
        occurred_at = self.cleaned_data["occurred_at"]
        if problem := occurred_at_problem(occurred_at, now=timezone.now()):
            raise ValidationError(problem)
        return occurred_at

    def clean_amount(self):
        amount = self.cleaned_data.get("amount")
        if amount is not None and (problem := amount_problem(amount)):
            raise ValidationError(problem)
        return amount

    def clean(self):
        cleaned = super().clean()
        customer, amount = cleaned.get("customer"), cleaned.get("amount")
        if (customer and amount and (cleaned.get("kind") or "").strip().lower() == ActivityEvent.ORDER
                and customer.total_spent + amount > TOTAL_SPENT_MAX):
            raise ValidationError({"amount": f"The customer's total spent would pass {TOTAL_SPENT_MAX}."})
        return cleaned


@admin.register(ActivityEvent)
class ActivityEventAdmin(PersonalLookupGuardMixin, CustomerSearchMixin, LargeTableAdminMixin, admin.ModelAdmin):
    """Events are added here (through the service that keeps the rollups and the lifecycle),
    never edited: the rollups were added up from them and cannot be taken apart again."""

    form = ActivityEventForm
    list_display = ["occurred_at", "customer", "kind", "amount", "category", "item_ref", "source"]
    list_filter = [KindFilter]
    list_select_related = ["customer"]
    search_fields = ["=customer__external_id"]
    autocomplete_fields = ["customer"]
    sortable_by = []
    ordering = ["-id"]
    readonly_fields = ["created_at"]

    def has_change_permission(self, request, obj=None):
        return False

    def get_changeform_initial_data(self, request):
        return {"source": "admin", **super().get_changeform_initial_data(request)}

    def save_model(self, request, obj, form, change):
        activity_record_batch(events=[obj])


@admin.register(LifecycleTransition)
class LifecycleTransitionAdmin(ReadOnlyAdminMixin, PersonalLookupGuardMixin, CustomerSearchMixin, LargeTableAdminMixin, admin.ModelAdmin):
    """Append-only: written by the lifecycle evaluation, never edited."""

    list_display = ["at", "customer", "from_state", "to_state", "rule"]
    list_filter = ["to_state", "from_state", "rule"]
    list_select_related = ["customer", "rule"]
    search_fields = ["=customer__external_id"]
    sortable_by = ["at"]
    ordering = ["-at"]



@admin.register(DormancyReason)
class DormancyReasonAdmin(PersonalDataAdminMixin, CustomerSearchMixin, admin.ModelAdmin):
    # The detail is free text from support or a survey: it may quote an address.
    personal_data_fields = {"detail": "masked_detail"}
    masked_detail = masked_display("detail", mask_personal_text, "detail")
    list_display = ["recorded_at", "customer", "reason", "detail", "source"]
    list_filter = ["reason", "source"]
    list_select_related = ["customer"]
    search_fields = ["=customer__external_id"]
    autocomplete_fields = ["customer"]
    date_hierarchy = "recorded_at"
    ordering = ["-recorded_at"]
