"""Value parsers for imported cells: plain functions, fast enough for millions of rows.

Each parser takes a stripped, non-blank string and returns the typed value or raises
``InvalidValue`` whose message is the reason shown to the marketer in the errors file.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

UTC = dt_timezone.utc
MAX_POSITIVE_INT = 2_147_483_647  # PositiveIntegerField on every backend
MONEY_MAX_INTEGER_DIGITS = 12  # DecimalField(max_digits=14, decimal_places=2)
CENT = Decimal("0.01")


class InvalidValue(ValueError):
    """The cell cannot be used; ``str(exc)`` says why in plain words."""


# Dates ----------------------------------------------------------------------------------------
_SLASHED = re.compile(
    r"(\d{4})[/.-](\d{1,2})[/.-](\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?"
)


def _offset(text: str):
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise InvalidValue(f"has an impossible UTC offset {text}")
    return dt_timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_datetime(raw: str, tz) -> datetime:
    """ISO 8601 (with or without offset), ``YYYY-MM-DD HH:MM[:SS]``, ``YYYY/M/D[ H:MM[:SS]]``.

    Naive values are in ``tz`` (a ZoneInfo). Returns an aware datetime in UTC.
    """
    value = None
    # The common machine-written forms go through the C parser (about 0.2 µs a value).
    if len(raw) >= 10 and raw[4] == "-" and raw[7] == "-":
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            value = None
    if value is None:
        match = _SLASHED.fullmatch(raw)
        if not match:
            raise InvalidValue("is not a date (use YYYY-MM-DD HH:MM, YYYY/M/D H:MM or ISO 8601)")
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        try:
            value = datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                int((fraction or "0").ljust(6, "0")),
                tzinfo=_offset(offset) if offset else None,
            )
        except ValueError:
            raise InvalidValue("is not a real date (month, day or time out of range)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    earliest, latest = _time_window()
    try:
        if value < earliest:
            raise InvalidValue(f"is before {earliest.date().isoformat()} (EARLIEST_DATE)")
        if value > latest:
            raise InvalidValue("is in the future")
        return value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 pushed out of range by its offset
        raise InvalidValue("is out of range") from None


_window: tuple[float, datetime, datetime] | None = None


def _time_window() -> tuple[datetime, datetime]:
    """core.time_bounds' earliest and latest acceptable times, recomputed at most once a second
    (reading settings and the clock for each of millions of cells would double the parse time)."""
    global _window
    from core.time_bounds import time_earliest, time_max_ahead

    tick = time.monotonic()
    if _window is None or tick - _window[0] > 1:
        _window = (tick, time_earliest(), datetime.now(UTC) + time_max_ahead())
    return _window[1], _window[2]


# Numbers --------------------------------------------------------------------------------------
_CURRENCY = str.maketrans("", "", "¥￥$€£, \u00a0")
_DIGITS = re.compile(r"\d+")
_PLAIN_MONEY = re.compile(r"\d{1,12}(?:\.\d{1,2})?")
_MONEY = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_count(raw: str) -> int:
    """A non-negative whole number; thousands separators are tolerated (``1,234``)."""
    text = raw.replace(",", "").replace(" ", "") if ("," in raw or " " in raw) else raw
    if text.endswith(".0"):  # spreadsheets write whole numbers as 12.0
        text = text[:-2]
    if not _DIGITS.fullmatch(text):
        if text.startswith("-") and _DIGITS.fullmatch(text[1:]):
            raise InvalidValue("is negative")
        raise InvalidValue("is not a whole number")
    value = int(text)
    if value > MAX_POSITIVE_INT:
        raise InvalidValue(f"is larger than {MAX_POSITIVE_INT:,}")
    return value


def parse_money(raw: str) -> Decimal:
    """A non-negative amount such as ``1234.5``, ``¥1,234.50``, ``$12``, ``12元``.

    A comma is always a thousands separator. Rounded half-up to cents.
    """
    if _PLAIN_MONEY.fullmatch(raw):
        return Decimal(raw)
    text = raw.translate(_CURRENCY)
    for suffix in ("元", "rmb", "cny", "usd"):
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)]
    for prefix in ("rmb", "cny", "usd"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    negative = text.startswith("-")
    if negative:
        text = text[1:].translate(_CURRENCY)
    if not _MONEY.fullmatch(text):
        raise InvalidValue("is not an amount of money")
    if negative and text.strip("0.") != "":
        raise InvalidValue("is negative")
    try:
        value = Decimal(text).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise InvalidValue("is not an amount of money") from None
    if value >= Decimal(10) ** MONEY_MAX_INTEGER_DIGITS:
        raise InvalidValue(f"is too large (at most {MONEY_MAX_INTEGER_DIGITS} digits before the decimal point)")
    return value


def parse_signed_money(raw: str) -> Decimal:
    """Like ``parse_money`` but a leading minus is allowed (refunds in activity imports)."""
    if raw.startswith("-"):
        return -parse_money(raw[1:])
    return parse_money(raw)


# Consent --------------------------------------------------------------------------------------
_CONSENT = {
    "yes": True, "y": True, "true": True, "t": True, "1": True, "是": True, "同意": True,
    "no": False, "n": False, "false": False, "f": False, "0": False, "否": False, "不同意": False,
}


def parse_consent(raw: str) -> bool:
    try:
        return _CONSENT[raw.lower()]
    except KeyError:
        raise InvalidValue("is not a consent answer (use yes/no, true/false, 1/0, 是/否, 同意/不同意)") from None


# Email and phone ------------------------------------------------------------------------------
# Plain ASCII addresses that Django's EmailValidator certainly accepts skip it (~10 µs);
# anything else is judged by the validator itself.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9_+-]{1,64}(?:\.[a-z0-9_+-]{1,64})*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,20}",
    re.IGNORECASE,
)


def parse_email(raw: str) -> str:
    if len(raw) > 254:
        raise InvalidValue("is longer than 254 characters")
    if _PLAIN_EMAIL.fullmatch(raw) and raw.index("@") <= 64:
        return raw.lower()
    try:
        validate_email(raw)
    except ValidationError:
        raise InvalidValue("is not a valid email address") from None
    return raw.lower()


_CN_MOBILE = re.compile(r"1[3-9]\d{9}")


@lru_cache(maxsize=1)
def _cn_valid_national_number():
    """One regex equal to phonenumbers' validity test for 11-digit CN national numbers.

    ``is_valid_number`` accepts a national number when it matches the region's general
    pattern and the pattern of at least one number type whose possible lengths include its
    length. phonenumbers.parse costs ~25 µs, most of the Python time of a million-row import;
    this regex, built from the same metadata, costs ~1 µs. tests/reactivation/imports/
    test_parsing.py checks it against phonenumbers on random numbers of every CN mobile block.
    """
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    descs = [metadata.premium_rate, metadata.toll_free, metadata.shared_cost, metadata.voip,
             metadata.personal_number, metadata.pager, metadata.uan, metadata.voicemail,
             metadata.fixed_line, metadata.mobile]

    def fits(desc):
        return desc is not None and desc.national_number_pattern and (
            not desc.possible_length or 11 in desc.possible_length
        )

    general = metadata.general_desc
    if not fits(general):
        return None
    types = "|".join(f"(?:{d.national_number_pattern})" for d in descs if fits(d))
    if not types:
        return None
    return re.compile(f"(?=(?:{general.national_number_pattern})$)(?:{types})$")


def _cn_mobile_e164(national: str) -> str | None:
    # 179xx is excluded: CN metadata may strip it as a carrier prefix while parsing.
    if len(national) != 11 or national.startswith("179") or not _CN_MOBILE.fullmatch(national):
        return None
    pattern = _cn_valid_national_number()
    if pattern is not None and pattern.match(national):
        return "+86" + national
    return None


def parse_phone(raw: str, region: str) -> str:
    """E.164, or InvalidValue when phonenumbers says it is not a valid (assignable) number."""
    if region == "CN":
        fast = _cn_mobile_e164(raw[3:] if raw.startswith("+86") else raw)
        if fast:
            return fast
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise InvalidValue("is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidValue("is not a valid phone number (no such number range)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Time zones and regions -----------------------------------------------------------------------
@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def parse_timezone_name(raw: str) -> str:
    if raw in _zone_names() or raw == "UTC":
        return raw
    raise InvalidValue("is not a known time zone name (e.g. Asia/Shanghai)")


def zone(name: str):
    """The ZoneInfo for an option value; ValueError with a readable message when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"Unknown time zone {name!r} (use an IANA name such as Asia/Shanghai).") from None


def check_region(region: str) -> str:
    region = (region or "").upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"Unknown phone region {region!r} (use a two-letter country code such as CN).")
    return region


def text_of_length(max_length: int):
    """A parser for free text that must fit a column of ``max_length`` characters."""

    def parse(raw: str) -> str:
        if len(raw) > max_length:
            raise InvalidValue(f"is longer than {max_length} characters")
        return raw

    return parse
