"""Admin for message templates and their language variants, with preview and test send."""

import logging
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns.admin.offers import can_see_codes
from campaigns.models import (
    Campaign,
    MessageTemplate,
    MessageTemplateTranslation,
    TEMPLATE_CONTENT_FIELDS,
)
from campaigns.previews import (
    customer_of_segment,
    customers_matching,
    message_preview,
    preview_for_test_send,
    preview_send,
)
from campaigns.rendering import (
    EMAIL_STARTING_POINTS,
    TemplateRenderError,
    sample_customer,
    validate_template_in_use,
)
from campaigns.resources import MessageTemplateResource
from consent.models import Channel
from core.admin_site import ImportExportAdmin
from core.masking import can_view_personal_data, mask_email, mask_phone
from core.phones import normalize_phone

logger = logging.getLogger(__name__)


# Message templates --------------------------------------------------------------------------


class MessageTemplateForm(forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = MessageTemplate(**{f: cleaned.get(f, "") for f in ("name", "channel", "locale", *TEMPLATE_CONTENT_FIELDS)})
        try:
            # Each language variant is checked by its own inline form.
            validate_template_in_use(candidate=candidate, saved=self.instance, translations=[])
        except TemplateRenderError as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, f"This template cannot be rendered: {exc}")
        return cleaned


class MessageTemplateTranslationForm(forms.ModelForm):
    class Meta:
        model = MessageTemplateTranslation
        fields = ["locale", *TEMPLATE_CONTENT_FIELDS]

    def clean(self):
        cleaned = super().clean()
        # The parent as the admin is saving it (the inline's foreign key field cleans to it).
        template = cleaned.get("template") or getattr(self.instance, "template", None)
        if self.errors or template is None or not cleaned or cleaned.get("DELETE"):
            return cleaned
        candidate = MessageTemplate(
            name=template.name, channel=template.channel, locale=cleaned.get("locale") or "",
            **{f: cleaned.get(f, "") for f in TEMPLATE_CONTENT_FIELDS},
        )
        if candidate.locale == template.locale:
            self.add_error("locale", "The template itself is in this language: choose another one.")
            return cleaned
        try:
            validate_template_in_use(candidate=candidate, saved=template, translations=[])
        except TemplateRenderError as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, f"This variant cannot be rendered: {exc}")
        return cleaned


class MessageTemplateTranslationInline(admin.StackedInline):
    model = MessageTemplateTranslation
    form = MessageTemplateTranslationForm
    extra = 0
    verbose_name = "language variant"
    verbose_name_plural = "language variants (a customer gets their language, else the brand's default)"

    def get_extra(self, request, obj=None, **kwargs):
        # A starting point comes with its English variant, one form to review before saving.
        return 1 if obj is None and request.GET.get("starting_point") in EMAIL_STARTING_POINTS else 0


class PreviewForm(forms.Form):
    customer = forms.CharField(
        required=False, label="Customer",
        help_text="An external id, or a part of a name. Without one: a random customer of the campaign's segment, "
                  "else a sample customer.",
    )
    campaign = forms.ModelChoiceField(
        Campaign.objects.select_related("brand", "offer", "segment").order_by("name"), required=False,
        help_text="The message is rendered with its brand (From, SMS signature, postal address) and its offer.",
    )


class TestSendForm(forms.Form):
    to = forms.CharField(label="Send a test to", help_text="An email address or a phone number you typed yourself.")

    def __init__(self, *args, channel, **kwargs):
        super().__init__(*args, **kwargs)
        self.channel = channel

    def clean_to(self):
        to = self.cleaned_data["to"].strip()
        if self.channel == Channel.EMAIL:
            validate_email(to)
            return to.lower()
        phone = normalize_phone(to)
        if not phone:
            raise ValidationError("Enter a valid phone number.")
        return phone


# Choosing a real customer to render for (by id, name or at random from a segment) reads the
# customer table as the customer list would.
CUSTOMER_VIEW_PERMISSION = "reactivation.view_customer"
CUSTOMER_REFUSED = "Rendering for a real customer needs the permission to view customers; showing a sample customer."
SAMPLE_ONLY_NOTE = "sample customer (a real customer needs the permission to view customers)"


