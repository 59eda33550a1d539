from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from campaigns.models import InboxMessage, Redemption

EVENTS_MAX_BATCH = 1000


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with an offset or Z: a time without a zone would be read in the server's zone,
    silently shifting it by hours."""

    default_error_messages = {"naive": "Give a time zone offset (e.g. 2025-01-02T03:04:05+08:00 or ...Z)."}

    def to_internal_value(self, value):
        if isinstance(value, str):
            parsed = parse_datetime(value.strip())
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
        return super().to_internal_value(value)


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
    at = AwareDateTimeField(required=False, allow_null=True, help_text="When the order was placed; default now.")
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
    reason = serializers.CharField(help_text="unknown_code, unknown_customer, wrong_customer, already_redeemed, "
                                   "once_per_customer_used, offer_inactive, not_yet_valid, expired, "
                                   "below_min_spend, wrong_category")
    detail = serializers.CharField()


class EventSerializer(serializers.Serializer):
    external_id = serializers.CharField(max_length=100)
    kind = serializers.CharField(max_length=32)
    occurred_at = AwareDateTimeField(help_text="At most 5 minutes in the future, not before 1900-01-01.")
    # 10 digits before the point (the service's bound): DecimalField already refuses NaN and Infinity.
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False, allow_null=True)
    category = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    item = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    def validate_occurred_at(self, value):
        # The service's own bound, checked here so one bad item is reported alone instead of
        # the service refusing the whole batch.
        from reactivation.services import occurred_at_problem

        problem = occurred_at_problem(value, now=timezone.now())
        if problem:
            raise serializers.ValidationError(problem[0].upper() + problem[1:])
        return value


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
