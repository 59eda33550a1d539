"""Bulk activity import: stream, parse, stage, resolve customers set-based, then record.

Rows whose external_id names no customer are not dropped silently: each one is listed in the
errors file and counted as ``unknown_customer``. Known rows are recorded through
``reactivation.services.activity_record_batch`` in chunks, so rollups (last_seen_at,
last_order_at, order_count, total_spent, favourite_category) follow exactly the rules of every
other way events come in. Events have no natural key: importing a file twice records its
events twice (the summary says how many were created).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction

from reactivation.imports import parsing
from reactivation.imports.customers import (
    ImportOptions, Progress, category_parser, header_key, map_columns, parse_rows,
)
from reactivation.imports.reading import UnusableFile, open_table
from reactivation.imports.staging import Column, ErrorReport, StagingTable
from reactivation.models import ActivityEvent

logger = logging.getLogger(__name__)
STAGE_TABLE = "import_event_stage"
RECORD_BATCH = 2_000
SOURCE = "import"

ALIASES: dict[str, tuple[str, ...]] = {
    "external_id": ("external_id", "用户id", "会员id"),
    "kind": ("kind", "event", "type", "类型", "事件"),
    "occurred_at": ("occurred_at", "time", "timestamp", "时间", "发生时间"),
    "amount": ("amount", "金额"),
    "category": ("category", "品类"),
    "item": ("item", "item_ref", "商品"),
}
HEADER_TO_FIELD = {header_key(alias): target for target, names in ALIASES.items() for alias in names}
REQUIRED = ("external_id", "kind", "occurred_at")

STAGE_COLUMNS = [
    Column("line", "integer", "integer"),
    Column("external_id", "text", "text"),
    Column("kind", "text", "text"),
    Column("occurred_at", "timestamptz", "text"),
    Column("amount", "numeric(14,2)", "decimal"),
    Column("category", "text", "text"),
    Column("item", "text", "text"),
]
STAGE_INDEX = {c.name: i for i, c in enumerate(STAGE_COLUMNS)}


@dataclass
class EventImportResult:
    created: int = 0
    invalid: int = 0
    unknown_customer: int = 0
    rows: int = 0
    dry_run: bool = False
    format: str = ""
    encoding: str | None = None
    delimiter: str | None = None

    @property
    def summary(self) -> str:
        return f"created={self.created} invalid={self.invalid} unknown_customer={self.unknown_customer}"


def _kind(raw: str) -> str:
    kind = raw.lower()
    if len(kind) > ActivityEvent._meta.get_field("kind").max_length:
        raise parsing.InvalidValue("is longer than 32 characters")
    return kind


def _field_parsers(stage: StagingTable, options: ImportOptions) -> dict[str, Callable[[str], object]]:
    tz = parsing.zone(options.time_zone)
    adapt_dt, adapt_dec = stage.adapt_datetime, stage.adapt_decimal
    return {
        "external_id": parsing.text_of_length(100),
        "kind": _kind,
        "occurred_at": lambda raw: adapt_dt(parsing.parse_datetime(raw, tz)),
        "amount": lambda raw: adapt_dec(parsing.parse_money(raw)),
        "category": category_parser(),
        "item": parsing.text_of_length(100),
    }


def events_import(*, path, errors_out=None, options: ImportOptions | None = None,
                  on_progress: Callable[[Progress], None] | None = None, method: str = "auto",
                  progress: Progress | None = None) -> EventImportResult:
    """Import an activity CSV/XLSX file. Raises ``UnusableFile`` (nothing written) for unusable files."""
    options = (options or ImportOptions()).resolved()
    report = ErrorReport(errors_out)
    progress = progress or Progress()
    with open_table(path, encoding=options.encoding, max_bytes=settings.IMPORT_MAX_FILE_BYTES,
                    max_rows=settings.IMPORT_MAX_ROWS) as table:
        mapping = map_columns(table.header, aliases=HEADER_TO_FIELD, required=REQUIRED)
        mapping.ignored.extend(mapping.attributes.values())  # events have no attributes
        mapping.attributes = {}
        progress.estimated_total = table.estimated_rows
        result = EventImportResult(dry_run=options.dry_run, format=table.format, encoding=table.encoding,
                                   delimiter=table.delimiter)
        stage = StagingTable(STAGE_TABLE, STAGE_COLUMNS, method=method)
        stage.create()
        try:
            records = parse_rows(table, mapping, _field_parsers(stage, options), report, progress, STAGE_INDEX,
                                 required=REQUIRED)
            started = time.perf_counter()
            stage.load(records, on_chunk=(lambda: on_progress(progress)) if on_progress else None)
            logger.debug("event import staged %d rows in %.2fs", stage.rows, time.perf_counter() - started)
            progress.phase = "writing"
            if on_progress:
                on_progress(progress)
            result.rows = progress.rows
            _apply(stage=stage, report=report, result=result, dry_run=options.dry_run)
        finally:
            stage.drop()
    result.invalid = report.lines - result.unknown_customer
    return result


def _apply(*, stage: StagingTable, report: ErrorReport, result: EventImportResult, dry_run: bool) -> None:
    from reactivation.services import activity_record_batch

    table = stage.name
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX {table}_line ON {table} (line)")
        cursor.execute(
            f"SELECT s.line, s.external_id FROM {table} s WHERE NOT EXISTS "
            f"(SELECT 1 FROM reactivation_customer c WHERE c.external_id = s.external_id) ORDER BY s.line"
        )
        while rows := cursor.fetchmany(2_000):
            for line, external_id in rows:
                report.add(line, [("external_id", external_id, "names no known customer (import the customers first)")])
                result.unknown_customer += 1
        result.created = stage.rows - result.unknown_customer
        if dry_run:
            return
        last_line = 0
        recorded = 0
        while True:
            cursor.execute(
                f"SELECT s.line, c.id, s.kind, s.occurred_at, s.amount, s.category, s.item FROM {table} s "
                f"JOIN reactivation_customer c ON c.external_id = s.external_id "
                f"WHERE s.line > %s ORDER BY s.line LIMIT {RECORD_BATCH}",
                [last_line],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            events = [
                ActivityEvent(customer_id=customer_id, kind=kind, occurred_at=_as_datetime(occurred_at),
                              amount=_as_decimal(amount), category=category or "", item_ref=item or "", source=SOURCE)
                for _, customer_id, kind, occurred_at, amount, category, item in rows
            ]
            recorded += len(activity_record_batch(events=events))
            last_line = rows[-1][0]
            if len(rows) < RECORD_BATCH:
                break
        result.created = recorded


def _as_datetime(value) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=dt_timezone.utc)  # SQLite: naive UTC text


def _as_decimal(value):
    if value is None or isinstance(value, Decimal):
        return value
    return Decimal(str(value)).quantize(parsing.CENT)
