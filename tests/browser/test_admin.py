"""The back office in a browser: logging in through the form, previewing an email template."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.sessions.models import Session
from django.core import mail
from django.urls import reverse

from consent.models import ConsentEvent
from tests.factories import CustomerFactory, MessageTemplateFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pass-w0rd-for-tests"  # UserFactory's


def _log_in(page, live_server, user, password=PASSWORD):
    page.goto(live_server.url + reverse("admin:login") + "?next=" + reverse("admin:index"))
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(password)
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.get_by_role("button", name="Log in").click()
    return posted.value


def _session_of(context):
    """The Session row behind the browser's session cookie (None without one)."""
    key = next((c["value"] for c in context.cookies() if c["name"] == "sessionid"), None)
    return Session.objects.filter(session_key=key).first() if key else None


def test_logging_in_through_the_form_opens_a_session_for_that_user(live_server, context, page):
    user = UserFactory(username="marketer", is_superuser=True)

    refused = _log_in(page, live_server, user, password="not-the-password")
    assert refused.status == 200 and page.get_by_text("Please enter the correct username and password").is_visible()
    assert _session_of(context) is None and not Session.objects.exists()

    accepted = _log_in(page, live_server, user)

    assert accepted.status == 302
    page.get_by_role("heading", name="Bring dormant customers back").wait_for()
    session = _session_of(context)
    assert session is not None
    assert session.get_decoded()["_auth_user_id"] == str(user.pk)
    user.refresh_from_db()
    assert user.last_login is not None


def test_the_email_preview_shows_the_rendered_message(live_server, context, page):
    _log_in(page, live_server, UserFactory(username="editor", is_superuser=True))
    customer = CustomerFactory(name="王芳", locale="zh-hans")
    # Quotes and ampersands: the rendered document goes into the iframe's srcdoc attribute.
    template = MessageTemplateFactory(
        subject="想你了！{{ brand }} 期待与您重逢",
        html_body='<p class="greeting" style="color: #b91c1c">{{ customer.name }}，好久不见！</p>'
                  '<p><a href="https://shop.example/back?utm_source=winback&amp;x=1">回来看看 &amp; 领取优惠</a></p>',
    )
    url = live_server.url + reverse("admin:campaigns_messagetemplate_preview", args=[template.pk])

    page.goto(f"{url}?external_id={customer.external_id}")

    assert page.locator("#preview-subject").inner_text().startswith("想你了！")
    email = page.frame_locator("#preview-html")
    greeting = email.locator("p.greeting")
    assert greeting.inner_text() == "王芳，好久不见！"
    assert greeting.evaluate("p => getComputedStyle(p).color") == "rgb(185, 28, 28)"
    assert email.get_by_role("link", name="回来看看 & 领取优惠").get_attribute("href") == \
        "https://shop.example/back?utm_source=winback&x=1"
    assert email.get_by_role("link", name="退订").is_visible()  # the footer every email gets
    assert "王芳，好久不见！" in page.locator("#preview-text").inner_text()
    # A preview records nothing: no consent change, no admin log entry, no mail.
    assert not ConsentEvent.objects.exists()
    assert not LogEntry.objects.exists()
    assert mail.outbox == []


def test_a_test_send_from_the_preview_is_logged_and_mailed(live_server, context, page):
    user = UserFactory(username="sender", is_superuser=True)
    _log_in(page, live_server, user)
    template = MessageTemplateFactory()
    page.goto(live_server.url + reverse("admin:campaigns_messagetemplate_preview", args=[template.pk]))

    page.get_by_label("Send a test to").fill("Me@Example.com")
    page.get_by_role("button", name="Send test").click()

    page.get_by_text("Test sent to").wait_for()
    entry = LogEntry.objects.get()
    assert (entry.user_id, entry.object_id) == (user.pk, str(template.pk))
    assert entry.get_change_message().startswith("Test email sent to m***@e***.com")
    assert [m.to for m in mail.outbox] == [["me@example.com"]]
    assert mail.outbox[0].subject.startswith("[TEST] ")
