"""Signed, non-expiring-in-practice tokens for links in messages (unsubscribe, preferences).

Tokens are HMACs made by Django's signing module (salted per purpose) and checked with a
constant-time comparison inside ``signing.loads``. They carry the customer's id and channel,
need no login, and stay valid for ``MAX_AGE`` (well above CAN-SPAM's 30 days).
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse

MAX_AGE = timedelta(days=730)
_SALT = "consent.unsubscribe"


@dataclass(frozen=True)
class UnsubscribeClaim:
    customer_id: int
    channel: str


class BadToken(Exception):
    """The token was forged, damaged or is older than MAX_AGE."""


def unsubscribe_token_make(*, customer_id: int, channel: str) -> str:
    return signing.dumps({"c": customer_id, "ch": channel}, salt=_SALT, compress=False)


def unsubscribe_token_read(token: str) -> UnsubscribeClaim:
    try:
        data = signing.loads(token, salt=_SALT, max_age=MAX_AGE)
        return UnsubscribeClaim(customer_id=int(data["c"]), channel=str(data["ch"]))
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise BadToken("This link is invalid or has expired.") from None


def absolute_url(path: str) -> str:
    return settings.SITE_URL + path


def unsubscribe_url(*, customer_id: int, channel: str) -> str:
    token = unsubscribe_token_make(customer_id=customer_id, channel=channel)
    return absolute_url(reverse("consent:unsubscribe", args=[token]))


def preferences_url(*, customer_id: int, channel: str = "email") -> str:
    token = unsubscribe_token_make(customer_id=customer_id, channel=channel)
    return absolute_url(reverse("consent:preferences", args=[token]))
