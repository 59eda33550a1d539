"""Bulk customer import: stream, parse, stage, then upsert set-based.

The contract (see docs/import.md):
- upsert by external_id; a known id changes only the fields that have a value in the file
  (a missing column or a blank cell leaves the stored value as it is);
- a row identical to the stored customer (and not changing consent) counts as unchanged;
- an external_id repeated in the file: the last valid row wins, each earlier one is reported
  in the errors file as superseded and counted as invalid, so
  created + updated + unchanged + invalid == data lines;
- consent cells become ConsentEvents through ``consent.services.consent_record_bulk``, only
  when they change the customer's current consent, so re-importing a file records nothing new;
- a file unusable as a whole raises ``UnusableFile`` before anything is written.

Statements are fixed in number whatever the row count: staging (one COPY per 100,000 rows
on PostgreSQL, one executemany per 5,000 rows elsewhere), then a handful of set-based
statements, plus one consent_record_bulk per 2,000 consent changes. Once that transaction
commits, the lifecycle of every customer it created or changed is re-evaluated in one
``lifecycle_evaluate_customers`` call (a customer imported with a last order two years ago is
dormant at once, not "new" until the hourly run).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone as dt_timezone
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from consent.models import Channel, ConsentState, Purpose, Source
from reactivation.categories import category_keys_by_name
from reactivation.imports import parsing
from reactivation.imports.reading import Table, UnusableFile, open_table
from reactivation.imports.staging import Column, ErrorReport, StagingTable, fetch_in_batches
from reactivation.lifecycle import lifecycle_evaluate_customers

logger = logging.getLogger(__name__)
CONSENT_BATCH = 2_000
STAGE_TABLE = "import_customer_stage"
CONSENT_TABLE = "import_customer_consent"

def header_key(name: str) -> str:
    return "_".join(name.strip().casefold().replace("-", " ").split()) if name else ""


# Target field -> accepted header names (compared after strip + casefold, spaces -> "_").
ALIASES: dict[str, tuple[str, ...]] = {
    "external_id": ("external_id", "externalid", "用户id", "会员id"),
    "name": ("name", "姓名"),
    "email": ("email", "e_mail", "邮箱"),
    "phone": ("phone", "手机", "手机号"),
    "locale": ("locale", "语言"),
    "timezone": ("timezone", "time_zone", "时区"),
    "signup_at": ("signup_at", "注册时间"),
    "last_seen_at": ("last_seen_at", "最后登录时间", "最近登录"),
    "last_order_at": ("last_order_at", "最后下单时间", "最近下单"),
    "order_count": ("order_count", "订单数"),
    "total_spent": ("total_spent", "累计消费", "消费金额"),
    "favourite_category": ("favourite_category", "favorite_category", "偏好品类"),
    "email_consent": ("email_consent", "邮件同意"),
    "sms_consent": ("sms_consent", "短信同意"),
    "in_app_consent": ("in_app_consent", "应用内同意"),
}
HEADER_TO_FIELD = {header_key(alias): target for target, names in ALIASES.items() for alias in names}
CONSENT_FIELDS = {"email_consent": Channel.EMAIL, "sms_consent": Channel.SMS, "in_app_consent": Channel.IN_APP}
# Customer columns an import may set, in staging order (after line and external_id).
CUSTOMER_FIELDS = [
    "name", "email", "phone", "locale", "timezone", "signup_at", "last_seen_at", "last_order_at",
    "order_count", "total_spent", "favourite_category",
]
TEXT_FIELDS = {"name", "email", "phone", "locale", "timezone", "favourite_category"}

STAGE_COLUMNS = [
    Column("line", "integer", "integer"),
    Column("external_id", "text", "text"),
    Column("name", "text", "text"),
    Column("email", "text", "text"),
    Column("phone", "text", "text"),
    Column("locale", "text", "text"),
    Column("timezone", "text", "text"),
    Column("signup_at", "timestamptz", "text"),
    Column("last_seen_at", "timestamptz", "text"),
    Column("last_order_at", "timestamptz", "text"),
    Column("order_count", "integer", "integer"),
    Column("total_spent", "numeric(14,2)", "decimal"),
    Column("favourite_category", "text", "text"),
    Column("email_consent", "boolean", "integer"),
    Column("sms_consent", "boolean", "integer"),
    Column("in_app_consent", "boolean", "integer"),
    Column("attributes", "text", "text"),  # JSON text, cast to jsonb in SQL
]
STAGE_INDEX = {c.name: i for i, c in enumerate(STAGE_COLUMNS)}


@dataclass
class ColumnMapping:
    """Which file column feeds which field; unknown columns go to ``attributes``."""

    fields: dict[str, int]  # target field -> column index
    attributes: dict[str, int]  # attribute key (header as written) -> column index
    ignored: list[int]  # columns without a name
    header: list[str]

    @property
    def consent_fields(self) -> list[str]:
        return [f for f in CONSENT_FIELDS if f in self.fields]

    def describe(self) -> list[tuple[str, str]]:
        """(column as written, what it feeds) in file order, for the preview page."""
        targets = {index: f for f, index in self.fields.items()}
        described = []
        for index, name in enumerate(self.header):
            if index in targets:
                described.append((name, targets[index]))
            elif index in self.ignored:
                described.append((name, "ignored (no column name)"))
            else:
                described.append((name, f"attributes[{name.strip()!r}]"))
        return described


def map_columns(header: list[str], *, aliases=None, required=("external_id",)) -> ColumnMapping:
    lookup = aliases or HEADER_TO_FIELD
    fields: dict[str, int] = {}
    attributes: dict[str, int] = {}
    ignored: list[int] = []
    for index, name in enumerate(header):
        key = header_key(name)
        if not key:
            ignored.append(index)
            continue
        target = lookup.get(key)
        if target:
            if target in fields:
                raise UnusableFile(
                    f"Columns {header[fields[target]].strip()!r} and {name.strip()!r} both map to {target}."
                )
            fields[target] = index
        else:
            attribute = name.strip()
            if attribute in attributes:
                raise UnusableFile(f"Column {attribute!r} appears twice in the header.")
            attributes[attribute] = index
    missing = [r for r in required if r not in fields]
    if missing:
        raise UnusableFile(
            f"The file has no {missing[0]} column (header: {', '.join(h.strip() for h in header)[:200]})."
        )
    return ColumnMapping(fields=fields, attributes=attributes, ignored=ignored, header=header)


@dataclass
class ImportOptions:
    encoding: str = "auto"
    region: str = ""
    time_zone: str = ""
    notice_version: str = ""
    dry_run: bool = False
    file_label: str = ""  # the file name recorded in consent evidence

    def resolved(self) -> "ImportOptions":
        try:
            region = parsing.check_region(self.region or settings.DEFAULT_REGION)
            time_zone = self.time_zone or settings.TIME_ZONE
            parsing.zone(time_zone)
        except ValueError as exc:
            raise UnusableFile(str(exc)) from None
        return ImportOptions(
            encoding=self.encoding or "auto", region=region, time_zone=time_zone,
            notice_version=(self.notice_version or "").strip(), dry_run=self.dry_run, file_label=self.file_label,
        )


@dataclass
class CustomerImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: int = 0
    rows: int = 0
    superseded: int = 0
    consent_events: int = 0
    consent_refused: int = 0  # grants refused over a withdrawal the customer made (warnings, not invalid)
    dry_run: bool = False
    format: str = ""
    encoding: str | None = None
    delimiter: str | None = None

    @property
    def summary(self) -> str:
        # The issue fixes this line's format; refused consent grants are reported on stderr.
        return f"created={self.created} updated={self.updated} unchanged={self.unchanged} invalid={self.invalid}"


@dataclass
class Progress:
    """Shared counters the caller's progress callback can read while an import runs."""

    rows: int = 0
    estimated_total: int | None = None
    phase: str = "reading"
    extra: dict = field(default_factory=dict)


