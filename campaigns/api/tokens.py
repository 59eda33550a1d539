"""API tokens: created in the admin, shown once, stored as a SHA-256 hash.

A token reads ``wb_<8 hex>.<43 url-safe chars>``. The part before the dot is the stored,
indexed ``prefix`` used to find the row; the whole token is hashed and compared in constant
time. 256 random bits need no slow password hash: nothing can be guessed from the SHA-256.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.models import ApiScope, ApiToken

LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class CreatedToken:
    token: ApiToken
    key: str  # the full secret; shown once, never stored


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, name: str, scopes: list[str], created_by=None) -> CreatedToken:
    """A new token allowed exactly ``scopes`` (ApiScope values; raises ValueError for others)."""
    unknown = set(scopes) - set(ApiScope.values)
    if unknown:
        raise ValueError(f"Unknown API scope(s) {sorted(unknown)}; expected some of {ApiScope.values}.")
    prefix = "wb_" + secrets.token_hex(4)
    key = f"{prefix}.{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(name=name, prefix=prefix, key_hash=_hash(key), created_by=created_by,
                                    scopes=[scope for scope in ApiScope.values if scope in scopes])
    return CreatedToken(token=token, key=key)


def api_tokens_revoke(*, tokens, at: datetime | None = None) -> int:
    """Revoke the given tokens (a queryset); already revoked ones keep their first revocation time."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=at or timezone.now())


class TokenInvalid(Exception):
    pass


def api_token_check(key: str, *, now: datetime | None = None) -> ApiToken:
    """The active token for ``key``; raises ``TokenInvalid`` (same message for unknown, wrong and revoked)."""
    prefix, dot, _ = (key or "").partition(".")
    if not dot or not prefix or len(prefix) > 12:
        raise TokenInvalid("Invalid token.")
    token = ApiToken.objects.filter(prefix=prefix).first()
    # Hash even when the prefix is unknown so the timing does not tell which prefixes exist.
    expected = token.key_hash if token is not None else "0" * 64
    if not hmac.compare_digest(_hash(key), expected) or token is None:
        raise TokenInvalid("Invalid token.")
    if token.revoked_at is not None:
        raise TokenInvalid("Token revoked.")
    _touch(token, now or timezone.now())
    return token


def _touch(token: ApiToken, now: datetime) -> None:
    # At most one write a minute per token, however many requests it makes.
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiToken.objects.filter(pk=token.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    token.last_used_at = now
