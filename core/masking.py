"""Masking of personal data for staff who lack ``reactivation.view_personal_data``."""

import re

PERSONAL_DATA_PERMISSION = "reactivation.view_personal_data"


def can_view_personal_data(user) -> bool:
    return bool(user and user.is_active and user.has_perm(PERSONAL_DATA_PERMISSION))


def mask_email(value: str) -> str:
    """``zhang.wei@example.com`` -> ``z***@e***.com``."""
    if not value:
        return ""
    local, _, domain = value.partition("@")
    if not domain:
        return mask_text(value)
    host, _, tld = domain.rpartition(".")
    masked_domain = f"{host[:1]}***.{tld}" if host else f"{tld[:1]}***"
    return f"{local[:1]}***@{masked_domain}"


def mask_phone(value: str) -> str:
    """``+8613812345678`` -> ``+86*******5678``: country code and last four stay readable."""
    if not value:
        return ""
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_text(value: str) -> str:
    if not value:
        return ""
    return value[:1] + "***"


def mask_address(value: str) -> str:
    """A suppression or sender address: an email when it has an @, else a phone number."""
    if not value:
        return ""
    return mask_email(value) if "@" in value else mask_phone(value)


# Free text from providers and people (a bounce's SMTP reply, an SMS a customer typed, a support
# note) can carry addresses anywhere in it. ---------------------------------------------------
_EMAIL_IN_TEXT = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+\.[^\s<>\"'(),;:\[\].]{2,}")
# 7 to 15 digits, optionally after +, in groups separated by single spaces or dashes; a date
# (2026-05-01) is left alone.
_PHONE_IN_TEXT = re.compile(r"(?<![\w+])\+?\d(?:[ \-]?\d){6,14}(?!\w)")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")


def mask_personal_text(value: str) -> str:
    """Every email address and phone number inside ``value`` masked like ``mask_email`` and
    ``mask_phone``; the rest of the text kept: ``smtp;550 5.1.1 <member8@example.net>`` ->
    ``smtp;550 5.1.1 <m***@e***.net>``."""
    if not value:
        return value or ""
    value = _EMAIL_IN_TEXT.sub(lambda match: mask_email(match.group()), value)

    def phone(match):
        text = match.group()
        if _DATE.fullmatch(text):
            return text
        return mask_phone(re.sub(r"[ \-]", "", text))

    return _PHONE_IN_TEXT.sub(phone, value)
