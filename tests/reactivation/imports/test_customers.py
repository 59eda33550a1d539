import io
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from consent.models import ConsentEvent, ConsentState, Suppression
from reactivation.imports import staging
from reactivation.imports.customers import ImportOptions, customers_import
from reactivation.imports.reading import UnusableFile
from reactivation.models import Category, Customer
from tests.factories import CustomerFactory
from tests.reactivation.imports.conftest import read_errors

pytestmark = pytest.mark.django_db
UTC = timezone.utc


def run(path, method="auto", **options):
    errors = io.StringIO()
    options.setdefault("time_zone", "Asia/Shanghai")
    options.setdefault("file_label", path.name)
    result = customers_import(path=path, errors_out=errors, options=ImportOptions(**options), method=method)
    return result, read_errors(errors)


def test_chinese_aliases_and_value_formats(csv_file):
    # given a GBK file as Excel in China saves it, with Chinese headers and an unknown column
    path = csv_file(
        "用户ID,姓名,邮箱,手机号,注册时间,最近登录,最近下单,订单数,消费金额,偏好品类,会员等级\n"
        "C1,张三,Zhang@Example.com,138 1234 5678,2024/1/5 9:30,2024-03-01T08:00:00+08:00,2024-02-01,\"1,204\","
        "\"￥1,234.50\",美妆,金卡\n",
        encoding="gbk",
    )
    # when it is imported
    result, errors = run(path)
    # then every value lands normalized
    assert (result.created, result.updated, result.unchanged, result.invalid, errors) == (1, 0, 0, 0, [])
    assert result.encoding == "gb18030"
    customer = Customer.objects.get(external_id="C1")
    assert customer.name == "张三"
    assert customer.email == "zhang@example.com"
    assert customer.phone == "+8613812345678"
    assert customer.signup_at == datetime(2024, 1, 5, 1, 30, tzinfo=UTC)
    assert customer.last_seen_at == datetime(2024, 3, 1, 0, 0, tzinfo=UTC)
    assert customer.last_order_at == datetime(2024, 1, 31, 16, 0, tzinfo=UTC)
    assert customer.order_count == 1204
    assert customer.total_spent == Decimal("1234.50")
    assert customer.favourite_category == "美妆"
    assert customer.attributes == {"会员等级": "金卡"}
    assert customer.lifecycle_state == "new"


@pytest.mark.parametrize("header", ["External_ID", " external_id ", "EXTERNAL ID", "会员ID", "用户id"])
def test_external_id_header_is_case_and_space_insensitive(csv_file, header):
    path = csv_file(f"{header},Name,E-Mail,Phone,Locale,Timezone,Favorite_Category\nC9,Li,l@x.com,13912345678,en,UTC,books\n")
    result, errors = run(path)
    assert result.created == 1 and not errors
    customer = Customer.objects.get(external_id="C9")
    assert (customer.name, customer.email, customer.locale, customer.timezone, customer.favourite_category) == (
        "Li", "l@x.com", "en", "UTC", "books"
    )



def test_a_favourite_category_named_by_its_label_or_key_becomes_the_key(csv_file):
    # given the demo's categories, and a file naming them as people write them
    Category.objects.create(key="beauty", label_zh_hans="美妆", label_en="Beauty")
    Category.objects.create(key="home", label_zh_hans="家居", label_en="Home & Living")
    path = csv_file("external_id,偏好品类\nC1,美妆\nC2,BEAUTY\nC3,home & living\nC4,Home\nC5,户外\nC6,\n")
    # when it is imported
    with CaptureQueriesContext(connection) as queries:
        result, errors = run(path)
    # then a key or a label, in any case, is stored as the key; an unknown value is kept as written
    assert (result.created, errors) == (6, [])
    assert dict(Customer.objects.values_list("external_id", "favourite_category")) == {
        "C1": "beauty", "C2": "beauty", "C3": "home", "C4": "home", "C5": "户外", "C6": "",
    }
    # and the categories were read once for the whole file
    assert sum('FROM "reactivation_category"' in q["sql"] for q in queries.captured_queries) == 1


def test_update_touches_only_columns_present_and_non_blank(csv_file):
    # given a known customer with every field filled
    customer = CustomerFactory(external_id="C1", name="Old", email="old@example.com", phone="+8613800000000",
                               order_count=5, attributes={"tier": "gold", "city": "上海"})
    path = csv_file("external_id,name,order_count,city\nC1,New,,北京\n")
    # when a file with only some columns (and a blank cell) is imported
    result, _ = run(path)
    # then only the non-blank values present in the file change; attributes merge
    customer.refresh_from_db()
    assert (result.created, result.updated, result.unchanged) == (0, 1, 0)
    assert customer.name == "New"
    assert customer.email == "old@example.com" and customer.phone == "+8613800000000"
    assert customer.order_count == 5
    assert customer.attributes == {"tier": "gold", "city": "北京"}


