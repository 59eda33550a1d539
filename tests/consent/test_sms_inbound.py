"""POST /consent/sms/inbound/ and the service behind it, consent.services.sms_reply_record."""

import hashlib
import hmac
import logging
from datetime import datetime, timedelta, timezone as dt_timezone
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from consent.models import ConsentEvent, ConsentState, SmsReply, Suppression
from consent.selectors import address_is_suppressed, consent_is_granted
from consent.services import consent_grant, sms_reply_record
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

SECRET = "test-webhook-secret-0123456789"
URL = "/consent/sms/inbound/"
FORM_TYPE = "application/x-www-form-urlencoded"


@pytest.fixture(autouse=True)
def _secret(settings):
    settings.SMS_WEBHOOK_SECRET = SECRET


def _sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(fields: dict, *, signature: str | None = "auto", client=None):
    body = urlencode(fields).encode()
    headers = {}
    if signature == "auto":
        headers["HTTP_X_SIGNATURE"] = _sign(body)
    elif signature is not None:
        headers["HTTP_X_SIGNATURE"] = signature
    return (client or Client(enforce_csrf_checks=True)).post(URL, body, content_type=FORM_TYPE, **headers)


def _sms_customer(phone="+8613812345678", **kwargs):
    customer = CustomerFactory(phone=phone, **kwargs)
    consent_grant(customer=customer, channel="sms", source="signup")
    return customer


def test_the_url_is_named():
    assert reverse("consent:sms_inbound") == URL


# Signature --------------------------------------------------------------------------------


def test_a_signed_td_withdraws_sms_consent_without_csrf():
    customer = _sms_customer()

    response = _post({"from": "13812345678", "text": "TD", "id": "prov-1"})

    assert response.status_code == 200
    reply = SmsReply.objects.get()
    assert response.json() == {"id": reply.pk, "outcome": "withdraw"}
    assert (reply.sender, reply.customer, reply.provider_id) == ("+8613812345678", customer, "prov-1")
    event = ConsentEvent.objects.get(customer=customer, action="withdraw")
    assert (event.channel, event.source) == ("sms", "sms_reply")
    assert event.evidence == {"text": "TD", "sender": "13812345678", "provider_id": "prov-1", "sms_reply_id": reply.pk}
    assert not consent_is_granted(customer=customer, channel="sms")


def test_uppercase_hex_signature_is_accepted():
    _sms_customer()
    body = urlencode({"from": "+8613812345678", "text": "退订"}).encode()

    response = Client().post(URL, body, content_type=FORM_TYPE, HTTP_X_SIGNATURE=_sign(body).upper())

    assert response.status_code == 200


@pytest.mark.parametrize(
    "signature",
    [
        None,  # header missing
        "",  # header empty
        "0" * 64,  # wrong signature
        _sign(b"from=%2B8613812345678&text=HELLO"),  # signature of a different body
        _sign(urlencode({"from": "+8613812345678", "text": "TD"}).encode(), secret="another-secret-abcdef"),  # other key
        "zz-not-hex-zz",  # non-hex
        "签名",  # non-ASCII
        _sign(urlencode({"from": "+8613812345678", "text": "TD"}).encode())[:-1],  # truncated
    ],
    ids=["missing", "empty", "wrong", "other-body", "other-key", "non-hex", "non-ascii", "truncated"],
)
def test_a_bad_signature_is_403_and_records_nothing(signature, caplog):
    customer = _sms_customer()
    if signature == "签名":
        signature = signature.encode().decode("latin-1")  # how a WSGI server hands non-ASCII bytes over

    with caplog.at_level(logging.WARNING, logger="consent.views"):
        response = _post({"from": "+8613812345678", "text": "TD"}, signature=signature)

    assert response.status_code == 403
    assert not SmsReply.objects.exists()
    assert ConsentEvent.objects.filter(customer=customer).count() == 1  # only the grant
    assert consent_is_granted(customer=customer, channel="sms")
    assert "sms_inbound_refused reason=" in caplog.text


