"""Customer exports, ad audiences and the django-import-export plumbing (core.exports)."""

import csv
import hashlib
import io
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import FieldError, PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from openpyxl import load_workbook

from core.exports import (
    AUDIENCE_COLUMNS,
    CSV,
    CUSTOMER_COLUMNS,
    FlexibleDateTimeWidget,
    ListWidget,
    audience_export_csv,
    audience_rows,
    csv_stream,
    customer_export_columns,
    customers_export_csv,
    customers_export_response,
    customers_export_xlsx,
    decode_upload,
    email_sha256,
    parse_datetime_flexible,
    phone_sha256,
)
from consent.models import Source
from consent.services import consent_grant, consent_withdraw
from core.masking import can_view_personal_data
from reactivation.models import Customer
from reactivation.selectors import segment_audience
from tests.factories import CustomerFactory, SegmentFactory, SuppressionFactory, UserFactory

pytestmark = pytest.mark.django_db


DANGEROUS = ["=", "+", "-", "@", "\t", "\r", "\n"]


@pytest.fixture
def marketer():
    user = UserFactory(username="marketer")
    user.groups.add(Group.objects.get(name="Marketer"))
    return user


@pytest.fixture
def compliance():
    user = UserFactory(username="compliance")
    user.groups.add(Group.objects.get(name="Compliance"))
    return user


def read_csv(chunks) -> list[list[str]]:
    text = "".join(chunks)
    assert text.startswith("\ufeff"), "Excel needs the UTF-8 BOM to read Chinese"
    return list(csv.reader(io.StringIO(text[1:])))


@pytest.mark.parametrize("first", DANGEROUS)
def test_csv_export_neutralizes_every_dangerous_first_character_in_any_column(compliance, first):
    # given a customer whose text columns all start with a formula character
    CustomerFactory(
        external_id=f"{first}ext", name=f"{first}HYPERLINK(\"http://evil\")", favourite_category=f"{first}cat",
        locale=f"{first}zh", timezone=f"{first}tz",
    )

    # when it is exported
    header, row = read_csv(customers_export_csv(queryset=Customer.objects.all(), user=compliance))

    # then every such cell starts with an apostrophe, whatever its column
    cells = dict(zip(header, row))
    for column in ("external_id", "name", "favourite_category", "locale", "timezone"):
        assert cells[column].startswith("'" + first), column


@pytest.mark.parametrize("first", DANGEROUS)
def test_xlsx_export_neutralizes_every_dangerous_first_character(compliance, first, tmp_path):
    CustomerFactory(external_id="X1", name=f"{first}cmd|' /C calc'!A0", favourite_category=f"{first}1+1")

    path = tmp_path / "out.xlsx"
    with open(path, "wb") as file:
        customers_export_xlsx(queryset=Customer.objects.all(), user=compliance, file=file)

    sheet = load_workbook(path).active
    rows = list(sheet.iter_rows(values_only=True))
    cells = dict(zip(rows[0], rows[1]))
    # XML reads a bare CR back as LF; what matters is the apostrophe in front of it.
    assert cells["name"] == f"'{first}cmd|' /C calc'!A0".replace("\r", "\n")
    assert cells["favourite_category"] == f"'{first}1+1".replace("\r", "\n")
    # no cell became a formula
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)


def test_safe_values_are_exported_unchanged(compliance):
    CustomerFactory(external_id="C1", name="张伟", email="zhang.wei@example.com", phone="+8613812345678",
                    total_spent=Decimal("1234.50"), order_count=3)

    header, row = read_csv(customers_export_csv(queryset=Customer.objects.all(), user=compliance))

    cells = dict(zip(header, row))
    assert cells["name"] == "张伟"
    assert cells["email"] == "zhang.wei@example.com"
    assert cells["total_spent"] == "1234.50"
    assert cells["order_count"] == "3"


def test_phone_columns_starting_with_plus_are_neutralized_too(compliance):
    # OWASP: any cell starting with + is a formula to Excel; E.164 phones do, so they are escaped.
    CustomerFactory(phone="+8613812345678")
    header, row = read_csv(customers_export_csv(queryset=Customer.objects.all(), user=compliance))
    assert dict(zip(header, row))["phone"] == "'+8613812345678"


