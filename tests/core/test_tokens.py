import time
from unittest import mock

import pytest
from django.core import signing

from core import tokens
from core.tokens import BadToken, preferences_url, unsubscribe_token_make, unsubscribe_token_read, unsubscribe_url


def test_a_token_round_trips_customer_and_channel():
    token = unsubscribe_token_make(customer_id=42, channel="sms")

    claim = unsubscribe_token_read(token)

    assert (claim.customer_id, claim.channel) == (42, "sms")
    assert "/" not in token  # it sits in a URL path segment


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
        lambda t: "x" + t,  # payload changed
        lambda t: t.rsplit(":", 1)[0],  # signature removed
        lambda t: "",
        lambda t: "not-a-token",
    ],
    ids=["signature", "payload", "no-signature", "empty", "garbage"],
)
def test_a_damaged_or_forged_token_is_refused(mangle):
    token = unsubscribe_token_make(customer_id=1, channel="email")
    with pytest.raises(BadToken):
        unsubscribe_token_read(mangle(token))


def test_a_token_signed_for_another_purpose_or_with_another_key_is_refused(settings):
    other_salt = signing.dumps({"c": 1, "ch": "email"}, salt="password-reset", compress=False)
    with pytest.raises(BadToken):
        unsubscribe_token_read(other_salt)

    token = unsubscribe_token_make(customer_id=1, channel="email")
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    with pytest.raises(BadToken):
        unsubscribe_token_read(token)


def test_a_well_signed_token_with_a_bad_payload_is_refused():
    token = signing.dumps({"customer": 1}, salt=tokens._SALT, compress=False)
    with pytest.raises(BadToken):
        unsubscribe_token_read(token)


def test_tokens_last_two_years_and_no_longer():
    token = unsubscribe_token_make(customer_id=7, channel="email")
    now = time.time()

    with mock.patch("django.core.signing.time.time", return_value=now + 729 * 86400):
        assert unsubscribe_token_read(token).customer_id == 7
    with mock.patch("django.core.signing.time.time", return_value=now + 731 * 86400):
        with pytest.raises(BadToken, match="expired"):
            unsubscribe_token_read(token)


def test_the_signature_is_checked_in_constant_time():
    token = unsubscribe_token_make(customer_id=3, channel="email")
    with mock.patch("django.core.signing.constant_time_compare", wraps=signing.constant_time_compare) as compare:
        unsubscribe_token_read(token)
    assert compare.called


def test_urls_are_absolute_and_point_at_the_consent_pages():
    unsubscribe = unsubscribe_url(customer_id=5, channel="in_app")
    prefs = preferences_url(customer_id=5)

    assert unsubscribe.startswith("https://winback.example.com/consent/unsubscribe/")
    assert prefs.startswith("https://winback.example.com/consent/preferences/")
    token = unsubscribe.rstrip("/").rsplit("/", 1)[1]
    assert unsubscribe_token_read(token).channel == "in_app"
    assert unsubscribe_token_read(prefs.rstrip("/").rsplit("/", 1)[1]).channel == "email"


@pytest.mark.parametrize("customer_id, channel", [(1, "email"), (987654321012, "sms"), (42, "in_app")])
def test_a_token_is_exactly_what_django_signing_makes(customer_id, channel, settings):
    settings.SECRET_KEY = "another-secret-key-for-this-test-" + "x" * 20
    with mock.patch("time.time", return_value=1_790_000_000.5):
        ours = unsubscribe_token_make(customer_id=customer_id, channel=channel)
        django_s = signing.dumps({"c": customer_id, "ch": channel}, salt=tokens._SALT, compress=False)

    assert ours == django_s
