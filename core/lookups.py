"""``field__any=[...]``: membership in a list sent as ONE array parameter on PostgreSQL.

``pk__in=ids`` writes one placeholder per id. For the few hundred ids of a sending batch
that is a long statement that psycopg splits and quotes client-side and PostgreSQL parses
again, on every claim and every mark: about a sixth of an in-app message's cost.
``pk__any=ids`` writes ``"id" = ANY(%s::bigint[])`` with the list as one array value; on
other databases it is exactly ``__in``.
"""

from django.core.exceptions import EmptyResultSet
from django.db import models
from django.db.models.lookups import In


class Any(In):
    lookup_name = "any"

    def as_postgresql(self, compiler, connection):
        if not self.rhs_is_direct_value():  # a subquery: as __in
            return super().as_sql(compiler, connection)
        values = list(dict.fromkeys(value for value in self.rhs if value is not None))
        if not values:
            raise EmptyResultSet  # as __in: no query at all
        lhs_sql, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs_sql} = ANY(%s::bigint[])", (*lhs_params, values)


def register() -> None:
    # Integer columns only (AutoField and BigAutoField are IntegerFields): the array is cast to
    # bigint[], which compares with smallint, int and bigint columns.
    models.IntegerField.register_lookup(Any)
