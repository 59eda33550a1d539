import time
from unittest import mock

import pytest
from django.core import signing

from django.utils.crypto import salted_hmac

from core import tokens
from core.tokens import (
    BadToken,
    claim_token_make,
    claim_token_read,
    preferences_url,
    unsubscribe_token_make,
    unsubscribe_token_read,
    unsubscribe_url,
)


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


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_a_token_with_the_message_language_is_what_django_signing_makes_and_reads_back(language, settings):
    with mock.patch("time.time", return_value=1_790_000_000.5):
        ours = unsubscribe_token_make(customer_id=5, channel="email", language=language)
        django_s = signing.dumps({"c": 5, "ch": "email", "l": language}, salt=tokens._SALT, compress=False)

    assert ours == django_s
    assert unsubscribe_token_read(ours).language == language
    assert unsubscribe_token_read(unsubscribe_token_make(customer_id=5, channel="email")).language == ""


# Claim tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("grant_id", [1, 61, 62, 123_456, 2**40, 2**63 - 1])
def test_a_claim_token_round_trips_the_grant_id(grant_id):
    token = claim_token_make(grant_id=grant_id)

    assert claim_token_read(token) == grant_id
    assert "/" not in token and "?" not in token and "#" not in token  # a URL path segment as is


@pytest.mark.parametrize("grant_id", [1, 123_456, 10**12, 2**63 - 1])
def test_a_claim_token_is_short_enough_for_an_sms(grant_id):
    # Up to a trillion grants the token stays within 24 characters; even the largest bigint, 28.
    token = claim_token_make(grant_id=grant_id)

    assert len(token) <= (24 if grant_id <= 10**12 else 30)


def _flip(token: str, index: int) -> str:
    char = token[index]
    return token[:index] + ("B" if char == "A" else "A") + token[index + 1 :]


def test_every_flipped_character_is_refused():
    token = claim_token_make(grant_id=987_654)

    for index in range(len(token)):
        if token[index] == ".":
            continue
        with pytest.raises(BadToken):
            claim_token_read(_flip(token, index))


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "abc.", ".abc", "1.AAAAAAAAAAAAAAAA", "1.." + "A" * 16, "é.ÅÅÅ", "0." + "A" * 16, "x" * 500],
)
def test_malformed_claim_tokens_are_refused(token):
    with pytest.raises(BadToken):
        claim_token_read(token)


def test_another_grants_signature_is_refused():
    # A valid signature moved onto another id: the id is what the HMAC covers.
    mine, other = claim_token_make(grant_id=41), claim_token_make(grant_id=42)

    with pytest.raises(BadToken):
        claim_token_read(mine.split(".")[0] + "." + other.split(".")[1])


def test_a_token_made_for_another_purpose_is_refused():
    # Same shape, same key, another salt: e.g. a future "redeem" or "survey" link for grant 5.
    forged = "5." + signing.b64_encode(salted_hmac("offers.redeem", "5", algorithm="sha256").digest()[:12]).decode()
    with pytest.raises(BadToken):
        claim_token_read(forged)
    # And an unsubscribe token is not a claim token.
    with pytest.raises(BadToken):
        claim_token_read(unsubscribe_token_make(customer_id=5, channel="email"))


def test_a_claim_token_made_with_another_key_is_refused_unless_that_key_is_a_fallback(settings):
    settings.SECRET_KEY = old_key = "the-old-secret-key-" + "x" * 40
    token = claim_token_make(grant_id=77)

    settings.SECRET_KEY = "the-new-secret-key-" + "y" * 40
    with pytest.raises(BadToken):
        claim_token_read(token)

    # Links already sent keep working through a key rotation.
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert claim_token_read(token) == 77


def test_the_claim_signature_is_compared_in_constant_time():
    token = claim_token_make(grant_id=3)
    with mock.patch("core.tokens.hmac.compare_digest", wraps=tokens.hmac.compare_digest) as compare:
        claim_token_read(token)
    assert compare.called


@pytest.mark.parametrize("grant_id", [1, 62, 987_654_321_012])
def test_a_claim_token_is_exactly_salted_hmac_sha256_truncated(grant_id, settings):
    settings.SECRET_KEY = "another-secret-key-for-this-test-" + "z" * 20
    value = signing.b62_encode(grant_id)
    expected = salted_hmac("offers.claim", value, algorithm="sha256").digest()[:12]

    assert claim_token_make(grant_id=grant_id) == f"{value}.{signing.b64_encode(expected).decode()}"


@pytest.mark.parametrize("grant_id", [0, -1, None, "5", True, 1.0])
def test_only_positive_integer_ids_get_a_token(grant_id):
    with pytest.raises(ValueError):
        claim_token_make(grant_id=grant_id)
