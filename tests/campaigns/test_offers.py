import ast
import inspect
import io
import logging
import re
import time
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns import offers
from campaigns.models import OfferGrant, Redemption
from reactivation.models import Category, Customer
from reactivation.tasks import lifecycle_evaluate_customers_task
from campaigns.offers import (
    CODE_ALPHABET,
    RedeemRefusal,
    RedemptionRefused,
    code_generate_bulk,
    code_normalize,
    grant_is_redeemable,
    grants_issue_for_run,
    redemption_record,
    redemptions_import_csv,
)
from tests.campaigns.offer_helpers import make_run
from tests.factories import CustomerFactory, OfferFactory, OfferGrantFactory
from tests.reactivation.factories_lifecycle import follow_up_messages, lifecycle_lock_held_elsewhere

pytestmark = pytest.mark.django_db

CODE_RE = re.compile(r"^[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}$")


# Codes --------------------------------------------------------------------------------------


def test_alphabet_has_no_ambiguous_characters():
    assert not set("0O1IL") & set(CODE_ALPHABET)
    assert len(set(CODE_ALPHABET)) == len(CODE_ALPHABET) == 31


def test_codes_have_the_format_and_are_unique_in_a_batch():
    codes = code_generate_bulk(count=5000)
    assert len(codes) == 5000 == len(set(codes))
    assert all(CODE_RE.match(code) for code in codes)
    # Every character of the alphabet shows up: nothing is stuck.
    assert set("".join(codes).replace("-", "")) == set(CODE_ALPHABET)


def test_codes_do_not_repeat_across_batches():
    first, second = set(code_generate_bulk(count=2000)), set(code_generate_bulk(count=2000))
    assert not first & second


def test_zero_codes_need_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert code_generate_bulk(count=0) == []


@pytest.mark.parametrize("count", [10, 1000])
def test_existing_codes_are_checked_in_one_query(count, django_assert_num_queries):
    with django_assert_num_queries(1):
        code_generate_bulk(count=count)


def test_a_code_that_exists_is_regenerated(caplog):
    # Given a grant holding the code the generator draws first
    taken = OfferGrantFactory(code="AAAA-BBBB-CCCC")
    draws = iter(["AAAA-BBBB-CCCC", "DDDD-EEEE-FFFF", "GGGG-HHHH-JJJJ"])
    with mock.patch.object(offers, "_random_code", side_effect=lambda: next(draws)), caplog.at_level(logging.WARNING):
        codes = code_generate_bulk(count=2)
    assert sorted(codes) == ["DDDD-EEEE-FFFF", "GGGG-HHHH-JJJJ"]
    assert taken.code not in codes
    assert "1 generated codes already existed" in caplog.text


def test_a_duplicate_within_the_batch_is_drawn_again():
    draws = iter(["AAAA-BBBB-CCCC", "AAAA-BBBB-CCCC", "DDDD-EEEE-FFFF"])
    with mock.patch.object(offers, "_random_code", side_effect=lambda: next(draws)):
        assert sorted(code_generate_bulk(count=2)) == ["AAAA-BBBB-CCCC", "DDDD-EEEE-FFFF"]


def test_codes_come_from_the_os_random_source():
    with mock.patch.object(offers.secrets, "randbelow", return_value=0) as randbelow:
        assert offers._random_code() == "2222-2222-2222"
    randbelow.assert_called_once_with(31**12)


@pytest.mark.parametrize(("typed", "stored"), [("k7qm3xpa9rtw", "K7QM-3XPA-9RTW"), (" K7QM 3XPA-9rtw ", "K7QM-3XPA-9RTW"),
                                                ("short", "SHORT")])
def test_typed_codes_are_normalized(typed, stored):
    assert code_normalize(typed) == stored


# Grants -------------------------------------------------------------------------------------


