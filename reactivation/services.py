"""Writes for the reactivation app: recording activity and keeping the Customer rollups.

The rollups (last_seen_at, last_order_at, order_count, total_spent, favourite_category) are
maintained incrementally from the new events only, never recomputed from the whole event history:
a customer CSV import may set order_count / total_spent for orders that have no events here.
"""

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Max, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.time_bounds import time_bounds_problem
from reactivation.lifecycle import ids_param, lifecycle_follow_activity
from reactivation.models import ActivityEvent, Customer

logger = logging.getLogger(__name__)

KIND_MAX_LENGTH = ActivityEvent._meta.get_field("kind").max_length

# One event's amount: at most 10 digits before the point, 2 after. The column (and the
# Customer.total_spent rollup) is numeric(14, 2), which leaves room for many such events.
AMOUNT_MAX = Decimal("9999999999.99")
AMOUNT_PLACES = 2
# Customer.total_spent is numeric(max_digits, decimal_places): the largest value it can hold.
_spent_field = Customer._meta.get_field("total_spent")
TOTAL_SPENT_MAX = Decimal(10) ** (_spent_field.max_digits - _spent_field.decimal_places) - Decimal(1).scaleb(
    -_spent_field.decimal_places)
TOTAL_SPENT_OVERFLOW = "total_spent_overflow"


def activity_record(*, customer: Customer, kind: str, occurred_at: datetime, amount: Decimal | None = None,
                    category: str = "", item_ref: str = "", source: str = "api") -> ActivityEvent:
    """Record one event and update the customer's rollups in the same transaction."""
    event = ActivityEvent(customer=customer, kind=kind, occurred_at=occurred_at, amount=amount,
                          category=category, item_ref=item_ref, source=source)
    return activity_record_batch(events=[event])[0]


def activity_record_batch(*, events: Iterable[ActivityEvent], evaluate_lifecycle: bool = True) -> list[ActivityEvent]:
    """Insert unsaved events (``customer_id`` set) and update their customers' rollups.

    Raises ValidationError, and writes nothing, when any event is invalid (no customer, empty
    kind, no or naive occurred_at, occurred_at outside core.time_bounds (before 1970, or more than 5 minutes ahead), amount
    negative, not finite, above 9,999,999,999.99 or with more than 2 decimals), or when the batch
    would push a customer's total_spent past what the column holds (code ``total_spent_overflow``,
    ``params["customer_ids"]`` lists them). Kinds are stored stripped and lower-cased.

    Set-based: one SELECT (locking, on PostgreSQL) of the current totals of the customers with
    spend, the INSERT (Django splits it every 124 rows on SQLite, whose statements take at
    most 999 parameters; one statement on PostgreSQL), one UPDATE for the incremental rollups and
    one UPDATE for the favourite category, whatever the batch size. Every kind counts as
    presence for last_seen_at; only ``order`` events count as orders.

    The lifecycle of the batch's customers follows: ``lifecycle_follow_activity`` runs when the
    transaction that recorded the batch commits (its own fixed number of statements). It never
    waits behind the hourly evaluation: while that holds the lifecycle lock, the customers are
    queued to a worker instead, so a request returns at once. Not inside the transaction: it
    holds the customers' row locks, which the hourly evaluation needs. Should it fail, the
    events stay recorded and the hourly evaluation catches up.
    ``evaluate_lifecycle=False`` leaves it to a caller that evaluates many batches' customers at
    once (every caller that passes it must do so).
    """
    events = list(events)
    if not events:
        return []
    now = timezone.now()
    for index, event in enumerate(events):
        _event_clean(event, index=index, now=now)

    with transaction.atomic():
        _total_spent_check(events=events)
        created = ActivityEvent.objects.bulk_create(events)
        _rollups_add(events=created)
        _favourite_categories_refresh(
            customer_ids={event.customer_id for event in created if event.category}
        )
        if evaluate_lifecycle:
            customer_ids = {event.customer_id for event in created}
            transaction.on_commit(lambda: lifecycle_follow_activity(customer_ids=customer_ids), robust=True)
    logger.debug("activity recorded events=%d customers=%d", len(created), len({e.customer_id for e in created}))
    return created


