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

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

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
    return posted.value


def _states(customer):
    return dict(ConsentState.objects.filter(customer=customer).values_list("channel", "status"))


def _events(customer, source):
    return list(ConsentEvent.objects.filter(customer=customer, source=source).order_by("channel")
                .values_list("channel", "action"))


def test_clicking_unsubscribe_withdraws_email_only_with_the_browsers_evidence(live_server, open_browser):
    customer = _customer(locale="en")

    with open_browser() as page:
        page.goto(_url(live_server, "unsubscribe", customer))
        _submit(page, "Unsubscribe")
        expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
        user_agent = page.evaluate("navigator.userAgent")

    event = ConsentEvent.objects.get(customer=customer, source="unsubscribe_link")
    assert (event.channel, event.action) == ("email", "withdraw")
    assert event.evidence == {"ip": "127.0.0.1", "user_agent": user_agent}
    assert _states(customer) == {"email": "withdrawn", "sms": "granted", "in_app": "granted"}


def test_opening_the_unsubscribe_page_changes_nothing(live_server, open_browser):
    customer = _customer(locale="en")

    with open_browser() as page:
        page.goto(_url(live_server, "unsubscribe", customer))
        expect(page.get_by_role("button", name="Unsubscribe")).to_be_visible()

    # Link scanners open every link: only the button's POST may unsubscribe.
    assert ConsentEvent.objects.filter(customer=customer).count() == len(CHANNELS)
    assert set(_states(customer).values()) == {"granted"}


def test_clicking_unsubscribe_on_the_chinese_page_from_a_phone(live_server, open_browser):
    customer = _customer(locale="zh-hans")

    with open_browser(width=390, height=844) as page:
        page.goto(_url(live_server, "unsubscribe", customer, "sms"))
        _submit(page, "确认退订")
        expect(page.get_by_role("heading", name="退订成功")).to_be_visible()

    assert _events(customer, "unsubscribe_link") == [("sms", "withdraw")]
    assert _states(customer) == {"email": "granted", "sms": "withdrawn", "in_app": "granted"}


def test_the_preference_center_saves_what_was_clicked(live_server, open_browser):
    customer = _customer(locale="en", granted=("email", "in_app"))

    with open_browser() as page:
        page.goto(_url(live_server, "preferences", customer))
        page.get_by_label("Marketing emails").uncheck()
        page.get_by_label("Marketing text messages (SMS)").check()
        # The link came by email: changing SMS too must be confirmed.
        _submit(page, "Save my choices")
        expect(page.get_by_role("alert")).to_contain_text("tick the confirmation")
        page.get_by_label("I also want messages on the other channels I ticked").check()
        _submit(page, "Save my choices")
        expect(page.get_by_text("Your choices are saved.")).to_be_visible()
        # The page shows the saved choices, so saving again without a click changes nothing.
        expect(page.get_by_label("Marketing emails")).not_to_be_checked()
        expect(page.get_by_label("Marketing text messages (SMS)")).to_be_checked()
        expect(page.get_by_label("Messages in the app")).to_be_checked()
        _submit(page, "Save my choices")
        expect(page.get_by_text("Nothing changed.")).to_be_visible()

    assert _events(customer, "preference_center") == [("email", "withdraw"), ("sms", "grant")]
    assert _states(customer) == {"email": "withdrawn", "sms": "granted", "in_app": "granted"}


def test_unsubscribe_then_preferences_in_one_visit(live_server, open_browser):
    customer = _customer(locale="en")

    with open_browser() as page:
        page.goto(_url(live_server, "unsubscribe", customer))
        _submit(page, "Unsubscribe")
        page.get_by_role("link", name="Manage all your message preferences").click()
        expect(page.get_by_label("Marketing emails")).not_to_be_checked()
        page.get_by_label("Messages in the app").uncheck()
        _submit(page, "Save my choices")
        expect(page.get_by_text("Your choices are saved.")).to_be_visible()

    assert _events(customer, "unsubscribe_link") == [("email", "withdraw")]
    assert _events(customer, "preference_center") == [("in_app", "withdraw")]
    assert _states(customer) == {"email": "withdrawn", "sms": "granted", "in_app": "withdrawn"}


def test_the_token_goes_to_this_site_only(live_server, open_browser):
    """Referrer-Policy same-origin, as Chromium applies it: the form POST carries our Origin
    (so the CSRF check passes), a link within the site carries the Referer, and a link to
    another site carries no Referer, so the token in the URL never reaches it."""
    customer = _customer(locale="en")
    url = _url(live_server, "unsubscribe", customer)

    with open_browser() as page:
        page.route("https://elsewhere.example/**", lambda route: route.fulfill(body="elsewhere"))
        policy = page.goto(url).headers["referrer-policy"]
        with page.expect_request(lambda request: "/preferences/" in request.url) as inside:
            page.get_by_role("link", name="Manage all your message preferences").click()
        page.evaluate("""() => {
            const link = Object.assign(document.createElement("a"), {href: "https://elsewhere.example/", textContent: "Elsewhere"});
            document.querySelector("main").append(link);
        }""")
        with page.expect_request("https://elsewhere.example/") as outside:
            page.get_by_role("link", name="Elsewhere").click()
        page.go_back()
        posted = _submit(page, "Save my choices")
        headers = {"inside": inside.value.all_headers(), "outside": outside.value.all_headers(),
                   "posted": posted.request.all_headers()}

    assert policy == "same-origin"
    assert headers["inside"]["referer"] == url
    assert "referer" not in headers["outside"]
    assert headers["posted"]["origin"] == live_server.url
    assert set(_states(customer).values()) == {"granted"}
    assert ConsentEvent.objects.filter(customer=customer).count() == len(CHANNELS)  # saved unchanged: nothing recorded


def test_one_click_post_without_cookies_or_csrf_token_withdraws_and_answers_200(live_server, open_browser):
    customer = _customer(locale="en")
    url = _url(live_server, "unsubscribe", customer, "email")

    with open_browser() as page:
        # What a mailbox provider sends (RFC 8058): no cookies, no CSRF token, no Origin of ours.
        response = page.context.request.post(
            url, headers={"Content-Type": "application/x-www-form-urlencoded"}, data="List-Unsubscribe=One-Click",
            max_redirects=0,
        )
        status, headers, body = response.status, response.headers, response.text()
        cookies = page.context.cookies()

    assert status == 200
    assert headers["content-type"].startswith("text/plain") and body.strip() == "You are unsubscribed."
    assert "set-cookie" not in headers and cookies == []
    assert _events(customer, "one_click") == [("email", "withdraw")]
    assert _states(customer) == {"email": "withdrawn", "sms": "granted", "in_app": "granted"}


@pytest.mark.parametrize("width", [390, 1200])
@pytest.mark.parametrize("name", ["unsubscribe", "preferences"])
def test_the_pages_fit_the_screen(live_server, open_browser, shots_dir, name, width):
    customer = _customer(locale="zh-hans", email="zhang.wei.long.address@example.com")

    with open_browser(width=width, height=844) as page:
        page.goto(_url(live_server, name, customer))
        if shots_dir is not None:
            page.screenshot(path=str(shots_dir / f"{name}-{width}.png"), full_page=True)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        button = page.get_by_role("button").bounding_box()

    assert scroll_width <= width  # no sideways scrolling
    assert button["x"] >= 0 and button["x"] + button["width"] <= width
    assert button["height"] >= 40  # big enough for a thumb
    assert ConsentEvent.objects.filter(customer=customer).count() == len(CHANNELS)  # looking changes nothing
