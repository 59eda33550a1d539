"""The back office in a browser: logging in through the form, previewing an email template."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.sessions.models import Session
from django.core import mail
from django.urls import reverse

from consent.models import ConsentEvent
from tests.browser.admin_session import log_in
from tests.factories import CustomerFactory, MessageTemplateFactory, UserFactory

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Tall enough that nothing scrolls: a click on "Send test" made right after scrolling past the
# preview's sandboxed iframe sometimes reached the iframe instead (about one run in five).
ADMIN_SCREEN = {"width": 1200, "height": 1600}


def _session_key(page):
    return next((c["value"] for c in page.context.cookies() if c["name"] == "sessionid"), None)


def test_logging_in_through_the_form_opens_a_session_for_that_user(live_server, open_browser):
    user = UserFactory(username="marketer", is_superuser=True)

    with open_browser(**ADMIN_SCREEN) as page:
        refused = log_in(page, live_server, "marketer", password="not-the-password")
        expect(page.get_by_text("Please enter the correct username and password")).to_be_visible()
        key_after_refusal = _session_key(page)
        accepted = log_in(page, live_server, "marketer")
        expect(page.get_by_role("heading", name="Bring dormant customers back")).to_be_visible()
        key = _session_key(page)

    assert (refused, accepted) == (200, 302)
    assert key_after_refusal is None
    session = Session.objects.get()  # the refused attempt stored none
    assert session.session_key == key
    assert session.get_decoded()["_auth_user_id"] == str(user.pk)
    user.refresh_from_db()
    assert user.last_login is not None


def test_the_email_preview_shows_the_rendered_message(live_server, open_browser):
    UserFactory(username="editor", is_superuser=True)
    customer = CustomerFactory(name="王芳", locale="zh-hans")
    # Quotes and ampersands: the rendered document goes into the iframe's srcdoc attribute.
    template = MessageTemplateFactory(
        subject="想你了！{{ brand }} 期待与您重逢",
        html_body='<p class="greeting" style="color: #b91c1c">{{ customer.name }}，好久不见！</p>'
                  '<p><a href="https://shop.example/back?utm_source=winback&amp;x=1">回来看看 &amp; 领取优惠</a></p>',
    )
    url = live_server.url + reverse("admin:campaigns_messagetemplate_preview", args=[template.pk])

    with open_browser(**ADMIN_SCREEN) as page:
        log_in(page, live_server, "editor")
        page.goto(f"{url}?external_id={customer.external_id}")
        expect(page.locator("#preview-subject")).to_contain_text("想你了！")
        email = page.frame_locator("#preview-html")
        greeting = email.locator("p.greeting")
        expect(greeting).to_have_text("王芳，好久不见！")
        expect(greeting).to_have_css("color", "rgb(185, 28, 28)")
        expect(email.get_by_role("link", name="回来看看 & 领取优惠")).to_have_attribute(
            "href", "https://shop.example/back?utm_source=winback&x=1")
        expect(email.get_by_role("link", name="退订")).to_be_visible()  # the footer every email gets
        expect(page.locator("#preview-text")).to_contain_text("王芳，好久不见！")

    # A preview records nothing: no consent change, no admin log entry, no mail.
    assert not ConsentEvent.objects.exists()
    assert not LogEntry.objects.exists()
    assert mail.outbox == []


def test_a_test_send_from_the_preview_is_logged_and_mailed(live_server, open_browser):
    user = UserFactory(username="sender", is_superuser=True)
    template = MessageTemplateFactory()

    with open_browser(**ADMIN_SCREEN) as page:
        log_in(page, live_server, "sender")
        page.goto(live_server.url + reverse("admin:campaigns_messagetemplate_preview", args=[template.pk]))
        page.get_by_label("Send a test to").fill("Me@Example.com")
        page.get_by_role("button", name="Send test").click()
        expect(page.get_by_text("Test sent to m***@e***.com")).to_be_visible()

    entry = LogEntry.objects.get()
    assert (entry.user_id, entry.object_id) == (user.pk, str(template.pk))
    assert entry.get_change_message().startswith("Test email sent to m***@e***.com")
    assert [m.to for m in mail.outbox] == [["me@example.com"]]
    assert mail.outbox[0].subject.startswith("[TEST] ")
