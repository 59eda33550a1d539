import hashlib
import sys
import types
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.api.tokens import api_token_create, api_tokens_revoke
from campaigns.models import ApiToken, Delivery, InboxMessage, Redemption
from reactivation.models import ActivityEvent
from tests.campaigns.offer_helpers import make_run
from tests.factories import CustomerFactory, InboxMessageFactory, OfferFactory, OfferGrantFactory, UserFactory

pytestmark = pytest.mark.django_db


ALL_RIGHTS = ["events:write", "inbox:read", "redemptions:write", "customers:lookup"]


@pytest.fixture
def token():
    return api_token_create(name="shop backend", scopes=ALL_RIGHTS)


@pytest.fixture
def api(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


# Authentication -----------------------------------------------------------------------------


def test_only_the_hash_of_the_token_is_stored(token):
    row = ApiToken.objects.get(pk=token.token.pk)
    assert token.key.startswith(row.prefix + ".")
    assert row.key_hash == hashlib.sha256(token.key.encode()).hexdigest()
    secret = token.key.split(".", 1)[1]
    assert all(secret not in str(value) for value in ApiToken.objects.values().get(pk=row.pk).values())


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer a b", "Token abc", "Bearer wb_00000000.nope", "Bearer no-dot-at-all", "Basic dXNlcjpwYXNz"],
)
def test_missing_or_wrong_credentials_are_refused_with_401(header, token):
    customer = CustomerFactory()
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(reverse("api-inbox", args=[customer.external_id]))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_right_prefix_wrong_secret_is_refused(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.token.prefix}.{'x' * 43}")
    assert client.get(reverse("api-inbox", args=[CustomerFactory().external_id])).status_code == 401


def test_revoked_token_is_refused(api, token):
    customer = CustomerFactory()
    assert api.get(reverse("api-inbox", args=[customer.external_id])).status_code == 200
    assert api_tokens_revoke(tokens=ApiToken.objects.filter(pk=token.token.pk)) == 1
    response = api.get(reverse("api-inbox", args=[customer.external_id]))
    assert response.status_code == 401
    assert response.json()["detail"] == "Token revoked."


def test_a_staff_session_is_not_an_api_credential(client):
    client.force_login(UserFactory(is_superuser=True))
    assert client.get(reverse("api-inbox", args=[CustomerFactory().external_id])).status_code == 401


def test_last_used_is_written_at_most_once_a_minute(api, token):
    url = reverse("api-inbox", args=[CustomerFactory().external_id])
    with CaptureQueriesContext(connection) as queries:
        api.get(url)
        api.get(url)
    updates = [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "apitoken" in q["sql"]]
    assert len(updates) == 1
    first = ApiToken.objects.get(pk=token.token.pk).last_used_at
    assert first is not None
    # A minute later the next request moves it again.
    ApiToken.objects.filter(pk=token.token.pk).update(last_used_at=first - timedelta(seconds=61))
    api.get(url)
    assert ApiToken.objects.get(pk=token.token.pk).last_used_at > first - timedelta(seconds=61)


# Inbox --------------------------------------------------------------------------------------


def test_inbox_lists_newest_first_with_unread_count_and_pages(api):
    customer, other = CustomerFactory(), CustomerFactory()
    now = timezone.now()
    messages = [InboxMessageFactory(customer=customer, title=f"m{i}", created_at=now - timedelta(hours=i)) for i in range(25)]
    InboxMessage.objects.filter(pk__in=[m.pk for m in messages[:3]]).update(read_at=now)
    InboxMessageFactory(customer=other, title="not yours")

    response = api.get(reverse("api-inbox", args=[customer.external_id]))
    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["unread_count"]) == (25, 22)
    assert [m["title"] for m in body["results"]] == [f"m{i}" for i in range(20)]
    assert body["results"][0]["is_read"] is True and body["results"][3]["is_read"] is False
    page2 = api.get(body["next"]).json()
    assert [m["title"] for m in page2["results"]] == [f"m{i}" for i in range(20, 25)]


