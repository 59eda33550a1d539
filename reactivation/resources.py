"""django-import-export resources for the small reactivation tables (rules, segments).

Customers and activity have their own streaming import (reactivation.imports); these tables
hold tens of rows that marketers copy between environments or edit in Excel. Both resources
match rows by name, validate like the admin forms do, and neutralize every exported cell.
"""

from django.core.exceptions import ValidationError
from import_export import fields
from import_export.widgets import ForeignKeyWidget

from consent.models import Channel
from core.exports import ListWidget, SafeModelResource
from reactivation.models import DormancyReason, DormancyRule, LifecycleState, Segment

SEGMENT_RANGES = (
    ("rfm_recency_min", "rfm_recency_max"),
    ("rfm_frequency_min", "rfm_frequency_max"),
    ("rfm_monetary_min", "rfm_monetary_max"),
    ("spent_min", "spent_max"),
    ("orders_min", "orders_max"),
)


def segment_range_errors(values) -> dict[str, str]:
    """``{max_field: message}`` for every range whose minimum exceeds its maximum.

    ``values`` is a Segment or a form's cleaned_data (anything with the field names).
    """
    get = values.get if isinstance(values, dict) else lambda name: getattr(values, name, None)
    errors = {}
    for low_name, high_name in SEGMENT_RANGES:
        low, high = get(low_name), get(high_name)
        if low is not None and high is not None and low > high:
            errors[high_name] = f"Must be at least {low_name.replace('_', ' ')} ({low})."
    return errors


class NamedForeignKeyWidget(ForeignKeyWidget):
    """A foreign key given by name; an unknown name is a row error naming it, not a traceback."""

    def clean(self, value, row=None, **kwargs):
        try:
            return super().clean(value, row, **kwargs)
        except self.model.DoesNotExist:
            raise ValueError(f"No {self.model._meta.verbose_name} named {value!r}.") from None


class DormancyRuleResource(SafeModelResource):
    class Meta:
        model = DormancyRule
        import_id_fields = ("name",)
        fields = ("name", "signal", "inactive_days", "at_risk_days", "min_orders", "min_spent", "priority", "is_active")
        export_order = fields
        # Runs DormancyRule.clean (at-risk days below inactive days) and the choices of signal.
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True


class SegmentResource(SafeModelResource):
    lifecycle_states = fields.Field(
        attribute="lifecycle_states", column_name="lifecycle_states", widget=ListWidget(choices=LifecycleState.values)
    )
    dormancy_rule = fields.Field(
        attribute="dormancy_rule", column_name="dormancy_rule", widget=NamedForeignKeyWidget(DormancyRule, field="name")
    )
    favourite_categories = fields.Field(
        attribute="favourite_categories", column_name="favourite_categories", widget=ListWidget()
    )
    locales = fields.Field(attribute="locales", column_name="locales", widget=ListWidget())
    dormancy_reasons = fields.Field(
        attribute="dormancy_reasons", column_name="dormancy_reasons", widget=ListWidget(choices=DormancyReason.Reason.values)
    )
    consent_channels = fields.Field(
        attribute="consent_channels", column_name="consent_channels", widget=ListWidget(choices=Channel.values)
    )

    class Meta:
        model = Segment
        import_id_fields = ("name",)
        fields = (
            "name", "description", "lifecycle_states", "dormancy_rule",
            "rfm_recency_min", "rfm_recency_max", "rfm_frequency_min", "rfm_frequency_max",
            "rfm_monetary_min", "rfm_monetary_max", "spent_min", "spent_max", "orders_min", "orders_max",
            "favourite_categories", "locales", "dormancy_reasons", "consent_channels",
        )
        export_order = fields
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True

    def import_instance(self, instance, row, **kwargs):
        super().import_instance(instance, row, **kwargs)
        errors = segment_range_errors(instance)
        if errors:
            raise ValidationError(errors)

    def before_save_instance(self, instance, row, **kwargs):
        if instance.pk is None and instance.created_by_id is None:
            instance.created_by = kwargs.get("user") or self.user