def test_personal_data_columns_are_omitted_without_the_permission(marketer, compliance):
    CustomerFactory(email="secret@example.com", phone="+8613812345678")

    marketer_text = "".join(customers_export_csv(queryset=Customer.objects.all(), user=marketer))
    compliance_text = "".join(customers_export_csv(queryset=Customer.objects.all(), user=compliance))

    assert customer_export_columns(user=marketer) == [c for c in CUSTOMER_COLUMNS if c not in ("email", "phone")]
    assert "email" not in marketer_text.splitlines()[0] and "phone" not in marketer_text.splitlines()[0]
    assert "secret@example.com" not in marketer_text and "13812345678" not in marketer_text
    assert "secret@example.com" in compliance_text


def test_export_streams_with_the_same_number_of_queries_for_10_and_200_customers(compliance):
    customer_export_columns(user=compliance)  # load the user's permissions once (cached on the user)

    def queries_for(count):
        Customer.objects.all().delete()
        CustomerFactory.create_batch(count)
        with CaptureQueriesContext(connection) as captured:
            rows = read_csv(customers_export_csv(queryset=Customer.objects.all(), user=compliance))
        assert len(rows) == count + 1
        return len(captured)

    assert queries_for(10) == queries_for(200) == 1


def test_export_response_csv_is_streamed_and_xlsx_is_a_workbook(compliance):
    CustomerFactory.create_batch(3)

    csv_response = customers_export_response(queryset=Customer.objects.all(), user=compliance, file_format="csv", filename="c")
    xlsx_response = customers_export_response(queryset=Customer.objects.all(), user=compliance, file_format="xlsx", filename="c")

    assert csv_response.streaming and csv_response["Content-Type"].startswith("text/csv")
    body = b"".join(csv_response.streaming_content)
    assert body.startswith(b"\xef\xbb\xbf") and body.count(b"\r\n") == 4
    workbook = load_workbook(io.BytesIO(b"".join(xlsx_response.streaming_content)))
    assert workbook.active.max_row == 4
    with pytest.raises(ValueError):
        customers_export_response(queryset=Customer.objects.all(), user=compliance, file_format="pdf", filename="c")