def test_grants_are_issued_within_the_budget():
    # Given a coupon with a budget of 3 and a run with 5 recipients
    offer = OfferFactory(budget=3, valid_days=10)
    customers = CustomerFactory.create_batch(5)
    run, deliveries = make_run(offer=offer, customers=customers)
    now = timezone.now()
    # When grants are issued
    grants = grants_issue_for_run(run=run, deliveries=deliveries, now=now)
    # Then the first three deliveries get one each, the rest nothing
    assert sorted(grants) == sorted(d.pk for d in deliveries[:3])
    rows = OfferGrant.objects.filter(offer=offer)
    assert rows.count() == 3
    for grant in rows:
        assert CODE_RE.match(grant.code)
        assert grant.run_id == run.pk and grant.campaign_id == run.campaign_id
        assert grant.delivery.customer_id == grant.customer_id
        assert grant.expires_at == now + timedelta(days=10)
    offer.refresh_from_db()
    assert offer.granted_count == 3


def test_issuing_again_keeps_the_same_grants():
    offer = OfferFactory(budget=10)
    run, deliveries = make_run(offer=offer, customers=CustomerFactory.create_batch(3))
    first = grants_issue_for_run(run=run, deliveries=deliveries)
    second = grants_issue_for_run(run=run, deliveries=deliveries)
    assert {k: g.code for k, g in first.items()} == {k: g.code for k, g in second.items()}
    assert OfferGrant.objects.count() == 3
    offer.refresh_from_db()
    assert offer.granted_count == 3


def test_exhausted_budget_grants_nothing_more():
    offer = OfferFactory(budget=2)
    run1, d1 = make_run(offer=offer, customers=CustomerFactory.create_batch(2))
    grants_issue_for_run(run=run1, deliveries=d1)
    run2, d2 = make_run(offer=offer, customers=CustomerFactory.create_batch(2), campaign=run1.campaign)
    assert grants_issue_for_run(run=run2, deliveries=d2) == {}
    offer.refresh_from_db()
    assert offer.granted_count == 2


def test_unlimited_budget_counts_the_grants():
    offer = OfferFactory(budget=None)
    run, deliveries = make_run(offer=offer, customers=CustomerFactory.create_batch(4))
    assert len(grants_issue_for_run(run=run, deliveries=deliveries)) == 4
    offer.refresh_from_db()
    assert offer.granted_count == 4


def test_non_coupon_grants_have_no_code_and_points_expire_with_the_multiplier():
    offer = OfferFactory(kind="points", discount_type="", discount_value=None, valid_days=None,
                         points_multiplier=Decimal("2"), multiplier_days=7)
    run, deliveries = make_run(offer=offer, customers=CustomerFactory.create_batch(2))
    now = timezone.now()
    grants = grants_issue_for_run(run=run, deliveries=deliveries, now=now)
    assert [g.code for g in grants.values()] == [None, None]
    assert {g.expires_at for g in grants.values()} == {now + timedelta(days=7)}


def test_once_per_customer_never_grants_twice():
    # Given a once-per-customer offer already granted (and redeemed) to one customer
    offer = OfferFactory(usage_mode="once_per_customer")
    holder, newcomer = CustomerFactory(), CustomerFactory()
    run1, d1 = make_run(offer=offer, customers=[holder])
    grants_issue_for_run(run=run1, deliveries=d1)
    # When a later run targets both
    run2, d2 = make_run(offer=offer, customers=[holder, newcomer], campaign=run1.campaign)
    grants = grants_issue_for_run(run=run2, deliveries=d2)
    # Then only the newcomer gets it, and the budget counts only that grant
    assert [g.customer_id for g in grants.values()] == [newcomer.pk]
    assert OfferGrant.objects.filter(offer=offer, customer=holder).count() == 1
    offer.refresh_from_db()
    assert offer.granted_count == 2


def test_single_use_offer_may_be_granted_again_in_a_later_run():
    offer = OfferFactory(usage_mode="single_use")
    customer = CustomerFactory()
    run1, d1 = make_run(offer=offer, customers=[customer])
    run2, d2 = make_run(offer=offer, customers=[customer], campaign=run1.campaign)
    grants_issue_for_run(run=run1, deliveries=d1)
    grants_issue_for_run(run=run2, deliveries=d2)
    assert OfferGrant.objects.filter(offer=offer, customer=customer).count() == 2


