"""The pages under the Content-Security-Policy, in Chromium: every page a person opens works
with no violation reported in the console (an inline script without the nonce, an attribute
handler, a file from another site would each be refused and reported)."""

import pytest
from django.urls import reverse

from core.tokens import claim_token_make, unsubscribe_token_make
from tests.factories import CampaignFactory, CustomerFactory, MessageTemplateFactory, OfferGrantFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pass-w0rd-for-tests"  # UserFactory's


def _violations(messages):
    return [m for m in messages if "Content Security Policy" in m or "Permissions policy" in m.lower()]


def test_no_page_reports_a_policy_violation(live_server, open_browser):
    UserFactory(username="csp", is_superuser=True)
    customer = CustomerFactory(email="a@example.com", phone="+8613812345678")
    campaign, template = CampaignFactory(), MessageTemplateFactory()
    claim = claim_token_make(grant_id=OfferGrantFactory(customer=customer).pk)
    token = unsubscribe_token_make(customer_id=customer.pk, channel="email")
    pages = [
        reverse("admin:index"),
        reverse("admin:reactivation_customer_changelist"),
        reverse("admin:reactivation_customer_change", args=[customer.pk]),
        reverse("admin:campaigns_campaign_change", args=[campaign.pk]),
        reverse("admin:campaigns_messagetemplate_change", args=[template.pk]),
        reverse("admin:campaigns_messagetemplate_preview", args=[template.pk]) + f"?external_id={customer.external_id}",
        reverse("admin:consent_suppression_export"),
        reverse("admin:reactivation_importjob_upload", args=["customers"]),
        reverse("consent:unsubscribe", args=[token]),
        reverse("consent:preferences", args=[token]),
        f"/offers/claim/{claim}/",
        "/api/v1/docs/",
    ]
    reported, injected_ran = {}, None

    with open_browser(width=1200, height=1600) as page:
        messages = []
        page.on("console", lambda message: messages.append(message.text))
        page.goto(live_server.url + reverse("admin:login"))
        page.get_by_label("Username").fill("csp")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(live_server.url + reverse("admin:index"))
        for url in pages:
            messages.clear()
            page.goto(live_server.url + url)
            page.wait_for_load_state("networkidle")
            if found := _violations(messages):
                reported[url] = found
        # The policy is really enforced: a script injected into a page does not run, and says so.
        messages.clear()
        page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
                      " document.head.appendChild(s); }")
        page.wait_for_timeout(200)
        injected_ran = page.evaluate("() => window.injected")
        injected_reported = bool(_violations(messages))

    assert reported == {}
    assert injected_ran is None and injected_reported