# Row parsing ----------------------------------------------------------------------------------


def category_parser() -> Callable[[str], str]:
    """A file's category column: a category's key or one of its labels, in any case, is that
    category's key; any other value is kept as written (a category may be described after the
    rows that name it arrive). The categories are read once, when the parser is made."""
    keys = category_keys_by_name()
    text = parsing.text_of_length(100)

    def category(raw):
        value = text(raw)
        return keys.get(value.casefold(), value)

    return category


def _field_parsers(stage: StagingTable, options: ImportOptions) -> dict[str, Callable[[str], object]]:
    tz = parsing.zone(options.time_zone)
    region = options.region
    adapt_dt, adapt_bool, adapt_dec = stage.adapt_datetime, stage.adapt_bool, stage.adapt_decimal
    parse_datetime, parse_consent = parsing.parse_datetime, parsing.parse_consent

    def when(raw):
        return adapt_dt(parse_datetime(raw, tz))

    def consent(raw):
        return adapt_bool(parse_consent(raw))

    category = category_parser()

    return {
        "external_id": parsing.text_of_length(100),
        "name": parsing.text_of_length(200),
        "email": parsing.parse_email,
        "phone": lambda raw: parsing.parse_phone(raw, region),
        "locale": parsing.text_of_length(16),
        "timezone": parsing.parse_timezone_name,
        "signup_at": when,
        "last_seen_at": when,
        "last_order_at": when,
        "order_count": parsing.parse_count,
        "total_spent": lambda raw: adapt_dec(parsing.parse_money(raw)),
        "favourite_category": category,
        "email_consent": consent,
        "sms_consent": consent,
        "in_app_consent": consent,
    }