def test_datetimes_export_as_iso_8601_with_offset(compliance, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    CustomerFactory(signup_at=datetime(2024, 3, 5, 6, 30, tzinfo=dt_timezone.utc))

    header, row = read_csv(customers_export_csv(queryset=Customer.objects.all(), user=compliance))

    assert dict(zip(header, row))["signup_at"] == "2024-03-05 14:30:00+08:00"


# Hashed ad audiences ---------------------------------------------------------------------------


def test_hashes_use_the_normalized_forms():
    assert email_sha256("  Zhang.Wei@Example.COM ") == hashlib.sha256(b"zhang.wei@example.com").hexdigest()
    assert phone_sha256("138 1234 5678") == hashlib.sha256(b"+8613812345678").hexdigest()
    assert phone_sha256("+86 138-1234-5678") == phone_sha256("13812345678")
    assert email_sha256("") == "" and email_sha256("not-an-email") == ""
    assert phone_sha256("") == "" and phone_sha256("12345") == ""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def granted(customer, *channels):
    for channel in channels:
        consent_grant(customer=customer, channel=channel, source=Source.SIGNUP)
    return customer


def audience(segment, user) -> list[list[str]]:
    return read_csv(audience_export_csv(customers=segment_audience(segment=segment), user=user))


def test_audience_export_has_only_hashes(compliance):
    # given a consented customer (no criteria: every customer is in the segment)
    segment = SegmentFactory()
    granted(CustomerFactory(external_id="A1", name="李娜", email="li.na@example.com", phone="+8613812345678"), "email", "sms")

    # when the audience is exported
    rows = audience(segment, compliance)

    # then the file holds the two hashes and nothing else about the customer
    assert rows == [list(AUDIENCE_COLUMNS), [sha("li.na@example.com"), sha("+8613812345678")]]
    text = "".join(audience_export_csv(customers=segment_audience(segment=segment), user=compliance))
    for personal in ("李娜", "A1", "li.na", "13812345678"):
        assert personal not in text


def test_audience_export_leaves_out_a_one_click_withdrawal(compliance):
    # given a customer who granted email, then unsubscribed by RFC 8058 one-click
    segment = SegmentFactory()
    customer = granted(CustomerFactory(phone=""), "email")
    consent_withdraw(customer=customer, channel="email", source=Source.ONE_CLICK)

    # when the audience is exported, then they are not in it
    assert audience(segment, compliance) == [list(AUDIENCE_COLUMNS)]


def test_audience_export_leaves_out_customers_who_never_consented(compliance):
    segment = SegmentFactory()
    CustomerFactory(email="silent@example.com", phone="+8613800000002")

    assert audience(segment, compliance) == [list(AUDIENCE_COLUMNS)]


def test_a_suppressed_email_is_left_out_while_a_consented_phone_stays(compliance):
    # given consent on both channels and the email suppressed; a second customer whose only
    # address is suppressed
    segment = SegmentFactory()
    granted(CustomerFactory(email="gone@example.com", phone="+8613812345678"), "email", "sms")
    granted(CustomerFactory(email="bounced@example.com", phone=""), "email", "sms")
    SuppressionFactory(channel="email", address="gone@example.com")
    SuppressionFactory(channel="email", address="bounced@example.com")

    # then the first keeps its phone hash only and the second has no row
    assert audience(segment, compliance)[1:] == [["", sha("+8613812345678")]]


def test_each_hash_follows_its_own_channel_consent(compliance):
    segment = SegmentFactory()
    granted(CustomerFactory(email="mail.only@example.com", phone="+8613800000003"), "email")
    granted(CustomerFactory(email="sms.only@example.com", phone="+8613800000004"), "sms")

    assert audience(segment, compliance)[1:] == [
        [sha("mail.only@example.com"), ""],
        ["", sha("+8613800000004")],
    ]


def test_granted_then_withdrawn_then_granted_again_is_exported(compliance):
    # given grant, one-click withdrawal, and a later grant again
    segment = SegmentFactory()
    customer = CustomerFactory(email="back@example.com", phone="")
    start = timezone.now() - timedelta(days=3)
    consent_grant(customer=customer, channel="email", source=Source.SIGNUP, at=start)
    consent_withdraw(customer=customer, channel="email", source=Source.ONE_CLICK, at=start + timedelta(days=1))
    consent_grant(customer=customer, channel="email", source=Source.PREFERENCE_CENTER, at=start + timedelta(days=2))

    # then the latest decision counts
    assert audience(segment, compliance)[1:] == [[sha("back@example.com"), ""]]


@pytest.mark.parametrize("first", DANGEROUS)
def test_audience_cells_are_still_neutralized(compliance, monkeypatch, first):
    # given a consented customer with formula text where it could be, and a hash function that
    # (hypothetically) returns a formula
    segment = SegmentFactory()
    granted(CustomerFactory(external_id=f"{first}ext", name=f"{first}HYPERLINK(\"http://evil\")"), "email", "sms")
    monkeypatch.setattr("core.exports.email_sha256", lambda value: f"{first}cmd|' /C calc'!A0")

    # when the audience is exported
    header, row = audience(segment, compliance)

    # then the formula cell is neutralized and the other is plain hex
    assert header == list(AUDIENCE_COLUMNS)
    assert row[0].startswith("'" + first)
    assert len(row[1]) == 64 and set(row[1]) <= set("0123456789abcdef")


def test_audience_export_takes_a_constant_number_of_queries(compliance, django_assert_num_queries):
    # given 30 customers in every consent situation
    segment = SegmentFactory()
    for index in range(10):
        granted(CustomerFactory(), "email", "sms")
        customer = granted(CustomerFactory(), "email")
        consent_withdraw(customer=customer, channel="email", source=Source.ONE_CLICK)
        SuppressionFactory(channel="email", address=granted(CustomerFactory(), "email", "sms").email)
    assert can_view_personal_data(compliance)  # the permission cache is warm

    # when the audience is exported in chunks of 4, then it is one SELECT streamed (SQLite and
    # PostgreSQL read a server-side or chunked cursor, never a query per row or per chunk)
    with django_assert_num_queries(1):
        rows = read_csv(csv_stream(
            header=list(AUDIENCE_COLUMNS),
            rows=audience_rows(customers=segment_audience(segment=segment), chunk_size=4),
        ))
    assert len(rows) == 1 + 10 + 10  # fully consented, and phone-only where the email is suppressed


def test_an_audience_without_the_consent_annotations_is_refused(compliance):
    # core knows no consent rule: a plain customer queryset must not export everyone
    CustomerFactory()

    with pytest.raises(FieldError):
        list(audience_export_csv(customers=Customer.objects.all(), user=compliance))


def test_audience_export_is_refused_without_personal_data_permission(marketer):
    with pytest.raises(PermissionDenied):
        audience_export_csv(customers=segment_audience(segment=SegmentFactory()), user=marketer)


def test_personal_data_permission_alone_decides_the_columns():
    user = UserFactory(username="plain")
    assert "email" not in customer_export_columns(user=user)
    user.user_permissions.add(Permission.objects.get(codename="view_personal_data"))
    user = type(user).objects.get(pk=user.pk)  # permissions are cached per instance
    assert "email" in customer_export_columns(user=user)


# django-import-export plumbing -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected_utc",
    [
        ("2024-03-05T14:30:00+08:00", datetime(2024, 3, 5, 6, 30)),
        ("2024-03-05T06:30:00Z", datetime(2024, 3, 5, 6, 30)),
        ("2024-03-05 14:30:15", datetime(2024, 3, 5, 6, 30, 15)),
        ("2024-03-05 14:30", datetime(2024, 3, 5, 6, 30)),
        ("2024/3/5", datetime(2024, 3, 4, 16, 0)),
        ("2024/3/5 9:05", datetime(2024, 3, 5, 1, 5)),
    ],
)
def test_dates_parse_in_every_accepted_form(settings, text, expected_utc):
    settings.TIME_ZONE = "Asia/Shanghai"  # naive values are local
    parsed = parse_datetime_flexible(text)
    assert parsed.astimezone(dt_timezone.utc).replace(tzinfo=None) == expected_utc


