"""The unsubscribe and preference pages as a person uses them: Chromium clicks the buttons.

Each test checks the ledger (ConsentEvent) and the current state (ConsentState), not only the
page: a page that says "you are unsubscribed" while nothing was recorded is the worst failure.
"""

import pytest
from django.urls import reverse

from consent.models import ConsentEvent, ConsentState
from consent.services import consent_grant
from core.tokens import unsubscribe_token_make
from tests.factories import CustomerFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHANNELS = ("email", "sms", "in_app")


def _customer(*, granted=CHANNELS, **kwargs):
    customer = CustomerFactory(**kwargs)
    for channel in granted:
        consent_grant(customer=customer, channel=channel, source="signup", notice_version="v1")
    return customer


def _url(live_server, name, customer, channel="email"):
    token = unsubscribe_token_make(customer_id=customer.pk, channel=channel)
    return live_server.url + reverse(f"consent:{name}", args=[token])


def _submit(page, button):
    """Click a form's button; fail at once on the POST's status (a 403 from the CSRF check
    would otherwise show only as a heading that never appears)."""
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.get_by_role("button", name=button).click()
    assert posted.value.status == 200, f"{posted.value.status} {posted.value.status_text}"


def _states(customer):
    return dict(ConsentState.objects.filter(customer=customer).values_list("channel", "status"))


def _events(customer, source):
    return list(ConsentEvent.objects.filter(customer=customer, source=source).order_by("channel")
                .values_list("channel", "action"))


def test_clicking_unsubscribe_withdraws_email_only_with_the_browsers_evidence(live_server, page):
    customer = _customer(locale="en")

    page.goto(_url(live_server, "unsubscribe", customer))
    assert _events(customer, "unsubscribe_link") == []  # the GET a link scanner makes changes nothing
    _submit(page, "Unsubscribe")

    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    event = ConsentEvent.objects.get(customer=customer, source="unsubscribe_link")
    assert (event.channel, event.action) == ("email", "withdraw")
    assert event.evidence["ip"] == "127.0.0.1"
    assert "Chrome/" in event.evidence["user_agent"]
    assert _states(customer) == {"email": "withdrawn", "sms": "granted", "in_app": "granted"}


def test_clicking_unsubscribe_on_the_chinese_page_from_a_phone(live_server, page):
    customer = _customer(locale="zh-hans")
    page.set_viewport_size({"width": 390, "height": 844})

    page.goto(_url(live_server, "unsubscribe", customer, "sms"))
    _submit(page, "确认退订")

    page.get_by_role("heading", name="退订成功").wait_for()
    assert _events(customer, "unsubscribe_link") == [("sms", "withdraw")]
    assert _states(customer)["sms"] == "withdrawn"


def test_the_preference_center_saves_what_was_clicked(live_server, page):
    customer = _customer(locale="en", granted=("email", "in_app"))

    page.goto(_url(live_server, "preferences", customer))
    page.get_by_label("Marketing emails").uncheck()
    page.get_by_label("Marketing text messages (SMS)").check()
    _submit(page, "Save my choices")

    page.get_by_text("Your choices are saved.").wait_for()
    assert _events(customer, "preference_center") == [("email", "withdraw"), ("sms", "grant")]
    assert _states(customer) == {"email": "withdrawn", "sms": "granted", "in_app": "granted"}
    # The page shows the saved choices, so a second save without a click changes nothing.
    assert not page.get_by_label("Marketing emails").is_checked()
    assert page.get_by_label("Marketing text messages (SMS)").is_checked()
    _submit(page, "Save my choices")
    page.get_by_text("Nothing changed.").wait_for()
    assert ConsentEvent.objects.filter(customer=customer, source="preference_center").count() == 2


def test_unsubscribe_then_preferences_in_one_visit(live_server, page):
    customer = _customer(locale="en")

    page.goto(_url(live_server, "unsubscribe", customer))
    _submit(page, "Unsubscribe")
    page.get_by_role("link", name="Manage all your message preferences").click()
    assert not page.get_by_label("Marketing emails").is_checked()
    page.get_by_label("Messages in the app").uncheck()
    _submit(page, "Save my choices")

    page.get_by_text("Your choices are saved.").wait_for()
    assert _states(customer) == {"email": "withdrawn", "sms": "granted", "in_app": "withdrawn"}
    assert _events(customer, "preference_center") == [("in_app", "withdraw")]


def test_the_token_goes_to_this_site_only(live_server, page):
    """Referrer-Policy same-origin, as Chromium applies it: the form POST carries our Origin
    (so the CSRF check passes), a link within the site carries the Referer, and a link to
    another site carries no Referer, so the token in the URL never reaches it."""
    customer = _customer(locale="en")
    url = _url(live_server, "unsubscribe", customer)
    page.route("https://elsewhere.example/**", lambda route: route.fulfill(body="elsewhere"))

    response = page.goto(url)
    assert response.headers["referrer-policy"] == "same-origin"
    with page.expect_request(lambda request: "/preferences/" in request.url) as inside:
        page.get_by_role("link", name="Manage all your message preferences").click()
    page.evaluate("""() => {
        const link = Object.assign(document.createElement("a"), {href: "https://elsewhere.example/", textContent: "Elsewhere"});
        document.querySelector("main").append(link);
    }""")
    with page.expect_request("https://elsewhere.example/") as outside:
        page.get_by_role("link", name="Elsewhere").click()
    page.go_back()
    with page.expect_request(lambda request: request.method == "POST") as posted:
        _submit(page, "Save my choices")

    assert inside.value.all_headers()["referer"] == url
    assert "referer" not in outside.value.all_headers()
    assert posted.value.all_headers()["origin"] == live_server.url
    assert _states(customer) == {"email": "granted", "sms": "granted", "in_app": "granted"}
    assert ConsentEvent.objects.filter(customer=customer).count() == len(CHANNELS)  # nothing changed, nothing recorded


def test_one_click_post_without_cookies_or_csrf_token_withdraws_and_answers_200(live_server, context):
    customer = _customer(locale="en")
    url = _url(live_server, "unsubscribe", customer, "email")

    # What a mailbox provider sends (RFC 8058): no cookies, no CSRF token, no Origin of ours.
    response = context.request.post(
        url, headers={"Content-Type": "application/x-www-form-urlencoded"}, data="List-Unsubscribe=One-Click",
        max_redirects=0,
    )

    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "set-cookie" not in response.headers
    assert context.cookies() == []
    assert _events(customer, "one_click") == [("email", "withdraw")]
    assert _states(customer) == {"email": "withdrawn", "sms": "granted", "in_app": "granted"}


@pytest.mark.parametrize("width", [390, 1200])
@pytest.mark.parametrize("name", ["unsubscribe", "preferences"])
def test_the_pages_fit_the_screen(live_server, page, shots_dir, name, width):
    customer = _customer(locale="zh-hans", email="zhang.wei.long.address@example.com")
    page.set_viewport_size({"width": width, "height": 844})

    page.goto(_url(live_server, name, customer))
    if shots_dir is not None:
        page.screenshot(path=str(shots_dir / f"{name}-{width}.png"), full_page=True)

    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    button = page.get_by_role("button").bounding_box()
    assert button["x"] >= 0 and button["x"] + button["width"] <= width
    assert button["height"] >= 40  # big enough for a thumb
    assert ConsentEvent.objects.filter(customer=customer).count() == len(CHANNELS)  # looking changes nothing
