"""RFM scores: recency, frequency and monetary quintiles (1..5, 5 best) over customers who ordered.

Three statements whatever the number of customers: one UPDATE ... FROM a subquery that computes
the three NTILE(5) windows (PostgreSQL, and SQLite >= 3.33 for UPDATE FROM), one UPDATE that
clears the scores of customers without orders, one COUNT for the summary.
"""

import logging
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from reactivation.models import Customer

logger = logging.getLogger(__name__)

SCORE_FIELDS = ("rfm_recency", "rfm_frequency", "rfm_monetary")


def _scores_update_sql() -> str:
    table = connection.ops.quote_name(Customer._meta.db_table)
    # NULL-safe "differs", so unchanged rows are not rewritten (no dead tuples on PostgreSQL).
    differs = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    # Ranked best first, 6 - NTILE: the best customers always score 5, even when fewer than five
    # customers have ordered (NTILE would stop at 3 for three customers), and the larger buckets
    # NTILE makes when the count is not a multiple of 5 are the better ones.
    # NTILE splits equal values that straddle a bucket boundary; ordering by id as well keeps that
    # split stable from one run to the next. A customer with orders but no known order date
    # (an import without dates) ranks least recent: NULLS LAST on both databases.
    return f"""
        UPDATE {table} SET rfm_recency = s.r, rfm_frequency = s.f, rfm_monetary = s.m
        FROM (
            SELECT id,
                   6 - NTILE(5) OVER (ORDER BY last_order_at DESC NULLS LAST, id ASC) AS r,
                   6 - NTILE(5) OVER (ORDER BY order_count DESC, id ASC) AS f,
                   6 - NTILE(5) OVER (ORDER BY total_spent DESC, id ASC) AS m
            FROM {table}
            WHERE order_count > 0
        ) AS s
        WHERE {table}.id = s.id
          AND ({table}.rfm_recency {differs} s.r
               OR {table}.rfm_frequency {differs} s.f
               OR {table}.rfm_monetary {differs} s.m)
    """


def rfm_recompute(*, now: datetime | None = None) -> int:
    """Score every customer with order_count > 0 and clear the scores of everyone else.

    Recency ranks last_order_at (most recent = 5), frequency order_count, monetary total_spent
    (most = 5). ``now`` only dates the log line: the scores are ranks, not ages. Returns the
    number of customers scored.
    """
    now = now or timezone.now()
    if connection.vendor not in ("postgresql", "sqlite"):  # pragma: no cover
        raise NotImplementedError(f"RFM is not implemented for {connection.vendor}.")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_scores_update_sql())
            changed = cursor.rowcount
        cleared = (
            Customer.objects.filter(order_count=0)
            .filter(Q(rfm_recency__isnull=False) | Q(rfm_frequency__isnull=False) | Q(rfm_monetary__isnull=False))
            .update(**dict.fromkeys(SCORE_FIELDS))
        )
        scored = Customer.objects.filter(order_count__gt=0).count()
    logger.info("rfm recomputed at=%s scored=%d changed=%d cleared=%d", now.isoformat(), scored, changed, cleared)
    return scored
