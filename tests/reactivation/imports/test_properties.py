"""Property: whatever mix of valid and invalid rows a file has, valid rows land, each invalid row
appears exactly once in the errors file, and the counts add up to the number of data lines."""

import csv
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reactivation.imports.customers import ImportOptions, customers_import
from reactivation.models import Customer

VALID = {
    "name": st.sampled_from(["张三", "Li Lei", "O'Brien", "Zoë", "=cmd()", ""]),
    "email": st.sampled_from(["a@example.com", "Zhang.Wei@Example.CN", ""]),
    "phone": st.sampled_from(["13812345678", "+86 139 1234 5678", ""]),
    "signup_at": st.sampled_from(["2024-01-05", "2024/1/5 9:30", "2024-01-05T09:30:00+08:00", ""]),
    "order_count": st.sampled_from(["0", "12", "1,204", ""]),
    "total_spent": st.sampled_from(["0", "12.5", "¥1,234.50", ""]),
}
INVALID = {
    "email": st.sampled_from(["not-an-email", "a@b"]),
    "phone": st.sampled_from(["12345", "call me"]),
    "signup_at": st.sampled_from(["someday", "2024-13-01"]),
    "order_count": st.sampled_from(["-1", "many"]),
    "total_spent": st.sampled_from(["-3", "abc"]),
    "name": st.just("x" * 201),
}
COLUMNS = ["external_id", *VALID]


@st.composite
def data_rows(draw):
    count = draw(st.integers(min_value=1, max_value=25))
    rows = []
    for n in range(count):
        row = {column: draw(strategy) for column, strategy in VALID.items()}
        row["external_id"] = f"P{draw(st.integers(min_value=0, max_value=30))}"  # repeats happen
        broken = draw(st.sampled_from([None, None, "external_id", *INVALID]))
        if broken == "external_id":
            row["external_id"] = ""
        elif broken:
            row[broken] = draw(INVALID[broken])
        rows.append((row, broken is not None))
    return rows


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=data_rows())
def test_counts_add_up_and_every_bad_row_is_reported_once(rows):
    Customer.objects.all().delete()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prop.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row, _ in rows:
                writer.writerow([row[c] for c in COLUMNS])
        errors = io.StringIO()
        result = customers_import(path=path, errors_out=errors, options=ImportOptions(time_zone="UTC"))

    errors.seek(0)
    reported = [int(r["line"]) for r in csv.DictReader(errors)]
    invalid_lines = {index + 2 for index, (_, bad) in enumerate(rows) if bad}
    # the last valid line of each external_id wins; earlier valid lines are reported as superseded
    winners = {}
    for index, (row, bad) in enumerate(rows):
        if not bad:
            winners[row["external_id"]] = index + 2
    superseded = {index + 2 for index, (row, bad) in enumerate(rows) if not bad} - set(winners.values())

    assert len(reported) == len(set(reported))  # each line once
    assert set(reported) == invalid_lines | superseded
    assert result.created + result.updated + result.unchanged + result.invalid == len(rows)
    assert result.invalid == len(invalid_lines) + len(superseded)
    assert set(Customer.objects.values_list("external_id", flat=True)) == set(winners)
    for external_id, line in winners.items():
        row = rows[line - 2][0]
        if row["name"]:
            assert Customer.objects.get(external_id=external_id).name == row["name"]
