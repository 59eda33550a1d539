"""Customer search by part of a name on PostgreSQL: pg_trgm and ONE GIN trigram index.

pg_trgm indexes three-character pieces of words, so a Chinese name of two characters ("崔洋")
and any one- or two-character term have no trigram to look up: the index would be read whole
(0.5 s at a million customers, slower than a plain scan). The indexed expression therefore
puts a space on both sides of every Han character, making each one a word of its own, which
pg_trgm pads into trigrams ("  洋", " 洋 "); Latin names stay whole words and keep their
ordinary trigrams. ``reactivation.selectors.name_search_q`` compiles to the same
expression for the column and the term, which is what lets the planner use the index.

Names rarely change, so this one index costs little on the often-updated customer table.
Elsewhere (SQLite) both operations do nothing and the search scans.

Built CONCURRENTLY (hence a non-atomic migration): on a million customers a plain CREATE INDEX
would block every write to the table for the seconds it takes.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

INDEX = "customer_name_search_idx"
# Must stay identical to reactivation.selectors.HAN_CHARACTER (the planner matches the
# index by its expression, constants included).
HAN_CHARACTER = "([\u3400-\u4dbf\u4e00-\u9fff])"


def index_create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("reactivation", "Customer")._meta.db_table)
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON {table} "
        f"USING gin (REGEXP_REPLACE(UPPER(name), '{HAN_CHARACTER}', ' \\1 ', 'g') gin_trgm_ops)"
    )


def index_drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("reactivation", "0004_segment_size")]

    operations = [
        TrigramExtension(),
        migrations.RunPython(index_create, index_drop),
    ]