def test_no_secret_configured_is_503_and_records_nothing(settings, caplog):
    settings.SMS_WEBHOOK_SECRET = ""
    _sms_customer()
    body = urlencode({"from": "+8613812345678", "text": "TD"}).encode()

    with caplog.at_level(logging.ERROR, logger="consent.views"):
        response = Client().post(URL, body, content_type=FORM_TYPE, HTTP_X_SIGNATURE=hmac.new(b"", body, hashlib.sha256).hexdigest())

    assert response.status_code == 503
    assert not SmsReply.objects.exists()
    assert "no_secret_configured" in caplog.text


def test_get_is_not_allowed():
    assert Client().get(URL).status_code == 405


@pytest.mark.parametrize(
    "fields",
    [{"text": "TD"}, {"from": "+8613812345678"}, {"from": "  ", "text": "TD"}, {"from": "+8613812345678", "text": "TD", "received_at": "yesterday"}],
    ids=["no-from", "no-text", "blank-from", "bad-received-at"],
)
def test_a_signed_but_malformed_body_is_400_and_records_nothing(fields):
    _sms_customer()

    response = _post(fields)

    assert response.status_code == 400
    assert not SmsReply.objects.exists()
    assert not ConsentEvent.objects.filter(action="withdraw").exists()


def test_received_at_is_used_for_the_reply_and_the_ledger():
    customer = _sms_customer()
    at = timezone.now().replace(microsecond=0) - timedelta(minutes=3)

    _post({"from": "+8613812345678", "text": "STOP", "received_at": at.isoformat()})

    assert SmsReply.objects.get().received_at == at
    assert ConsentEvent.objects.get(customer=customer, action="withdraw").at == at


def test_multipart_bodies_are_signed_over_the_raw_bytes_too():
    customer = _sms_customer()
    client = Client()
    boundary = "BoUnDaRy"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\n+8613812345678\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n拒收\r\n--{boundary}--\r\n"
    ).encode()

    response = client.post(URL, body, content_type=f"multipart/form-data; boundary={boundary}", HTTP_X_SIGNATURE=_sign(body))

    assert response.status_code == 200
    assert not consent_is_granted(customer=customer, channel="sms")


# Keywords, replies, senders ---------------------------------------------------------------


def test_start_grants_again():
    customer = _sms_customer()
    _post({"from": "+8613812345678", "text": "STOP"})

    response = _post({"from": "+8613812345678", "text": " Start ", "id": "msg-2"})

    assert response.json()["outcome"] == "grant"
    assert consent_is_granted(customer=customer, channel="sms")
    assert list(ConsentEvent.objects.filter(customer=customer, source="sms_reply").order_by("id").values_list("action", flat=True)) == [
        "withdraw", "grant"
    ]


def test_any_other_text_is_stored_as_a_reply_and_changes_nothing():
    customer = _sms_customer()

    response = _post({"from": "+8613812345678", "text": "请问优惠券怎么用？"})

    assert response.json()["outcome"] == "reply"
    reply = SmsReply.objects.get()
    assert (reply.text, reply.customer) == ("请问优惠券怎么用？", customer)
    assert ConsentEvent.objects.filter(customer=customer).count() == 1
    assert consent_is_granted(customer=customer, channel="sms")


def test_a_number_shared_by_several_customers_withdraws_for_all_of_them():
    first, second = _sms_customer(), _sms_customer()
    other = _sms_customer(phone="+8613900000000")

    _post({"from": "+86 138 1234 5678", "text": "退订。"})

    assert not consent_is_granted(customer=first, channel="sms")
    assert not consent_is_granted(customer=second, channel="sms")
    assert consent_is_granted(customer=other, channel="sms")
    reply = SmsReply.objects.get()
    assert reply.customer == first
    assert set(ConsentEvent.objects.filter(action="withdraw").values_list("customer_id", flat=True)) == {first.pk, second.pk}
    assert not Suppression.objects.exists()  # a known number is governed by consent, not suppressed


def test_an_unknown_sender_saying_stop_is_stored_and_its_number_suppressed():
    response = _post({"from": "13700001111", "text": "Stop!", "id": "p-9"})

    assert response.json()["outcome"] == "unknown_sender"
    reply = SmsReply.objects.get()
    assert (reply.sender, reply.customer) == ("+8613700001111", None)
    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.address, suppression.reason) == ("sms", "+8613700001111", "manual")
    assert f"#{reply.pk}" in suppression.note
    assert not ConsentEvent.objects.exists()


