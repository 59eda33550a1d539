"""Channel kind -> transport class, by dotted path (imported on first use)."""

from django.conf import settings
from django.utils.module_loading import import_string

TRANSPORTS = {
    "email": "campaigns.channels.email.EmailTransport",
    "sms": "campaigns.channels.sms.SmsTransport",
    "in_app": "campaigns.channels.in_app.InAppTransport",
}


def transport_class(kind: str):
    paths = {**TRANSPORTS, **getattr(settings, "CAMPAIGN_TRANSPORTS", {})}
    try:
        return import_string(paths[kind])
    except KeyError:
        raise ValueError(f"No transport for channel {kind!r}; known: {sorted(paths)}.") from None


def transport_for(kind: str):
    """A new transport instance for ``kind`` (email, sms, in_app)."""
    return transport_class(kind)()
