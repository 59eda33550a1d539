"""django-import-export resources for offers and message templates.

Rows are matched by ``name``. Every exported cell and header is neutralized against formula
injection and datetimes read every form our imports accept (core.exports.SafeModelResource).
Imported offers go through the model's ``clean``; imported templates must render, exactly as
when saved in the admin (on their own and with the offer of every campaign sending them). Counters (``granted_count``) are exported but never
imported: only grants move them.
"""

from campaigns.models import MessageTemplate, Offer
from campaigns.rendering import TemplateRenderError, validate_template_in_use
from core.exports import SafeModelResource

OFFER_FIELDS = (
    "name", "kind", "description", "discount_type", "discount_value", "min_spend", "category", "valid_days",
    "points", "points_multiplier", "multiplier_days", "trial_plan", "trial_days", "access_title", "access_url",
    "budget", "usage_mode", "is_active",
)


class OfferResource(SafeModelResource):
    class Meta:
        model = Offer
        import_id_fields = ("name",)
        fields = OFFER_FIELDS + ("granted_count",)
        export_order = fields
        skip_unchanged = True
        clean_model_instances = True

    def get_import_fields(self):
        return [f for f in super().get_import_fields() if f.attribute != "granted_count"]

    def import_field(self, field, instance, row, is_m2m=False, **kwargs):
        if field.attribute == "granted_count":
            return
        super().import_field(field, instance, row, is_m2m=is_m2m, **kwargs)


class MessageTemplateResource(SafeModelResource):
    class Meta:
        model = MessageTemplate
        import_id_fields = ("name",)
        fields = ("name", "channel", "locale", "subject", "html_body", "text_body", "sms_text", "title", "body",
                  "deep_link")
        export_order = fields
        skip_unchanged = True
        clean_model_instances = True

    def validate_instance(self, instance, import_validation_errors=None, validate_unique=True):
        errors = dict(import_validation_errors or {})
        try:
            # As the admin form does, with the language variants already stored for it.
            validate_template_in_use(candidate=instance, saved=instance)
        except TemplateRenderError as exc:
            errors.setdefault(exc.field or "channel", []).append(exc.message)
        super().validate_instance(instance, errors or None, validate_unique)
