"""Exports of customers (CSV, XLSX, hashed ad audiences) and the django-import-export plumbing
shared by the small tables (dormancy rules, segments, suppressions).

Rules every export here follows:
- Every text cell is neutralized (core.csv_safety) whatever its column: a name, a category or
  an imported attribute can carry "=HYPERLINK(...)" as well as any formula column could.
- Email and phone leave the system only for staff with ``reactivation.view_personal_data``;
  for everyone else the columns are omitted, not masked (a masked column is useless in a file).
- Exports stream: rows come from ``iterator(chunk_size=...)`` and are written as they arrive,
  so millions of customers never sit in memory at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time
from decimal import Decimal

import tablib
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone
from import_export import resources, widgets
from import_export.formats import base_formats

from core.csv_safety import neutralize, neutralize_row
from core.masking import can_view_personal_data
from core.phones import normalize_email, normalize_phone

EXPORT_CHUNK_SIZE = 2000
# Rows per chunk handed to the WSGI server: one yield per row would make a million tiny writes.
CSV_ROWS_PER_WRITE = 500
UTF8_BOM = "\ufeff"

CUSTOMER_COLUMNS = (
    "external_id",
    "name",
    "email",
    "phone",
    "locale",
    "timezone",
    "lifecycle_state",
    "lifecycle_since",
    "signup_at",
    "last_seen_at",
    "last_order_at",
    "order_count",
    "total_spent",
    "favourite_category",
    "rfm_recency",
    "rfm_frequency",
    "rfm_monetary",
)
PERSONAL_DATA_COLUMNS = frozenset({"email", "phone"})
AUDIENCE_COLUMNS = ("email_sha256", "phone_sha256")

XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"


# Customer export ---------------------------------------------------------------------------


def customer_export_columns(*, user) -> list[str]:
    """The columns ``user`` may export: personal data only with the permission."""
    if can_view_personal_data(user):
        return list(CUSTOMER_COLUMNS)
    return [column for column in CUSTOMER_COLUMNS if column not in PERSONAL_DATA_COLUMNS]


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        # ISO 8601 with the offset, in the back office's time zone: the customer import reads it back.
        local = timezone.localtime(value) if timezone.is_aware(value) else value
        return local.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _cell_native(value):
    """XLSX keeps numbers and dates typed (Excel sorts and sums them); only text can be a formula."""
    if value is None:
        return None
    if isinstance(value, datetime):
        # openpyxl refuses aware datetimes; the sheet shows the back office's local time.
        return timezone.localtime(value).replace(tzinfo=None) if timezone.is_aware(value) else value
    if isinstance(value, (int, float, Decimal, date)):
        return value
    return _xlsx_text(str(value))


def _xlsx_text(value: str) -> str:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    # Control characters other than tab/CR/LF make openpyxl raise and the workbook unreadable.
    return ILLEGAL_CHARACTERS_RE.sub("\N{REPLACEMENT CHARACTER}", neutralize(value))


def customer_export_rows(*, queryset, columns: Iterable[str], chunk_size: int = EXPORT_CHUNK_SIZE) -> Iterator[tuple]:
    """Raw values of ``columns`` for every customer of ``queryset``, streamed in pk order."""
    columns = list(columns)
    rows = queryset.order_by("pk").values_list(*columns)
    return rows.iterator(chunk_size=chunk_size)


class _Echo:
    """A write-only file whose write() returns what it was given (csv.writer -> generator)."""

    def write(self, value):
        return value


def csv_stream(*, header: list[str], rows: Iterable[Iterable]) -> Iterator[str]:
    """CSV text with a UTF-8 BOM first (Excel then reads Chinese correctly), every cell
    stringified and neutralized."""
    writer = csv.writer(_Echo())
    yield UTF8_BOM + writer.writerow(neutralize_row(header))
    batch = []
    for row in rows:
        batch.append(writer.writerow([neutralize(_cell_text(value)) for value in row]))
        if len(batch) >= CSV_ROWS_PER_WRITE:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def xlsx_write(*, file, header: list[str], rows: Iterable[Iterable], title: str = "Export") -> None:
    """Write an XLSX workbook to ``file`` with openpyxl's write-only mode (rows go to disk as
    they are appended, so memory stays flat)."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31])
    sheet.append([_xlsx_text(str(name)) for name in header])
    for row in rows:
        sheet.append([_cell_native(value) for value in row])
    workbook.save(file)


def customers_export_csv(*, queryset, user) -> Iterator[str]:
    """The customers of ``queryset`` as streamed CSV text (see ``csv_stream``)."""
    columns = customer_export_columns(user=user)
    return csv_stream(header=columns, rows=customer_export_rows(queryset=queryset, columns=columns))


def customers_export_xlsx(*, queryset, user, file) -> None:
    columns = customer_export_columns(user=user)
    xlsx_write(file=file, header=columns, rows=customer_export_rows(queryset=queryset, columns=columns), title="Customers")


