"""Phone and email normalization shared by imports, suppressions and consent."""

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email


def normalize_phone(raw: str, *, region: str | None = None) -> str:
    """Return the E.164 form of ``raw`` or raise ValidationError when it is not a valid number.

    Validity is ``is_valid_number`` (a number that can be assigned), not merely a possible one.
    """
    raw = (raw or "").strip()
    if not raw:
        return ""
    try:
        number = phonenumbers.parse(raw, region or settings.DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise ValidationError(f"{raw!r} is not a phone number.", code="phone") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(f"{raw!r} is not a valid phone number.", code="phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    """Lower-case and validate an address; raise ValidationError when it is not one."""
    value = (raw or "").strip()
    if not value:
        return ""
    validate_email(value)
    return value.lower()
