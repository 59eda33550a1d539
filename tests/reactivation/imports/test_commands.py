import csv

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from consent.models import ConsentEvent
from reactivation.models import ActivityEvent, Customer
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def test_import_customers_prints_the_summary_and_writes_the_errors_file(csv_file, tmp_path, capsys):
    path = csv_file("external_id,email\nC1,a@x.com\nC2,bad\n")
    errors = tmp_path / "out.csv"
    call_command("import_customers", str(path), "--errors-out", str(errors))
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == "created=1 updated=0 unchanged=0 invalid=1"
    assert "1 rows were not imported" in err
    with open(errors, encoding="utf-8-sig", newline="") as handle:
        assert list(csv.reader(handle)) == [["line", "column", "value", "reason"],
                                            ["3", "email", "bad", "email is not a valid email address"]]


def test_default_errors_file_sits_next_to_the_input(csv_file, capsys):
    path = csv_file("external_id,email\nC2,bad\n", name="march.csv")
    call_command("import_customers", str(path))
    assert (path.parent / "march.errors.csv").exists()


def test_options_reach_the_import(csv_file, capsys):
    path = csv_file("external_id,phone,signup_at,sms_consent\nC1,(650) 253-0000,2024-01-05 09:00,yes\n", encoding="gbk")
    call_command("import_customers", str(path), "--region", "US", "--timezone", "America/New_York",
                 "--notice-version", "2024-01", "--encoding", "gbk")
    customer = Customer.objects.get()
    assert customer.phone == "+16502530000"
    assert customer.signup_at.isoformat() == "2024-01-05T14:00:00+00:00"
    assert ConsentEvent.objects.get().notice_version == "2024-01"


def test_dry_run_writes_nothing(csv_file, capsys):
    path = csv_file("external_id,name\nC1,Li\n")
    call_command("import_customers", str(path), "--dry-run")
    assert capsys.readouterr().out.strip() == "created=1 updated=0 unchanged=0 invalid=0"
    assert not Customer.objects.exists()


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        (b"name\nLi\n", [], "no external_id column"),
        (b"external_id,name\n" + bytes([0x81, 0x20]) * 4 + b"\n", [], "cannot be decoded"),
        (b"external_id,email_consent\nC1,yes\n", [], "notice version"),
        (b"external_id\nC1\n", ["--timezone", "Mars/Base"], "Unknown time zone"),
        (b"external_id\nC1\n", ["--region", "XX"], "Unknown phone region"),
    ],
)
def test_unusable_files_exit_2_with_one_line_and_write_nothing(tmp_path, content, options, message):
    CustomerFactory(external_id="C0", name="Untouched")
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(CommandError) as raised:
        call_command("import_customers", str(path), *options)
    assert raised.value.returncode == 2
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert list(Customer.objects.values_list("external_id", "name")) == [("C0", "Untouched")]
    assert not (tmp_path / "bad.errors.csv").exists()


def test_too_large_file_exits_2(csv_file, settings):
    settings.IMPORT_MAX_FILE_BYTES = 5
    with pytest.raises(CommandError, match="too large") as raised:
        call_command("import_customers", str(csv_file("external_id\nC1\n")))
    assert raised.value.returncode == 2 and not Customer.objects.exists()


def test_import_events_summary(csv_file, capsys):
    CustomerFactory(external_id="A")
    path = csv_file("external_id,kind,occurred_at\nA,login,2024-01-01\nB,login,2024-01-01\nA,,2024-01-01\n")
    call_command("import_events", str(path))
    assert capsys.readouterr().out.strip() == "created=1 invalid=1 unknown_customer=1"
    assert ActivityEvent.objects.count() == 1


def test_import_events_unusable_exit_2(csv_file):
    with pytest.raises(CommandError, match="no kind column") as raised:
        call_command("import_events", str(csv_file("external_id,occurred_at\nA,2024-01-01\n")))
    assert raised.value.returncode == 2


@pytest.mark.parametrize("command", ["import_customers", "import_events"])
def test_an_unbalanced_quote_refuses_the_file_and_writes_nothing(csv_file, tmp_path, command):
    # given the stray quote of the review: A2 would be swallowed into A1's cell
    CustomerFactory(external_id="A1", name="Before")
    if command == "import_customers":
        path = csv_file('external_id,name\nA1,"unterminated\nA2,x\n')
    else:
        path = csv_file('external_id,kind,occurred_at,item\nA1,order,2024-01-05,"unterminated\n'
                        "A1,visit,2024-01-06,x\n", name="events.csv")
    errors = tmp_path / "out.csv"
    # when it is imported, then it exits 2 with a message naming the line, and nothing is written
    with pytest.raises(CommandError, match="unbalanced quote.*line 2") as refused:
        call_command(command, str(path), "--errors-out", str(errors))
    assert refused.value.returncode == 2
    assert list(Customer.objects.values_list("external_id", "name")) == [("A1", "Before")]
    assert not ActivityEvent.objects.exists() and not errors.exists()


def test_import_customers_reads_a_quoted_multi_line_address(csv_file):
    path = csv_file('external_id,name,address\nA1,Ann,"1 Main St,\nSpringfield"\nA2,Bob,x\n')
    call_command("import_customers", str(path))
    assert dict(Customer.objects.values_list("external_id", "attributes")) == {
        "A1": {"address": "1 Main St,\nSpringfield"}, "A2": {"address": "x"}}


def test_import_events_reads_a_quoted_multi_line_item(csv_file, capsys):
    CustomerFactory(external_id="A1")
    path = csv_file('external_id,kind,occurred_at,item\nA1,order,2024-01-05,"gift box,\nred"\nA1,visit,2024-01-06,\n',
                    name="events.csv")
    call_command("import_events", str(path))
    assert capsys.readouterr().out.strip().splitlines()[-1] == "created=2 invalid=0 unknown_customer=0"
    assert sorted(ActivityEvent.objects.values_list("item_ref", flat=True)) == ["", "gift box,\nred"]
