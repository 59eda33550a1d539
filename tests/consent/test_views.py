"""Unsubscribe link, RFC 8058 one-click and the preference center."""

import logging

import pytest
from django.test import Client
from django.urls import reverse

from consent.models import ConsentEvent, ConsentState
from consent.selectors import consent_is_granted
from consent.services import consent_grant, consent_withdraw, suppression_add
from core.tokens import unsubscribe_token_make
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

ONE_CLICK = "List-Unsubscribe=One-Click"
FORM_TYPE = "application/x-www-form-urlencoded"


def _unsubscribe_path(customer, channel="email"):
    return reverse("consent:unsubscribe", args=[unsubscribe_token_make(customer_id=customer.pk, channel=channel)])


def _preferences_path(customer, channel="email"):
    return reverse("consent:preferences", args=[unsubscribe_token_make(customer_id=customer.pk, channel=channel)])


def _granted_customer(**kwargs):
    customer = CustomerFactory(**kwargs)
    for channel in ("email", "sms", "in_app"):
        consent_grant(customer=customer, channel=channel, source="signup", notice_version="v1")
    return customer


def _csrf_client_with_token(path):
    """A browser: GET the page (sets the CSRF cookie), return the client and the form token."""
    client = Client(enforce_csrf_checks=True)
    response = client.get(path)
    return client, response.context["csrf_token"]


# The confirmation page (GET) ---------------------------------------------------------------


