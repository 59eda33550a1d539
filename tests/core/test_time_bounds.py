"""core.time_bounds: the one validator for times that come from outside."""

from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone

import pytest

from core.time_bounds import time_bounded, time_bounds_problem, time_earliest, time_parse

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=dt_timezone.utc)


@pytest.mark.parametrize("text", [
    "2024-01-01T12:99:00Z", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z",
    "2024-01-01T00:00:00+25:00", "yesterday", "2024-01-01T00:00:00+0x:00",
])
def test_text_that_is_no_real_time_raises_value_error_only(text):
    with pytest.raises(ValueError):
        time_parse(text)


def test_a_time_without_an_offset_needs_permission():
    with pytest.raises(ValueError, match="offset"):
        time_parse("2024-01-01T00:00:00")
    assert time_parse("2024-01-01T00:00:00", naive_allowed=True).tzinfo is not None


@pytest.mark.parametrize(("value", "problem"), [
    (datetime(1, 1, 1, tzinfo=dt_timezone(timedelta(hours=14))), "before 1970-01-01"),
    (datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt_timezone.utc), "before 1970-01-01"),
    (NOW + timedelta(minutes=5, seconds=1), "5 minutes in the future"),
    (datetime(9999, 12, 31, 23, tzinfo=dt_timezone(timedelta(hours=-14))), "future"),
])
def test_times_out_of_bounds_are_named(value, problem):
    assert problem in time_bounds_problem(value, now=NOW)


@pytest.mark.parametrize("value", [datetime(1970, 1, 1, tzinfo=dt_timezone.utc), NOW + timedelta(minutes=5), NOW])
def test_the_bounds_themselves_are_accepted(value):
    assert time_bounds_problem(value, now=NOW) is None


def test_the_earliest_date_can_be_later_but_never_before_1970(settings):
    settings.EARLIEST_DATE = date(2019, 6, 1)
    assert time_earliest() == datetime(2019, 6, 1, tzinfo=dt_timezone.utc)
    assert "before 2019-06-01" in time_bounds_problem(datetime(2019, 5, 31, tzinfo=dt_timezone.utc), now=NOW)
    settings.EARLIEST_DATE = date(1900, 1, 1)
    assert time_earliest() == datetime(1970, 1, 1, tzinfo=dt_timezone.utc)


def test_time_bounded_parses_and_checks():
    assert time_bounded("2025-01-02T03:04:05+08:00", now=NOW) == datetime(2025, 1, 1, 19, 4, 5, tzinfo=dt_timezone.utc)
    assert time_bounded("", now=NOW) is None
    with pytest.raises(ValueError, match="before 1970"):
        time_bounded("0001-01-01T00:00:00+14:00", now=NOW)
