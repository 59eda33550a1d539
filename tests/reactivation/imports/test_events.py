import io
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reactivation.imports.customers import ImportOptions
from reactivation.imports.events import events_import
from reactivation.imports.reading import UnusableFile
from reactivation.models import ActivityEvent, Category, Customer
from tests.factories import CustomerFactory
from tests.reactivation.imports.conftest import read_errors

pytestmark = pytest.mark.django_db
UTC = timezone.utc


def run(path, **options):
    errors = io.StringIO()
    options.setdefault("time_zone", "Asia/Shanghai")
    result = events_import(path=path, errors_out=errors, options=ImportOptions(**options))
    return result, read_errors(errors)


def test_events_land_and_rollups_follow(csv_file):
    # given two known customers
    alice = CustomerFactory(external_id="A", order_count=1, total_spent=Decimal("10"))
    CustomerFactory(external_id="B")
    path = csv_file(
        "external_id,kind,occurred_at,amount,category,item\n"
        "A,Login,2024-03-01 09:00,,,\n"
        "A,order,2024/3/2 10:30,\"¥1,000.50\",美妆,SKU-1\n"
        "B,view_item,2024-03-03T00:00:00Z,,数码,SKU-9\n"
        "Z,login,2024-03-01,,,\n"
        "A,order,someday,5,,\n",
    )
    # when the activity file is imported
    result, errors = run(path)
    # then known rows become events, and the rollups move in the same import
    assert (result.created, result.invalid, result.unknown_customer, result.rows) == (3, 1, 1, 5)
    assert result.summary == "created=3 invalid=1 unknown_customer=1"
    order = ActivityEvent.objects.get(customer=alice, kind="order")
    assert (order.amount, order.category, order.item_ref, order.source) == (Decimal("1000.50"), "美妆", "SKU-1", "import")
    assert order.occurred_at == datetime(2024, 3, 2, 2, 30, tzinfo=UTC)
    assert ActivityEvent.objects.get(customer=alice, kind="login").occurred_at == datetime(2024, 3, 1, 1, 0, tzinfo=UTC)
    alice.refresh_from_db()
    assert alice.order_count == 2 and alice.total_spent == Decimal("1010.50")
    assert alice.last_order_at == datetime(2024, 3, 2, 2, 30, tzinfo=UTC)
    assert alice.last_seen_at == datetime(2024, 3, 2, 2, 30, tzinfo=UTC)
    # and unknown customers are reported, not dropped silently
    assert [(e["line"], e["column"], e["value"]) for e in errors] == [("6", "occurred_at", "someday"), ("5", "external_id", "Z")]
    assert "names no known customer" in errors[1]["reason"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("A,,2024-01-01,,,", "kind is missing"),
        ("A,login,,,,", "occurred_at is missing"),
        ("A,order,2024-01-01,-5,,", "amount is negative"),
        ("A,order,2024-01-01,lots,,", "not an amount of money"),
        ("A," + "k" * 33 + ",2024-01-01,,,", "longer than 32 characters"),
        ("A,login,2024-01-01,," + "c" * 101 + ",", "longer than 100 characters"),
    ],
)
def test_bad_event_rows(csv_file, line, reason):
    CustomerFactory(external_id="A")
    result, errors = run(csv_file("external_id,kind,occurred_at,amount,category,item\n" + line + "\n"))
    assert (result.created, result.invalid) == (0, 1)
    assert reason in errors[0]["reason"]
    assert not ActivityEvent.objects.exists()


def test_chinese_headers_and_dry_run(csv_file):
    CustomerFactory(external_id="A")
    path = csv_file("用户ID,事件,发生时间,金额,品类,商品\nA,order,2024/1/5 9:30,88,服饰,T恤\nQ,login,2024-01-05,,,\n",
                    encoding="gbk")
    dry, _ = run(path, dry_run=True)
    assert not ActivityEvent.objects.exists()
    real, _ = run(path)
    assert (dry.created, dry.unknown_customer) == (real.created, real.unknown_customer) == (1, 1)
    assert ActivityEvent.objects.get().item_ref == "T恤"


def test_missing_required_column_is_unusable(csv_file):
    CustomerFactory(external_id="A")
    with pytest.raises(UnusableFile, match="no occurred_at column"):
        run(csv_file("external_id,kind\nA,login\n"))
    assert not ActivityEvent.objects.exists()


def test_statement_count_does_not_grow_with_rows(csv_file):
    for n in range(3):
        CustomerFactory(external_id=f"C{n}")
    header = "external_id,kind,occurred_at,amount,category\n"

    def rows(count):
        return "".join(f"C{n % 3},order,2024-01-{n % 28 + 1:02d},{n}.5,cat{n % 2}\n" for n in range(count))

    with CaptureQueriesContext(connection) as small:
        run(csv_file(header + rows(5), name="small.csv"))
    with CaptureQueriesContext(connection) as large:
        result, _ = run(csv_file(header + rows(100), name="large.csv"))
    assert result.created == 100
    assert Customer.objects.get(external_id="C0").order_count == 2 + 34
    assert len(small) == len(large)


def test_an_event_category_named_by_its_label_or_key_becomes_the_key(csv_file):
    # given a category the shop's export names by its Chinese or English label
    Category.objects.create(key="beauty", label_zh_hans="美妆", label_en="Beauty")
    CustomerFactory(external_id="A")
    path = csv_file(
        "external_id,kind,occurred_at,amount,category,item\n"
        "A,order,2024-03-02 10:30,10,美妆,SKU-1\n"
        "A,view_item,2024-03-03 10:30,,BEAUTY,SKU-2\n"
        "A,view_item,2024-03-04 10:30,,户外,SKU-3\n",
    )
    # when the activity file is imported
    result, errors = run(path)
    # then a label or key, in any case, is stored as the key; other values as written
    assert (result.created, errors) == (3, [])
    assert list(ActivityEvent.objects.order_by("occurred_at").values_list("category", flat=True)) == [
        "beauty", "beauty", "户外",
    ]
