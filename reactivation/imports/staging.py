"""Staging tables: parsed rows go into a temporary table, then SQL does the rest set-based.

On PostgreSQL rows are streamed with COPY (psycopg 3 ``cursor.copy()``), one COPY statement
per chunk so progress can be recorded between chunks; the server ingests a chunk while Python
parses the next rows. Elsewhere (SQLite) rows go in with ``executemany`` in batches. Either way
the staging table is a session-local TEMP table: invisible to other connections, dropped at
the end, and never part of what a failed import leaves behind.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from django.db import connection, transaction

from core.csv_safety import neutralize

COPY_CHUNK_ROWS = 100_000
EXECUTEMANY_CHUNK_ROWS = 5_000


@dataclass(frozen=True)
class Column:
    name: str
    postgres_type: str
    sqlite_type: str


def is_postgres(conn=None) -> bool:
    return (conn or connection).vendor == "postgresql"


class StagingTable:
    """A TEMP table with ``columns``; ``method`` is "copy" (PostgreSQL only) or "executemany"."""

    def __init__(self, name: str, columns: list[Column], *, method: str = "auto", conn=None):
        self.conn = conn or connection
        self.name = name
        self.columns = columns
        self.postgres = is_postgres(self.conn)
        if method == "auto":
            method = "copy" if self.postgres else "executemany"
        if method == "copy" and not self.postgres:
            raise ValueError("COPY staging needs PostgreSQL.")
        self.method = method
        self.rows = 0

    # Values differ per backend: Django stores SQLite datetimes as naive UTC text.
    def adapt_datetime(self, value):
        if self.postgres:
            return value
        return str(value.replace(tzinfo=None))

    def adapt_bool(self, value):
        return value if self.postgres else int(value)

    def adapt_decimal(self, value):
        return value if self.postgres else str(value)

    def create(self) -> None:
        kind = "postgres_type" if self.postgres else "sqlite_type"
        columns = ", ".join(f"{c.name} {getattr(c, kind)}" for c in self.columns)
        with self.conn.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.name}")
            cursor.execute(f"CREATE TEMP TABLE {self.name} ({columns})")

    def drop(self) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {self.name}")
        except Exception:  # the connection may be broken after a failure; TEMP dies with it
            pass

    def load(self, records: Iterable[tuple], *, on_chunk: Callable[[], None] | None = None) -> int:
        """Stage every record (tuples in column order); returns how many were staged."""
        iterator = iter(records)
        chunk_rows = COPY_CHUNK_ROWS if self.method == "copy" else EXECUTEMANY_CHUNK_ROWS
        while True:
            # A chunk is its own transaction (a savepoint when the caller holds one), so a
            # failure half-way leaves the caller's transaction usable.
            with transaction.atomic(using=self.conn.alias):
                loaded = self._load_chunk(islice(iterator, chunk_rows))
            self.rows += loaded
            if on_chunk:
                on_chunk()
            if loaded < chunk_rows:
                break
        # Autovacuum never analyzes TEMP tables: without statistics the planner assumes a
        # tiny table and picks nested loops that take minutes on a million rows.
        with self.conn.cursor() as cursor:
            cursor.execute(f"ANALYZE {self.name}")
        return self.rows

    def _load_chunk(self, records: Iterator[tuple]) -> int:
        names = ", ".join(c.name for c in self.columns)
        count = 0
        with self.conn.cursor() as cursor:
            if self.method == "copy":
                # Binary COPY: psycopg's C dumpers on our side, no text parsing on the server's
                # (about 3.5x faster than text COPY for typed columns).
                with cursor.copy(f"COPY {self.name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types([c.postgres_type.split("(")[0] for c in self.columns])
                    for record in records:
                        copy.write_row(record)
                        count += 1
            else:
                batch = list(records)
                if batch:
                    placeholders = ", ".join(["%s"] * len(self.columns))
                    cursor.executemany(f"INSERT INTO {self.name} ({names}) VALUES ({placeholders})", batch)
                count = len(batch)
        return count


def fetch_in_batches(cursor, size: int = 2_000) -> Iterator[tuple]:
    while True:
        rows = cursor.fetchmany(size)
        if not rows:
            return
        yield from rows


class ErrorReport:
    """The errors CSV: one record per rejected line (line, column, value, reason).

    Every cell is neutralized against formula injection: marketers open this file in Excel.
    A line with several bad cells gets one record listing them all, so each rejected line
    appears exactly once. Warnings (a line imported with one value refused) use the same
    columns but do not count as rejected.
    """

    HEADER = ["line", "column", "value", "reason"]

    def __init__(self, stream):
        self.stream = stream
        self.writer = csv.writer(stream) if stream is not None else None
        if self.writer:
            self.writer.writerow(self.HEADER)
        self.lines = 0
        self.warnings = 0
        self.samples: list[list] = []

    def add(self, line: int, problems: list[tuple[str, str, str]]) -> None:
        """A rejected line: counted in ``lines`` (the import's ``invalid``)."""
        self.lines += 1
        self._write(line, problems)

    def warn(self, line: int, problems: list[tuple[str, str, str]]) -> None:
        """A line that was imported but with a value refused: listed, not counted as invalid."""
        self.warnings += 1
        self._write(line, problems)

    def _write(self, line: int, problems: list[tuple[str, str, str]]) -> None:
        columns = "; ".join(p[0] for p in problems)
        values = " | ".join(p[1] for p in problems)
        reasons = "; ".join(f"{p[0]} {p[2]}" if p[0] else p[2] for p in problems)
        record = [line, columns, values, reasons]
        if len(self.samples) < 20:
            self.samples.append(record)
        if self.writer:
            self.writer.writerow([neutralize(str(cell)) for cell in record])