def parse_rows(table: Table, mapping: ColumnMapping, parsers: dict, report: ErrorReport, progress: Progress,
               stage_index: dict[str, int], *, required=("external_id",)):
    """Yield one staging record per valid row; report every invalid row once."""
    width = len(mapping.header)
    plan = [(stage_index[f], index, mapping.header[index].strip() or f, parsers[f]) for f, index in mapping.fields.items()]
    required_slots = [(stage_index[f], f) for f in required]
    attribute_columns = list(mapping.attributes.items())
    attributes_slot = stage_index.get("attributes")
    size = len(stage_index)
    dumps = json.dumps
    for line, cells in table.rows():
        progress.rows += 1
        record = [None] * size
        record[0] = line
        problems = None
        if len(cells) > width:
            problems = [("", "", f"has {len(cells)} values but the header has {width} columns")]
        for slot, index, column, parser in plan:
            raw = cells[index].strip()
            if raw:
                try:
                    record[slot] = parser(raw)
                except parsing.InvalidValue as exc:
                    if problems is None:
                        problems = []
                    problems.append((column, raw, str(exc)))
        for slot, name in required_slots:
            if record[slot] is None and not (problems and any(p[0] == name for p in problems)):
                if problems is None:
                    problems = []
                problems.append((name, "", "is missing"))
        if problems:
            report.add(line, problems)
            continue
        if attribute_columns:
            # Blank cells are "no value": they never erase an attribute already stored.
            values = {key: cells[index].strip() for key, index in attribute_columns if cells[index].strip()}
            if values:
                record[attributes_slot] = dumps(values)
        yield record


# SQL ------------------------------------------------------------------------------------------
def _differs(column: str, postgres: bool) -> str:
    op = "IS DISTINCT FROM" if postgres else "IS NOT"
    return f"(s.{column} IS NOT NULL AND s.{column} {op} c.{column})"


def _attributes_differ(postgres: bool) -> str:
    if postgres:
        return "(s.attributes IS NOT NULL AND (c.attributes || s.attributes::jsonb) IS DISTINCT FROM c.attributes)"
    return "(s.attributes IS NOT NULL AND json_patch(json(c.attributes), s.attributes) IS NOT json(c.attributes))"


def _row_differs(fields: list[str], has_attributes: bool, postgres: bool) -> str:
    parts = [_differs(f, postgres) for f in fields]
    if has_attributes:
        parts.append(_attributes_differ(postgres))
    return "(" + " OR ".join(parts) + ")" if parts else "FALSE"


# Withdrawals the person made themselves. An import (the business system's export) never
# grants over one of these: the CRM often still says "yes" because it never heard of the
# unsubscribe. Withdrawals by import, admin, API or signup are the business system's own
# word, so a later import may grant again.
SELF_WITHDRAWAL_SOURCES = (
    Source.UNSUBSCRIBE_LINK, Source.ONE_CLICK, Source.PREFERENCE_CENTER, Source.SMS_REPLY,
    Source.COMPLAINT, Source.BOUNCE,
)
_SELF_SOURCES_SQL = ", ".join(f"'{source.value}'" for source in SELF_WITHDRAWAL_SOURCES)


def _self_withdrawn() -> str:
    """SQL condition on ``cs`` (a consent state row): a withdrawal an import grant must not undo."""
    return f"(cs.status = '{ConsentState.Status.WITHDRAWN}' AND cs.source IN ({_SELF_SOURCES_SQL}))"


