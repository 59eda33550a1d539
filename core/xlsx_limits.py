"""Check an XLSX workbook's size before openpyxl parses it.

An XLSX file is a zip of XML parts, and what it holds is only known once inflated: 312 KB of
repeated shared strings inflate to 128 MB, which openpyxl reads whole even in read-only mode.
The rows a sheet declares cost even when they are empty: openpyxl's read-only mode yields
every row up to the highest row number and pads every row to the widest column, so one cell
at XFD1048576 in a 144 KB file is a billion empty cells. So, before anything is parsed:

- the zip's declared uncompressed size (all parts together) must be within ``max_bytes``, and
  so must the bytes actually inflated while scanning (the declared sizes can lie);
- each worksheet is streamed through the decompressor once and its highest row number, its
  widest column and its cell count (highest row x widest column, which is what a reader
  yields) must be within ``max_rows`` and ``max_cells``.

The scan reads the XML as bytes with two regular expressions, in chunks: memory stays at one
chunk whatever the sheet's size.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass

CHUNK = 1024 * 1024
# <row r="12" ...> and <c r="AB12" ...>: the row number and the cell's column letters.
_ROW_NUMBER = re.compile(rb"<(?:\w+:)?row\b[^>]*?\br=\"(\d+)\"")
_CELL_COLUMN = re.compile(rb"<(?:\w+:)?c\b[^>]*?\br=\"([A-Z]+)\d+\"")
# A tag split across two chunks is found in the next one: keep this much of the previous chunk.
_OVERLAP = 256


class XlsxTooLarge(ValueError):
    """The workbook is over a limit; the message names it in words a marketer can act on."""


@dataclass(frozen=True)
class XlsxSize:
    uncompressed_bytes: int
    rows: int
    columns: int

    @property
    def cells(self) -> int:
        return self.rows * self.columns


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + (letter - 64)
    return number


def xlsx_check(file, *, max_bytes: int, max_rows: int, max_cells: int) -> XlsxSize:
    """Raise ``XlsxTooLarge`` when ``file`` (a path or a binary file object) is over a limit;
    otherwise return the largest sheet's size. A file that is not a zip is left to the parser
    to refuse (``zipfile.BadZipFile`` is not caught here)."""
    with zipfile.ZipFile(file) as archive:
        parts = archive.infolist()
        declared = sum(part.file_size for part in parts)
        if declared > max_bytes:
            raise XlsxTooLarge(
                f"The workbook holds {declared:,} bytes once unzipped; the limit is {max_bytes:,} bytes. "
                "Save it as CSV, or split it."
            )
        inflated, largest = 0, XlsxSize(declared, 0, 0)
        for part in parts:
            if not (part.filename.startswith("xl/worksheets/") and part.filename.endswith(".xml")):
                continue
            rows = columns = 0
            tail = b""
            with archive.open(part) as stream:
                while chunk := stream.read(CHUNK):
                    inflated += len(chunk)
                    if inflated > max_bytes:
                        raise XlsxTooLarge(
                            f"The workbook holds more than {max_bytes:,} bytes once unzipped. Save it as CSV, or split it."
                        )
                    window = tail + chunk
                    for match in _ROW_NUMBER.finditer(window):
                        rows = max(rows, int(match.group(1)))
                    for match in _CELL_COLUMN.finditer(window):
                        columns = max(columns, _column_number(match.group(1)))
                    if rows > max_rows + 1:  # + the header row
                        raise XlsxTooLarge(
                            f"The sheet reaches row {rows:,}; the limit is {max_rows:,} data rows. "
                            "Delete the empty rows below the data, or split the file."
                        )
                    if rows * columns > max_cells:
                        raise XlsxTooLarge(
                            f"The sheet spans {rows:,} rows by {columns:,} columns ({rows * columns:,} cells); "
                            f"the limit is {max_cells:,} cells. Delete empty rows and columns, or split the file."
                        )
                    tail = window[-_OVERLAP:]
            if rows * columns > largest.cells or rows > largest.rows:
                largest = XlsxSize(declared, rows, columns)
        return largest
