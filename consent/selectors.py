from django.db.models import Exists, OuterRef, Q

from consent.models import ConsentState, Purpose, Suppression


def consent_granted_q(*, channel: str, purpose: str = Purpose.MARKETING, customer_ref: str = "pk") -> Exists:
    """An expression true when the customer currently has consent on ``channel``."""
    return Exists(
        ConsentState.objects.filter(
            customer=OuterRef(customer_ref), channel=channel, purpose=purpose, status=ConsentState.Status.GRANTED
        )
    )


def address_suppressed_q(*, channel: str, address_ref: str) -> Exists:
    """An expression true when the customer's address (e.g. ``email``) on ``channel`` is suppressed."""
    return Exists(Suppression.objects.filter(channel=channel, address=OuterRef(address_ref)))


def consent_is_granted(*, customer, channel: str, purpose: str = Purpose.MARKETING) -> bool:
    return ConsentState.objects.filter(
        customer=customer, channel=channel, purpose=purpose, status=ConsentState.Status.GRANTED
    ).exists()


def address_is_suppressed(*, channel: str, address: str) -> bool:
    return bool(address) and Suppression.objects.filter(Q(channel=channel) & Q(address=address.lower() if "@" in address else address)).exists()