def _preview_data(request):
    """The preview's choices come from the URL, for the page and for the test send posted to
    it alike; ``?external_id=`` (older links) means ``?customer=``."""
    data = request.GET.copy()
    if not data.get("customer") and data.get("external_id"):
        data["customer"] = data["external_id"]
    return data


@admin.register(MessageTemplate)
class MessageTemplateAdmin(ImportExportAdmin):
    form = MessageTemplateForm
    resource_classes = [MessageTemplateResource]
    list_display = ["name", "channel", "subject", "updated_at", "preview_link"]
    list_filter = ["channel"]
    search_fields = ["name"]
    change_list_template = "admin/campaigns/messagetemplate/change_list.html"
    change_form_template = "admin/campaigns/messagetemplate/change_form.html"
    inlines = [MessageTemplateTranslationInline]
    fieldsets = [
        (None, {"fields": ["name", "channel", "locale"]}),
        ("Email", {"fields": ["subject", "html_body", "text_body"],
                   "description": "Use {{ brand }}, {{ customer.name }}, {{ customer.first_name }}, {{ favourite_category }} "
                                  "(the category's label in the message's language), {{ offer.headline }} (one line saying "
                                  "what the offer is), {{ grant.code }}, {{ grant.expires_at|date:'Y-m-d' }}, "
                                  "{{ offer.discount }}, {{ claim_url }}, {{ shop_url }}. A variable with no value is "
                                  "refused: guard it with {% if grant.code %}…{% endif %} or give "
                                  "{{ x|default:'…' }}. The brand header, the button (to the claim page when there is "
                                  "an offer, else to the shop) and the footer with the postal address and the "
                                  "unsubscribe links are added to every email."}),
        ("SMS", {"fields": ["sms_text"], "description": "【signature】, the claim link (when there is an offer and the text "
                                                         "has no {{ claim_url }}) and the opt-out text are added when sending."}),
        ("In-app", {"fields": ["title", "body", "deep_link"],
                    "description": "A message with an offer opens its claim page unless the deep link uses {{ claim_url }}."}),
    ]

    @admin.display(description="Preview")
    def preview_link(self, obj):
        return format_html('<a href="{}">Preview</a>', reverse("admin:campaigns_messagetemplate_preview", args=[obj.pk]))

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "starting_points": [
            (key, point["label"]) for key, point in EMAIL_STARTING_POINTS.items()]}
        return super().changelist_view(request, extra_context)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        point = EMAIL_STARTING_POINTS.get(request.GET.get("starting_point", ""))
        if point:
            initial.update(channel=Channel.EMAIL, locale="zh-hans", subject=point["subject"], html_body=point["html_body"])
        return initial

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        point = EMAIL_STARTING_POINTS.get(request.GET.get("starting_point", ""))
        if point and request.method == "GET" and isinstance(inline, MessageTemplateTranslationInline):
            kwargs["initial"] = [{"locale": "en", **point["en"]}]
        return kwargs

    def get_urls(self):
        return [
            path("<int:object_id>/preview/", self.admin_site.admin_view(self.preview_view),
                 name="campaigns_messagetemplate_preview"),
            *super().get_urls(),
        ]

    def _preview_customer(self, request, form):
        """(customer, note, matches) from the form: the customer searched for (an exact external
        id, else the first of the names that match), a random customer of the campaign's
        segment, or the sample customer. ``matches``: the rows a name search listed.

        Finding a customer or drawing one from a segment shows who they are and renders their
        data: staff who may not view customers get the sample customer, and the page says why."""
        term = form.cleaned_data.get("customer", "").strip()
        campaign = form.cleaned_data.get("campaign")
        if (term or campaign is not None) and not request.user.has_perm(CUSTOMER_VIEW_PERMISSION):
            if term:
                form.add_error("customer", CUSTOMER_REFUSED)
            return sample_customer(), SAMPLE_ONLY_NOTE, []
        if term:
            matches = customers_matching(term=term)
            if not matches:
                form.add_error("customer", "No customer has this external id or a name containing it.")
                return sample_customer(), "sample customer", []
            customer = matches[0]
            if customer.external_id == term or len(matches) == 1:
                return customer, f"customer {customer.external_id}", []
            return customer, f"customer {customer.external_id}, the first of the names that match", matches
        if campaign is not None:
            customer = customer_of_segment(campaign=campaign)
            if customer is not None:
                return customer, f"random customer {customer.external_id} of segment “{campaign.segment}”", []
            form.add_error("campaign", "This campaign's segment has no customers; showing a sample customer.")
        return sample_customer(), "sample customer", []

    def _match_rows(self, request, matches, campaign):
        personal = can_view_personal_data(request.user)
        rows = []
        for customer in matches:
            query = {"customer": customer.external_id, **({"campaign": campaign.pk} if campaign is not None else {})}
            rows.append({
                "customer": customer, "url": "?" + urlencode(query),
                "email": customer.email if personal else mask_email(customer.email),
                "phone": customer.phone if personal else mask_phone(customer.phone),
            })
        return rows

    def preview_view(self, request, object_id):
        template = get_object_or_404(MessageTemplate, pk=object_id)
        if not self.has_view_or_change_permission(request, template):
            raise PermissionDenied
        data = _preview_data(request)
        form = PreviewForm(data or None)
        customer, note, matches, campaign = sample_customer(), "sample customer", [], None
        if form.is_bound and form.is_valid():
            campaign = form.cleaned_data.get("campaign")
            customer, note, matches = self._preview_customer(request, form)
        preview = message_preview(template=template, customer=customer, campaign=campaign,
                                  real_grant=can_see_codes(request.user))
        # The test send names the customer previewed: a random one of the segment is drawn once.
        chosen = {"customer": customer.external_id} if customer.pk is not None else {}
        send_query = urlencode({**chosen, **({"campaign": campaign.pk} if campaign is not None else {})})
        send_action = request.path + (f"?{send_query}" if send_query else "")

        can_send = template.channel in (Channel.EMAIL, Channel.SMS) and self.has_change_permission(request, template)
        sending = request.method == "POST" and "send_test" in request.POST
        send_form = TestSendForm(request.POST if sending else None, channel=template.channel)
        if sending:
            if not can_send:
                raise PermissionDenied
            if preview.message is not None and send_form.is_valid():
                to = send_form.cleaned_data["to"]
                masked = mask_email(to) if template.channel == Channel.EMAIL else mask_phone(to)
                # The page may show the customer's own code to staff who may see codes; the test,
                # sent to any typed address, carries the sample grant and an inert claim link.
                test = preview_for_test_send(template=template, customer=customer, campaign=campaign)
                try:
                    outcome = preview_send(preview=test, to=to)
                except Exception as exc:  # noqa: BLE001 - shown to the marketer, who can fix the address or settings
                    logger.warning("test send failed template=%s to=%s: %s", template.pk, masked, exc)
                    self.message_user(request, f"The test could not be sent: {exc}", messages.ERROR)
                else:
                    where = f"{note}, campaign “{campaign}”" if campaign is not None else note
                    self.log_change(request, template, f"Test {template.channel} sent to {masked} ({where}).")
                    self.message_user(request, f"Test sent to {masked} ({outcome}), rendered for the {where}.",
                                      messages.SUCCESS)
                    return HttpResponseRedirect(send_action)

        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta, "original": template, "title": f"Preview: {template}",
            "form": form, "send_form": send_form, "can_send": can_send, "send_action": send_action,
            "preview": preview, "message": preview.message, "error": preview.error, "sms": preview.sms,
            "note": note, "campaign": campaign, "offer": campaign.offer if campaign is not None else None,
            "customer": customer, "matches": self._match_rows(request, matches, campaign),
            "channel": template.channel,
        }
        return TemplateResponse(request, "admin/campaigns/messagetemplate/preview.html", context)