def _consent_differs(consent_fields: list[str]) -> str:
    """True when a consent cell would change the customer's current consent.

    A grant over a withdrawal the customer made themselves changes nothing: it is refused
    (and reported by ``_report_refused_grants``), so it never counts as a change either.
    """
    parts = []
    for column in consent_fields:
        channel = CONSENT_FIELDS[column]
        parts.append(
            f"(s.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM consent_consentstate cs "
            f"WHERE cs.customer_id = c.id AND cs.channel = '{channel}' AND cs.purpose = '{Purpose.MARKETING}' "
            f"AND (cs.status = CASE WHEN s.{column} THEN '{ConsentState.Status.GRANTED}' "
            f"ELSE '{ConsentState.Status.WITHDRAWN}' END OR (s.{column} AND {_self_withdrawn()}))))"
        )
    return "(" + " OR ".join(parts) + ")" if parts else "FALSE"


def _report_refused_grants(cursor, report: ErrorReport, table: str, mapping: ColumnMapping,
                           options: ImportOptions) -> int:
    """One query for the whole file: list each grant refused over a self-made withdrawal.

    These are warnings in the errors file, not invalid rows: the row's other columns still
    import and the row still counts as created/updated/unchanged by them.
    """
    selects = []
    for column in mapping.consent_fields:
        channel = CONSENT_FIELDS[column]
        selects.append(
            f"SELECT s.line, '{column}', cs.source, cs.changed_at FROM {table} s "
            f"JOIN reactivation_customer c ON c.external_id = s.external_id "
            f"JOIN consent_consentstate cs ON cs.customer_id = c.id AND cs.channel = '{channel}' "
            f"AND cs.purpose = '{Purpose.MARKETING}' WHERE s.{column} AND {_self_withdrawn()}"
        )
    if not selects:
        return 0
    cursor.execute(" UNION ALL ".join(selects) + " ORDER BY 1, 2")
    tz = parsing.zone(options.time_zone)
    refused = 0
    pending_line, pending = None, []
    for line, column, source, changed_at in fetch_in_batches(cursor):
        if line != pending_line and pending:
            report.warn(pending_line, pending)
            pending = []
        pending_line = line
        header = mapping.header[mapping.fields[column]].strip() or column
        when = _as_aware(changed_at).astimezone(tz).date().isoformat()
        pending.append((header, "yes", f"is not granted: the customer withdrew {CONSENT_FIELDS[column].label.lower()} "
                        f"consent themselves ({source} on {when}); an import cannot grant it again"))
        refused += 1
    if pending:
        report.warn(pending_line, pending)
    return refused


def _as_aware(value):
    if isinstance(value, str):  # SQLite: naive UTC text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt_timezone.utc)


def _drop_superseded(cursor, report: ErrorReport, table: str) -> int:
    """Keep the last line of each repeated external_id; report each earlier line once."""
    duplicates = (
        f"SELECT s.line, s.external_id, d.keep FROM {table} s JOIN "
        f"(SELECT external_id, MAX(line) AS keep FROM {table} GROUP BY external_id HAVING COUNT(*) > 1) d "
        f"ON s.external_id = d.external_id AND s.line < d.keep"
    )
    cursor.execute(duplicates + " ORDER BY s.line")
    superseded = 0
    for line, external_id, keep in fetch_in_batches(cursor):
        report.add(line, [("external_id", external_id, f"appears again on line {keep}; line {keep} replaces this line")])
        superseded += 1
    if superseded:
        cursor.execute(f"DELETE FROM {table} WHERE line IN (SELECT line FROM ({duplicates}) x)")
    return superseded