def test_reimport_reports_every_row_unchanged_and_writes_nothing(csv_file):
    path = csv_file(
        "external_id,name,email,phone,signup_at,order_count,total_spent,vip\n"
        "C1,张三,a@x.com,13812345678,2024-01-05 10:00,3,12.5,yes\n"
        "C2,李四,,,2024/1/5,0,\"1,000\",\n"
    )
    first, _ = run(path)
    stamps = dict(Customer.objects.values_list("external_id", "updated_at"))
    second, errors = run(path)
    assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
    assert (second.created, second.updated, second.unchanged, second.invalid) == (0, 0, 2, 0)
    assert dict(Customer.objects.values_list("external_id", "updated_at")) == stamps
    assert errors == []


def test_invalid_rows_are_skipped_and_explained(csv_file):
    path = csv_file(
        "external_id,name,email,phone,signup_at,order_count,total_spent,sms_consent\n"
        "C1,ok,ok@x.com,13812345678,2024-01-05,1,1,\n"
        ",no id,,,,,,\n"
        "C3,bad email,not-an-email,,,,,\n"
        "C4,bad phone,,12345,,,,\n"
        "C5,bad date,,,someday,,,\n"
        "C6,negative,,,,-2,,\n"
        "C7,money,,,,,abc,\n"
        "C8,consent,,,,,,maybe\n"
        f"C9,{'x' * 201},,,,,,\n"
        "C10,too,many,,,,,,extra\n",
        name="dirty.csv",
    )
    result, errors = run(path, notice_version="v1")
    assert (result.created, result.invalid, result.rows) == (1, 9, 10)
    assert Customer.objects.count() == 1
    by_line = {int(e["line"]): e for e in errors}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert by_line[3]["column"] == "external_id" and "is missing" in by_line[3]["reason"]
    assert by_line[4] == {"line": "4", "column": "email", "value": "not-an-email",
                          "reason": "email is not a valid email address"}
    assert "not a valid phone number" in by_line[5]["reason"]
    assert "is not a date" in by_line[6]["reason"]
    assert by_line[7]["value"] == "'-2" and "negative" in by_line[7]["reason"]  # neutralized for Excel
    assert "not an amount of money" in by_line[8]["reason"]
    assert "not a consent answer" in by_line[9]["reason"]
    assert "longer than 200 characters" in by_line[10]["reason"]
    assert "has 9 values but the header has 8 columns" in by_line[11]["reason"]


def test_several_bad_cells_make_one_errors_record(csv_file):
    path = csv_file("external_id,email,phone\nC1,nope,123\n")
    _, errors = run(path)
    assert errors == [{"line": "2", "column": "email; phone", "value": "nope | 123",
                       "reason": "email is not a valid email address; phone is not a valid phone number (no such number range)"}]


def test_repeated_external_id_later_line_wins(csv_file):
    path = csv_file("external_id,name\nC1,first\nC2,other\nC1,second\nC1,third\n")
    result, errors = run(path)
    assert Customer.objects.get(external_id="C1").name == "third"
    assert (result.created, result.invalid) == (2, 2)
    assert [(e["line"], e["reason"]) for e in errors] == [
        ("2", "external_id appears again on line 5; line 5 replaces this line"),
        ("4", "external_id appears again on line 5; line 5 replaces this line"),
    ]


def test_dry_run_reports_what_a_real_run_would_and_writes_nothing(csv_file):
    CustomerFactory(external_id="C1", name="Old")
    CustomerFactory(external_id="C2", name="Same", email="", phone="")
    path = csv_file("external_id,name,email_consent\nC1,New,yes\nC2,Same,\nC3,Fresh,no\nC4,,maybe\n")
    before = list(Customer.objects.order_by("pk").values())
    dry, dry_errors = run(path, notice_version="v1", dry_run=True)
    assert list(Customer.objects.order_by("pk").values()) == before
    assert not ConsentEvent.objects.exists()
    real, real_errors = run(path, notice_version="v1")
    assert (dry.created, dry.updated, dry.unchanged, dry.invalid) == (real.created, real.updated, real.unchanged, real.invalid)
    assert (real.created, real.updated, real.unchanged, real.invalid) == (1, 1, 1, 1)
    assert dry_errors == real_errors


