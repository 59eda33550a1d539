"""Sending windows in the customer's time zone (SMS: 08:00-21:00 local by default)."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils import timezone


def customer_zone(name: str):
    """The customer's IANA zone; blank or unknown names mean settings.TIME_ZONE."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.get_default_timezone()


def _inside(local: time, start: time, end: time) -> bool:
    if start == end:
        return True  # a window of the whole day
    if start < end:
        return start <= local < end
    return local >= start or local < end  # a window across midnight, e.g. 22:00-06:00


def window_next_opening(*, now: datetime, zone, start: time, end: time) -> datetime | None:
    """None when ``now`` is inside the window in ``zone``; else when the window next opens."""
    local = now.astimezone(zone)
    if _inside(local.time(), start, end):
        return None
    opening = datetime.combine(local.date(), start, tzinfo=zone)
    if opening <= local:
        opening = datetime.combine(local.date() + timedelta(days=1), start, tzinfo=zone)
    return opening.astimezone(timezone.get_default_timezone())
