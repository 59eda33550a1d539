"""Message templates in a browser: the preview shows the email a chosen customer would get from
a campaign, its scripts never run, a test send for that customer arrives, and the list's
buttons leave the heading readable."""

import pytest
from django.core import mail
from django.urls import reverse

from campaigns.models import Delivery, OfferGrant
from tests.browser.admin_session import log_in
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory, MessageTemplateFactory, OfferFactory, UserFactory

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright").expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Tall enough that nothing scrolls (see tests/browser/test_admin.py).
SCREEN = {"width": 1280, "height": 1800}


@pytest.fixture
def campaign_and_customer():
    template = MessageTemplateFactory(
        subject="{{ brand }} 想你了",
        html_body='<p class="greeting">{{ customer.name }}，好久不见！</p>'
                  '{% if grant.code %}<p class="code">{{ grant.code }}</p>{% endif %}'
                  '<p id="untouched">unchanged</p>'
                  '<script>document.getElementById("untouched").textContent = "script ran"</script>',
    )
    brand = BrandFactory(name="青禾生活", from_name="", from_email="hello@qinghe.example.com",
                         postal_address="上海市静安区南京西路1266号")
    campaign = CampaignFactory(name="Spring win-back", email_template=template, brand=brand,
                               offer=OfferFactory(name="满100减20"))
    customer = CustomerFactory(name="欧阳娜娜", email="nana@example.com")
    CustomerFactory(name="欧阳修")  # another name that matches the search
    return template, campaign, customer


def test_the_preview_shows_the_customers_email_from_the_campaign_and_a_test_for_them_arrives(
        live_server, open_browser, campaign_and_customer, shots_dir):
    template, campaign, customer = campaign_and_customer
    UserFactory(username="editor", is_superuser=True)
    url = live_server.url + reverse("admin:campaigns_messagetemplate_preview", args=[template.pk])

    with open_browser(**SCREEN) as page:
        log_in(page, live_server, "editor")
        # the campaign page links here with the campaign preselected; the marketer searches a name
        page.goto(f"{url}?campaign={campaign.pk}")
        page.get_by_label("Customer").fill("欧阳")
        page.get_by_role("button", name="Preview").click()
        page.locator("#preview-matches").get_by_role("link", name=customer.external_id).click()
        expect(page.locator("#preview-note")).to_contain_text(customer.external_id)
        expect(page.locator("#preview-subject")).to_have_text("青禾生活 想你了")
        expect(page.locator("#preview-from")).to_have_text("青禾生活 <hello@qinghe.example.com>")

        # the frame holds the email itself: name, brand header, coupon, postal footer
        email = page.frame_locator("#preview-html")
        expect(email.locator("p.greeting")).to_have_text("欧阳娜娜，好久不见！")
        expect(email.get_by_text("青禾生活", exact=True)).to_be_visible()
        expect(email.locator("p.code")).to_have_text("SAMP-LE23-CODE")
        expect(email.get_by_text("上海市静安区南京西路1266号")).to_be_visible()
        # and the template's script did not run: the frame is an empty sandbox
        expect(email.locator("#untouched")).to_have_text("unchanged")
        if shots_dir:
            page.screenshot(path=str(shots_dir / "template_preview.png"), full_page=True)

        page.get_by_label("Send a test to").fill("marketer@example.com")
        page.get_by_role("button", name="Send test").click()
        expect(page.get_by_text("Test sent to m***@e***.com")).to_be_visible()

    [sent] = mail.outbox
    assert sent.to == ["marketer@example.com"]
    assert sent.subject == "[TEST] 青禾生活 想你了"
    assert "hello@qinghe.example.com" in sent.from_email
    html = sent.alternatives[0][0]
    assert "欧阳娜娜，好久不见！" in html and "SAMP-LE23-CODE" in html and "上海市静安区南京西路1266号" in html
    assert not Delivery.objects.exists() and not OfferGrant.objects.exists()


def _overlaps(a, b) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


@pytest.mark.parametrize("width", [1280, 1440, 390])
def test_the_template_lists_buttons_do_not_cover_its_heading(live_server, open_browser, width, shots_dir):
    UserFactory(username="lister", is_superuser=True)
    MessageTemplateFactory()

    with open_browser(width=width, height=900) as page:
        log_in(page, live_server, "lister")
        page.goto(live_server.url + reverse("admin:campaigns_messagetemplate_changelist"))
        heading = page.locator("#content h1").bounding_box()
        buttons = [link.bounding_box() for link in page.locator("ul.object-tools a").all()]
        labels = page.locator("ul.object-tools a").all_inner_texts()
        if shots_dir:
            page.screenshot(path=str(shots_dir / f"template_list_{width}.png"))

    assert len(buttons) == 6, labels  # import, export, add, three starting points
    assert not [label for label, box in zip(labels, buttons) if _overlaps(box, heading)]
    assert all(box["x"] >= 0 and box["x"] + box["width"] <= width for box in buttons), (width, buttons)