def test_a_number_that_said_stop_before_it_became_a_customer_stays_suppressed():
    _post({"from": "+8613700001111", "text": "TD"})

    _sms_customer(phone="+8613700001111")

    assert address_is_suppressed(channel="sms", address="+8613700001111")
    assert Suppression.objects.count() == 1


@pytest.mark.parametrize("text", ["hello", "START"])
def test_an_unknown_sender_saying_anything_else_changes_nothing(text):
    response = _post({"from": "+8613700001111", "text": text, "id": "msg-1"})

    assert response.json()["outcome"] == "unknown_sender"
    assert not Suppression.objects.exists()
    assert not ConsentEvent.objects.exists()


def test_an_unparseable_sender_is_kept_raw_and_suppresses_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="consent.services"):
        response = _post({"from": "10086", "text": "TD"})

    assert response.json()["outcome"] == "unknown_sender"
    assert SmsReply.objects.get().sender == "10086"
    assert not Suppression.objects.exists()
    assert "sms_reply_unparseable_sender" in caplog.text


# Idempotency ------------------------------------------------------------------------------


def test_the_same_provider_id_is_recorded_once():
    customer = _sms_customer()
    fields = {"from": "+8613812345678", "text": "TD", "id": "dup-1"}

    first, second = _post(fields), _post(fields)

    assert first.json() == second.json()
    assert SmsReply.objects.count() == 1
    assert ConsentEvent.objects.filter(customer=customer, action="withdraw").count() == 1


def test_a_replayed_stop_after_a_later_start_does_not_withdraw_again():
    customer = _sms_customer()
    _post({"from": "+8613812345678", "text": "TD", "id": "a"})
    _post({"from": "+8613812345678", "text": "START", "id": "b"})

    _post({"from": "+8613812345678", "text": "TD", "id": "a"})  # provider retries an old delivery

    assert consent_is_granted(customer=customer, channel="sms")


def test_replies_without_a_provider_id_are_each_stored():
    _sms_customer()

    _post({"from": "+8613812345678", "text": "hi"})
    _post({"from": "+8613812345678", "text": "hi"})

    assert SmsReply.objects.count() == 2


def test_service_called_directly_returns_the_stored_reply():
    customer = _sms_customer()
    at = timezone.now()

    reply = sms_reply_record(sender="+8613812345678", text="ＳＴＯＰ", provider_id="x-1", received_at=at)
    again = sms_reply_record(sender="+8613812345678", text="ＳＴＯＰ", provider_id="x-1", received_at=at)

    assert again.pk == reply.pk and reply.outcome == "withdraw" and reply.received_at == at
    assert ConsentState.objects.get(customer=customer, channel="sms").status == "withdrawn"


def test_a_stop_received_before_a_newer_grant_stays_in_the_ledger_but_does_not_override_it():
    customer = _sms_customer()  # granted now
    long_ago = datetime(2024, 5, 1, 9, 30, tzinfo=dt_timezone.utc)

    reply = sms_reply_record(sender="+8613812345678", text="TD", provider_id="late-1", received_at=long_ago)

    assert reply.outcome == "withdraw"
    assert ConsentEvent.objects.get(customer=customer, action="withdraw").at == long_ago
    assert consent_is_granted(customer=customer, channel="sms")


def test_a_received_at_in_the_future_is_clamped_to_now():
    customer = _sms_customer()
    future = timezone.now() + timedelta(days=2)

    reply = sms_reply_record(sender="+8613812345678", text="TD", received_at=future)

    assert reply.received_at <= timezone.now()
    assert ConsentEvent.objects.get(customer=customer, action="withdraw").at <= timezone.now()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_provider_id_record_one_reply():
    import threading

    from django.db import connection

    customer = _sms_customer()
    barrier = threading.Barrier(4)
    results, errors = [], []

    def deliver():
        try:
            barrier.wait()
            results.append(sms_reply_record(sender="+8613812345678", text="TD", provider_id="race-1").pk)
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    assert SmsReply.objects.count() == 1
    assert ConsentEvent.objects.filter(customer=customer, action="withdraw").count() == 1


