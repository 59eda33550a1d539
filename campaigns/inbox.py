"""The in-app inbox as the product reads it (the in-app transport writes the messages)."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from campaigns.models import Delivery, InboxMessage


def inbox_for_customer(*, customer):
    """Newest first; served by the (customer, -created_at) index."""
    return InboxMessage.objects.filter(customer=customer).order_by("-created_at", "-id")


def inbox_unread_count(*, customer) -> int:
    return InboxMessage.objects.filter(customer=customer, read_at__isnull=True).count()


@transaction.atomic
def inbox_message_read(*, message: InboxMessage, at: datetime | None = None) -> InboxMessage:
    """Mark ``message`` read; idempotent. Reading counts as an open of its delivery.

    Both writes are conditional on the column being empty, so the first read's time stays.
    """
    at = at or timezone.now()
    if InboxMessage.objects.filter(pk=message.pk, read_at__isnull=True).update(read_at=at):
        message.read_at = at
    else:
        message.refresh_from_db(fields=["read_at"])
    if message.delivery_id is not None:
        Delivery.objects.filter(pk=message.delivery_id, opened_at__isnull=True).update(opened_at=at)
    return message