def test_inactive_offer_and_campaign_without_offer_grant_nothing():
    offer = OfferFactory(is_active=False)
    run, deliveries = make_run(offer=offer, customers=CustomerFactory.create_batch(2))
    assert grants_issue_for_run(run=run, deliveries=deliveries) == {}
    run.campaign.offer = None
    run.campaign.save()
    assert grants_issue_for_run(run=run, deliveries=deliveries) == {}
    assert not OfferGrant.objects.exists()


@pytest.mark.parametrize("usage_mode", ["single_use", "once_per_customer"])
def test_issuing_is_set_based(usage_mode):
    # The same number of queries for 5 and 60 deliveries (60 fits one SQLite bulk_create batch).
    counts = []
    for size in (5, 60):
        offer = OfferFactory(budget=1000, usage_mode=usage_mode)
        run, deliveries = make_run(offer=offer, customers=CustomerFactory.create_batch(size))
        with CaptureQueriesContext(connection) as queries:
            assert len(grants_issue_for_run(run=run, deliveries=deliveries)) == size
        counts.append(len(queries))
    assert counts[0] == counts[1]


# Redeemability ------------------------------------------------------------------------------


def grant_for(offer=None, **kwargs):
    return OfferGrantFactory(offer=offer or OfferFactory(), **kwargs)


def test_a_fresh_grant_is_redeemable_by_its_customer():
    grant = grant_for()
    assert grant.is_redeemable(grant.customer) == (True, "ok")


def test_wrong_customer():
    grant = grant_for()
    assert grant.is_redeemable(CustomerFactory()) == (False, RedeemRefusal.WRONG_CUSTOMER)
    assert grant_is_redeemable(grant=grant, customer=None) == (False, RedeemRefusal.WRONG_CUSTOMER)


def test_already_redeemed():
    grant = grant_for()
    Redemption.objects.create(grant=grant, customer=grant.customer)
    assert grant.is_redeemable(grant.customer) == (False, RedeemRefusal.ALREADY_REDEEMED)


def test_expired_at_the_expiry_instant():
    grant = grant_for()
    assert grant.is_redeemable(grant.customer, now=grant.expires_at - timedelta(seconds=1))[0] is True
    assert grant.is_redeemable(grant.customer, now=grant.expires_at) == (False, RedeemRefusal.EXPIRED)


def test_grant_without_expiry_never_expires():
    grant = grant_for(expires_at=None)
    assert grant.is_redeemable(grant.customer, now=timezone.now() + timedelta(days=3650)) == (True, "ok")


def test_order_before_the_grant_is_not_valid():
    grant = grant_for()
    assert grant.is_redeemable(grant.customer, now=grant.granted_at - timedelta(days=1)) == (
        False, RedeemRefusal.NOT_YET_VALID)


def test_offer_inactive():
    grant = grant_for(OfferFactory(is_active=False))
    assert grant.is_redeemable(grant.customer) == (False, RedeemRefusal.OFFER_INACTIVE)


def test_minimum_spend_needs_an_amount_at_least_the_minimum():
    grant = grant_for(OfferFactory(min_spend=Decimal("100")))
    assert grant.is_redeemable(grant.customer, order_amount=Decimal("99.99")) == (False, RedeemRefusal.BELOW_MIN_SPEND)
    assert grant.is_redeemable(grant.customer) == (False, RedeemRefusal.BELOW_MIN_SPEND)
    assert grant.is_redeemable(grant.customer, order_amount=Decimal("100")) == (True, "ok")


def test_category_is_checked_when_given():
    grant = grant_for(OfferFactory(category="美妆"))
    assert grant.is_redeemable(grant.customer, category="数码") == (False, RedeemRefusal.WRONG_CATEGORY)
    assert grant.is_redeemable(grant.customer, category="美妆") == (True, "ok")
    assert grant.is_redeemable(grant.customer) == (True, "ok")


def test_once_per_customer_used_by_another_grant():
    # Given two grants of a once-per-customer offer (e.g. one made before the rule changed)
    offer = OfferFactory(usage_mode="once_per_customer")
    first = grant_for(offer)
    second = grant_for(offer, customer=first.customer)
    Redemption.objects.create(grant=first, customer=first.customer)
    assert second.is_redeemable(second.customer) == (False, RedeemRefusal.ONCE_PER_CUSTOMER_USED)