def customers_export_response(*, queryset, user, file_format: str, filename: str):
    """An HTTP response carrying the export; CSV streams, XLSX is built in a temporary file
    first (a zip cannot be streamed before it is complete)."""
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    if file_format == "csv":
        response = StreamingHttpResponse(
            (chunk.encode("utf-8") for chunk in customers_export_csv(queryset=queryset, user=user)),
            content_type=CSV_CONTENT_TYPE,
        )
        response["Content-Disposition"] = f'attachment; filename="{filename}-{stamp}.csv"'
        return response
    if file_format == "xlsx":
        # Deleted when the response closes it.
        spool = tempfile.TemporaryFile()
        customers_export_xlsx(queryset=queryset, user=user, file=spool)
        spool.seek(0)
        return FileResponse(spool, as_attachment=True, filename=f"{filename}-{stamp}.xlsx", content_type=XLSX_CONTENT_TYPE)
    raise ValueError(f"Unknown export format {file_format!r}; expected csv or xlsx.")


# Ad-platform audiences ----------------------------------------------------------------------


def email_sha256(value: str) -> str:
    """SHA-256 hex of the trimmed, lower-cased address ("" when there is no valid address).

    Ad platforms (Google Customer Match, Meta custom audiences) hash the same normal form, so
    only matching addresses meet; nothing else about the customer leaves the system.
    """
    try:
        normalized = normalize_email(value or "")
    except ValidationError:
        return ""
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest() if normalized else ""


def phone_sha256(value: str) -> str:
    """SHA-256 hex of the E.164 form ("+8613812345678"); "" when it is not a valid number."""
    try:
        normalized = normalize_phone(value or "")
    except ValidationError:
        return ""
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest() if normalized else ""


def audience_rows(*, customers, chunk_size: int = EXPORT_CHUNK_SIZE) -> Iterator[tuple[str, str]]:
    """``(email_sha256, phone_sha256)`` per customer of ``customers`` left with at least one hash.

    Core knows no consent rule, so the caller brings it: ``customers`` must carry the boolean
    annotations ``email_contactable`` and ``phone_contactable``, computed by the app that owns
    "may we contact this customer on this channel" (e.g. ``reactivation.selectors.segment_audience``).
    Without them the query raises FieldError, so no export can leave the rule out by omission. An
    address is hashed only where its flag is true; a customer with no hash left gives no row.
    """
    members = customers.order_by("pk").values_list("email", "phone", "email_contactable", "phone_contactable")
    for email, phone, email_contactable, phone_contactable in members.iterator(chunk_size=chunk_size):
        hashed = (email_sha256(email) if email_contactable else "", phone_sha256(phone) if phone_contactable else "")
        if any(hashed):
            yield hashed


def audience_export_csv(*, customers, user) -> Iterator[str]:
    """The hashed audience of ``customers`` (see ``audience_rows``) as CSV; refused without the
    personal-data permission (hashes of emails are still personal data: they identify a person
    to the ad platform)."""
    if not can_view_personal_data(user):
        raise PermissionDenied("Exporting an ad audience needs the permission to view personal data.")
    return csv_stream(header=list(AUDIENCE_COLUMNS), rows=audience_rows(customers=customers))


def audience_export_response(*, customers, user, filename: str):
    stream = audience_export_csv(customers=customers, user=user)
    response = StreamingHttpResponse((chunk.encode("utf-8") for chunk in stream), content_type=CSV_CONTENT_TYPE)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="{filename}-{stamp}.csv"'
    return response


# django-import-export plumbing for the small tables -------------------------------------------

DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
)


def parse_datetime_flexible(value, *, tz=None) -> datetime | None:
    """ISO 8601 with or without an offset, "YYYY-MM-DD HH:MM[:SS]", "YYYY/M/D[ H:MM[:SS]]".

    Naive values are in ``tz`` (default TIME_ZONE). Raises ValueError with a plain message.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):  # an XLSX date cell
        parsed = datetime.combine(value, time())
    else:
        text = str(value).strip()
        if not text:
            return None
        parsed = None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            for fmt in DATETIME_FORMATS:
                try:
                    parsed = datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
        if parsed is None:
            raise ValueError(
                f"{text!r} is not a date: use ISO 8601 (2024-03-05T14:30:00+08:00), "
                "2024-03-05 14:30[:00] or 2024/3/5."
            )
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, tz or timezone.get_default_timezone())
    return parsed


class FlexibleDateTimeWidget(widgets.DateTimeWidget):
    """django-import-export's DateTimeWidget does not parse ISO 8601 with an offset; this one
    accepts every date form the customer import accepts and exports ISO 8601 with the offset."""

    def clean(self, value, row=None, **kwargs):
        return parse_datetime_flexible(value)

    def render(self, value, obj=None, **kwargs):
        if not value or not isinstance(value, datetime):
            return ""
        local = timezone.localtime(value) if timezone.is_aware(value) else value
        if self.coerce_to_string is False or kwargs.get("force_native_type"):
            return local.replace(tzinfo=None)
        return local.isoformat(sep=" ", timespec="seconds")


def decode_upload(data: bytes) -> tuple[str, str]:
    """Decode an uploaded CSV: UTF-8 (a BOM is dropped), else GB18030 (a superset of GBK, as
    Excel saves CSV on Chinese Windows). Returns ``(text, encoding)``; raises ValueError."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise ValueError("The file is neither UTF-8 nor GB18030/GBK text.")


