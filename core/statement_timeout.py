"""How long one block of queries may run on PostgreSQL.

``with statement_timeout(2000) as bounded:`` runs the block in a transaction (a savepoint
inside a caller's) whose statements PostgreSQL cancels after 2 s. ``SET LOCAL`` lasts until
the OUTERMOST transaction ends, so the value it replaced is put back when the block ends
normally; when the block raises, rolling back its savepoint undoes the setting by itself (and
a query in the aborted transaction could not restore it anyway). Elsewhere (SQLite, the
embedded development database) nothing is bounded and ``bounded`` is False.

``query_cancelled(exc)`` tells a statement PostgreSQL cancelled (SQLSTATE 57014) from any
other database error.
"""

from contextlib import contextmanager

from django.db import DatabaseError, connection, transaction

QUERY_CANCELED = "57014"


@contextmanager
def statement_timeout(milliseconds: int):
    if connection.vendor != "postgresql":
        yield False
        return
    with transaction.atomic():
        previous = _statement_timeout_set(f"{int(milliseconds)}ms")
        yield True
        _statement_timeout_set(previous)


def query_cancelled(exc: DatabaseError) -> bool:
    return getattr(getattr(exc, "__cause__", None), "sqlstate", None) == QUERY_CANCELED


def _statement_timeout_set(value: str) -> str:
    """SET LOCAL statement_timeout = value; returns the value it replaces."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        previous = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [value])
        return previous