@pytest.mark.parametrize("text", ["05/03/2024", "yesterday", "2024-13-01", "2024-02-30 10:00"])
def test_unparseable_dates_raise_a_plain_error(text):
    with pytest.raises(ValueError):
        parse_datetime_flexible(text)


def test_datetime_widget_round_trips_with_offset(settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    widget = FlexibleDateTimeWidget()
    value = widget.clean("2024-03-05T14:30:00+08:00")
    assert widget.render(value) == "2024-03-05 14:30:00+08:00"
    assert widget.clean("") is None
    assert widget.render(value, force_native_type=True) == datetime(2024, 3, 5, 14, 30)


@pytest.mark.parametrize(
    "data, encoding",
    [
        ("name,城市\n张伟,北京\n".encode("utf-8"), "utf-8-sig"),
        ("\ufeffname,城市\n张伟,北京\n".encode("utf-8"), "utf-8-sig"),
        ("name,城市\n张伟,北京\n".encode("gbk"), "gb18030"),
        ("name,城市\n張偉,北京\n".encode("gb18030"), "gb18030"),
    ],
)
def test_uploads_decode_from_utf8_with_or_without_bom_and_gbk(data, encoding):
    text, detected = decode_upload(data)
    assert detected == encoding
    assert text.lstrip("\ufeff").startswith("name,城市")
    dataset = CSV().create_dataset(data)
    assert dataset.headers == ["name", "城市"]


def test_undecodable_upload_is_refused():
    with pytest.raises(ValueError, match="neither UTF-8 nor GB18030"):
        decode_upload(b"\x81\x30\xff\xfe\x00")


def test_csv_format_exports_utf8_with_bom():
    import tablib

    data = CSV().export_data(tablib.Dataset(["张伟"], headers=["name"]))
    assert data.startswith(b"\xef\xbb\xbf") and "张伟".encode() in data


def test_list_widget_accepts_commas_full_width_commas_and_json_and_checks_choices():
    widget = ListWidget(choices=["dormant", "at_risk"])
    assert widget.clean("dormant, at_risk") == ["dormant", "at_risk"]
    assert widget.clean("dormant，at_risk") == ["dormant", "at_risk"]
    assert widget.clean('["at_risk"]') == ["at_risk"]
    assert widget.clean("") == []
    with pytest.raises(ValueError, match="sleepy"):
        widget.clean("dormant, sleepy")
    with pytest.raises(ValueError):
        widget.clean("[broken")
    assert widget.render(["dormant", "at_risk"]) == "dormant, at_risk"
