"""A paginator that does not COUNT(*) millions of rows on every admin changelist."""

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

# Below this many rows an exact count is cheap and nicer to read.
EXACT_COUNT_LIMIT = 100_000


class EstimatedCountPaginator(Paginator):
    """Uses PostgreSQL's planner estimate for unfiltered querysets of large tables.

    Filtered querysets and other databases fall back to the exact count; admin
    changelists pair this with ``show_full_result_count = False``.
    """

    @cached_property
    def count(self):
        queryset = self.object_list
        estimate = _estimated_table_rows(queryset)
        if estimate is not None and estimate > EXACT_COUNT_LIMIT:
            return estimate
        return super().count


def _estimated_table_rows(queryset):
    query = getattr(queryset, "query", None)
    if query is None or query.where or query.distinct or query.combinator:
        return None
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] and row[0] > 0 else None
