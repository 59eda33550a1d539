"""How many customers a segment holds: the cached count the segment list shows, and the bounded
count the segment form shows while its filters are edited.

Counting a segment of millions takes seconds (its consent criteria are EXISTS subqueries), so the
list never counts: it shows ``Segment.size`` and how old it is, refreshed in the background
(every segment from beat; one segment right after it is saved), each count bounded by a
PostgreSQL ``statement_timeout``. The form counts live, under a much shorter one: past it, the
planner's estimate is shown as "about N".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from core.statement_timeout import query_cancelled, statement_timeout
from reactivation.models import Customer, Segment
from reactivation.selectors import segment_customers, segment_sample, segment_size

logger = logging.getLogger(__name__)

# How long the segment form may wait for an exact count (and then for its sample of members):
# an answer must come back while the marketer is still looking at the field they changed.
LIVE_COUNT_TIMEOUT_MS = 2_000

# PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout.


# Background refresh ------------------------------------------------------------------------------
# How long the background recount may spend on one segment (PostgreSQL): past it the segment keeps
# its previous size, shown with its age, and the next refresh tries again; a count that cannot
# finish must not hold a connection and a snapshot for minutes every ten minutes.
REFRESH_COUNT_TIMEOUT_MS = 60_000


def segment_sizes_refresh(
    *, segments: QuerySet[Segment] | Iterable[Segment] | None = None, now: datetime | None = None,
    timeout_ms: int = REFRESH_COUNT_TIMEOUT_MS,
) -> int:
    """Count the members of each of ``segments`` (every segment when None) and store the count
    with the time it was taken (``now`` when given); returns how many segments were stored.

    One COUNT per segment, each in its own short transaction, so a long refresh never holds a
    transaction open across segments; on PostgreSQL each count runs under a ``statement_timeout``
    of ``timeout_ms``, and a count it cancels is logged and stores nothing (the previous size
    stays). ``update()`` writes only the two size columns: the segment's ``updated_at`` (the
    marketer's last edit) is left alone. A count stores nothing when the segment was saved after
    it was read (its ``updated_at`` moved: the count described the old filters, and the save
    queued its own recount) or when a later count has already been stored. A segment deleted
    meanwhile is skipped. Safe to run twice.
    """
    if segments is None:
        segments = Segment.objects.all()
    if isinstance(segments, QuerySet):
        segments = segments.order_by("pk").iterator()
    refreshed = timed_out = 0
    for segment in segments:
        counted_at = now or timezone.now()
        size = _refresh_count(segment, timeout_ms)
        if size is None:
            timed_out += 1
            continue
        refreshed += (
            Segment.objects.filter(pk=segment.pk, updated_at=segment.updated_at)
            .filter(Q(size_counted_at__isnull=True) | Q(size_counted_at__lte=counted_at))
            .update(size=size, size_counted_at=counted_at)
        )
    logger.info("segment sizes refreshed segments=%d timed_out=%d", refreshed, timed_out)
    return refreshed


def _refresh_count(segment: Segment, timeout_ms: int) -> int | None:
    """The segment's size, or None when PostgreSQL's statement_timeout cancelled the count."""
    with statement_timeout(timeout_ms):
        try:
            with transaction.atomic():
                return segment_size(segment=segment)
        except DatabaseError as exc:
            if not query_cancelled(exc):
                raise
            logger.warning("segment size count cancelled after %d ms segment=%s; its previous size is kept",
                           timeout_ms, segment.pk)
            return None


def segment_size_label(*, segment: Segment, now: datetime | None = None) -> str:
    """The cached size as the segment list shows it: ``12,345 · 3 min ago``, or ``counting…``
    for a segment never counted (just created, or edited since its last count)."""
    if segment.size is None or segment.size_counted_at is None:
        return "counting…"
    return f"{segment.size:,} · {_age(segment.size_counted_at, now or timezone.now())}"


def _age(then: datetime, now: datetime) -> str:
    seconds = max(int((now - then).total_seconds()), 0)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


# Live count while the form is edited ----------------------------------------------------------------
@dataclass
class LiveSize:
    """A segment's size as far as ``timeout_ms`` allowed: ``exact`` when the count finished,
    otherwise ``count`` is the planner's estimate (None when even that was unavailable)."""

    count: int | None
    exact: bool
    sample: list[Customer]

    @property
    def label(self) -> str:
        if self.exact:
            return f"{self.count:,}"
        if self.count is None:
            return "too many to count quickly"
        return f"about {_round(self.count):,}"


def _round(value: int) -> int:
    """Two significant digits: an estimate must not look like a count."""
    if value < 100:
        return value
    step = 10 ** (len(str(value)) - 2)
    return round(value / step) * step


def segment_size_live(*, segment: Segment, sample_size: int = 5, timeout_ms: int = LIVE_COUNT_TIMEOUT_MS) -> LiveSize:
    """Count the members of ``segment`` (saved or not) within ``timeout_ms``, and read a
    sample of up to ``sample_size`` members, newest first.

    On PostgreSQL each statement runs under ``statement_timeout`` in its own savepoint: a count
    cancelled by it falls back to the planner's row estimate (EXPLAIN, which reads statistics,
    not rows), and a cancelled sample is left empty. On SQLite (the embedded development
    database) nothing bounds the count.
    """
    with statement_timeout(timeout_ms) as bounded:
        count, exact = _count_within_timeout(segment, bounded)
        sample = _sample_within_timeout(segment, sample_size, bounded)
    return LiveSize(count=count, exact=exact, sample=sample)


def _count_within_timeout(segment: Segment, bounded: bool) -> tuple[int | None, bool]:
    try:
        with transaction.atomic():
            return segment_size(segment=segment), True
    except DatabaseError as exc:
        if not (bounded and query_cancelled(exc)):
            raise
    try:
        with transaction.atomic():
            plan = json.loads(segment_customers(segment=segment).order_by().explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"]), False
    except (DatabaseError, ValueError, KeyError, IndexError, TypeError):
        logger.warning("segment size estimate unavailable for segment %s", segment.pk, exc_info=True)
        return None, False


def _sample_within_timeout(segment: Segment, sample_size: int, bounded: bool) -> list[Customer]:
    if sample_size <= 0:
        return []
    try:
        with transaction.atomic():
            return list(segment_sample(segment=segment, limit=sample_size))
    except DatabaseError as exc:
        if not (bounded and query_cancelled(exc)):
            raise
        return []
