"""A customer import that brings activity (last order, last seen, order count) moves the lifecycle
of the customers it creates or changes once it commits, from the command and from the admin alike."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reactivation.models import Customer, LifecycleTransition
from tests.factories import CustomerFactory, DormancyRuleFactory
from tests.reactivation.imports.test_customers import run

pytestmark = pytest.mark.django_db

LIFECYCLE_INSERT = 'INSERT INTO "reactivation_lifecycletransition"'


@pytest.fixture
def shop_rule():
    return DormancyRuleFactory(name="No order for 90 days", signal="last_order", inactive_days=90, at_risk_days=45,
                               min_orders=1)


def _day(days_ago: int) -> str:
    return (timezone.now() - timedelta(days=days_ago)).strftime("%Y-%m-%d")


def _states() -> dict[str, str]:
    return dict(Customer.objects.values_list("external_id", "lifecycle_state"))


def test_new_customers_with_old_orders_are_dormant_once_the_import_commits(
        csv_file, shop_rule, django_capture_on_commit_callbacks):
    # given a file of customers who signed up two years ago, some with a last order long ago
    path = csv_file(
        "external_id,signup_at,last_order_at,last_seen_at,order_count\n"
        f"OLD,{_day(700)},{_day(400)},{_day(390)},3\n"
        f"SLIPPING,{_day(700)},{_day(60)},,2\n"
        f"RECENT,{_day(700)},{_day(3)},,5\n"
        f"JOINED,{_day(2)},,,\n"
    )
    # when it is imported and committed
    with django_capture_on_commit_callbacks(execute=True):
        result, errors = run(path)
    # then each customer's state follows from the imported activity, without the hourly run
    assert (result.created, errors) == (4, [])
    assert _states() == {"OLD": "dormant", "SLIPPING": "at_risk", "RECENT": "active", "JOINED": "new"}
    assert set(LifecycleTransition.objects.values_list("customer__external_id", "from_state", "to_state")) == {
        ("OLD", "new", "dormant"), ("SLIPPING", "new", "at_risk"), ("RECENT", "new", "active"),
    }


def test_an_update_that_brings_a_comeback_reactivates_the_customer(
        csv_file, shop_rule, django_capture_on_commit_callbacks):
    # given a dormant customer, and one left alone by the file
    long_ago = timezone.now() - timedelta(days=300)
    CustomerFactory(external_id="BACK", lifecycle_state="dormant", order_count=1, last_order_at=long_ago,
                    signup_at=long_ago)
    bystander = CustomerFactory(external_id="ELSEWHERE", lifecycle_state="dormant", order_count=1,
                                last_order_at=timezone.now() - timedelta(days=2), signup_at=long_ago)
    # when the shop's export says they ordered two days ago
    with django_capture_on_commit_callbacks(execute=True):
        result, _ = run(csv_file(f"external_id,last_order_at,order_count\nBACK,{_day(2)},2\n"))
    # then they are reactivated at once; a customer not in the file waits for the hourly run
    assert result.updated == 1
    assert _states() == {"BACK": "reactivated", "ELSEWHERE": "dormant"}
    bystander.refresh_from_db()
    assert bystander.lifecycle_state == "dormant"


@pytest.mark.parametrize("rows", [3, 300])
def test_the_lifecycle_is_evaluated_once_per_import_whatever_its_size(
        csv_file, shop_rule, rows, django_capture_on_commit_callbacks):
    # given one known customer and a file of `rows` customers with old orders
    CustomerFactory(external_id="K0", order_count=1, last_order_at=timezone.now() - timedelta(days=1))
    body = "".join(f"K{n},{_day(700)},{_day(400)},1\n" for n in range(rows))
    path = csv_file("external_id,signup_at,last_order_at,order_count\n" + body)
    # when it is imported
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        result, _ = run(path)
    # then one evaluation covered them all: created and updated customers alike
    assert (result.created, result.updated) == (rows - 1, 1)
    assert sum(LIFECYCLE_INSERT in q["sql"] for q in queries.captured_queries) == 1
    assert set(_states().values()) == {"dormant"}


def test_unchanged_customers_and_dry_runs_evaluate_nothing(csv_file, shop_rule, django_capture_on_commit_callbacks):
    path = csv_file(f"external_id,signup_at,last_order_at,order_count\nU1,{_day(700)},{_day(400)},1\n")
    with django_capture_on_commit_callbacks(execute=True):
        run(path)
    Customer.objects.update(lifecycle_state="active")  # as if decided elsewhere since

    for options in ({}, {"dry_run": True}):
        with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True) as hooks:
            result, _ = run(path, **options)
        assert result.unchanged == 1 and hooks == []
        assert not any(LIFECYCLE_INSERT in q["sql"] for q in queries.captured_queries)
    assert _states() == {"U1": "active"}


def test_the_lifecycle_waits_for_the_import_to_commit(csv_file, shop_rule, django_capture_on_commit_callbacks):
    path = csv_file(f"external_id,signup_at,last_order_at,order_count\nW1,{_day(700)},{_day(400)},1\n")
    with django_capture_on_commit_callbacks(execute=False) as hooks:
        run(path)
        assert _states() == {"W1": "new"}  # inside the import's transaction: not yet
    assert len(hooks) == 1


def test_the_import_customers_command_moves_the_lifecycle(csv_file, shop_rule, capsys,
                                                          django_capture_on_commit_callbacks):
    path = csv_file(f"external_id,最后下单时间,订单数\nCMD,{_day(400)},4\n")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("import_customers", str(path))
    assert capsys.readouterr().out.strip().splitlines()[-1] == "created=1 updated=0 unchanged=0 invalid=0"
    assert _states() == {"CMD": "dormant"}

