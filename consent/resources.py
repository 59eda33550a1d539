"""django-import-export resource for suppressions (bounce and complaint lists from old systems).

An imported row goes through ``consent.services.suppression_add``, exactly like a suppression
added by a webhook or by hand: the address is normalized (lower-case email, E.164 phone), an
invalid address is a row error, and an address already suppressed is left as it is.
"""

from django.core.exceptions import ValidationError
from import_export import fields

from consent.models import Suppression
from consent.services import normalize_address, suppression_add
from core.exports import FlexibleDateTimeWidget, SafeModelResource
from core.masking import can_view_personal_data, mask_address, mask_personal_text

SUPPRESSIBLE_CHANNELS = [value for value, _ in Suppression._meta.get_field("channel").choices]


class SuppressionResource(SafeModelResource):
    address = fields.Field(attribute="address", column_name="address")
    # When it was suppressed is the service's to say; an imported date is only exported back.
    created_at = fields.Field(attribute="created_at", column_name="created_at", readonly=True, widget=FlexibleDateTimeWidget())

    class Meta:
        model = Suppression
        import_id_fields = ("channel", "address")
        fields = ("channel", "address", "reason", "note", "created_at")
        export_order = fields
        report_skipped = True

    def before_import_row(self, row, **kwargs):
        """Normalize the row in place so the lookup by (channel, address) finds an existing
        suppression whatever case or phone format the file used."""
        errors = {}
        channel = str(row.get("channel") or "").strip().lower()
        if channel not in SUPPRESSIBLE_CHANNELS:
            errors["channel"] = f"{channel!r} is not a channel that can be suppressed; use {' or '.join(SUPPRESSIBLE_CHANNELS)}."
        reason = str(row.get("reason") or "").strip().lower() or Suppression.Reason.MANUAL
        if reason not in Suppression.Reason.values:
            errors["reason"] = f"{reason!r} is not a reason; use one of {', '.join(Suppression.Reason.values)}."
        address = str(row.get("address") or "").strip()
        if not errors.get("channel"):
            try:
                address = normalize_address(channel=channel, address=address)
            except ValidationError as exc:
                errors["address"] = " ".join(exc.messages)
            if not address and "address" not in errors:
                errors["address"] = "The address is blank."
        if errors:
            raise ValidationError(errors)
        row["channel"], row["address"], row["reason"] = channel, address, reason

    def skip_row(self, instance, original, row, import_validation_errors=None):
        # suppression_add is idempotent: an address already suppressed keeps its reason and note.
        if instance.pk is not None and not import_validation_errors:
            return True
        return super().skip_row(instance, original, row, import_validation_errors)

    def before_save_instance(self, instance, row, **kwargs):
        self._actor = kwargs.get("user") or self.user

    def do_instance_save(self, instance, is_create):
        saved = suppression_add(
            channel=instance.channel, address=instance.address, reason=instance.reason, note=instance.note or "",
            actor=getattr(self, "_actor", None),
        )
        instance.pk = saved.pk
        instance.created_at = saved.created_at

    def dehydrate_address(self, suppression):
        if can_view_personal_data(self.user):
            return suppression.address
        return mask_address(suppression.address)

    def dehydrate_note(self, suppression):
        if can_view_personal_data(self.user):
            return suppression.note
        return mask_personal_text(suppression.note)
