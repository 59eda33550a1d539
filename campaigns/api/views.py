"""The /api/v1/ endpoints the product's servers call. Thin: parse, call a service, answer."""

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.api.authentication import ApiTokenAuthentication, HasScope
from campaigns.api.serializers import (
    EVENTS_MAX_BATCH,
    EventSerializer,
    EventsResultSerializer,
    InboxMessageSerializer,
    RedemptionRequestSerializer,
    RedemptionSerializer,
    RefusalSerializer,
)
from campaigns.inbox import inbox_for_customer, inbox_message_read, inbox_unread_count
from campaigns.models import ApiScope, InboxMessage
from campaigns.offers import RedeemRefusal, RedemptionRefused, redemption_record
from reactivation.models import ActivityEvent, Customer

logger = logging.getLogger(__name__)
EXTERNAL_ID_MAX_LENGTH = Customer._meta.get_field("external_id").max_length

EXTERNAL_ID = OpenApiParameter("external_id", str, OpenApiParameter.PATH, description="The customer's id in the product.")
MESSAGE_ID = OpenApiParameter("message_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="A message id from the inbox list.")


class ApiView(APIView):
    """A token is required (401 without), and it must carry the view's ``required_scope`` (403)."""

    authentication_classes = [ApiTokenAuthentication]
    permission_classes = [IsAuthenticated, HasScope]
    required_scope: str


def _external_id_usable(external_id: str) -> bool:
    # PostgreSQL text cannot hold NUL: a lookup with one raises instead of finding nothing.
    return "\x00" not in external_id and len(external_id) <= EXTERNAL_ID_MAX_LENGTH


class InboxPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_paginated_response(self, data, *, unread_count: int = 0):
        return Response(
            {
                "count": self.page.paginator.count,
                "unread_count": unread_count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema):
        response = super().get_paginated_response_schema(schema)
        response["properties"]["unread_count"] = {"type": "integer", "example": 2}
        response["required"] = [*response.get("required", []), "unread_count"]
        return response


class InboxListView(ApiView):
    pagination_class = InboxPagination
    required_scope = ApiScope.INBOX_READ

    @extend_schema(
        operation_id="inbox_list",
        parameters=[EXTERNAL_ID],
        responses={200: InboxMessageSerializer(many=True),
                   404: OpenApiResponse(description="Unknown customer (only to a token with customers:lookup).")},
        summary="A customer's in-app messages, newest first, with the unread count.",
    )
    def get(self, request, external_id: str):
        customer = Customer.objects.filter(external_id=external_id).first() if _external_id_usable(external_id) else None
        paginator = self.pagination_class()
        if customer is None:
            if request.auth.has_scope(ApiScope.CUSTOMERS_LOOKUP):
                raise NotFound("No Customer matches the given query.")
            # Without customers:lookup an unknown customer is a customer with no messages, so
            # the token cannot be used to learn which external ids exist.
            paginator.paginate_queryset(InboxMessage.objects.none(), request, view=self)
            return paginator.get_paginated_response([], unread_count=0)

        page = paginator.paginate_queryset(inbox_for_customer(customer=customer), request, view=self)
        data = InboxMessageSerializer(page, many=True).data
        return paginator.get_paginated_response(data, unread_count=inbox_unread_count(customer=customer))


class InboxReadView(ApiView):
    required_scope = ApiScope.INBOX_READ
    @extend_schema(
        operation_id="inbox_read",
        parameters=[EXTERNAL_ID, MESSAGE_ID],
        request=None,
        responses={200: InboxMessageSerializer, 404: OpenApiResponse(description="Unknown customer or message.")},
        summary="Mark a message read (idempotent); counts as an open of its delivery.",
    )
    def post(self, request, external_id: str, message_id: int):
        if not _external_id_usable(external_id):
            raise NotFound("No InboxMessage matches the given query.")
        message = get_object_or_404(
            InboxMessage, pk=message_id, customer__external_id=external_id
        )
        message = inbox_message_read(message=message)
        return Response(InboxMessageSerializer(message).data)


class RedemptionCreateView(ApiView):
    required_scope = ApiScope.REDEMPTIONS_WRITE
    @extend_schema(
        operation_id="redemption_create",
        request=RedemptionRequestSerializer,
        responses={
            201: RedemptionSerializer,
            400: OpenApiResponse(description="Malformed request."),
            409: OpenApiResponse(RefusalSerializer, description="Already redeemed (or once-per-customer offer used)."),
            422: OpenApiResponse(RefusalSerializer, description="Refused: unknown code or customer, expired, ..."),
        },
        summary="Record that a coupon code was used in an order. A code redeems at most once.",
    )
    def post(self, request):
        serializer = RedemptionRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            redemption = redemption_record(**serializer.validated_data, source="api")
        except RedemptionRefused as exc:
            if exc.reason == RedeemRefusal.WRONG_CUSTOMER:
                # Another customer's code answers like a code that does not exist: telling them
                # apart would confirm to whoever tries codes that one is real.
                exc = RedemptionRefused(RedeemRefusal.UNKNOWN_CODE)
            code = status.HTTP_409_CONFLICT if exc.is_conflict else status.HTTP_422_UNPROCESSABLE_ENTITY
            return Response({"reason": exc.reason, "detail": exc.message}, status=code)
        return Response(RedemptionSerializer(redemption).data, status=status.HTTP_201_CREATED)


class EventsView(ApiView):
    required_scope = ApiScope.EVENTS_WRITE
    @extend_schema(
        operation_id="events_create",
        request=EventSerializer(many=True),
        responses={200: EventsResultSerializer, 400: OpenApiResponse(description="Not a list, or too long.")},
        summary=f"Record a batch of activity events (at most {EVENTS_MAX_BATCH}); bad items are reported per item.",
    )
    def post(self, request):
        from reactivation.services import TOTAL_SPENT_OVERFLOW, activity_record_batch

        items = request.data
        if not isinstance(items, list):
            raise ValidationError({"non_field_errors": ["Send a JSON list of events."]})
        if len(items) > EVENTS_MAX_BATCH:
            raise ValidationError({"non_field_errors": [f"At most {EVENTS_MAX_BATCH} events per request."]})

        errors, valid = [], []
        for index, item in enumerate(items):
            serializer = EventSerializer(data=item if isinstance(item, dict) else {})
            if serializer.is_valid():
                valid.append((index, serializer.validated_data))
            else:
                external_id = item.get("external_id", "") if isinstance(item, dict) else ""
                errors.append({"index": index, "external_id": str(external_id or ""), "error": "invalid",
                               "detail": serializer.errors})
        ids = Customer.objects.filter(external_id__in={data["external_id"] for _, data in valid}).values_list(
            "external_id", "pk"
        )
        customer_ids = dict(ids)
        events, unknown = [], 0  # events: (index, external_id, event)
        for index, data in valid:
            customer_id = customer_ids.get(data["external_id"])
            if customer_id is None:
                unknown += 1
                errors.append({"index": index, "external_id": data["external_id"], "error": "unknown_customer"})
                continue
            events.append((index, data["external_id"], ActivityEvent(
                customer_id=customer_id, kind=data["kind"], occurred_at=data["occurred_at"],
                amount=data.get("amount"), category=data.get("category", ""), item_ref=data.get("item", ""),
                source="api",
            )))
        overflowed = 0
        for attempt in (1, 2):
            if not events:
                break
            try:
                activity_record_batch(events=[event for _, _, event in events])
                break
            except DjangoValidationError as exc:
                # Items are validated above as the service does. A customer whose total_spent would
                # overflow is the one thing only the service can see: report that customer's items
                # and record the rest (once; a second refusal is the service's last word).
                if attempt == 2 or getattr(exc, "code", None) != TOTAL_SPENT_OVERFLOW:
                    raise ValidationError({"non_field_errors": exc.messages}) from None
                refused = set(exc.params["customer_ids"])
                for index, external_id, event in events:
                    if event.customer_id in refused:
                        overflowed += 1
                        errors.append({"index": index, "external_id": external_id, "error": "invalid",
                                       "detail": {"amount": exc.messages}})
                events = [item for item in events if item[2].customer_id not in refused]
        errors.sort(key=lambda e: e["index"])
        result = {
            "received": len(items), "created": len(events), "unknown_customer": unknown,
            "invalid": len(items) - len(valid) + overflowed, "errors": errors,
        }
        logger.info("api events received=%d created=%d unknown_customer=%d invalid=%d",
                    result["received"], result["created"], unknown, result["invalid"])
        return Response(EventsResultSerializer(result).data)