def _event_clean(event: ActivityEvent, *, index: int, now: datetime) -> None:
    where = f"Event {index}"
    if not event.customer_id:
        raise ValidationError({"customer": f"{where}: a customer is required."})
    event.kind = (event.kind or "").strip().lower()
    if not event.kind:
        raise ValidationError({"kind": f"{where}: the kind must not be empty."})
    if len(event.kind) > KIND_MAX_LENGTH:
        raise ValidationError({"kind": f"{where}: the kind is longer than {KIND_MAX_LENGTH} characters."})
    if not isinstance(event.occurred_at, datetime):
        raise ValidationError({"occurred_at": f"{where}: occurred_at must be a datetime."})
    if timezone.is_naive(event.occurred_at):
        # A naive time would be read in the server's zone, silently shifting it by hours.
        raise ValidationError({"occurred_at": f"{where}: occurred_at must carry a time zone."})
    occurred_at_error = occurred_at_problem(event.occurred_at, now=now)
    if occurred_at_error:
        raise ValidationError({"occurred_at": f"{where}: {occurred_at_error}"})
    if event.amount is not None:
        try:
            event.amount = Decimal(event.amount)
        except (ArithmeticError, TypeError, ValueError):
            raise ValidationError({"amount": f"{where}: the amount is not a number."}) from None
        amount_error = amount_problem(event.amount)
        if amount_error:
            raise ValidationError({"amount": f"{where}: {amount_error}"})
    event.category = (event.category or "").strip()
    event.item_ref = (event.item_ref or "").strip()
    event.source = (event.source or "").strip() or "api"


def occurred_at_problem(value: datetime, *, now: datetime) -> str | None:
    """Why an aware ``occurred_at`` is out of bounds, or None (the shared bounds of
    core.time_bounds: a time far ahead would pin last_seen_at there, so the customer would
    never be dormant again)."""
    problem = time_bounds_problem(value, now=now)
    return f"occurred_at {problem}" if problem else None


def amount_problem(value: Decimal) -> str | None:
    """Why an event amount is out of bounds, or None. Shared with the events API."""
    if not value.is_finite():
        return "the amount must be a finite number."
    if value < 0:
        return "the amount must not be negative."
    if value > AMOUNT_MAX:
        return f"the amount must not exceed {AMOUNT_MAX}."
    if value != value.quantize(Decimal(1).scaleb(-AMOUNT_PLACES)):
        return f"the amount must have at most {AMOUNT_PLACES} decimal places."
    return None


def _total_spent_check(*, events: list[ActivityEvent]) -> None:
    """Refuse the batch if it would push a customer's total_spent past numeric(14, 2).

    PostgreSQL would fail the UPDATE with a DataError (a 500 that loses the batch) and SQLite
    would store a value Django cannot read back. One query whatever the batch size: the current
    totals of the customers with spend, locked on PostgreSQL so a concurrent batch cannot slip
    in between this check and the UPDATE.
    """
    spent: dict[int, Decimal] = {}
    for event in events:
        if event.kind == ActivityEvent.ORDER and event.amount:
            spent[event.customer_id] = spent.get(event.customer_id, Decimal("0")) + event.amount
    current = (
        Customer.objects.select_for_update().filter(pk__in=ids_param(spent)).order_by("pk")
        .values_list("pk", "external_id", "total_spent")
    )
    over = [(pk, external_id) for pk, external_id, total in current if total + spent[pk] > TOTAL_SPENT_MAX]
    if over:
        raise ValidationError(
            "This batch would take total_spent past %(limit)s for customer(s) %(names)s; nothing was recorded.",
            code=TOTAL_SPENT_OVERFLOW,
            params={"limit": TOTAL_SPENT_MAX, "names": ", ".join(external_id for _, external_id in over),
                    "customer_ids": [pk for pk, _ in over]},
        )


