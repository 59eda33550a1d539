"""Signed, non-expiring-in-practice tokens for links in messages (unsubscribe, preferences, claim).

Unsubscribe tokens are HMACs made by Django's signing module (salted per purpose) and checked
with a constant-time comparison inside ``signing.loads``. They carry the customer's id and
channel, need no login, and stay valid for ``MAX_AGE`` (well above CAN-SPAM's 30 days).

Claim tokens open the page of one offer grant. They go into SMS, where every character counts,
so they are a compact form of the same construction: the grant id in base 62, a dot, and the
first 96 bits of Django's ``salted_hmac("offers.claim", id, algorithm="sha256")`` in URL-safe
base64 (about 24 characters). They do not expire: the page shows the grant's own expiry.
"""

import functools
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.encoding import force_bytes

MAX_AGE = timedelta(days=730)
_SALT = "consent.unsubscribe"
_CLAIM_SALT = "offers.claim"
# 12 bytes = 96 bits of HMAC: guessing a valid token for a given id takes ~2**95 tries.
_CLAIM_MAC_BYTES = 12


@dataclass(frozen=True)
class UnsubscribeClaim:
    customer_id: int
    channel: str
    language: str = ""  # of the message the link was in: its pages answer in the same one


class BadToken(Exception):
    """The token was forged, damaged or is older than MAX_AGE."""


def unsubscribe_token_make(*, customer_id: int, channel: str, language: str = "") -> str:
    """``signing.dumps({"c": customer_id, "ch": channel}, salt=_SALT, compress=False)``, made faster.

    Every message carries one, so this is on the sending path: ``signing.dumps`` builds a
    signer, reads the settings and derives the HMAC key on every call (13 µs, a tenth of an
    in-app message). This writes the same token (``tests/core/test_tokens.py`` checks it is
    identical) with the derived key computed once per SECRET_KEY. ``unsubscribe_token_read``
    still verifies with ``signing.loads``.
    """
    payload = {"c": customer_id, "ch": channel, **({"l": language} if language else {})}
    value = f"{_b64_json(payload)}:{signing.b62_encode(int(time.time()))}"
    mac = _keyed_hmac(settings.SECRET_KEY).copy()
    mac.update(value.encode())
    return f"{value}:{signing.b64_encode(mac.digest()).decode()}"


def _b64_json(payload: dict) -> str:
    # signing.JSONSerializer's bytes, then Django's unpadded URL-safe base64.
    return signing.b64_encode(json.dumps(payload, separators=(",", ":")).encode("latin-1")).decode()


@functools.lru_cache(maxsize=4)
def _keyed_hmac(secret: str):
    """An HMAC-SHA256 primed with the key Django's Signer(salt=_SALT) derives (salted_hmac)."""
    key = hashlib.sha256(force_bytes(_SALT + "signer") + force_bytes(secret)).digest()
    return hmac.new(key, digestmod=hashlib.sha256)


def unsubscribe_token_read(token: str) -> UnsubscribeClaim:
    try:
        data = signing.loads(token, salt=_SALT, max_age=MAX_AGE)
        return UnsubscribeClaim(customer_id=int(data["c"]), channel=str(data["ch"]), language=str(data.get("l", "")))
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise BadToken("This link is invalid or has expired.") from None


def absolute_url(path: str) -> str:
    return settings.SITE_URL + path


def unsubscribe_url(*, customer_id: int, channel: str, language: str = "") -> str:
    token = unsubscribe_token_make(customer_id=customer_id, channel=channel, language=language)
    return absolute_url(reverse("consent:unsubscribe", args=[token]))


def preferences_url(*, customer_id: int, channel: str = "email", language: str = "") -> str:
    token = unsubscribe_token_make(customer_id=customer_id, channel=channel, language=language)
    return absolute_url(reverse("consent:preferences", args=[token]))


def claim_token_make(*, grant_id: int) -> str:
    """``<grant id in base 62>.<96 bits of salted_hmac(_CLAIM_SALT, id, sha256), base64url>``.

    Also on the sending path (one per message with an offer): like ``unsubscribe_token_make``,
    the salted key is derived once per SECRET_KEY and the primed HMAC is copied per token;
    ``tests/core/test_tokens.py`` checks the result against ``salted_hmac`` itself.
    """
    if isinstance(grant_id, bool) or not isinstance(grant_id, int) or grant_id <= 0:
        raise ValueError(f"grant_id must be a positive integer, not {grant_id!r}.")
    value = signing.b62_encode(grant_id)
    return f"{value}.{_claim_mac(value, settings.SECRET_KEY)}"


def claim_token_read(token: str) -> int:
    """The grant id of a token ``claim_token_make`` wrote with SECRET_KEY or one of
    SECRET_KEY_FALLBACKS (links already sent survive a key rotation); ``BadToken`` otherwise."""
    value, dot, mac = (token or "").partition(".")
    # compare_digest takes ASCII strings only; no token of ours is longer than ~30 characters.
    if not (dot and value and mac and token.isascii() and len(token) <= 64):
        raise BadToken("This link is invalid.")
    secrets = (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    if not any(hmac.compare_digest(_claim_mac(value, secret), mac) for secret in secrets):
        raise BadToken("This link is invalid.")
    try:
        grant_id = signing.b62_decode(value)
    except ValueError:
        raise BadToken("This link is invalid.") from None
    if grant_id <= 0:
        raise BadToken("This link is invalid.")
    return grant_id


def _claim_mac(value: str, secret: str) -> str:
    mac = _keyed_claim_hmac(secret).copy()
    mac.update(value.encode())
    return signing.b64_encode(mac.digest()[:_CLAIM_MAC_BYTES]).decode()


@functools.lru_cache(maxsize=4)
def _keyed_claim_hmac(secret: str):
    """An HMAC-SHA256 primed with the key ``salted_hmac(_CLAIM_SALT, ..., algorithm="sha256")`` derives."""
    key = hashlib.sha256(force_bytes(_CLAIM_SALT) + force_bytes(secret)).digest()
    # By name, not hashlib.sha256: OpenSSL's HMAC object then copies in C, twice as fast.
    return hmac.new(key, digestmod="sha256")