def test_a_start_without_an_id_or_a_fresh_time_cannot_be_replayed_to_regrant():
    customer = _sms_customer()
    _post({"from": "+8613812345678", "text": "TD", "id": "stop-1"})

    stale = (timezone.now() - timedelta(hours=2)).isoformat()
    for fields in ({"text": "START"}, {"text": "START", "received_at": stale}):
        response = _post({"from": "+8613812345678", **fields})
        assert response.status_code == 400
        assert "re-subscription" in response.json()["error"]
    assert not consent_is_granted(customer=customer, channel="sms")
    assert SmsReply.objects.count() == 1


def test_a_start_with_a_fresh_time_grants_once_and_a_stop_never_needs_one():
    customer = _sms_customer()
    assert _post({"from": "+8613812345678", "text": "退订"}).json()["outcome"] == "withdraw"

    response = _post({"from": "+8613812345678", "text": "START", "received_at": timezone.now().isoformat()})

    assert response.json()["outcome"] == "grant"
    assert consent_is_granted(customer=customer, channel="sms")


# Times from outside: bounded, and a re-subscription cannot be replayed -----------------------


@pytest.mark.parametrize("received_at", ["0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z", "2999-01-01T00:00:00Z"])
def test_an_opt_out_with_an_impossible_time_is_applied_now_and_every_list_still_opens(received_at, admin_client):
    # given a customer who consented to SMS
    customer = _sms_customer()
    # when the provider reports their TD with a time that cannot be right
    before = timezone.now()
    response = _post({"from": "+8613812345678", "text": "TD", "id": "odd-time", "received_at": received_at})
    # then the opt-out is honoured, dated when it reached us
    assert response.status_code == 200 and response.json()["outcome"] == "withdraw"
    assert not consent_is_granted(customer=customer, channel="sms")
    reply = SmsReply.objects.get()
    assert before <= reply.received_at <= timezone.now()
    assert ConsentEvent.objects.get(customer=customer, action="withdraw").at == reply.received_at
    # and the lists that show replies and the ledger still open
    assert admin_client.get(reverse("admin:consent_smsreply_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:consent_consentevent_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:consent_smsreply_change", args=[reply.pk])).status_code == 200


@pytest.mark.parametrize("received_at", ["2024-01-01T12:99:00Z", "2024-02-30T00:00:00Z", "2024-01-01T00:00:00+25:00"])
def test_a_received_at_that_is_no_real_time_is_400(received_at):
    _sms_customer()
    response = _post({"from": "+8613812345678", "text": "TD", "received_at": received_at})
    assert response.status_code == 400
    assert not SmsReply.objects.exists()


def test_a_start_dated_in_the_future_is_refused_even_within_the_window():
    customer = _sms_customer()
    _post({"from": "+8613812345678", "text": "TD", "id": "stop-1"})

    ahead = (timezone.now() + timedelta(minutes=14)).isoformat()
    response = _post({"from": "+8613812345678", "text": "START", "received_at": ahead})

    assert response.status_code == 400
    assert not consent_is_granted(customer=customer, channel="sms")
    assert SmsReply.objects.count() == 1


def test_a_start_with_an_out_of_bounds_time_is_refused_even_with_an_id():
    customer = _sms_customer()
    _post({"from": "+8613812345678", "text": "TD", "id": "stop-1"})

    response = _post({"from": "+8613812345678", "text": "START", "id": "p-2", "received_at": "0001-01-01T00:00:00+14:00"})

    assert response.status_code == 400
    assert not consent_is_granted(customer=customer, channel="sms")


def test_a_replayed_start_after_a_td_adds_no_ledger_row_and_grants_nothing():
    # given a START (fresh, no provider id), then the customer's TD
    customer = _sms_customer()
    start = {"from": "+8613812345678", "text": "START", "received_at": (timezone.now() - timedelta(minutes=2)).isoformat()}
    assert _post(start).json()["outcome"] == "grant"
    _post({"from": "+8613812345678", "text": "TD", "id": "stop-1"})
    ledger = ConsentEvent.objects.filter(customer=customer).count()
    # when someone who captured the START sends it again, still inside the window
    replay = _post(start)
    # then it answers like the first delivery, and nothing changes
    assert replay.status_code == 200 and replay.json()["id"] == SmsReply.objects.get(text="START").pk
    assert ConsentEvent.objects.filter(customer=customer).count() == ledger
    assert not consent_is_granted(customer=customer, channel="sms")