def test_get_shows_a_chinese_confirmation_page_and_changes_nothing():
    customer = _granted_customer(locale="zh-hans", email="zhang.wei@example.com")
    before = ConsentEvent.objects.count()

    response = Client().get(_unsubscribe_path(customer))

    assert response.status_code == 200
    page = response.content.decode()
    assert "确定不再接收营销邮件吗" in page and 'lang="zh-CN"' in page
    assert response["Content-Language"] == "zh-CN"
    assert "z***@e***.com" in page and "zhang.wei@example.com" not in page
    assert ConsentEvent.objects.count() == before
    assert consent_is_granted(customer=customer, channel="email")
    assert response["Referrer-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("locale", ["en", "", "fr", "en-US"])
def test_get_is_in_english_for_every_other_locale(locale):
    customer = _granted_customer(locale=locale)

    page = Client().get(_unsubscribe_path(customer, "sms")).content.decode()

    assert "Stop receiving marketing text messages (SMS)?" in page
    assert customer.phone not in page and customer.phone[-4:] in page


def test_head_changes_nothing_either():
    customer = _granted_customer()

    response = Client().head(_unsubscribe_path(customer))

    assert response.status_code == 200
    assert ConsentEvent.objects.filter(source__in=["unsubscribe_link", "one_click"]).count() == 0


def test_get_tells_an_already_unsubscribed_customer_so():
    customer = _granted_customer(locale="en")
    consent_withdraw(customer=customer, channel="email", source="admin")

    page = Client().get(_unsubscribe_path(customer)).content.decode()

    assert "already unsubscribed" in page


def test_every_consent_response_keeps_the_token_on_this_site():
    """"same-origin": no Referer (so no token) to any other site, while the pages' own form
    POSTs keep a real Origin for the CSRF check (tests/browser clicks them in Chromium)."""
    customer = _granted_customer()
    unsubscribe, preferences = _unsubscribe_path(customer), _preferences_path(customer)
    client, csrf = _csrf_client_with_token(unsubscribe)

    responses = {
        "confirmation": client.get(unsubscribe),
        "done": client.post(unsubscribe, {"csrfmiddlewaretoken": csrf}),
        "preferences": client.get(preferences),
        "preferences saved": client.post(preferences, {"csrfmiddlewaretoken": csrf, "email": "on"}),
        "one-click": Client().post(unsubscribe, ONE_CLICK, content_type=FORM_TYPE),
        "invalid link": client.get(reverse("consent:unsubscribe", args=["garbage"])),
    }

    assert {name: r["Referrer-Policy"] for name, r in responses.items()} == dict.fromkeys(responses, "same-origin")
    assert all(r["X-Robots-Tag"] == "noindex, nofollow" for r in responses.values())
    assert [r.status_code for r in responses.values()] == [200, 200, 200, 200, 200, 400]


# The form's POST ---------------------------------------------------------------------------


def test_the_form_post_withdraws_with_evidence_and_links_to_the_preference_center():
    customer = _granted_customer(locale="zh-hans")
    path = _unsubscribe_path(customer)
    client, csrf = _csrf_client_with_token(path)

    response = client.post(path, {"csrfmiddlewaretoken": csrf}, HTTP_USER_AGENT="Mozilla/5.0 test", REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 200
    page = response.content.decode()
    assert "退订成功" in page
    assert reverse("consent:preferences", args=[path.rstrip("/").rsplit("/", 1)[1]]) in page
    event = ConsentEvent.objects.get(customer=customer, action="withdraw")
    assert (event.channel, event.source) == ("email", "unsubscribe_link")
    assert event.evidence == {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 test"}
    assert not consent_is_granted(customer=customer, channel="email")
    assert consent_is_granted(customer=customer, channel="sms")


def test_the_form_post_without_a_csrf_token_is_refused_and_records_nothing():
    customer = _granted_customer()
    client, _csrf = _csrf_client_with_token(_unsubscribe_path(customer))

    response = client.post(_unsubscribe_path(customer), {"unsubscribe": "1"})

    assert response.status_code == 403
    assert not ConsentEvent.objects.filter(action="withdraw").exists()


def test_the_one_click_header_without_the_one_click_body_gets_no_csrf_exemption():
    customer = _granted_customer()

    response = Client(enforce_csrf_checks=True).post(
        _unsubscribe_path(customer), "", content_type=FORM_TYPE, HTTP_LIST_UNSUBSCRIBE_POST=ONE_CLICK
    )

    assert response.status_code == 403
    assert not ConsentEvent.objects.filter(action="withdraw").exists()


# RFC 8058 one-click ------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["email", "sms", "in_app"])
def test_one_click_post_without_cookies_or_csrf_withdraws_at_once_and_answers_200(channel, caplog):
    customer = _granted_customer()
    client = Client(enforce_csrf_checks=True)

    with caplog.at_level(logging.INFO, logger="consent.views"):
        response = client.post(_unsubscribe_path(customer, channel), ONE_CLICK, content_type=FORM_TYPE, REMOTE_ADDR="198.51.100.7")

    assert response.status_code == 200
    assert not response.has_header("Location")
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().strip()
    assert not response.cookies
    event = ConsentEvent.objects.get(customer=customer, action="withdraw")
    assert (event.channel, event.source, event.evidence["ip"]) == (channel, "one_click", "198.51.100.7")
    assert not consent_is_granted(customer=customer, channel=channel)
    others = {"email", "sms", "in_app"} - {channel}
    assert all(consent_is_granted(customer=customer, channel=other) for other in others)
    assert f"source=one_click customer_id={customer.pk} channel={channel}" in caplog.text


def test_one_click_also_arrives_as_multipart():
    customer = _granted_customer()

    response = Client(enforce_csrf_checks=True).post(_unsubscribe_path(customer), {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert ConsentEvent.objects.get(action="withdraw").source == "one_click"


def test_one_click_with_an_unusual_content_type_is_decided_by_the_body():
    customer = _granted_customer()

    response = Client(enforce_csrf_checks=True).post(_unsubscribe_path(customer), ONE_CLICK + "\r\n", content_type="text/plain")

    assert response.status_code == 200
    assert ConsentEvent.objects.get(action="withdraw").source == "one_click"


def test_a_repeated_one_click_still_answers_200_and_records_the_request_again():
    customer = _granted_customer()
    path = _unsubscribe_path(customer)
    client = Client(enforce_csrf_checks=True)

    first = client.post(path, ONE_CLICK, content_type=FORM_TYPE)
    second = client.post(path, ONE_CLICK, content_type=FORM_TYPE)

    assert first.status_code == second.status_code == 200
    assert ConsentEvent.objects.filter(customer=customer, action="withdraw", source="one_click").count() == 2
    assert ConsentState.objects.get(customer=customer, channel="email").status == "withdrawn"


def test_one_click_for_a_customer_with_no_prior_consent_still_records_the_withdrawal():
    customer = CustomerFactory()

    response = Client(enforce_csrf_checks=True).post(_unsubscribe_path(customer, "sms"), ONE_CLICK, content_type=FORM_TYPE)

    assert response.status_code == 200
    assert ConsentState.objects.get(customer=customer, channel="sms").status == "withdrawn"


def test_one_click_with_a_different_value_is_not_one_click():
    customer = _granted_customer()

    response = Client(enforce_csrf_checks=True).post(
        _unsubscribe_path(customer), "List-Unsubscribe=Two-Clicks", content_type=FORM_TYPE
    )

    assert response.status_code == 403
    assert not ConsentEvent.objects.filter(action="withdraw").exists()


# Bad tokens --------------------------------------------------------------------------------


def _bad_tokens(customer):
    good = unsubscribe_token_make(customer_id=customer.pk, channel="email")
    return {
        "forged-signature": good[:-2] + ("xx" if not good.endswith("xx") else "yy"),
        "garbage": "hello",
        "unknown-channel": unsubscribe_token_make(customer_id=customer.pk, channel="pigeon"),
        "unknown-customer": unsubscribe_token_make(customer_id=customer.pk + 1000, channel="email"),
    }


@pytest.mark.parametrize("kind", ["forged-signature", "garbage", "unknown-channel", "unknown-customer"])
def test_a_bad_token_gets_400_everywhere_and_records_nothing(kind, caplog):
    customer = _granted_customer()
    token = _bad_tokens(customer)[kind]
    unsubscribe = reverse("consent:unsubscribe", args=[token])
    preferences = reverse("consent:preferences", args=[token])
    client = Client()
    before = ConsentEvent.objects.count()

    with caplog.at_level(logging.WARNING, logger="consent.views"):
        get = client.get(unsubscribe)
        one_click = Client(enforce_csrf_checks=True).post(unsubscribe, ONE_CLICK, content_type=FORM_TYPE)
        form_post = client.post(unsubscribe, {})
        prefs_get = client.get(preferences)
        prefs_post = client.post(preferences, {"email": "on"})

    assert [r.status_code for r in (get, one_click, form_post, prefs_get, prefs_post)] == [400] * 5
    assert "This link is invalid" in get.content.decode() and "链接无效" in get.content.decode()
    assert one_click.content.decode().strip() == "This link is invalid."
    assert ConsentEvent.objects.count() == before
    assert "consent_link_invalid" in caplog.text


# Preference center -------------------------------------------------------------------------


def test_preferences_show_current_choices_with_masked_addresses():
    customer = CustomerFactory(locale="en", email="li.na@example.org", phone="+8613912345678")
    consent_grant(customer=customer, channel="email", source="signup")
    consent_withdraw(customer=customer, channel="sms", source="sms_reply")

    response = Client().get(_preferences_path(customer))

    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial == {"email": True, "sms": False, "in_app": False}
    page = response.content.decode()
    assert "l***@e***.org" in page and "+86*******5678" in page
    assert "li.na@example.org" not in page and "+8613912345678" not in page
    assert ConsentEvent.objects.filter(customer=customer).count() == 2  # GET recorded nothing


def test_preferences_post_records_only_the_changed_channels_with_evidence():
    customer = CustomerFactory(locale="zh-hans")
    consent_grant(customer=customer, channel="email", source="signup")
    consent_grant(customer=customer, channel="in_app", source="signup")
    path = _preferences_path(customer)
    client, csrf = _csrf_client_with_token(path)

    # email off (changed), sms on (changed, confirmed: the link came by email), in_app stays on
    response = client.post(path, {"csrfmiddlewaretoken": csrf, "sms": "on", "in_app": "on", "confirm_others": "on"},
                           HTTP_USER_AGENT="UA", REMOTE_ADDR="192.0.2.1")

    assert response.status_code == 200
    assert "您的设置已保存" in response.content.decode()
    events = ConsentEvent.objects.filter(customer=customer, source="preference_center").order_by("channel")
    assert [(e.channel, e.action) for e in events] == [("email", "withdraw"), ("sms", "grant")]
    assert all(e.evidence == {"ip": "192.0.2.1", "user_agent": "UA"} for e in events)
    assert not consent_is_granted(customer=customer, channel="email")
    assert consent_is_granted(customer=customer, channel="sms")
    assert consent_is_granted(customer=customer, channel="in_app")
    assert response.context["form"]["sms"].value() is True


@pytest.mark.parametrize(("link_channel", "post", "refused"), [
    ("email", {"email": "on", "sms": "on", "in_app": "on"}, "SMS"),  # an email link granting SMS
    ("in_app", {"email": "on", "sms": "on", "in_app": "on"}, "SMS"),  # an inbox item's link granting SMS
])
def test_a_link_grants_another_channel_only_when_the_customer_confirms(link_channel, post, refused):
    customer = CustomerFactory(locale="en")
    consent_grant(customer=customer, channel="email", source="signup")
    consent_grant(customer=customer, channel="in_app", source="signup")
    path = _preferences_path(customer, channel=link_channel)
    client, csrf = _csrf_client_with_token(path)

    response = client.post(path, {"csrfmiddlewaretoken": csrf, **post})

    assert response.status_code == 200
    assert f"This link was sent by {'marketing emails' if link_channel == 'email' else 'messages in the app'}".lower() \
        in response.content.decode().lower()
    assert refused.lower() in response.content.decode().lower()
    assert not ConsentEvent.objects.filter(customer=customer, source="preference_center").exists()

    confirmed = client.post(path, {"csrfmiddlewaretoken": csrf, **post, "confirm_others": "on"})

    assert "Your choices are saved." in confirmed.content.decode()
    assert ConsentEvent.objects.filter(customer=customer, source="preference_center").count() == 1


def test_withdrawing_on_any_channel_and_granting_the_links_own_need_no_confirmation():
    customer = CustomerFactory(locale="en")
    consent_grant(customer=customer, channel="email", source="signup")
    path = _preferences_path(customer, channel="in_app")
    client, csrf = _csrf_client_with_token(path)

    client.post(path, {"csrfmiddlewaretoken": csrf, "in_app": "on"})  # email off, in-app on

    assert not consent_is_granted(customer=customer, channel="email")
    assert consent_is_granted(customer=customer, channel="in_app")


def test_preferences_post_with_nothing_changed_records_nothing():
    customer = CustomerFactory(locale="en")
    consent_grant(customer=customer, channel="email", source="signup")
    path = _preferences_path(customer)
    client, csrf = _csrf_client_with_token(path)

    response = client.post(path, {"csrfmiddlewaretoken": csrf, "email": "on"})

    assert "Nothing changed." in response.content.decode()
    assert ConsentEvent.objects.filter(customer=customer).count() == 1


def test_preferences_post_needs_a_csrf_token():
    customer = CustomerFactory()
    path = _preferences_path(customer)
    client, _csrf = _csrf_client_with_token(path)

    response = client.post(path, {"email": "on"})

    assert response.status_code == 403
    assert not ConsentEvent.objects.exists()


def test_a_grant_on_a_suppressed_address_is_recorded_but_the_page_says_it_stays_blocked():
    customer = CustomerFactory(locale="en", email="bounced@example.com")
    suppression_add(channel="email", address="bounced@example.com", reason="hard_bounce")
    path = _preferences_path(customer)
    client, csrf = _csrf_client_with_token(path)

    response = client.post(path, {"csrfmiddlewaretoken": csrf, "email": "on"})

    assert ConsentEvent.objects.get(customer=customer).action == "grant"
    page = response.content.decode()
    assert "Messages to b***@e***.com stay blocked" in page
    assert "bounced@example.com" not in page


def test_a_channel_without_an_address_cannot_be_switched_on():
    customer = CustomerFactory(phone="")
    path = _preferences_path(customer)
    client, csrf = _csrf_client_with_token(path)

    response = client.post(path, {"csrfmiddlewaretoken": csrf, "sms": "on"})

    assert response.status_code == 200
    assert response.context["form"].fields["sms"].disabled
    assert not ConsentEvent.objects.filter(channel="sms").exists()


def test_a_broken_multipart_body_is_refused_and_records_nothing():
    customer = _granted_customer()

    response = Client(enforce_csrf_checks=True).post(
        _unsubscribe_path(customer), b"--x\r\ngarbage", content_type="multipart/form-data; boundary="
    )

    assert response.status_code == 403
    assert not ConsentEvent.objects.filter(action="withdraw").exists()