def customers_import(*, path, errors_out=None, options: ImportOptions | None = None,
                     on_progress: Callable[[Progress], None] | None = None, method: str = "auto",
                     progress: Progress | None = None) -> CustomerImportResult:
    """Import a customer CSV/XLSX file. ``errors_out`` is a text stream (newline="") or None.

    Raises ``UnusableFile`` (nothing written) when the file cannot be imported as a whole.
    """
    options = (options or ImportOptions()).resolved()
    report = ErrorReport(errors_out)
    progress = progress or Progress()
    with open_table(path, encoding=options.encoding, max_bytes=settings.IMPORT_MAX_FILE_BYTES,
                    max_rows=settings.IMPORT_MAX_ROWS) as table:
        mapping = map_columns(table.header)
        if mapping.consent_fields and not options.notice_version:
            raise UnusableFile(
                f"The file has consent columns ({', '.join(mapping.consent_fields)}) but no notice version was "
                "given: say which privacy notice the customers agreed to (--notice-version)."
            )
        progress.estimated_total = table.estimated_rows
        result = CustomerImportResult(dry_run=options.dry_run, format=table.format, encoding=table.encoding,
                                      delimiter=table.delimiter)
        stage = StagingTable(STAGE_TABLE, STAGE_COLUMNS, method=method)
        stage.create()
        try:
            records = parse_rows(table, mapping, _field_parsers(stage, options), report, progress, STAGE_INDEX)
            started = time.perf_counter()
            stage.load(records, on_chunk=(lambda: on_progress(progress)) if on_progress else None)
            logger.debug("customer import staged %d rows in %.2fs", stage.rows, time.perf_counter() - started)
            progress.phase = "writing"
            if on_progress:
                on_progress(progress)
            result.rows = progress.rows
            _apply(stage=stage, mapping=mapping, options=options, report=report, result=result)
        finally:
            stage.drop()
            _drop_temp(CONSENT_TABLE)
    result.invalid = report.lines
    return result


def _drop_temp(name: str) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
    except Exception:
        pass


def _apply(*, stage: StagingTable, mapping: ColumnMapping, options: ImportOptions, report: ErrorReport,
           result: CustomerImportResult) -> None:
    postgres = stage.postgres
    fields = [f for f in CUSTOMER_FIELDS if f in mapping.fields]
    has_attributes = bool(mapping.attributes)
    consent_fields = mapping.consent_fields
    row_differs = _row_differs(fields, has_attributes, postgres)
    consent_differs = _consent_differs(consent_fields)
    table = stage.name
    timer = _PhaseTimer()
    with transaction.atomic(), connection.cursor() as cursor:
        result.superseded = _drop_superseded(cursor, report, table)
        timer.lap("deduplicate")
        cursor.execute(
            f"SELECT COUNT(*), COUNT(*) FILTER (WHERE c.id IS NULL), "
            f"COUNT(*) FILTER (WHERE c.id IS NOT NULL AND ({row_differs} OR {consent_differs})) "
            f"FROM {table} s LEFT JOIN reactivation_customer c ON c.external_id = s.external_id"
        )
        unique, result.created, result.updated = cursor.fetchone()
        result.unchanged = unique - result.created - result.updated
        timer.lap("count")
        if consent_fields:
            result.consent_refused = _report_refused_grants(cursor, report, table, mapping, options)
            timer.lap("refused consent")
        if options.dry_run:
            return
        now = timezone.now()
        now_param = now if postgres else str(now.replace(tzinfo=None))
        touched: list[int] = []  # customers created or changed: their lifecycle follows on commit
        if fields or has_attributes:
            assignments = [f"{f} = COALESCE(s.{f}, c.{f})" for f in fields]
            if has_attributes:
                merge = "c.attributes || s.attributes::jsonb" if postgres else "json_patch(json(c.attributes), s.attributes)"
                assignments.append(f"attributes = CASE WHEN s.attributes IS NULL THEN c.attributes ELSE {merge} END")
            assignments.append("updated_at = %s")
            cursor.execute(
                f"UPDATE reactivation_customer AS c SET {', '.join(assignments)} "
                f"FROM {table} s WHERE c.external_id = s.external_id AND {row_differs} RETURNING id",
                [now_param],
            )
            # A bare "id" (SQLite's RETURNING takes no alias): the stage has no such column.
            touched.extend(row[0] for row in fetch_in_batches(cursor))
            timer.lap("update")
        defaults = {f: ("''" if f in TEXT_FIELDS else "NULL") for f in CUSTOMER_FIELDS}
        defaults.update(order_count="0", total_spent="0")
        values = [f"COALESCE(s.{f}, {defaults[f]})" if f in mapping.fields else defaults[f] for f in CUSTOMER_FIELDS]
        attributes = "COALESCE(s.attributes::jsonb, '{}'::jsonb)" if postgres else "COALESCE(s.attributes, '{}')"
        cursor.execute(
            f"INSERT INTO reactivation_customer (external_id, {', '.join(CUSTOMER_FIELDS)}, attributes, "
            f"lifecycle_state, lifecycle_since, created_at, updated_at) "
            f"SELECT s.external_id, {', '.join(values)}, {attributes}, "
            f"'new', %s, %s, %s FROM {table} s "
            # No NOT EXISTS here: planned against an empty (just truncated) table it becomes a
            # nested loop re-scanning the rows this very INSERT adds, O(n²). The unique index
            # skips known ids for the price of one probe each.
            f"WHERE TRUE ON CONFLICT (external_id) DO NOTHING RETURNING id",  # WHERE: SQLite reads a bare ON as a join
            [now_param, now_param, now_param],
        )
        touched.extend(row[0] for row in fetch_in_batches(cursor))
        timer.lap("insert")
        if consent_fields:
            result.consent_events = _record_consent(cursor, table, consent_fields, options, postgres)
            timer.lap("consent")
        if touched:
            # After the commit, as for every other way activity arrives: the lifecycle lock is
            # not taken while this transaction holds the imported customers' rows. A failure
            # leaves the import in place and the hourly evaluation catches up.
            transaction.on_commit(lambda: _lifecycle_follow(touched), robust=True)
    logger.debug("customer import applied: %s", timer)


