"""Bounds on times that come from outside: API bodies, webhooks, provider polls, uploaded files.

A time from another system is evidence of when something happened, so it must be a time that
could have happened: not before ``EARLIEST_DATE`` (1970-01-01 unless the shop opened later) and
not more than ``MAX_CLOCK_AHEAD_SECONDS`` (5 minutes) after now, the slack for a sender whose
clock runs fast. Without these bounds a year-1 timestamp with a +14:00 offset is stored as
1 BC on PostgreSQL, which Python cannot read back (every page listing the row answers 500), and a
time far ahead outranks every later decision that compares times (consent, last activity).

``time_parse`` reads ISO 8601 text without ever raising anything but ValueError (Django's
parser raises for "12:99" or "+25:00" after its pattern matched); ``time_bounds_problem`` says
why a time is out of bounds; ``time_bounded`` does both for a caller that just wants a value.
"""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)


def time_earliest() -> datetime:
    """The earliest acceptable time: ``EARLIEST_DATE`` at 00:00 UTC, never before 1970."""
    configured = getattr(settings, "EARLIEST_DATE", None)
    if configured is None:
        return EPOCH
    return max(EPOCH, datetime(configured.year, configured.month, configured.day, tzinfo=dt_timezone.utc))


def time_max_ahead() -> timedelta:
    return timedelta(seconds=getattr(settings, "MAX_CLOCK_AHEAD_SECONDS", 300))


def time_parse(value, *, naive_allowed: bool = False) -> datetime | None:
    """An aware datetime from ISO 8601 text (or a datetime); None when blank.

    Raises ValueError with a plain message when the text is not a real date and time (month 13,
    February 30, 12:99, hour 24, offset +25:00), or when it has no offset and ``naive_allowed`` is
    false. With ``naive_allowed`` a time without an offset is read in TIME_ZONE.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            parsed = parse_datetime(text)
        except (ValueError, OverflowError):
            parsed = None
        if parsed is None:
            raise ValueError(f"{text[:40]!r} is not a real ISO 8601 date and time (e.g. 2025-01-02T03:04:05+08:00).")
    if timezone.is_naive(parsed):
        if not naive_allowed:
            raise ValueError("Give a time zone offset (e.g. 2025-01-02T03:04:05+08:00 or ...Z).")
        parsed = timezone.make_aware(parsed)
    return parsed


def time_bounds_problem(value: datetime, *, now: datetime | None = None) -> str | None:
    """Why the aware ``value`` is out of bounds (a sentence), or None when it is acceptable."""
    now = now or timezone.now()
    earliest = time_earliest()
    try:
        if value < earliest:
            return f"must not be before {earliest.date().isoformat()}."
        if value > now + time_max_ahead():
            return f"must not be more than {int(time_max_ahead().total_seconds() // 60)} minutes in the future."
    except OverflowError:  # an offset pushing year 1 or 9999 out of range
        return "is out of range."
    return None


def time_bounded(value, *, naive_allowed: bool = False, now: datetime | None = None) -> datetime | None:
    """``time_parse`` then ``time_bounds_problem``; raises ValueError naming the problem."""
    parsed = time_parse(value, naive_allowed=naive_allowed)
    if parsed is None:
        return None
    problem = time_bounds_problem(parsed, now=now)
    if problem:
        raise ValueError(f"The time {problem}")
    return parsed
