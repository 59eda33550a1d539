"""Open an uploaded table (CSV or XLSX) and stream its rows, whatever its encoding or size.

Everything that makes a file unusable as a whole raises ``UnusableFile`` with a one-line
message a marketer can act on; the pipelines catch it before anything is written.
Memory stays flat: CSV goes through ``csv.reader`` over a decoding stream, XLSX through
openpyxl's read-only mode (one row at a time).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time

SAMPLE_BYTES = 64 * 1024
DELIMITERS = (",", ";", "\t")
_ZIP_MAGIC = b"PK\x03\x04"
_UTF8_BOM = codecs.BOM_UTF8
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

# Our encoding names as a marketer reads them in the preview.
ENCODING_LABELS = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8 with BOM", "gb18030": "GB18030 / GBK", "utf-16": "UTF-16"}


class UnusableFile(Exception):
    """The file cannot be imported at all; the message names the problem in one line."""


@dataclass
class Table:
    """An open table: its header, how it was read, and a one-shot iterator of its data rows.

    ``rows()`` yields ``(line_number, cells)``: the line is the physical line of the record's
    first line in a CSV (header = line 1), or the spreadsheet row number in an XLSX file.
    Wholly blank records are skipped. Short records are padded with blanks.
    """

    format: str
    header: list[str]
    encoding: str | None = None
    delimiter: str | None = None
    size_bytes: int = 0
    estimated_rows: int | None = None
    _rows: Iterator[tuple[int, list[str]]] | None = field(default=None, repr=False)
    _closers: list = field(default_factory=list, repr=False)
    bytes_read: callable = field(default=lambda: 0, repr=False)

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        return self._rows

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # closing must never hide the real outcome
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def encoding_label(self) -> str:
        if self.format == "xlsx":
            return "XLSX (no text encoding)"
        return ENCODING_LABELS.get(self.encoding, self.encoding or "")

    @property
    def delimiter_label(self) -> str:
        return {",": "comma", ";": "semicolon", "\t": "tab", None: "—"}.get(self.delimiter, repr(self.delimiter))


def detect_encoding(sample: bytes, *, at_eof: bool) -> str:
    """BOM first, then strict UTF-8, then GB18030 (a superset of GBK, as Excel saves in China)."""
    if sample.startswith(_UTF8_BOM):
        return "utf-8-sig"
    if sample.startswith(_UTF16_BOMS):
        return "utf-16"
    if b"\x00" in sample:
        raise UnusableFile("The file is not a CSV file: it contains binary data (NUL bytes).")
    for encoding in ("utf-8", "gb18030"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            # final only at end of file: the sample may stop inside a multi-byte character.
            decoder.decode(sample, final=at_eof)
        except UnicodeDecodeError:
            continue
        return encoding
    raise UnusableFile("The file cannot be decoded: it is neither UTF-8 nor GB18030/GBK text.")


def sniff_delimiter(first_line: str) -> str:
    """The most frequent of comma, semicolon and tab in the header line (comma on a tie)."""
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def open_table(path: str | os.PathLike, *, encoding: str = "auto", max_bytes: int | None = None,
               max_rows: int | None = None) -> Table:
    """Open ``path`` as CSV or XLSX (by content, not by name). Raises ``UnusableFile``."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise UnusableFile(f"The file cannot be opened: {exc.strerror}.") from None
    if max_bytes is not None and size > max_bytes:
        raise UnusableFile(
            f"The file is too large: {size:,} bytes, the limit is {max_bytes:,} bytes (IMPORT_MAX_FILE_BYTES)."
        )
    if size == 0:
        raise UnusableFile("The file is empty: it has no header line.")
    with open(path, "rb") as probe:
        sample = probe.read(SAMPLE_BYTES)
    if sample.startswith(_ZIP_MAGIC):
        return _open_xlsx(path, size=size, max_rows=max_rows)
    return _open_csv(path, sample=sample, size=size, encoding=encoding, max_rows=max_rows)