def test_inbox_query_count_does_not_grow_with_the_page(api):
    small, large = CustomerFactory(), CustomerFactory()
    InboxMessageFactory.create_batch(2, customer=small)
    InboxMessageFactory.create_batch(40, customer=large)
    api.get(reverse("api-inbox", args=[small.external_id]))  # the token's first use writes last_used_at
    counts = []
    for customer in (small, large):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(reverse("api-inbox", args=[customer.external_id]) + "?page_size=50").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_inbox_of_unknown_customer_is_404(api):
    assert api.get(reverse("api-inbox", args=["nobody"])).status_code == 404


def test_reading_a_message_marks_it_read_and_its_delivery_opened_once(api):
    offer = OfferFactory()
    customer = CustomerFactory()
    _, (delivery,) = make_run(offer=offer, customers=[customer])
    message = InboxMessageFactory(customer=customer, delivery=delivery)
    url = reverse("api-inbox-read", args=[customer.external_id, message.pk])

    first = api.post(url)
    assert first.status_code == 200 and first.json()["is_read"] is True
    message.refresh_from_db()
    delivery.refresh_from_db()
    assert message.read_at is not None
    assert delivery.opened_at == message.read_at
    # Again: same answer, the first read time stays
    second = api.post(url)
    assert second.status_code == 200 and second.json()["read_at"] == first.json()["read_at"]
    delivery.refresh_from_db()
    assert delivery.opened_at == message.read_at


def test_reading_keeps_an_earlier_open(api):
    customer = CustomerFactory()
    _, (delivery,) = make_run(offer=OfferFactory(), customers=[customer])
    opened = timezone.now() - timedelta(days=1)
    Delivery.objects.filter(pk=delivery.pk).update(opened_at=opened)
    message = InboxMessageFactory(customer=customer, delivery=delivery)
    api.post(reverse("api-inbox-read", args=[customer.external_id, message.pk]))
    delivery.refresh_from_db()
    assert delivery.opened_at == opened


def test_reading_another_customers_message_is_404(api):
    message = InboxMessageFactory()
    response = api.post(reverse("api-inbox-read", args=[CustomerFactory().external_id, message.pk]))
    assert response.status_code == 404
    message.refresh_from_db()
    assert message.read_at is None


# Redemptions --------------------------------------------------------------------------------


def test_redemption_201_then_409(api):
    grant = OfferGrantFactory(offer=OfferFactory(min_spend=Decimal("100")))
    payload = {"code": grant.code, "external_id": grant.customer.external_id, "order_amount": "150.00",
               "order_ref": "SO-77"}
    created = api.post(reverse("api-redemptions"), payload, format="json")
    assert created.status_code == 201
    assert created.json() | {"id": 0, "redeemed_at": ""} == {
        "id": 0, "code": grant.code, "offer": grant.offer.name, "external_id": grant.customer.external_id,
        "order_amount": "150.00", "order_ref": "SO-77", "source": "api", "redeemed_at": ""}
    again = api.post(reverse("api-redemptions"), payload, format="json")
    assert again.status_code == 409
    assert again.json()["reason"] == "already_redeemed"
    assert Redemption.objects.count() == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"code": "ZZZZ-ZZZZ-ZZZZ"}, "unknown_code"),
        ({"external_id": "nobody"}, "unknown_customer"),
        ({"order_amount": "99.99"}, "below_min_spend"),
        ({"at": "2001-01-01T00:00:00Z"}, "not_yet_valid"),
        ({}, "expired"),  # the grant below expired yesterday; the order is now
    ],
)
def test_redemption_refusals_are_422_with_the_reason(api, change, reason):
    grant = OfferGrantFactory(offer=OfferFactory(min_spend=Decimal("100")))
    if reason == "expired":
        type(grant).objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(days=1))
    payload = {"code": grant.code, "external_id": grant.customer.external_id, "order_amount": "150", **change}
    response = api.post(reverse("api-redemptions"), payload, format="json")
    assert response.status_code == 422
    assert response.json()["reason"] == reason
    assert response.json()["detail"]
    assert not Redemption.objects.exists()


