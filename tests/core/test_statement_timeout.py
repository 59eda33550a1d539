"""core.statement_timeout: a bound on one block's statements that leaves the caller's own."""

import pytest
from django.db import DatabaseError, connection, transaction

from core.statement_timeout import query_cancelled, statement_timeout

pytestmark = pytest.mark.django_db


def _current() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        return cursor.fetchone()[0]


def _sleep(seconds: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])


@pytest.mark.postgres
def test_the_block_is_bounded_and_the_callers_timeout_comes_back():
    # given a caller inside its own transaction, with its own timeout
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '7s'")
        # when a block runs under a bound of its own
        with statement_timeout(250) as bounded:
            inside = _current()
        # then the block saw its bound, and the caller has its own back
        assert (bounded, inside, _current()) == (True, "250ms", "7s")


@pytest.mark.postgres
def test_a_cancelled_statement_is_told_apart_and_leaves_the_caller_usable():
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '7s'")
        # when a statement in the block runs past its bound
        with pytest.raises(DatabaseError) as raised:
            with statement_timeout(50):
                _sleep(2)
        # then it is recognized as cancelled, and the caller's transaction and timeout survive
        assert query_cancelled(raised.value)
        assert _current() == "7s"


@pytest.mark.postgres
def test_another_database_error_is_not_a_cancellation():
    with pytest.raises(DatabaseError) as raised:
        with statement_timeout(1000):
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
    assert not query_cancelled(raised.value)


def test_only_postgresql_is_bounded():
    # SQLite (the embedded development database) has no statement timeout: the block just runs.
    with statement_timeout(50) as bounded:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert bounded is (connection.vendor == "postgresql")
