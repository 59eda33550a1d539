"""Masking of personal data for staff who lack ``reactivation.view_personal_data``."""

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