def test_another_customers_code_answers_exactly_like_an_unknown_code(api):
    # given a real code granted to someone else, and a code that does not exist
    grant = OfferGrantFactory()
    stranger = CustomerFactory()
    # when a stranger tries each
    someone_elses = api.post(reverse("api-redemptions"), {"code": grant.code, "external_id": stranger.external_id},
                             format="json")
    unknown = api.post(reverse("api-redemptions"), {"code": "ZZZZ-ZZZZ-ZZZZ", "external_id": stranger.external_id},
                       format="json")
    # then nothing tells them which one exists
    assert (someone_elses.status_code, someone_elses.json()) == (unknown.status_code, unknown.json())
    assert unknown.json()["reason"] == "unknown_code"
    assert not Redemption.objects.exists()


def test_an_unknown_customer_answers_the_same_whether_the_code_exists_or_not(api):
    grant = OfferGrantFactory()
    real = api.post(reverse("api-redemptions"), {"code": grant.code, "external_id": "nobody"}, format="json")
    made_up = api.post(reverse("api-redemptions"), {"code": "ZZZZ-ZZZZ-ZZZZ", "external_id": "nobody"}, format="json")
    assert (real.status_code, real.json()) == (made_up.status_code, made_up.json())


@pytest.mark.parametrize(
    "payload",
    [{}, {"code": "X"}, {"code": "X", "external_id": "Y", "order_amount": "abc"},
     {"code": "X", "external_id": "Y", "order_amount": "-1"}, {"code": "X", "external_id": "Y", "at": "yesterday"},
     {"code": "X", "external_id": "Y", "at": "2025-01-02T03:04:05"}],
)
def test_malformed_redemption_is_400(api, payload):
    assert api.post(reverse("api-redemptions"), payload, format="json").status_code == 400


# Events -------------------------------------------------------------------------------------


@pytest.fixture
def record_batch():
    """The reactivation service when it exists (spied on), else a stand-in that only saves the rows."""
    try:
        from reactivation import services

        real = services.activity_record_batch
    except (ImportError, AttributeError):
        real = None
    if real is not None:
        with mock.patch("reactivation.services.activity_record_batch", wraps=real) as spy:
            yield spy
        return
    module = types.ModuleType("reactivation.services")
    module.activity_record_batch = mock.Mock(side_effect=lambda *, events: ActivityEvent.objects.bulk_create(events))
    with mock.patch.dict(sys.modules, {"reactivation.services": module}):
        yield module.activity_record_batch


def test_events_are_recorded_and_bad_items_reported_per_item(api, record_batch):
    known = CustomerFactory()
    payload = [
        {"external_id": known.external_id, "kind": "order", "occurred_at": "2025-01-02T03:04:05+08:00",
         "amount": "88.50", "category": "美妆", "item": "SKU-1"},
        {"external_id": "ghost", "kind": "login", "occurred_at": "2025-01-02T03:04:05Z"},
        {"external_id": known.external_id, "kind": "login"},
        "not an object",
        {"external_id": known.external_id, "kind": "login", "occurred_at": "2025-01-03T00:00:00Z"},
        {"external_id": known.external_id, "kind": "login", "occurred_at": "2025-01-03T00:00:00"},
        {"external_id": known.external_id, "kind": "refund", "occurred_at": "2025-01-03T00:00:00Z", "amount": "-5"},
        {"external_id": known.external_id, "kind": "  ", "occurred_at": "2025-01-03T00:00:00Z"},
    ]
    response = api.post(reverse("api-events"), payload, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["received"], body["created"], body["unknown_customer"], body["invalid"]) == (8, 2, 1, 5)
    assert [(e["index"], e["error"]) for e in body["errors"]] == [
        (1, "unknown_customer"), (2, "invalid"), (3, "invalid"), (5, "invalid"), (6, "invalid"), (7, "invalid")]
    assert "occurred_at" in body["errors"][1]["detail"]
    assert "time zone" in body["errors"][3]["detail"]["occurred_at"][0]
    assert "amount" in body["errors"][4]["detail"] and "kind" in body["errors"][5]["detail"]
    record_batch.assert_called_once()
    events = ActivityEvent.objects.filter(customer=known).order_by("occurred_at")
    assert [(e.kind, e.amount, e.category, e.item_ref, e.source) for e in events] == [
        ("order", Decimal("88.50"), "美妆", "SKU-1", "api"), ("login", None, "", "", "api")]
    if not isinstance(record_batch, mock.Mock) or record_batch._mock_wraps is not None:
        known.refresh_from_db()  # the real service keeps the rollups
        assert (known.order_count, known.total_spent) == (1, Decimal("88.50"))