# Redemption ---------------------------------------------------------------------------------


def test_redemption_is_recorded_once(caplog):
    # an order an hour after the grant, reported an hour later (the order is no future event)
    grant = grant_for(granted_at=timezone.now() - timedelta(hours=2))
    at = grant.granted_at + timedelta(hours=1)
    with caplog.at_level(logging.INFO, logger="campaigns.offers"):
        redemption = redemption_record(code=grant.code.lower().replace("-", ""), external_id=grant.customer.external_id,
                                       order_amount="120.50", order_ref="SO-1", at=at)
    assert (redemption.grant_id, redemption.customer_id, redemption.order_amount, redemption.order_ref,
            redemption.redeemed_at, redemption.source) == (grant.pk, grant.customer_id, Decimal("120.50"), "SO-1", at, "api")
    assert f"redemption_record grant={grant.pk}" in caplog.text
    with pytest.raises(RedemptionRefused) as refused:
        redemption_record(code=grant.code, external_id=grant.customer.external_id)
    assert refused.value.reason == RedeemRefusal.ALREADY_REDEEMED and refused.value.is_conflict
    assert Redemption.objects.count() == 1


@pytest.mark.parametrize(
    ("code", "external_id", "reason"),
    [("ZZZZ-ZZZZ-ZZZZ", None, RedeemRefusal.UNKNOWN_CODE), (None, "nobody", RedeemRefusal.UNKNOWN_CUSTOMER)],
)
def test_unknown_code_or_customer(code, external_id, reason):
    grant = grant_for()
    with pytest.raises(RedemptionRefused) as refused:
        redemption_record(code=code or grant.code, external_id=external_id or grant.customer.external_id)
    assert refused.value.reason == reason and not refused.value.is_conflict
    assert not Redemption.objects.exists()


def test_a_lost_race_on_insert_is_reported_as_already_redeemed():
    # Given the check passes (as it would for two requests at once) but a redemption exists
    grant = grant_for()
    Redemption.objects.create(grant=grant, customer=grant.customer)
    with mock.patch.object(offers, "grant_is_redeemable", return_value=(True, "ok")):
        with pytest.raises(RedemptionRefused) as refused:
            redemption_record(code=grant.code, external_id=grant.customer.external_id)
    assert refused.value.reason == RedeemRefusal.ALREADY_REDEEMED
    assert Redemption.objects.count() == 1


def test_expired_grant_is_refused_at_the_order_time():
    grant = grant_for(granted_at=timezone.now() - timedelta(days=30))  # expired 16 days ago
    with pytest.raises(RedemptionRefused) as refused:
        redemption_record(code=grant.code, external_id=grant.customer.external_id, at=grant.expires_at + timedelta(days=1))
    assert refused.value.reason == RedeemRefusal.EXPIRED
    # An order placed before expiry but reported later still redeems.
    assert redemption_record(code=grant.code, external_id=grant.customer.external_id,
                             at=grant.expires_at - timedelta(days=1)).pk


# CSV import ---------------------------------------------------------------------------------


