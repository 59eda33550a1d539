from django.db.models import Exists, OuterRef, Q

from consent.models import Channel, ConsentState, Purpose, Suppression

# The Customer field that holds each channel's address; in-app messages need none.
ADDRESS_FIELDS = {Channel.EMAIL: "email", Channel.SMS: "phone"}


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


def contactable_q(*, channel: str, purpose: str = Purpose.MARKETING, prefix: str = "") -> Q:
    """May we contact this customer on ``channel``: the one definition, as a filter condition.

    True when the customer's consent on ``channel`` is currently granted (the state follows the
    ledger's latest decision, so a withdrawal by any route, one-click included, ends it and a
    later grant restores it) and, for a channel with an address, the customer has one that is
    not suppressed. A suppressed address stays uncontactable whatever the consent says: it
    bounced or complained, whoever holds it now.

    ``prefix`` reaches the customer through a relation (``"customer__"``); empty for a Customer
    queryset. Set-based: two correlated EXISTS per channel, no per-row query.
    """
    if channel not in Channel.values:
        raise ValueError(f"Unknown channel {channel!r}; expected one of {Channel.values}.")
    condition = Q(consent_granted_q(channel=channel, purpose=purpose, customer_ref=f"{prefix}pk"))
    if field := ADDRESS_FIELDS.get(channel):
        address = f"{prefix}{field}"
        condition &= ~Q(**{address: ""}) & ~Q(address_suppressed_q(channel=channel, address_ref=address))
    return condition


def consent_is_granted(*, customer, channel: str, purpose: str = Purpose.MARKETING) -> bool:
    return ConsentState.objects.filter(
        customer=customer, channel=channel, purpose=purpose, status=ConsentState.Status.GRANTED
    ).exists()


def address_is_suppressed(*, channel: str, address: str) -> bool:
    return bool(address) and Suppression.objects.filter(Q(channel=channel) & Q(address=address.lower() if "@" in address else address)).exists()