def test_events_with_no_known_customer_call_nothing(api, record_batch):
    response = api.post(reverse("api-events"), [{"external_id": "ghost", "kind": "login",
                                                 "occurred_at": "2025-01-02T03:04:05Z"}], format="json")
    assert response.json()["created"] == 0
    record_batch.assert_not_called()


@pytest.mark.parametrize("payload", [{"external_id": "x"}, [{}] * 1001])
def test_events_must_be_a_list_of_at_most_1000(api, record_batch, payload):
    assert api.post(reverse("api-events"), payload, format="json").status_code == 400
    record_batch.assert_not_called()


def test_events_lookup_is_one_query_whatever_the_batch(api, record_batch):
    customers = CustomerFactory.create_batch(30)
    counts = []
    for size in (2, 30):
        payload = [{"external_id": c.external_id, "kind": "visit", "occurred_at": "2025-01-02T03:04:05Z"}
                   for c in customers[:size]]
        with CaptureQueriesContext(connection) as queries:
            assert api.post(reverse("api-events"), payload, format="json").json()["created"] == size
        lookups = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and '"external_id" IN' in q["sql"]]
        counts.append(len(lookups))
    assert counts == [1, 1]


# Schema -------------------------------------------------------------------------------------


def test_schema_generates_without_warnings_for_these_views():
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    ours = ("Inbox", "Redemption", "Events", "campaigns")
    problems = [m for m in [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache] if any(s in m for s in ours)]
    assert problems == []
    paths = schema["paths"]
    for path in ("/api/v1/customers/{external_id}/inbox/", "/api/v1/customers/{external_id}/inbox/{message_id}/read/",
                 "/api/v1/redemptions/", "/api/v1/events/"):
        assert path in paths
    assert schema["components"]["securitySchemes"]["ApiToken"] == {
        "type": "http", "scheme": "bearer", "description": "An API token created in the admin."}
    assert "unread_count" in schema["components"]["schemas"]["PaginatedInboxMessageList"]["properties"]
    assert set(paths["/api/v1/redemptions/"]["post"]["responses"]) == {
        "201", "400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "429"}
    # An operation without a body cannot have one refused for its type or size.
    assert {"413", "415"}.isdisjoint(paths["/api/v1/customers/{external_id}/inbox/"]["get"]["responses"])


def test_schema_is_served(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    assert b"/api/v1/redemptions/" in response.content


# Events: bounds (review: far-future times, amounts overflowing total_spent) ------------------


def test_events_out_of_bounds_are_reported_per_item_and_the_rest_recorded(api, record_batch):
    known = CustomerFactory()
    good = {"external_id": known.external_id, "kind": "order", "occurred_at": "2025-01-02T03:04:05Z", "amount": "10"}
    payload = [
        good,
        {**good, "occurred_at": "2999-01-01T00:00:00Z"},
        {**good, "occurred_at": "1969-12-31T23:59:59Z"},
        {**good, "amount": "NaN"},
        {**good, "amount": "Infinity"},
        {**good, "amount": "999999999999.99"},  # 12 digits before the point: over the per-event bound
        {**good, "amount": "1e30"},
        {**good, "amount": "1.005"},
        {**good, "amount": -1},
    ]
    response = api.post(reverse("api-events"), payload, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["received"], body["created"], body["invalid"]) == (9, 1, 8)
    assert [(e["index"], e["error"], list(e["detail"])) for e in body["errors"]] == [
        (1, "invalid", ["occurred_at"]), (2, "invalid", ["occurred_at"])] + [
        (i, "invalid", ["amount"]) for i in range(3, 9)]
    assert "future" in body["errors"][0]["detail"]["occurred_at"][0]
    assert "1970-01-01" in body["errors"][1]["detail"]["occurred_at"][0]
    known.refresh_from_db()
    assert (known.order_count, known.total_spent, known.last_seen_at.year) == (1, Decimal("10.00"), 2025)
    assert ActivityEvent.objects.count() == 1


def test_events_slightly_ahead_are_accepted(api, record_batch):
    known = CustomerFactory()
    soon = (timezone.now() + timedelta(minutes=4)).replace(microsecond=0)
    response = api.post(reverse("api-events"), [
        {"external_id": known.external_id, "kind": "login", "occurred_at": soon.isoformat()}], format="json")
    assert response.json()["created"] == 1
    known.refresh_from_db()
    assert known.last_seen_at == soon


def _post_overflowing_batch(api):
    rich = CustomerFactory(external_id="rich-1", total_spent=Decimal("999999999990.00"), order_count=2)
    other = CustomerFactory()
    at = "2025-01-02T03:04:05Z"
    payload = [
        {"external_id": other.external_id, "kind": "order", "occurred_at": at, "amount": "5.00"},
        {"external_id": rich.external_id, "kind": "order", "occurred_at": at, "amount": "9999999999.99"},
        {"external_id": rich.external_id, "kind": "login", "occurred_at": at},
        {"external_id": other.external_id, "kind": "login", "occurred_at": "2025-01-03T00:00:00Z"},
    ]
    return rich, other, api.post(reverse("api-events"), payload, format="json")


def _assert_overflow_reported_and_rest_recorded(rich, other, response):
    # then the request succeeds, the rich customer's items are reported and the rest recorded
    assert response.status_code == 200
    body = response.json()
    assert (body["received"], body["created"], body["invalid"]) == (4, 2, 2)
    assert [(e["index"], e["external_id"], e["error"]) for e in body["errors"]] == [
        (1, "rich-1", "invalid"), (2, "rich-1", "invalid")]
    assert "rich-1" in body["errors"][0]["detail"]["amount"][0]
    rich.refresh_from_db()
    other.refresh_from_db()
    assert (rich.order_count, rich.total_spent, rich.last_seen_at) == (2, Decimal("999999999990.00"), None)
    assert (other.order_count, other.total_spent) == (1, Decimal("5.00"))
    assert list(ActivityEvent.objects.values_list("customer_id", flat=True).distinct()) == [other.pk]


def test_an_overflowing_customer_is_reported_per_item_not_the_whole_batch(api, record_batch):
    rich, other, response = _post_overflowing_batch(api)
    _assert_overflow_reported_and_rest_recorded(rich, other, response)
    assert record_batch.call_count == 2  # refused once, then the rest


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_overflowing_customer_is_no_500_on_postgresql(token):
    # A real transaction (no test wrapper): PostgreSQL's numeric(14, 2) would raise a DataError.
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    rich, other, response = _post_overflowing_batch(client)
    _assert_overflow_reported_and_rest_recorded(rich, other, response)


# Malformed input: every answer is a 4xx naming the problem, never a 500 ---------------------

IMPOSSIBLE_TIMES = [
    "2024-01-01T12:99:00Z",  # minute 99
    "2024-13-01T00:00:00Z",  # month 13
    "2024-02-30T00:00:00Z",  # February 30
    "2024-01-01T24:00:00Z",  # hour 24
    "2024-01-01T00:00:00+25:00",  # offset beyond ±24 h
    "0001-01-01T00:00:00+14:00",  # year 1 BC in UTC
    "9999-12-31T23:59:59-14:00",  # past year 9999 in UTC
]


@pytest.mark.parametrize("occurred_at", IMPOSSIBLE_TIMES)
def test_an_impossible_event_time_is_reported_for_its_item_and_the_good_items_are_kept(api, occurred_at):
    # given a batch with one good item and one whose time cannot exist
    known = CustomerFactory()
    good = {"external_id": known.external_id, "kind": "login", "occurred_at": "2025-01-02T03:04:05Z"}
    # when it is posted
    response = api.post(reverse("api-events"), [good, {**good, "occurred_at": occurred_at}], format="json")
    # then the bad item is reported by index and the good one recorded
    assert response.status_code == 200
    body = response.json()
    assert (body["created"], body["invalid"]) == (1, 1)
    assert [(e["index"], list(e["detail"])) for e in body["errors"]] == [(1, ["occurred_at"])]
    assert ActivityEvent.objects.filter(customer=known).count() == 1


@pytest.mark.parametrize("at", IMPOSSIBLE_TIMES)
def test_an_impossible_redemption_time_is_400(api, at):
    grant = OfferGrantFactory()
    response = api.post(reverse("api-redemptions"), {
        "code": grant.code, "external_id": grant.customer.external_id, "at": at}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["at"]
    assert not Redemption.objects.exists()


def test_a_kind_that_lower_case_lengthens_past_the_column_is_reported_alone(api):
    # "İ".lower() is two characters: 32 of them pass a 32-character check and store 64
    known = CustomerFactory()
    good = {"external_id": known.external_id, "kind": "login", "occurred_at": "2025-01-02T03:04:05Z"}
    response = api.post(reverse("api-events"), [good, {**good, "kind": "İ" * 32}], format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["created"], body["invalid"]) == (1, 1)
    assert "lower-cased" in body["errors"][0]["detail"]["kind"][0]
    assert list(ActivityEvent.objects.values_list("kind", flat=True)) == ["login"]


def test_a_kind_is_stored_as_validated_lower_cased(api):
    known = CustomerFactory()
    api.post(reverse("api-events"), [
        {"external_id": known.external_id, "kind": " ORDER ", "occurred_at": "2025-01-02T03:04:05Z"}], format="json")
    assert list(ActivityEvent.objects.values_list("kind", flat=True)) == ["order"]


@pytest.mark.parametrize("suffix", ["%00", "%00/../x", "x" * 200])
def test_an_external_id_no_customer_can_have_is_404_not_500(api, suffix):
    customer = CustomerFactory()
    InboxMessageFactory(customer=customer)
    assert api.get(f"/api/v1/customers/{customer.external_id}{suffix}/inbox/").status_code == 404
    assert api.post(f"/api/v1/customers/{customer.external_id}{suffix}/inbox/1/read/").status_code == 404


@pytest.mark.parametrize("url", ["/api/v1/events/", "/api/v1/redemptions/"])
def test_a_deeply_nested_body_is_400(api, url):
    body = b"[" * 50_000 + b"]" * 50_000
    response = api.post(url, body, content_type="application/json")
    assert response.status_code == 400
    assert "nested" in response.json()["detail"]


def test_nesting_within_the_bound_still_parses(api):
    # 32 levels: a list of lists ... is not a list of events, but it is valid JSON (400 from the view)
    body = b"[" * 32 + b"]" * 32
    response = api.post("/api/v1/events/", body, content_type="application/json")
    assert response.status_code == 200
    assert response.json()["invalid"] == 1


def test_brackets_inside_strings_do_not_count_as_nesting():
    from core.json_parser import json_depth_exceeds

    assert not json_depth_exceeds(b'[{"kind": "' + b"[" * 100 + b'\\"[["}]', 32)
    assert json_depth_exceeds(b"[" * 33, 32)


def test_a_form_body_is_415(api):
    response = api.post("/api/v1/redemptions/", "code=x&external_id=y", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


# Scopes: least privilege ---------------------------------------------------------------------


def _client_with(*scopes):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(name='t', scopes=list(scopes)).key}")
    return client


@pytest.mark.parametrize(("method", "url", "scope"), [
    ("get", "/api/v1/customers/C1/inbox/", "inbox:read"),
    ("post", "/api/v1/customers/C1/inbox/1/read/", "inbox:read"),
    ("post", "/api/v1/redemptions/", "redemptions:write"),
    ("post", "/api/v1/events/", "events:write"),
])
def test_each_endpoint_needs_its_scope(method, url, scope):
    others = [s for s in ALL_RIGHTS if s != scope]
    response = getattr(_client_with(*others), method)(url, [] if "events" in url else {}, format="json")
    assert response.status_code == 403
    assert response.json()["detail"] == f"This token lacks the scope {scope}."
    assert getattr(_client_with(scope), method)(url, [] if "events" in url else {}, format="json").status_code != 403


def test_a_token_without_scopes_can_do_nothing_but_is_still_a_token():
    client = _client_with()
    assert client.post("/api/v1/events/", [], format="json").status_code == 403
    assert APIClient().post("/api/v1/events/", [], format="json").status_code == 401
    assert not ActivityEvent.objects.exists()


def test_without_customers_lookup_an_unknown_customer_looks_like_an_empty_inbox():
    # given a customer without messages, and an external id nobody has
    quiet = CustomerFactory()
    client = _client_with("inbox:read")
    # when a token that may only read inboxes asks for both
    known = client.get(reverse("api-inbox", args=[quiet.external_id]))
    unknown = client.get(reverse("api-inbox", args=["nobody-has-this-id"]))
    # then the answers are the same, so the token cannot tell which ids exist
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json() == {"count": 0, "unread_count": 0, "next": None, "previous": None, "results": []}
    assert client.get(reverse("api-inbox", args=[quiet.external_id]) + "?page=2").status_code == \
        client.get(reverse("api-inbox", args=["nobody-has-this-id"]) + "?page=2").status_code
    # and with customers:lookup the unknown one is a 404
    assert _client_with("inbox:read", "customers:lookup").get(reverse("api-inbox", args=["nobody-has-this-id"])).status_code == 404


def test_a_token_is_made_with_known_scopes_only():
    with pytest.raises(ValueError, match="Unknown API scope"):
        api_token_create(name="t", scopes=["admin:all"])
    assert api_token_create(name="t", scopes=["inbox:read", "events:write"]).token.scopes == ["events:write", "inbox:read"]


@pytest.mark.django_db(transaction=True)
def test_tokens_made_before_scopes_keep_every_right_they_had():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    before = [("campaigns", "0012_delivery_claimed_unknown_lease")]
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    old_apps.get_model("campaigns", "ApiToken").objects.create(name="old", prefix="wb_0000abcd", key_hash="0" * 64)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert ApiToken.objects.get(prefix="wb_0000abcd").scopes == ALL_RIGHTS


def test_each_token_is_rate_limited_on_its_own(monkeypatch):
    from campaigns.api.throttling import TokenRateThrottle

    monkeypatch.setattr(TokenRateThrottle, "rate", "3/min", raising=False)
    busy, other = _client_with("events:write"), _client_with("events:write")
    answers = [busy.post("/api/v1/events/", [], format="json") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1]["Retry-After"]) > 0
    assert other.post("/api/v1/events/", [], format="json").status_code == 200


def test_events_move_rollups_and_lifecycle_at_once_in_a_fixed_number_of_statements(
        api, django_capture_on_commit_callbacks):
    from tests.factories import DormancyRuleFactory

    DormancyRuleFactory(name="No order for 90 days", signal="last_order", inactive_days=90)
    long_ago = timezone.now() - timedelta(days=200)
    at = (timezone.now() - timedelta(hours=1)).replace(microsecond=0)

    def post_orders(customers):
        payload = [{"external_id": c.external_id, "kind": "order", "occurred_at": at.isoformat(), "amount": "20.00"}
                   for c in customers]
        with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
            response = api.post(reverse("api-events"), payload, format="json")
        assert response.status_code == 200 and response.json()["created"] == len(customers)
        return [q["sql"].split()[0] for q in queries.captured_queries
                if not q["sql"].startswith('INSERT INTO "reactivation_activityevent"')]

    def dormant(n):
        return CustomerFactory.create_batch(n, lifecycle_state="dormant", order_count=1, total_spent=Decimal("1"),
                                            last_order_at=long_ago, signup_at=long_ago)

    api.post(reverse("api-events"), [], format="json")  # the token's first use writes last_used_at
    small, large = post_orders(dormant(2)), post_orders(dormant(40))

    assert small == large
    from reactivation.models import Customer

    assert set(Customer.objects.values_list("lifecycle_state", "order_count", "total_spent", "last_order_at")) == {
        ("reactivated", 2, Decimal("21.00"), at)}