def _rollups_add(*, events: list[ActivityEvent]) -> int:
    """Fold the new events into their customers' rollups in one UPDATE.

    The per-customer deltas are computed here and travel as ONE JSON parameter, joined with
    UPDATE ... FROM (PostgreSQL and SQLite >= 3.33), so neither the statement count nor the number
    of bound parameters grows with the batch.
    """
    deltas: dict[int, dict] = {}
    for event in events:
        delta = deltas.setdefault(event.customer_id, {"id": event.customer_id, "seen": None, "ordered": None,
                                                      "orders": 0, "spent": Decimal("0")})
        if delta["seen"] is None or event.occurred_at > delta["seen"]:
            delta["seen"] = event.occurred_at
        if event.kind == ActivityEvent.ORDER:
            delta["orders"] += 1
            delta["spent"] += event.amount or Decimal("0")
            if delta["ordered"] is None or event.occurred_at > delta["ordered"]:
                delta["ordered"] = event.occurred_at

    table = connection.ops.quote_name(Customer._meta.db_table)
    rows = [
        {
            "id": d["id"],
            "seen": _datetime_for_db(d["seen"]),
            "ordered": _datetime_for_db(d["ordered"]),
            "orders": d["orders"],
            "spent": str(d["spent"]),
        }
        for d in deltas.values()
    ]
    if connection.vendor == "postgresql":
        sql = f"""
            UPDATE {table} AS c SET
                last_seen_at = GREATEST(c.last_seen_at, v.seen),
                last_order_at = GREATEST(c.last_order_at, v.ordered),
                order_count = c.order_count + v.orders,
                total_spent = c.total_spent + v.spent
            FROM jsonb_to_recordset(%s::jsonb)
                AS v(id bigint, seen timestamptz, ordered timestamptz, orders integer, spent numeric)
            WHERE c.id = v.id
        """
    elif connection.vendor == "sqlite":
        # SQLite's two-argument max() is NULL when either side is NULL, hence the COALESCEs;
        # datetimes are stored as UTC text that sorts chronologically.
        sql = f"""
            UPDATE {table} SET
                last_seen_at = max(COALESCE(last_seen_at, v.seen), COALESCE(v.seen, last_seen_at)),
                last_order_at = max(COALESCE(last_order_at, v.ordered), COALESCE(v.ordered, last_order_at)),
                order_count = order_count + v.orders,
                total_spent = CAST(total_spent AS NUMERIC) + CAST(v.spent AS NUMERIC)
            FROM (
                SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.seen') AS seen,
                       json_extract(value, '$.ordered') AS ordered, json_extract(value, '$.orders') AS orders,
                       json_extract(value, '$.spent') AS spent
                FROM json_each(%s)
            ) AS v
            WHERE {table}.id = v.id
        """
    else:  # pragma: no cover - the project supports PostgreSQL and SQLite only
        raise NotImplementedError(f"Rollups are not implemented for {connection.vendor}.")
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(rows)])
        return cursor.rowcount


def _datetime_for_db(value: datetime | None) -> str | None:
    if value is None:
        return None
    if connection.vendor == "sqlite":
        # The exact text Django stores for a DateTimeField, so comparisons stay chronological.
        return connection.ops.adapt_datetimefield_value(value)
    return value.isoformat()


def _favourite_categories_refresh(*, customer_ids: set[int]) -> int:
    """Set favourite_category to the category with the most events, for these customers only.

    One UPDATE with a grouped, correlated subquery. Ties go to the category used most recently,
    then alphabetically, so the result is stable. Customers whose events carry no category keep
    the value they have (it may come from an import).
    """
    if not customer_ids:
        return 0
    top_category = (
        ActivityEvent.objects.filter(customer=OuterRef("pk"))
        .exclude(category="")
        .order_by()
        .values("category")
        .annotate(events=Count("id"), latest=Max("occurred_at"))
        .order_by("-events", "-latest", "category")
        .values("category")[:1]
    )
    return Customer.objects.filter(pk__in=ids_param(customer_ids)).update(
        favourite_category=Coalesce(Subquery(top_category), "favourite_category")
    )