def test_a_start_with_a_provider_id_already_seen_adds_nothing():
    customer = _sms_customer()
    start = {"from": "+8613812345678", "text": "START", "id": "p-start"}
    _post(start)
    _post({"from": "+8613812345678", "text": "TD", "id": "p-stop"})

    _post(start)

    assert list(ConsentEvent.objects.filter(customer=customer, source="sms_reply").values_list("action", flat=True)
                .order_by("id")) == ["grant", "withdraw"]
    assert not consent_is_granted(customer=customer, channel="sms")


def test_every_sms_reply_event_carries_the_notice_version_in_force(settings):
    settings.NOTICE_VERSION = "privacy-2026-05"
    customer = _sms_customer()
    _post({"from": "+8613812345678", "text": "TD", "id": "a"})
    _post({"from": "+8613812345678", "text": "START", "id": "b"})
    assert set(ConsentEvent.objects.filter(customer=customer, source="sms_reply")
               .values_list("notice_version", flat=True)) == {"privacy-2026-05"}


# Keywords as typed, encodings, sizes ----------------------------------------------------------


@pytest.mark.parametrize("text", ["T D", "T-D", "T\u200bD", "TD退订", "退订TD", "退訂"])
def test_opt_outs_as_people_type_them_withdraw_through_the_webhook(text):
    customer = _sms_customer()
    assert _post({"from": "+8613812345678", "text": text}).json()["outcome"] == "withdraw"
    assert not consent_is_granted(customer=customer, channel="sms")


@pytest.mark.parametrize("charset", ["", "; charset=gbk"])
def test_a_gbk_body_is_decoded_with_or_without_a_charset(charset):
    # given a gateway that encodes its form in GBK (and may not say so)
    customer = _sms_customer()
    body = urlencode({"from": "+8613812345678", "text": "退订"}, encoding="gbk").encode()
    # when it posts a signed 退订
    response = Client().post(URL, body, content_type=FORM_TYPE + charset, HTTP_X_SIGNATURE=_sign(body))
    # then the text is read as it was written and the opt-out applied
    assert response.json()["outcome"] == "withdraw"
    assert SmsReply.objects.get().text == "退订"
    assert not consent_is_granted(customer=customer, channel="sms")


def test_a_utf8_body_without_a_charset_is_still_utf8():
    _sms_customer()
    _post({"from": "+8613812345678", "text": "请问优惠券怎么用？"})
    assert SmsReply.objects.get().text == "请问优惠券怎么用？"


def test_a_text_longer_than_a_few_sms_is_stored_cut_with_a_note():
    # given a signed body whose text is megabytes long
    customer = _sms_customer()
    text = "退" + "x" * 9_000_000
    # when it arrives
    response = _post({"from": "+8613812345678", "text": text, "id": "huge"})
    # then it is a reply, stored cut to a few SMS and saying how long it was
    assert response.json()["outcome"] == "reply"
    stored = SmsReply.objects.get().text
    assert stored.startswith("退" + "x" * 999) and len(stored) < 1100
    assert "truncated: 9,000,001 characters received" in stored
    assert consent_is_granted(customer=customer, channel="sms")


def test_a_long_unknown_sender_opt_out_note_stays_short():
    _post({"from": "13700001111", "text": "TD"})
    assert len(Suppression.objects.get().note) < 200


def test_nul_characters_anywhere_in_the_form_are_dropped_not_a_500():
    # PostgreSQL text cannot hold NUL: storing one would raise
    customer = _sms_customer()
    response = _post({"from": "+86138\x0012345678", "text": "T\x00D", "id": "p\x00-1"})
    assert response.status_code == 200 and response.json()["outcome"] == "withdraw"
    reply = SmsReply.objects.get()
    assert (reply.sender, reply.text, reply.provider_id) == ("+8613812345678", "TD", "p-1")
    assert not consent_is_granted(customer=customer, channel="sms")