def test_consent_columns_write_the_ledger_with_evidence(csv_file):
    existing = CustomerFactory(external_id="C2")
    path = csv_file("external_id,email,email_consent,sms_consent,in_app_consent\n"
                    "C1,a@x.com,是,不同意,\nC2,,true,,1\n", name="march.csv")
    result, _ = run(path, notice_version="privacy-2024-03")
    events = {(e.customer.external_id, e.channel, e.action): e for e in ConsentEvent.objects.select_related("customer")}
    assert set(events) == {("C1", "email", "grant"), ("C1", "sms", "withdraw"), ("C2", "email", "grant"),
                           ("C2", "in_app", "grant")}
    grant = events[("C1", "email", "grant")]
    assert (grant.source, grant.notice_version, grant.evidence) == ("import", "privacy-2024-03",
                                                                     {"file": "march.csv", "line": 2})
    assert events[("C2", "in_app", "grant")].evidence == {"file": "march.csv", "line": 3}
    assert ConsentState.objects.get(customer=existing, channel="email").status == "granted"
    # a consent-only change counts as an update of the known customer
    assert (result.created, result.updated, result.consent_events) == (1, 1, 4)
    # re-importing records nothing new: the ledger already says so
    again, _ = run(path, notice_version="privacy-2024-03")
    assert ConsentEvent.objects.count() == 4 and (again.unchanged, again.consent_events) == (2, 0)


def test_consent_grant_never_overrides_a_suppression(csv_file):
    Suppression.objects.create(channel="email", address="gone@x.com", reason="hard_bounce")
    path = csv_file("external_id,email,email_consent\nC1,gone@x.com,yes\n")
    run(path, notice_version="v1")
    event = ConsentEvent.objects.get()
    assert event.action == "grant" and event.evidence["suppressed"] is True
    assert Suppression.objects.filter(channel="email", address="gone@x.com").exists()


def test_consent_columns_without_notice_version_refuse_the_file(csv_file):
    path = csv_file("external_id,sms_consent\nC1,yes\n")
    with pytest.raises(UnusableFile, match="notice version"):
        run(path)
    assert not Customer.objects.exists() and not ConsentEvent.objects.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,email\nLi,l@x.com\n", "no external_id column"),
        ("external_id,email,邮箱\nC1,a@x.com,b@x.com\n", "both map to email"),
        ("external_id,vip,vip\nC1,1,2\n", "appears twice"),
    ],
)
def test_unusable_headers_write_nothing(csv_file, content, message):
    CustomerFactory(external_id="C1", name="Untouched")
    with pytest.raises(UnusableFile, match=message):
        run(csv_file(content))
    assert Customer.objects.get().name == "Untouched"


def test_too_many_rows_found_late_writes_nothing(csv_file, settings, monkeypatch):
    # given staging chunks smaller than the file, so rows are staged before the limit is hit
    monkeypatch.setattr(staging, "COPY_CHUNK_ROWS", 2)
    monkeypatch.setattr(staging, "EXECUTEMANY_CHUNK_ROWS", 2)
    settings.IMPORT_MAX_ROWS = 5
    path = csv_file("external_id\n" + "".join(f"C{n}\n" for n in range(6)))
    with pytest.raises(UnusableFile, match="more than 5 data rows"):
        run(path)
    assert not Customer.objects.exists()
    # and the connection is still usable afterwards (staging left nothing behind)
    settings.IMPORT_MAX_ROWS = 10
    assert run(path)[0].created == 6


def test_file_over_the_size_limit_writes_nothing(csv_file, settings):
    settings.IMPORT_MAX_FILE_BYTES = 20
    with pytest.raises(UnusableFile, match="too large"):
        run(csv_file("external_id,name\nC1,a fairly long name\n"))
    assert not Customer.objects.exists()


def test_xlsx_import(xlsx_file):
    path = xlsx_file([["用户ID", "手机", "注册时间", "累计消费"], ["C1", 13812345678, "2024/1/5 9:30", 99.5]])
    result, errors = run(path)
    customer = Customer.objects.get()
    assert (result.created, result.format, errors) == (1, "xlsx", [])
    assert (customer.phone, customer.total_spent) == ("+8613812345678", Decimal("99.50"))


def _rows(count: int) -> str:
    return "".join(f"C{n},Name {n},u{n}@x.com,1381234{n:04d},2024-01-05,{n},{n}.5,{'yes' if n % 2 else 'no'},v{n}\n"
                   for n in range(count))