def test_csv_import_records_good_rows_and_reports_each_bad_one():
    good, used, other = grant_for(), grant_for(), grant_for()
    Redemption.objects.create(grant=used, customer=used.customer)
    at = (timezone.now() + timedelta(minutes=2)).replace(microsecond=0)  # after the grant, within the clock slack
    at_text = timezone.localtime(at, timezone.get_fixed_timezone(480)).strftime("%Y-%m-%d %H:%M:%S+08:00")
    csv_text = (
        "Code,External_ID,order_amount,order_ref,at\n"
        f"{good.code},{good.customer.external_id},\"1,299.00\",订单9,{at_text}\n"
        f"{used.code},{used.customer.external_id},10,,\n"
        f"{other.code},{good.customer.external_id},10,,\n"
        f"{other.code},,10,,\n"
        f"{other.code},{other.customer.external_id},abc,,\n"
        f"{other.code},{other.customer.external_id},10,,yesterday\n"
    )
    result = redemptions_import_csv(file=io.BytesIO(csv_text.encode("gb18030")))
    assert result.summary() == "created=1 refused=2 invalid=3"
    assert [(e["line"], e["reason"]) for e in result.errors] == [
        (3, "already_redeemed"), (4, "wrong_customer"), (5, "invalid"), (6, "invalid"), (7, "invalid")]
    redemption = Redemption.objects.get(grant=good)
    assert (redemption.order_amount, redemption.order_ref, redemption.source, redemption.redeemed_at) == (
        Decimal("1299.00"), "订单9", "import", at)


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+14:00", "2024-01-01T12:99:00Z", "2999-01-01 00:00"])
def test_csv_import_refuses_an_order_time_out_of_bounds_for_its_line(at):
    grant = grant_for()
    csv_text = f"code,external_id,at\n{grant.code},{grant.customer.external_id},{at}\n"
    result = redemptions_import_csv(file=io.BytesIO(csv_text.encode()))
    assert result.summary() == "created=0 refused=0 invalid=1"
    assert result.errors[0]["line"] == 2 and "at " in result.errors[0]["message"]
    assert not Redemption.objects.exists()


def test_csv_import_needs_code_and_external_id_columns():
    with pytest.raises(ValueError, match="code and external_id"):
        redemptions_import_csv(file=io.BytesIO(b"coupon,customer\nA,B\n"))


# CSV import: amounts, row limit, streaming (review) -----------------------------------------


@pytest.mark.parametrize(
    "amount, message",
    [
        ("NaN", "not a finite number"),
        ("sNaN", "not a finite number"),
        ("Infinity", "not a finite number"),
        ("-inf", "not a finite number"),
        ("1e30", "must not exceed"),
        ("1000000000000", "must not exceed"),  # 13 digits: over numeric(14, 2)
        ("10000000000", "must not exceed"),  # over the largest order an activity event holds
        ("-0.01", "must not be negative"),
        ("1.005", "2 decimal places"),
        ("12abc", "not a number"),
    ],
)
def test_csv_import_reports_a_bad_amount_as_invalid_and_goes_on(amount, message):
    # given a bad amount between two good rows
    first, bad, last = grant_for(), grant_for(), grant_for()
    csv_text = (
        "code,external_id,order_amount\n"
        f"{first.code},{first.customer.external_id},10\n"
        f"{bad.code},{bad.customer.external_id},{amount}\n"
        f"{last.code},{last.customer.external_id},9999999999.99\n"
    )
    # when imported
    result = redemptions_import_csv(file=io.BytesIO(csv_text.encode()))
    # then the bad row is reported and the others recorded (the largest amount an order event
    # holds included: a redemption is recorded as an order, reactivation.services.AMOUNT_MAX)
    assert result.summary() == "created=2 refused=0 invalid=1"
    assert [(e["line"], e["reason"]) for e in result.errors] == [(3, "invalid")]
    assert message in result.errors[0]["message"]
    assert dict(Redemption.objects.values_list("grant_id", "order_amount")) == {
        first.pk: Decimal("10.00"), last.pk: Decimal("9999999999.99")}


def test_csv_import_over_the_row_limit_changes_nothing():
    grants = [grant_for() for _ in range(3)]
    csv_text = "code,external_id\n" + "".join(f"{g.code},{g.customer.external_id}\n" for g in grants)
    with pytest.raises(ValueError, match="more than 2 rows"):
        redemptions_import_csv(file=io.BytesIO(csv_text.encode()), max_rows=2)
    assert not Redemption.objects.exists()
    # exactly at the limit is fine
    assert redemptions_import_csv(file=io.BytesIO(csv_text.encode()), max_rows=3).created == 3


def test_csv_import_streams_the_file_and_leaves_it_open():
    # given a binary file whose whole-file read() is forbidden
    grant = grant_for()
    data = f"\ufeffcode,external_id,order_amount\n{grant.code},{grant.customer.external_id},5\n".encode()

    class NoWholeRead(io.BytesIO):
        def read(self, size=-1):
            assert size is not None and size >= 0, "the whole file was read at once"
            return super().read(size)

    file = NoWholeRead(data)
    result = redemptions_import_csv(file=file)
    assert result.summary() == "created=1 refused=0 invalid=0"
    assert not file.closed  # the text wrapper was detached, not closed with the file


