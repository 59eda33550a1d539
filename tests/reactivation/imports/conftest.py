import io

import pytest


@pytest.fixture
def csv_file(tmp_path):
    """Write ``text`` to a file in ``encoding`` (optionally with a BOM) and return its path."""

    def make(text: str, *, encoding: str = "utf-8", name: str = "customers.csv", bom: bool = False,
             newline: str = "\n"):
        data = text.replace("\n", newline).encode(encoding)
        if bom:
            data = b"\xef\xbb\xbf" + data
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


@pytest.fixture
def xlsx_file(tmp_path):
    def make(rows, *, name: str = "customers.xlsx"):
        from openpyxl import Workbook

        workbook = Workbook()
        sheet = workbook.active
        for row in rows:
            sheet.append(row)
        path = tmp_path / name
        workbook.save(path)
        return path

    return make


def read_errors(stream: io.StringIO) -> list[dict]:
    import csv

    stream.seek(0)
    return list(csv.DictReader(stream))
