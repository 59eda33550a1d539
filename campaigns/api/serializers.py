from rest_framework import serializers

from campaigns.models import InboxMessage, Redemption
from core.time_bounds import time_bounded
from reactivation.models import ActivityEvent

EVENTS_MAX_BATCH = 1000
KIND_MAX_LENGTH = ActivityEvent._meta.get_field("kind").max_length


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with an offset or Z, within core.time_bounds (1970 or EARLIEST_DATE to a few
    minutes ahead). A time without a zone would be read in the server's zone, silently shifting
    it by hours."""

    def to_internal_value(self, value):
        if not isinstance(value, str):
            return super().to_internal_value(value)
        try:
            parsed = time_bounded(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc), code="invalid") from None
        if parsed is None:
            self.fail("invalid", format="YYYY-MM-DDThh:mm:ss+HH:MM")
        return self.enforce_timezone(parsed)


class InboxMessageSerializer(serializers.ModelSerializer):
    is_read = serializers.SerializerMethodField()

    class Meta:
        model = InboxMessage
        fields = ["id", "title", "body", "deep_link", "unsubscribe_url", "created_at", "read_at", "is_read"]
        read_only_fields = fields

    def get_is_read(self, obj) -> bool:
        return obj.read_at is not None


class RedemptionRequestSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=40)
    external_id = serializers.CharField(max_length=100)
    order_amount = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=0, required=False, allow_null=True)
    order_ref = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    at = AwareDateTimeField(required=False, allow_null=True, help_text="When the order was placed; default now. Not before 1970-01-01, at most 5 minutes ahead.")
    category = serializers.CharField(
        max_length=100, required=False, allow_null=True,
        help_text="The order's category; checked against a category-only offer when given.",
    )


class RedemptionSerializer(serializers.ModelSerializer):
    code = serializers.CharField(source="grant.code", read_only=True)
    offer = serializers.CharField(source="grant.offer.name", read_only=True)
    external_id = serializers.CharField(source="customer.external_id", read_only=True)

    class Meta:
        model = Redemption
        fields = ["id", "code", "offer", "external_id", "order_amount", "order_ref", "source", "redeemed_at"]
        read_only_fields = fields


class RefusalSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="unknown_code (also for another customer's code), unknown_customer, already_redeemed, "
                                   "once_per_customer_used, offer_inactive, not_yet_valid, expired, "
                                   "below_min_spend, wrong_category, invalid (the order cannot be recorded, e.g. an amount above "
                                   "9999999999.99 or a time in the future)")
    detail = serializers.CharField()


class EventSerializer(serializers.Serializer):
    external_id = serializers.CharField(max_length=100)
    kind = serializers.CharField(max_length=KIND_MAX_LENGTH, help_text="Stored lower-cased.")
    occurred_at = AwareDateTimeField(help_text="At most 5 minutes in the future, not before 1970-01-01 (EARLIEST_DATE).")
    # 10 digits before the point (the service's bound): DecimalField already refuses NaN and Infinity.
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False, allow_null=True)
    category = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    item = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    def validate_kind(self, value):
        # The service stores kinds lower-cased, and lower() can lengthen a text ("İ" becomes
        # two characters): the bound is checked on what will be stored, so one bad item is
        # reported alone instead of the service refusing the whole batch.
        kind = value.strip().lower()
        if len(kind) > KIND_MAX_LENGTH:
            raise serializers.ValidationError(f"Ensure this field has no more than {KIND_MAX_LENGTH} characters (lower-cased).")
        return kind


class EventErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the item in the request list, from 0.")
    external_id = serializers.CharField(allow_blank=True)
    error = serializers.CharField(help_text="unknown_customer or invalid")
    detail = serializers.JSONField(required=False)


class EventsResultSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    created = serializers.IntegerField()
    unknown_customer = serializers.IntegerField()
    invalid = serializers.IntegerField()
    errors = EventErrorSerializer(many=True)