def test_csv_import_reads_gb18030_even_when_only_a_late_row_is_not_utf8():
    # given a file that is valid UTF-8 (ASCII) for thousands of lines, then a GB18030 row
    grant = grant_for()
    lines = ["code,external_id,order_ref"] + [f"NOPE{i},nobody,x" for i in range(5000)]
    lines.append(f"{grant.code},{grant.customer.external_id},订单7")
    result = redemptions_import_csv(file=io.BytesIO(("\n".join(lines) + "\n").encode("gb18030")))
    assert (result.created, result.refused) == (1, 5000)
    assert Redemption.objects.get().order_ref == "订单7"


def test_csv_import_takes_django_uploads_text_and_unseekable_files(settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile

    grants = [grant_for() for _ in range(4)]

    def csv_for(grant):
        return f"code,external_id\n{grant.code},{grant.customer.external_id}\n"

    in_memory = SimpleUploadedFile("r.csv", csv_for(grants[0]).encode())
    on_disk = TemporaryUploadedFile("r.csv", "text/csv", 0, "utf-8")
    on_disk.write(csv_for(grants[1]).encode())
    on_disk.seek(0)

    class Pipe(io.RawIOBase):  # a stream that cannot seek, like stdin
        def __init__(self, data):
            self._source = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self._source.readinto(buffer)

    files = [in_memory, on_disk, io.StringIO(csv_for(grants[2])), io.BufferedReader(Pipe(csv_for(grants[3]).encode()))]
    assert [redemptions_import_csv(file=f).created for f in files] == [1, 1, 1, 1]
    assert Redemption.objects.count() == 4
    on_disk.close()


def test_csv_import_reports_a_malformed_csv_before_recording_anything():
    grant = grant_for()
    csv_text = f'code,external_id\n{grant.code},{grant.customer.external_id}\n"x' + "y" * 200_000 + '",z\n'
    with pytest.raises(ValueError, match="Line"):
        redemptions_import_csv(file=io.BytesIO(csv_text.encode()))
    assert not Redemption.objects.exists()


def test_an_offer_limited_to_a_category_without_labels_is_refused():
    offer = OfferFactory.build(category="toys")
    with pytest.raises(ValidationError) as refused:
        offer.full_clean()
    assert "toys" in refused.value.message_dict["category"][0]
    Category.objects.create(key="toys", label_zh_hans="玩具", label_en="toys")
    offer.full_clean()


# A redemption is an order: rollups and lifecycle follow ------------------------------------------


@pytest.fixture
def dormant_customer():
    from tests.factories import DormancyRuleFactory

    rule = DormancyRuleFactory(name="No order for 90 days", signal="last_order", inactive_days=90)
    long_ago = timezone.now() - timedelta(days=200)
    return CustomerFactory(lifecycle_state="dormant", lifecycle_rule=rule, order_count=2, total_spent=Decimal("50.00"),
                           last_order_at=long_ago, last_seen_at=long_ago, signup_at=long_ago)


def test_a_redemption_records_the_order_and_reactivates_at_once(dormant_customer, django_capture_on_commit_callbacks):
    from reactivation.models import ActivityEvent

    grant = grant_for(customer=dormant_customer, granted_at=timezone.now() - timedelta(days=1))
    at = timezone.now() - timedelta(minutes=10)
    with django_capture_on_commit_callbacks(execute=True):
        redemption_record(code=grant.code, external_id=dormant_customer.external_id, order_amount="120.50",
                          order_ref="SO-9", at=at, category="beauty")

    dormant_customer.refresh_from_db()
    assert (dormant_customer.order_count, dormant_customer.total_spent) == (3, Decimal("170.50"))
    assert dormant_customer.last_order_at == at == dormant_customer.last_seen_at
    assert dormant_customer.lifecycle_state == "reactivated"
    order = ActivityEvent.objects.get(customer=dormant_customer)
    assert (order.kind, order.amount, order.item_ref, order.category, order.source) == (
        "order", Decimal("120.50"), "SO-9", "beauty", "api")


@pytest.mark.postgres
def test_a_redemption_does_not_wait_while_the_hourly_evaluation_holds_the_lifecycle_lock(
        dormant_customer, monkeypatch, django_capture_on_commit_callbacks):
    queued = follow_up_messages(monkeypatch)
    grant = grant_for(customer=dormant_customer, granted_at=timezone.now() - timedelta(days=1))
    with lifecycle_lock_held_elsewhere():
        started = time.monotonic()
        with django_capture_on_commit_callbacks(execute=True):
            redemption_record(code=grant.code, external_id=dormant_customer.external_id, order_amount="10")
        took = time.monotonic() - started

    assert took < 0.5
    assert Redemption.objects.filter(grant=grant).exists()
    assert [message["kwargs"] for message in queued] == [{"customer_ids": [dormant_customer.pk]}]
    lifecycle_evaluate_customers_task(**queued[0]["kwargs"])
    dormant_customer.refresh_from_db()
    assert dormant_customer.lifecycle_state == "reactivated"


def test_a_refused_redemption_records_no_order(dormant_customer):
    grant = grant_for(customer=dormant_customer, granted_at=timezone.now() - timedelta(days=1))
    redemption_record(code=grant.code, external_id=dormant_customer.external_id)
    with pytest.raises(RedemptionRefused):
        redemption_record(code=grant.code, external_id=dormant_customer.external_id)
    dormant_customer.refresh_from_db()
    assert dormant_customer.order_count == 3 and dormant_customer.events.count() == 1


def test_an_order_the_event_service_refuses_refuses_the_redemption_and_writes_nothing(dormant_customer):
    grant = grant_for(customer=dormant_customer, granted_at=timezone.now() - timedelta(days=1))
    with pytest.raises(RedemptionRefused) as refused:
        redemption_record(code=grant.code, external_id=dormant_customer.external_id,
                          order_amount="99999999999.00")
    assert refused.value.reason == "invalid" and "must not exceed" in refused.value.message
    assert not Redemption.objects.exists()
    dormant_customer.refresh_from_db()
    assert dormant_customer.order_count == 2


def _csv_import_queries(customers, capture):
    grants = [grant_for(customer=c, granted_at=timezone.now() - timedelta(days=1)) for c in customers]
    csv_text = "code,external_id,order_amount\n" + "".join(f"{g.code},{g.customer.external_id},10\n" for g in grants)
    with CaptureQueriesContext(connection) as queries, capture(execute=True):
        result = redemptions_import_csv(file=io.BytesIO(csv_text.encode()))
    assert result.created == len(customers)
    return [q["sql"] for q in queries.captured_queries]


def test_csv_redemptions_move_rollups_and_evaluate_lifecycle_once_per_batch(
        dormant_customer, django_capture_on_commit_callbacks):
    long_ago = timezone.now() - timedelta(days=200)
    profile = dict(lifecycle_state="dormant", order_count=1, last_order_at=long_ago, signup_at=long_ago)
    small = _csv_import_queries(CustomerFactory.create_batch(2, **profile), django_capture_on_commit_callbacks)
    large = _csv_import_queries(CustomerFactory.create_batch(12, **profile), django_capture_on_commit_callbacks)

    def lifecycle_inserts(sqls):
        return sum('INSERT INTO "reactivation_lifecycletransition"' in sql for sql in sqls)

    # per row: the redemption and its order; the lifecycle: one evaluation for the whole file
    assert lifecycle_inserts(small) == lifecycle_inserts(large) == 1
    # and every further row costs the same fixed number of statements
    assert (len(large) - len(small)) % 10 == 0
    assert Customer.objects.filter(lifecycle_state="reactivated").count() == 14
    assert set(Customer.objects.filter(lifecycle_state="reactivated").values_list("order_count", flat=True)) == {2}


def test_offers_imports_at_module_level():
    # Nothing here forces a late import (no app registry or import cycle is in the way): a
    # function-local import would only hide the module's dependencies.
    tree = ast.parse(inspect.getsource(offers))
    local_imports = [
        f"{function.name}: line {node.lineno}"
        for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert local_imports == []