def _lifecycle_follow(customer_ids: list[int]) -> None:
    started = time.perf_counter()
    lifecycle_evaluate_customers(customer_ids=customer_ids)
    logger.debug("customer import lifecycle customers=%d in %.2fs", len(customer_ids), time.perf_counter() - started)


class _PhaseTimer:
    """Seconds per phase, logged so a slow import shows where its time went."""

    def __init__(self):
        self.started = self.last = time.perf_counter()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append((name, now - self.last))
        self.last = now

    def __str__(self):
        return " ".join(f"{name}={seconds:.2f}s" for name, seconds in self.laps)


def _record_consent(cursor, table: str, consent_fields: list[str], options: ImportOptions, postgres: bool) -> int:
    """Consent cells that change the current consent -> ConsentEvents via consent.services.

    A grant for a suppressed address is recorded (the customer did agree, and the ledger is
    evidence) but the Suppression stays and still blocks every send; the event's evidence says
    the address was suppressed at import time.
    """
    from consent.services import ConsentDecision, consent_record_bulk

    _drop_temp(CONSENT_TABLE)
    key = "bigserial PRIMARY KEY" if postgres else "integer PRIMARY KEY AUTOINCREMENT"
    bool_type = "boolean" if postgres else "integer"
    cursor.execute(
        f"CREATE TEMP TABLE {CONSENT_TABLE} (id {key}, customer_id bigint, line integer, channel text, "
        f"granted {bool_type}, suppressed {bool_type})"
    )
    selects = []
    for column in consent_fields:
        channel = CONSENT_FIELDS[column]
        address = {"email_consent": "c.email", "sms_consent": "c.phone"}.get(column)
        suppressed = (
            f"EXISTS (SELECT 1 FROM consent_suppression sp WHERE sp.channel = '{channel}' AND sp.address = {address})"
            if address else "FALSE"
        )
        selects.append(
            f"SELECT c.id, s.line, '{channel}', s.{column}, {suppressed} FROM {table} s "
            f"JOIN reactivation_customer c ON c.external_id = s.external_id WHERE {_consent_differs([column])}"
        )
    cursor.execute(
        f"INSERT INTO {CONSENT_TABLE} (customer_id, line, channel, granted, suppressed) "
        + " UNION ALL ".join(selects) + " ORDER BY 2, 3"
    )
    written = 0
    last_id = 0
    label = options.file_label
    while True:
        cursor.execute(
            f"SELECT id, customer_id, line, channel, granted, suppressed FROM {CONSENT_TABLE} "
            f"WHERE id > %s ORDER BY id LIMIT {CONSENT_BATCH}",
            [last_id],
        )
        rows = cursor.fetchall()
        if not rows:
            break
        decisions = []
        for row_id, customer_id, line, channel, granted, suppressed in rows:
            evidence = {"file": label, "line": line}
            if granted and suppressed:
                evidence["suppressed"] = True
            decisions.append(ConsentDecision(
                customer_id=customer_id, channel=channel, action="grant" if granted else "withdraw",
                source=Source.IMPORT, notice_version=options.notice_version, evidence=evidence,
            ))
            last_id = row_id
        written += consent_record_bulk(decisions=decisions)
        if len(rows) < CONSENT_BATCH:
            break
    return written
