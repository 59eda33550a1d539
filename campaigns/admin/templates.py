"""Admin for message templates and their language variants, with preview and test send."""

import logging
import random

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from campaigns.channels.registry import transport_for
from campaigns.channels.sms import sms_compose_for
from campaigns.models import (
    Campaign,
    ContactPolicy,
    MessageTemplate,
    MessageTemplateTranslation,
    TEMPLATE_CONTENT_FIELDS,
)
from campaigns.rendering import (
    EMAIL_STARTING_POINTS,
    TemplateRenderError,
    render_message,
    sample_customer,
    sample_grant,
    validate_template_in_use,
)
from campaigns.resources import MessageTemplateResource
from campaigns.sms_length import sms_parts
from consent.models import Channel
from core.admin_site import ImportExportAdmin
from core.masking import mask_email, mask_phone
from core.phones import normalize_phone
from reactivation.models import Customer

logger = logging.getLogger(__name__)

SEGMENT_SAMPLE_SIZE = 1000


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
    external_id = forms.CharField(required=False, label="Customer external id")
    campaign = forms.ModelChoiceField(
        Campaign.objects.select_related("segment", "offer").order_by("name"), required=False,
        help_text="Without a customer: a random customer of this campaign's segment. Its brand and offer are used.",
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


def _sms_with_policy(text: str, brand=None, language: str = "") -> str:
    # The SMS transport adds these; counting them here shows the marketer what is billed.
    return sms_compose_for(text=text, brand=brand, contact_policy=ContactPolicy.current(), language=language)


def send_test_message(*, channel: str, to: str, message, template, brand=None) -> str:
    """Send a one-off test as the campaign's ``brand`` would (its From, Reply-To and SMS
    signature; DEFAULT_FROM_EMAIL and the contact policy's signature without one). Not a
    marketing delivery: no Delivery row, so no cap counts it. Returns what was done."""
    return transport_for(channel).send_test(to=to, message=message, brand=brand) or "sent"


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

    def _preview_customer(self, form):
        """(customer, note) from the form: a chosen customer, a random one of the segment, or a sample."""
        external_id = form.cleaned_data.get("external_id", "").strip()
        campaign = form.cleaned_data.get("campaign")
        if external_id:
            customer = Customer.objects.filter(external_id=external_id).first()
            if customer is None:
                form.add_error("external_id", "No customer has this external id.")
                return sample_customer(), "sample customer"
            return customer, f"customer {customer.external_id}"
        if campaign is not None:
            # A random customer among the first rows of the segment: ORDER BY random() would
            # sort the whole segment, which may be millions of rows.
            ids = list(campaign.segment.customers().values_list("pk", flat=True)[:SEGMENT_SAMPLE_SIZE])
            if ids:
                customer = Customer.objects.get(pk=random.choice(ids))
                return customer, f"random customer {customer.external_id} of segment “{campaign.segment}”"
            form.add_error("campaign", "This campaign's segment has no customers; showing a sample customer.")
        return sample_customer(), "sample customer"

    def preview_view(self, request, object_id):
        template = get_object_or_404(MessageTemplate, pk=object_id)
        if not self.has_view_or_change_permission(request, template):
            raise PermissionDenied
        data = request.POST if request.method == "POST" else request.GET
        form = PreviewForm(data or None)
        customer, note, campaign = sample_customer(), "sample customer", None
        if form.is_bound and form.is_valid():
            campaign = form.cleaned_data.get("campaign")
            customer, note = self._preview_customer(form)
        offer = campaign.offer if campaign is not None and campaign.offer_id else None
        grant = sample_grant(offer) if offer is not None else None

        message, error = None, None
        try:
            message = render_message(template=template, customer=customer, campaign=campaign, grant=grant, preview=True)
        except TemplateRenderError as exc:
            error = str(exc)

        can_send = template.channel in (Channel.EMAIL, Channel.SMS) and self.has_change_permission(request, template)
        send_form = TestSendForm(request.POST if "send_test" in request.POST else None, channel=template.channel)
        if "send_test" in request.POST:
            if not can_send:
                raise PermissionDenied
            if message is not None and send_form.is_valid():
                to = send_form.cleaned_data["to"]
                masked = mask_email(to) if template.channel == Channel.EMAIL else mask_phone(to)
                try:
                    outcome = send_test_message(channel=template.channel, to=to, message=message, template=template,
                                                brand=campaign.brand if campaign is not None else None)
                except Exception as exc:  # noqa: BLE001 - shown to the marketer, who can fix the address or settings
                    logger.warning("test send failed template=%s to=%s: %s", template.pk, masked, exc)
                    self.message_user(request, f"The test could not be sent: {exc}", messages.ERROR)
                else:
                    self.log_change(request, template, f"Test {template.channel} sent to {masked} ({note}).")
                    self.message_user(request, f"Test sent to {masked} ({outcome}).", messages.SUCCESS)
                    return HttpResponseRedirect(request.get_full_path())

        sms = None
        if message is not None and template.channel == Channel.SMS:
            full = _sms_with_policy(message.text, brand=campaign.brand if campaign is not None else None,
                                    language=message.language)
            sms = {"body": sms_parts(message.text), "full_text": full, "full": sms_parts(full)}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta, "original": template, "title": f"Preview: {template}",
            "form": form, "send_form": send_form, "can_send": can_send, "message": message, "error": error,
            "note": note, "campaign": campaign, "offer": offer, "sms": sms, "channel": template.channel,
        }
        return TemplateResponse(request, "admin/campaigns/messagetemplate/preview.html", context)