@pytest.mark.parametrize(
    "consent",
    [
        False,
        # consent.services.consent_record_bulk uses bulk_create, which SQLite splits by its
        # variable limit; on PostgreSQL it is one INSERT per 2,000 decisions.
        pytest.param(True, marks=pytest.mark.postgres),
    ],
)
def test_statement_count_does_not_grow_with_rows(csv_file, consent):
    # given a small and a larger file of the same shape, and one customer already known
    header = "external_id,name,email,phone,signup_at,order_count,total_spent,email_consent,extra\n"
    if not consent:
        header = header.replace("email_consent", "loyalty")
    small, large = csv_file(header + _rows(10), name="small.csv"), csv_file(header + _rows(1000), name="large.csv")
    CustomerFactory(external_id="C1")
    # when both are imported
    with CaptureQueriesContext(connection) as small_queries:
        run(small, notice_version="v1")
    with CaptureQueriesContext(connection) as large_queries:
        result, _ = run(large, notice_version="v1")
    # then the import issued the same statements for both (staging is one COPY or executemany per chunk)
    assert result.created == 990 and result.updated + result.unchanged == 10
    assert len(small_queries) == len(large_queries)
    assert not any("WHERE external_id = " in q["sql"] or '"reactivation_customer"."external_id" =' in q["sql"]
                   for q in large_queries.captured_queries)


@pytest.mark.postgres
def test_copy_and_executemany_staging_agree_on_postgres(csv_file):
    # given the same dirty file and the same starting data
    path = csv_file(
        "external_id,name,email,phone,signup_at,order_count,total_spent,email_consent,tier\n"
        + _rows(50) + "C3,Dup,,,,,,,\nbad,,x,,,,,,\n",
    )

    def snapshot():
        return sorted(Customer.objects.values_list(
            "external_id", "name", "email", "phone", "signup_at", "order_count", "total_spent", "attributes"))

    outcomes = []
    for method in ("copy", "executemany"):
        CustomerFactory(external_id="C1", name="Before", attributes={"keep": "1"})
        result, errors = run(path, method=method, notice_version="v1")
        outcomes.append(((result.created, result.updated, result.unchanged, result.invalid), errors, snapshot(),
                         ConsentEvent.objects.count()))
        with connection.cursor() as cursor:  # the ledger refuses DELETE; TRUNCATE is the owner's reset
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # fire deferred FK checks before TRUNCATE
            cursor.execute("TRUNCATE reactivation_customer, consent_consentevent, consent_consentstate CASCADE")
    assert outcomes[0] == outcomes[1]



@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("用户ID", "external_id"), ("会员ID", "external_id"), ("姓名", "name"), ("邮箱", "email"), ("手机", "phone"),
        ("手机号", "phone"), ("注册时间", "signup_at"), ("最后登录时间", "last_seen_at"), ("最近登录", "last_seen_at"),
        ("最后下单时间", "last_order_at"), ("最近下单", "last_order_at"), ("订单数", "order_count"),
        ("累计消费", "total_spent"), ("消费金额", "total_spent"), ("偏好品类", "favourite_category"),
        ("邮件同意", "email_consent"), ("短信同意", "sms_consent"), (" EMAIL ", "email"), ("In_App_Consent", "in_app_consent"),
        ("Last Seen At", "last_seen_at"), ("ORDER-COUNT", "order_count"),
    ],
)
def test_every_header_alias(header, field):
    from reactivation.imports.customers import map_columns

    columns = ["external_id", header] if field != "external_id" else [header]
    mapping = map_columns(columns)
    assert mapping.fields[field] == len(columns) - 1
    assert mapping.attributes == {}


# A withdrawal the customer made themselves ----------------------------------------------------
def _withdrawn(external_id: str, channel: str, source: str):
    from consent.services import consent_grant, consent_withdraw

    customer = CustomerFactory(external_id=external_id, name="Before")
    consent_grant(customer=customer, channel=channel, source="signup", notice_version="v0",
                  at=datetime(2026, 1, 1, tzinfo=UTC))
    consent_withdraw(customer=customer, channel=channel, source=source, at=datetime(2026, 11, 20, 3, 0, tzinfo=UTC))
    return customer


