import random
from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from reactivation.imports import parsing
from reactivation.imports.parsing import InvalidValue

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-05", datetime(2024, 1, 4, 16, 0, tzinfo=UTC)),
        ("2024-01-05 09:30", datetime(2024, 1, 5, 1, 30, tzinfo=UTC)),
        ("2024-01-05 09:30:15", datetime(2024, 1, 5, 1, 30, 15, tzinfo=UTC)),
        ("2024-01-05T09:30:15.250", datetime(2024, 1, 5, 1, 30, 15, 250000, tzinfo=UTC)),
        ("2024-01-05T09:30:00Z", datetime(2024, 1, 5, 9, 30, tzinfo=UTC)),
        ("2024-01-05T09:30:00+08:00", datetime(2024, 1, 5, 1, 30, tzinfo=UTC)),
        ("2024-01-05T09:30:00-0500", datetime(2024, 1, 5, 14, 30, tzinfo=UTC)),
        ("2024/1/5", datetime(2024, 1, 4, 16, 0, tzinfo=UTC)),
        ("2024/1/5 9:30", datetime(2024, 1, 5, 1, 30, tzinfo=UTC)),
        ("2024/01/05 09:30:59", datetime(2024, 1, 5, 1, 30, 59, tzinfo=UTC)),
        ("2024-1-5 9:30", datetime(2024, 1, 5, 1, 30, tzinfo=UTC)),
        ("2024/1/5 9:30 +08:00", datetime(2024, 1, 5, 1, 30, tzinfo=UTC)),
    ],
)
def test_dates_naive_values_are_in_the_import_time_zone(raw, expected):
    assert parsing.parse_datetime(raw, SHANGHAI) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("yesterday", "is not a date"),
        ("05/01/2024", "is not a date"),
        ("2024-13-01", "not a real date"),
        ("2024/2/30", "not a real date"),
        ("2024-01-05 25:00", "not a real date"),
        ("1969-12-31 23:59", "before 1970-01-01"),
        ("0001-01-01T00:00:00+14:00", "before 1970-01-01"),
        ("2999-01-01", "in the future"),
    ],
)
def test_bad_dates(raw, reason):
    with pytest.raises(InvalidValue, match=reason):
        parsing.parse_datetime(raw, SHANGHAI)


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("12", 12), ("1,234", 1234), ("7.0", 7)])
def test_counts(raw, expected):
    assert parsing.parse_count(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"), [("-1", "negative"), ("1.5", "whole number"), ("abc", "whole number"), ("99999999999", "larger")]
)
def test_bad_counts(raw, reason):
    with pytest.raises(InvalidValue, match=reason):
        parsing.parse_count(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", "0"), ("12.5", "12.5"), ("1234.56", "1234.56"), ("¥1,234.50", "1234.50"), ("￥88", "88.00"),
        ("$1,000,000.00", "1000000.00"), ("12元", "12.00"), ("RMB 99.9", "99.90"), ("0.005", "0.01"), (".5", "0.50"),
    ],
)
def test_money(raw, expected):
    assert parsing.parse_money(raw) == Decimal(expected)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("-5", "negative"), ("¥-5", "negative"), ("abc", "not an amount"), ("1.2.3", "not an amount"), ("1" * 13, "too large")],
)
def test_bad_money(raw, reason):
    with pytest.raises(InvalidValue, match=reason):
        parsing.parse_money(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("yes", True), ("YES", True), ("true", True), ("1", True), ("是", True), ("同意", True),
     ("no", False), ("False", False), ("0", False), ("否", False), ("不同意", False)],
)
def test_consent_answers(raw, expected):
    assert parsing.parse_consent(raw) is expected


def test_bad_consent_answer():
    with pytest.raises(InvalidValue, match="not a consent answer"):
        parsing.parse_consent("maybe")


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("13812345678", "CN", "+8613812345678"),
        ("+8613812345678", "CN", "+8613812345678"),
        ("138 1234 5678", "CN", "+8613812345678"),
        ("+1 650-253-0000", "CN", "+16502530000"),
        ("(650) 253-0000", "US", "+16502530000"),
        ("010 6552 9988", "CN", "+861065529988"),
    ],
)
def test_phones_are_normalized_to_e164(raw, region, expected):
    assert parsing.parse_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "reason"), [("12345", "not a valid phone number"), ("hello", "not a phone number"), ("10000000000", "not a valid")]
)
def test_bad_phones(raw, reason):
    with pytest.raises(InvalidValue, match=reason):
        parsing.parse_phone(raw, "CN")


def test_cn_mobile_fast_path_agrees_with_phonenumbers():
    # given random 11-digit numbers across every 1[3-9] block, valid and not
    rng = random.Random(20240105)
    numbers = [f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}" for _ in range(20_000)]
    for number in numbers:
        # when the fast path answers, it must be phonenumbers' own answer
        fast = parsing._cn_mobile_e164(number)
        try:
            parsed = phonenumbers.parse(number, "CN")
            full = phonenumbers.format_number(parsed, 0) if phonenumbers.is_valid_number(parsed) else None
        except phonenumbers.NumberParseException:
            full = None
        if fast is not None or not number.startswith("179"):
            assert fast == full, number


@pytest.mark.parametrize(
    "raw",
    ["a@example.com", "Zhang.Wei+promo@mail.example.cn", "x_y-z@sub.domain.org", "a..b@example.com", "-@x.co",
     "user@localhost", "用户@例子.中国", "a@b", "a@-b.com", "a@b.c", "a" * 65 + "@example.com"],
)
def test_email_fast_path_never_disagrees_with_django(raw):
    try:
        validate_email(raw)
        expected = raw.lower()
    except ValidationError:
        expected = None
    try:
        got = parsing.parse_email(raw)
    except InvalidValue:
        got = None
    assert got == expected


def test_time_zone_names_and_lengths():
    assert parsing.parse_timezone_name("Asia/Shanghai") == "Asia/Shanghai"
    with pytest.raises(InvalidValue, match="time zone"):
        parsing.parse_timezone_name("Mars/Olympus")
    assert parsing.text_of_length(3)("abc") == "abc"
    with pytest.raises(InvalidValue, match="longer than 3 characters"):
        parsing.text_of_length(3)("abcd")
