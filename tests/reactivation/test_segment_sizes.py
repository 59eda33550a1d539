"""Segment sizes: the cached count refreshed in the background, its label, and the bounded live
count the segment form shows."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reactivation import segment_sizes
from reactivation.models import LifecycleState, Segment
from reactivation.segment_sizes import (
    LiveSize,
    segment_size_label,
    segment_size_live,
    segment_sizes_refresh,
)
from reactivation.tasks import segment_sizes_refresh_task
from tests.factories import CustomerFactory, SegmentFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)


@pytest.fixture
def customers():
    """Three dormant customers (two spent 500 or more) and one active."""
    CustomerFactory(lifecycle_state=LifecycleState.DORMANT, total_spent=Decimal("800"))
    CustomerFactory(lifecycle_state=LifecycleState.DORMANT, total_spent=Decimal("500"))
    CustomerFactory(lifecycle_state=LifecycleState.DORMANT, total_spent=Decimal("20"))
    CustomerFactory(lifecycle_state=LifecycleState.ACTIVE)


# Background refresh ------------------------------------------------------------------------------


def test_refresh_stores_every_segments_count_and_time_without_touching_updated_at(customers):
    # given two segments never counted
    dormant = SegmentFactory(lifecycle_states=["dormant"])
    everyone = SegmentFactory()
    edited_at = dormant.updated_at

    # when the periodic refresh runs
    assert segment_sizes_refresh(now=NOW) == 2

    # then each segment holds its count and when it was taken; the marketer's last edit is kept
    dormant.refresh_from_db()
    everyone.refresh_from_db()
    assert (dormant.size, dormant.size_counted_at) == (3, NOW)
    assert (everyone.size, everyone.size_counted_at) == (4, NOW)
    assert dormant.updated_at == edited_at


def test_refresh_of_some_segments_leaves_the_others_alone(customers):
    wanted = SegmentFactory(lifecycle_states=["dormant"], spent_min=Decimal("500"))
    other = SegmentFactory()

    assert segment_sizes_refresh(segments=Segment.objects.filter(pk=wanted.pk), now=NOW) == 1

    wanted.refresh_from_db()
    other.refresh_from_db()
    assert wanted.size == 2 and other.size is None and other.size_counted_at is None


def test_refresh_skips_a_segment_deleted_meanwhile(customers):
    kept, deleted = SegmentFactory(), SegmentFactory()
    Segment.objects.filter(pk=deleted.pk).delete()

    assert segment_sizes_refresh(segments=[kept, deleted], now=NOW) == 1
    assert not Segment.objects.filter(pk=deleted.pk).exists()


def test_refresh_is_one_count_and_one_update_per_segment(customers):
    SegmentFactory.create_batch(3, lifecycle_states=["dormant"], consent_channels=["email"])

    with CaptureQueriesContext(connection) as queries:
        segment_sizes_refresh(now=NOW)

    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    bounds = [sql for sql in statements if "statement_timeout" in sql]
    # the segments themselves, then per segment its COUNT and its UPDATE
    assert sum("COUNT(" in sql for sql in statements) == 3
    assert sum(sql.startswith("UPDATE") for sql in statements) == 3
    # on PostgreSQL each count is bounded: the previous timeout read and the bound set before it,
    # and read and put back after it
    assert len(bounds) == (3 * 4 if connection.vendor == "postgresql" else 0)
    assert len(statements) == 1 + 3 * 2 + len(bounds)


def test_a_count_of_filters_saved_over_meanwhile_stores_nothing(customers, monkeypatch):
    # given a segment whose filters the marketer saves while the periodic refresh counts it
    segment = SegmentFactory(lifecycle_states=["dormant"])
    count = segment_sizes.segment_size

    def count_while_the_marketer_saves(*, segment):
        size = count(segment=segment)
        edited = Segment.objects.get(pk=segment.pk)
        edited.lifecycle_states = ["active"]
        edited.size = edited.size_counted_at = None  # as the admin's save does
        edited.save()
        return size

    monkeypatch.setattr(segment_sizes, "segment_size", count_while_the_marketer_saves)

    # when the refresh finishes, then the count of the old filters is not stored
    assert segment_sizes_refresh(now=NOW) == 0
    segment.refresh_from_db()
    assert (segment.size, segment.size_counted_at) == (None, None)

    # and the recount the save queued stores the new filters' size
    monkeypatch.undo()
    assert segment_sizes_refresh(segments=Segment.objects.filter(pk=segment.pk), now=NOW) == 1
    segment.refresh_from_db()
    assert (segment.size, segment.size_counted_at) == (1, NOW)


def test_an_older_count_never_replaces_a_newer_one(customers):
    # given a segment recounted after its save, while a slower refresh that started earlier still counts
    segment = SegmentFactory(lifecycle_states=["dormant"])
    Segment.objects.filter(pk=segment.pk).update(size=3, size_counted_at=NOW)

    # when the earlier refresh finishes
    assert segment_sizes_refresh(now=NOW - timedelta(minutes=5)) == 0

    # then the newer count stays
    segment.refresh_from_db()
    assert (segment.size, segment.size_counted_at) == (3, NOW)


def test_the_task_refreshes_one_segment_or_all():
    one, two = SegmentFactory(), SegmentFactory()
    CustomerFactory()

    assert segment_sizes_refresh_task(segment_id=one.pk) == 1
    assert Segment.objects.get(pk=one.pk).size == 1 and Segment.objects.get(pk=two.pk).size is None
    assert segment_sizes_refresh_task() == 2
    assert segment_sizes_refresh_task(segment_id=two.pk + 100) == 0


# Label -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, age, label",
    [
        (None, None, "counting…"),
        (12345, timedelta(seconds=20), "12,345 · just now"),
        (12345, timedelta(minutes=3, seconds=10), "12,345 · 3 min ago"),
        (0, timedelta(hours=2, minutes=59), "0 · 2 h ago"),
        (1_000_000, timedelta(days=3), "1,000,000 · 3 d ago"),
    ],
)
def test_the_size_label_shows_the_count_and_its_age(size, age, label):
    segment = Segment(size=size, size_counted_at=NOW - age if age is not None else None)
    assert segment_size_label(segment=segment, now=NOW) == label


def test_a_segment_with_a_count_but_no_time_is_still_counting():
    assert segment_size_label(segment=Segment(size=3), now=NOW) == "counting…"


# Live count --------------------------------------------------------------------------------------


def test_live_count_of_an_unsaved_segment_with_a_sample_newest_first(customers):
    segment = Segment(lifecycle_states=["dormant"], spent_min=Decimal("500"))  # never saved

    size = segment_size_live(segment=segment, sample_size=1)

    assert (size.count, size.exact, size.label) == (2, True, "2")
    assert [c.total_spent for c in size.sample] == [Decimal("500")]  # the newest of the two


def _slow_count(*, segment):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(2)")
    raise AssertionError("statement_timeout should have cancelled the sleep")


@pytest.mark.postgres
def test_live_count_past_the_timeout_answers_the_planners_estimate(customers, monkeypatch):
    # given a count slower than the time the form may wait
    monkeypatch.setattr(segment_sizes, "segment_size", _slow_count)
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        before = cursor.fetchone()[0]

    # when the form asks for the size
    size = segment_size_live(segment=Segment(lifecycle_states=["dormant"]), timeout_ms=50)

    # then the answer is an estimate, said to be one, with the sample still read
    assert size.exact is False and size.count is not None and size.count >= 0
    assert size.label.startswith("about ")
    assert len(size.sample) == 3
    # and the caller's transaction keeps its own statement_timeout
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == before
        cursor.execute("SELECT 1")  # and the transaction is still usable


@pytest.mark.postgres
def test_a_refresh_count_past_its_timeout_keeps_the_previous_size_and_is_logged(customers, monkeypatch, caplog):
    # given a segment too slow to count and another one
    slow = SegmentFactory(lifecycle_states=["dormant"])
    Segment.objects.filter(pk=slow.pk).update(size=7, size_counted_at=NOW - timedelta(hours=1))
    quick = SegmentFactory(lifecycle_states=["dormant"])
    count = segment_sizes.segment_size
    monkeypatch.setattr(segment_sizes, "segment_size",
                        lambda *, segment: _slow_count(segment=segment) if segment.pk == slow.pk else count(segment=segment))
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        before = cursor.fetchone()[0]

    # when the periodic refresh runs with a short bound
    assert segment_sizes_refresh(now=NOW, timeout_ms=50) == 1

    # then the slow segment keeps its previous size and time, the other one is counted
    slow.refresh_from_db()
    quick.refresh_from_db()
    assert (slow.size, slow.size_counted_at) == (7, NOW - timedelta(hours=1))
    assert (quick.size, quick.size_counted_at) == (3, NOW)
    assert f"segment={slow.pk}; its previous size is kept" in caplog.text
    assert "timed_out=1" in caplog.text
    # and the caller's transaction keeps its own statement_timeout
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == before


@pytest.mark.postgres
def test_the_periodic_refresh_bounds_each_count_by_a_minute():
    SegmentFactory()
    with CaptureQueriesContext(connection) as queries:
        segment_sizes_refresh(now=NOW)
    assert any("statement_timeout" in q["sql"] and "60000ms" in q["sql"] for q in queries.captured_queries)


@pytest.mark.postgres
def test_an_error_other_than_the_timeout_is_not_hidden(monkeypatch):
    def broken(*, segment):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")

    monkeypatch.setattr(segment_sizes, "segment_size", broken)
    from django.db import DataError

    with pytest.raises(DataError):
        segment_size_live(segment=Segment())


@pytest.mark.parametrize(
    "count, exact, label",
    [(1234, True, "1,234"), (1_234_567, False, "about 1,200,000"), (87, False, "about 87"), (None, False, "too many to count quickly")],
)
def test_live_size_label(count, exact, label):
    assert LiveSize(count=count, exact=exact, sample=[]).label == label