@pytest.mark.parametrize("dry_run", [False, True])
def test_import_never_regrants_a_consent_the_customer_withdrew_themselves(csv_file, dry_run):
    # given a customer who unsubscribed by one-click, and the nightly CRM export still saying yes
    customer = _withdrawn("C1", "email", "one_click")
    events_before = ConsentEvent.objects.count()
    path = csv_file("external_id,name,email_consent,sms_consent\nC1,After,yes,yes\nC2,New,yes,\n")
    # when it is re-imported
    result, errors = run(path, notice_version="v1", dry_run=dry_run)
    # then the other columns and the other channel import, the row counts once, and the refusal is reported
    assert (result.created, result.updated, result.unchanged, result.invalid) == (1, 1, 0, 0)
    assert result.consent_refused == 1 and result.summary.endswith("invalid=0")
    assert errors == [{
        "line": "2", "column": "email_consent", "value": "yes",
        "reason": "email_consent is not granted: the customer withdrew email consent themselves "
                  "(one_click on 2026-11-20); an import cannot grant it again",
    }]
    state = ConsentState.objects.get(customer=customer, channel="email")
    assert (state.status, state.source) == ("withdrawn", "one_click")
    if dry_run:
        assert ConsentEvent.objects.count() == events_before
        return
    customer.refresh_from_db()
    assert customer.name == "After"
    assert ConsentState.objects.get(customer=customer, channel="sms").status == "granted"
    assert not ConsentEvent.objects.filter(customer=customer, channel="email", source="import").exists()
    # and importing it again still refuses, and still records nothing
    again, again_errors = run(path, notice_version="v1")
    assert (again.unchanged, again.consent_events, again.consent_refused, len(again_errors)) == (2, 0, 1, 1)


@pytest.mark.parametrize("source", ["unsubscribe_link", "preference_center", "sms_reply", "complaint", "bounce"])
def test_every_self_made_withdrawal_is_kept(csv_file, source):
    customer = _withdrawn("C1", "sms", source)
    path = csv_file("external_id,短信同意\nC1,是\n")
    result, errors = run(path, notice_version="v1")
    assert (result.unchanged, result.invalid, result.consent_events, result.consent_refused) == (1, 0, 0, 1)
    assert errors[0]["column"] == "短信同意" and f"withdrew sms consent themselves ({source} on" in errors[0]["reason"]
    assert ConsentState.objects.get(customer=customer, channel="sms").status == "withdrawn"


@pytest.mark.parametrize("source", ["admin", "import", "api"])
def test_import_grant_applies_over_a_business_withdrawal(csv_file, source):
    # given a withdrawal recorded by the business system (admin, a former import, the API)
    customer = _withdrawn("C1", "email", source)
    path = csv_file("external_id,email_consent\nC1,yes\n")
    # when an import says yes
    result, errors = run(path, notice_version="v2")
    # then the business system is the source of truth: the grant is recorded
    assert (result.updated, result.invalid, result.consent_events, result.consent_refused, errors) == (1, 0, 1, 0, [])
    state = ConsentState.objects.get(customer=customer, channel="email")
    assert (state.status, state.source, state.notice_version) == ("granted", "import", "v2")


def test_import_withdrawal_always_applies(csv_file):
    # given a customer who withdrew by one-click and later granted again in the preference center
    from consent.services import consent_grant

    customer = _withdrawn("C1", "email", "one_click")
    consent_grant(customer=customer, channel="email", source="preference_center", notice_version="v1")
    path = csv_file("external_id,email_consent\nC1,no\n")
    result, errors = run(path, notice_version="v1")
    assert (result.updated, result.consent_events, errors) == (1, 1, [])
    assert ConsentState.objects.get(customer=customer, channel="email").status == "withdrawn"


def test_refused_grants_are_found_in_a_fixed_number_of_statements(csv_file):
    # given a few and many customers who unsubscribed themselves
    for n in range(30):
        _withdrawn(f"C{n}", "email", "one_click")
    small = csv_file("external_id,email_consent\n" + "".join(f"C{n},yes\n" for n in range(3)), name="s.csv")
    large = csv_file("external_id,email_consent\n" + "".join(f"C{n},yes\n" for n in range(30)), name="l.csv")
    with CaptureQueriesContext(connection) as small_queries:
        small_result, _ = run(small, notice_version="v1")
    with CaptureQueriesContext(connection) as large_queries:
        large_result, errors = run(large, notice_version="v1")
    assert (small_result.consent_refused, large_result.consent_refused, len(errors)) == (3, 30, 30)
    assert len(small_queries) == len(large_queries)


@pytest.mark.postgres
@pytest.mark.parametrize("method", ["copy", "executemany"])
def test_self_made_withdrawal_is_kept_with_either_staging_on_postgres(csv_file, method):
    customer = _withdrawn("C1", "email", "one_click")
    path = csv_file("external_id,email_consent\nC1,yes\n")
    result, errors = run(path, method=method, notice_version="v1")
    assert (result.unchanged, result.consent_events, result.consent_refused, len(errors)) == (1, 0, 1, 1)
    assert ConsentState.objects.get(customer=customer, channel="email").status == "withdrawn"