def _check_encoding_name(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise UnusableFile(f"Unknown encoding {encoding!r}.") from None


def _open_csv(path, *, sample, size, encoding, max_rows) -> Table:
    if not encoding or encoding == "auto":
        encoding = detect_encoding(sample, at_eof=size <= len(sample))
    else:
        encoding = _check_encoding_name(encoding)
        if encoding == "utf-8" and sample.startswith(_UTF8_BOM):
            encoding = "utf-8-sig"
    raw = open(path, "rb")
    text = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
    table = Table(format="csv", header=[], encoding=encoding, size_bytes=size)
    table._closers.append(text.close)
    try:
        first_line = text.readline()
    except UnicodeDecodeError:
        table.close()
        raise UnusableFile(f"The file cannot be decoded as {ENCODING_LABELS.get(encoding, encoding)}.") from None
    table.delimiter = sniff_delimiter(first_line)
    # Re-read from the start so quoted headers with embedded newlines still parse.
    text.seek(0)
    # strict: a quote that is never closed raises at the end of the file instead of silently
    # turning every following line into one cell (and "x"y raises instead of becoming xy).
    reader = csv.reader(text, delimiter=table.delimiter, strict=True)
    try:
        header = next(reader)
    except (csv.Error, UnicodeDecodeError) as exc:
        table.close()
        if "field larger than field limit" in str(exc):
            raise UnusableFile(_field_too_long(1)) from None
        raise UnusableFile(f"The file is not a readable CSV file: {exc}.") from None
    except StopIteration:
        table.close()
        raise UnusableFile("The file is empty: it has no header line.") from None
    if not any(cell.strip() for cell in header):
        table.close()
        raise UnusableFile("The first line is blank: it must name the columns.")
    table.header = header
    average_line = max(len(sample) / max(sample.count(b"\n"), 1), 1)
    table.estimated_rows = max(int(size / average_line) - 1, 0)
    table.bytes_read = raw.tell
    table._rows = _csv_rows(reader, len(header), encoding, max_rows)
    return table


def _csv_rows(reader, width: int, encoding: str, max_rows: int | None):
    count = 0
    previous_end = reader.line_num
    try:
        for cells in reader:
            line = previous_end + 1
            previous_end = reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            count += 1
            if max_rows is not None and count > max_rows:
                raise UnusableFile(f"The file has more than {max_rows:,} data rows (IMPORT_MAX_ROWS).")
            if len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            yield line, cells
    except UnicodeDecodeError:
        raise UnusableFile(
            f"The file cannot be decoded as {ENCODING_LABELS.get(encoding, encoding)} after line {previous_end}."
        ) from None
    except csv.Error as exc:
        # Refuse the whole file: once a quote is unbalanced the lines after it cannot be told
        # apart from the quoted text, so importing "the rest" could lose or merge rows.
        start, end = previous_end + 1, reader.line_num
        if "field larger than field limit" in str(exc):
            raise UnusableFile(_field_too_long(start)) from None
        if "unexpected end of data" in str(exc):
            raise UnusableFile(
                f"The file has an unbalanced quote: the quoted value that starts on line {start} is never closed "
                f"and would swallow every line after it. Fix the quote (a \" inside a value must be written \"\") "
                "and import again."
            ) from None
        where = f"line {start}" if start >= end else f"lines {start}-{end}"
        raise UnusableFile(
            f"The file has an unbalanced quote on {where} ({exc}): a quoted value must end with a quote followed by "
            f"the delimiter or the end of the line. Fix the quote (a \" inside a value must be written \"\") "
            "and import again."
        ) from None


def _field_too_long(line: int) -> str:
    # csv's own limit (131,072 characters): no column of ours holds anything near it, and a
    # value that long is a file whose quotes went wrong or not a table at all.
    return (
        f"A value starting on line {line:,} is longer than {csv.field_size_limit():,} characters, the most one "
        "value may hold. If a quote opened there is never closed, fix it (a \" inside a value must be "
        "written \"\") and import again."
    )


def xlsx_cell_text(value) -> str:
    """Spreadsheet cell -> the text a CSV export would hold (phones stored as numbers stay whole)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


def _open_xlsx(path, *, size, max_rows) -> Table:
    import zipfile

    from django.conf import settings
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    from core.xlsx_limits import XlsxTooLarge, xlsx_check

    try:
        # Measured before openpyxl parses anything: see core.xlsx_limits for why.
        xlsx_check(path, max_bytes=settings.IMPORT_XLSX_MAX_BYTES, max_rows=max_rows or settings.IMPORT_MAX_ROWS,
                   max_cells=settings.IMPORT_XLSX_MAX_CELLS)
    except XlsxTooLarge as exc:
        raise UnusableFile(str(exc)) from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnusableFile(f"The file is not a readable XLSX workbook ({exc.__class__.__name__}).") from None
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise UnusableFile(f"The file is not a readable XLSX workbook ({exc.__class__.__name__}).") from None
    table = Table(format="xlsx", header=[], size_bytes=size)
    table._closers.append(workbook.close)
    if not workbook.worksheets:
        table.close()
        raise UnusableFile("The workbook has no sheet.")
    sheet = workbook.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    try:
        header_values = next(rows)
    except StopIteration:
        table.close()
        raise UnusableFile("The first sheet is empty: it has no header row.") from None
    header = [xlsx_cell_text(v) for v in header_values]
    while header and not header[-1].strip():
        header.pop()
    if not header:
        table.close()
        raise UnusableFile("The first row of the sheet is blank: it must name the columns.")
    table.header = header
    try:
        table.estimated_rows = max((sheet.max_row or 1) - 1, 0)
    except Exception:
        table.estimated_rows = None
    table._rows = _xlsx_rows(rows, len(header), max_rows)
    return table


def _xlsx_rows(rows, width: int, max_rows: int | None):
    count = 0
    for index, values in enumerate(rows, start=2):
        cells = [xlsx_cell_text(v) for v in values[:width]]
        if not any(cell.strip() for cell in cells):
            continue
        count += 1
        if max_rows is not None and count > max_rows:
            raise UnusableFile(f"The file has more than {max_rows:,} data rows (IMPORT_MAX_ROWS).")
        if len(cells) < width:
            cells.extend([""] * (width - len(cells)))
        elif len(values) > width and any(xlsx_cell_text(v).strip() for v in values[width:]):
            # A value under no header: keep it visible instead of silently dropping it.
            cells.append(" ".join(xlsx_cell_text(v) for v in values[width:] if v is not None))
        yield index, cells
