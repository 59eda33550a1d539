"""core.xlsx_limits: a workbook is measured before openpyxl parses it."""

import io
import time

import pytest
from openpyxl import Workbook

from core.xlsx_limits import XlsxTooLarge, xlsx_check


def workbook_bytes(fill) -> bytes:
    book = Workbook()
    fill(book.active)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def shared_strings_bomb(sheet):
    # distinct strings (so the shared-strings table really grows), compressing to little
    for row in range(1, 2001):
        sheet.cell(row=row, column=1, value=f"{row:06d}" + "x" * 500)


def row_bomb(sheet):
    sheet["A1"] = "external_id"
    sheet.cell(row=1_048_576, column=1, value="last row of the sheet")


def column_bomb(sheet):
    sheet["A1"] = "external_id"
    sheet["XFD2"] = "last column of the sheet"


LIMITS = {"max_bytes": 500_000, "max_rows": 10_000, "max_cells": 100_000}


def test_an_ordinary_workbook_passes_and_is_measured():
    data = workbook_bytes(lambda sheet: [sheet.append(["a", "b", "c"]) for _ in range(10)])
    size = xlsx_check(io.BytesIO(data), **LIMITS)
    assert (size.rows, size.columns) == (10, 3)


def test_shared_strings_that_inflate_past_the_limit_are_refused_before_parsing():
    data = workbook_bytes(shared_strings_bomb)
    assert len(data) < LIMITS["max_bytes"] / 5  # small on disk...
    with pytest.raises(XlsxTooLarge, match="unzipped"):  # ...over a megabyte inflated
        xlsx_check(io.BytesIO(data), **LIMITS)


def test_a_single_cell_on_the_last_row_is_refused_quickly():
    data = workbook_bytes(row_bomb)
    started = time.monotonic()
    with pytest.raises(XlsxTooLarge, match="row 1,048,576"):
        xlsx_check(io.BytesIO(data), **LIMITS)
    assert time.monotonic() - started < 1


def test_a_sheet_spanning_too_many_cells_is_refused():
    # two rows, but padded to 16,384 columns each by a reader
    with pytest.raises(XlsxTooLarge, match="16,384 columns"):
        xlsx_check(io.BytesIO(workbook_bytes(column_bomb)), **{**LIMITS, "max_cells": 10_000})