class ImportTooLarge(ValueError):
    """An upload to a small-table import is over ADMIN_IMPORT_MAX_BYTES or ADMIN_IMPORT_MAX_ROWS."""


def admin_import_rows_check(dataset) -> None:
    """django-import-export holds the whole file in memory and imports about a thousand rows a
    second, inside the web request: beyond ADMIN_IMPORT_MAX_ROWS the request would outlive the
    web worker's timeout."""
    from django.conf import settings

    if dataset.height > settings.ADMIN_IMPORT_MAX_ROWS:
        raise ImportTooLarge(
            f"The file has {dataset.height:,} rows; this import takes at most {settings.ADMIN_IMPORT_MAX_ROWS:,}. "
            "Split the file."
        )


class CSV(base_formats.CSV):
    """CSV that reads UTF-8 with or without BOM and GB18030/GBK, and writes UTF-8 with a BOM.

    django-import-export decodes text formats with one fixed ``from_encoding``; declaring the
    format binary hands us the raw bytes (upload and temporary storage alike) to decode here.
    """

    def is_binary(self):
        return True

    def get_read_mode(self):
        return "rb"

    def create_dataset(self, in_stream, **kwargs):
        if isinstance(in_stream, bytes):
            in_stream, _ = decode_upload(in_stream)
        dataset = tablib.import_set(in_stream, format="csv", **kwargs)
        admin_import_rows_check(dataset)
        return dataset

    def export_data(self, dataset, **kwargs):
        return (UTF8_BOM + dataset.export("csv", **kwargs)).encode("utf-8")


class XLSX(base_formats.XLSX):
    """openpyxl's XLSX; cells were already neutralized by ``SafeModelResource``. An upload is
    measured (core.xlsx_limits) before openpyxl parses it."""

    def create_dataset(self, in_stream):
        from django.conf import settings

        from core.xlsx_limits import xlsx_check

        max_rows = settings.ADMIN_IMPORT_MAX_ROWS
        xlsx_check(io.BytesIO(in_stream), max_bytes=settings.ADMIN_IMPORT_MAX_BYTES, max_rows=max_rows,
                   max_cells=max_rows * ADMIN_IMPORT_MAX_COLUMNS)
        dataset = super().create_dataset(in_stream)
        admin_import_rows_check(dataset)
        return dataset


# The small tables have a dozen columns; a sheet much wider is not one of their exports.
ADMIN_IMPORT_MAX_COLUMNS = 50


IMPORT_EXPORT_FORMATS = [CSV, XLSX]


class SafeModelResource(resources.ModelResource):
    """A ModelResource whose every exported cell (headers included) is neutralized and whose
    datetimes parse the formats our imports accept.

    django-import-export's own ``IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT`` only strips a leading
    "=" (leaving + - @ tab CR LF live), so it stays off and this resource does it instead.
    The admin passes ``user`` so subclasses can mask or drop personal data.
    """

    WIDGETS_MAP = {**resources.ModelResource.WIDGETS_MAP, "DateTimeField": FlexibleDateTimeWidget}

    def __init__(self, *, user=None, **kwargs):
        super().__init__(**kwargs)
        self.user = user

    def export_resource(self, instance, selected_fields=None, **kwargs):
        return neutralize_row(super().export_resource(instance, selected_fields=selected_fields, **kwargs))

    def get_export_headers(self, selected_fields=None):
        return neutralize_row(super().get_export_headers(selected_fields=selected_fields))


class ListWidget(widgets.Widget):
    """A JSON list cell: "a, b" (comma, full-width comma or semicolon) or a JSON array.

    ``choices`` (optional) are the allowed values; anything else is a row error naming it.
    Exports as "a, b" so a marketer can edit it in Excel.
    """

    SEPARATORS = ("，", ";", "；")

    def __init__(self, choices=None, **kwargs):
        super().__init__(**kwargs)
        self.choices = list(choices) if choices is not None else None

    def clean(self, value, row=None, **kwargs):
        if value is None:
            return []
        if isinstance(value, list):
            items = value
        else:
            text = str(value).strip()
            if text.startswith("["):
                import json

                try:
                    items = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"{text!r} is not a list: write values separated by commas.") from None
                if not isinstance(items, list):
                    raise ValueError(f"{text!r} is not a list.")
            else:
                for separator in self.SEPARATORS:
                    text = text.replace(separator, ",")
                items = text.split(",")
        cleaned = list(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
        if self.choices is not None:
            unknown = [item for item in cleaned if item not in self.choices]
            if unknown:
                raise ValueError(f"Unknown value(s) {', '.join(unknown)}; expected any of {', '.join(self.choices)}.")
        return cleaned

    def render(self, value, obj=None, **kwargs):
        return ", ".join(str(item) for item in value or [])
