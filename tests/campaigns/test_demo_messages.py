"""The demo campaigns as customers receive them: their language, a real brand, an offer they can
claim, nothing empty, and nothing a spam filter's local rules hold against the layout."""

import json
import shutil
import subprocess

import pytest
from django.core import mail

from campaigns.demo import BRAND, demo_campaigns_seed
from campaigns.models import Campaign, ChannelPolicy, InboxMessage
from campaigns.services import campaign_launch
from tests.campaigns.pipeline_helpers import customers_with_consent

pytestmark = pytest.mark.django_db

SPAMASSASSIN = shutil.which("spamassassin")


def launch(name, **changes):
    campaign = Campaign.objects.get(name=name)
    for field, value in {"holdout_percent": 0, **changes}.items():
        setattr(campaign, field, value)
    campaign.save()
    return campaign_launch(campaign=campaign, sync=True)


@pytest.fixture
def demo():
    demo_campaigns_seed(segments={})  # segments without criteria: everyone matches


def test_the_email_win_back_speaks_each_customers_language_with_a_claimable_coupon(demo):
    customers_with_consent(1, locale="zh-hans", name="王芳", favourite_category="beauty")
    customers_with_consent(1, locale="en-GB", name="Emma Clarke", favourite_category="beauty")

    run = launch("Demo: email win-back")

    assert (run.sent, run.offers_granted) == (2, 2)
    by_language = {("en" if "Claim your offer" in m.body else "zh"): m for m in mail.outbox}
    zh, en = by_language["zh"], by_language["en"]
    assert zh.subject == f"{BRAND['name']} 为你准备了一份专属惊喜，点击领取！"
    assert en.subject == f"{BRAND['name']} has a surprise just for you"
    for message, headline, code_word in ((zh, "满199减30元", "领取优惠："), (en, "¥30 off orders over ¥199", "Claim your offer: ")):
        html = message.alternatives[0][0]
        assert headline in message.body and headline in html
        assert f"{code_word}https://winback.example.com/offers/claim/" in message.body
        assert "None" not in message.body + html and "（）" not in message.body
        assert "上海市静安区南京西路1266号" in message.body and "上海市静安区南京西路1266号" in html
        assert "utm_medium=email" in html
    assert "Unsubscribe:" in en.body and "退订：" in zh.body


def test_the_sms_campaign_is_signed_by_the_brand_and_links_to_the_claim_page(demo, settings, tmp_path):
    settings.SMS_BACKEND, settings.SMS_FILE_PATH = "file", str(tmp_path / "sms.jsonl")
    ChannelPolicy.objects.filter(channel="sms").update(quiet_hours_enabled=False)
    customers_with_consent(1, channels=("sms",), locale="zh-hans", name="李娜", favourite_category="beauty")

    run = launch("Demo: SMS double points")

    assert run.sent == 1
    text = json.loads((tmp_path / "sms.jsonl").read_text())["text"]
    assert text.startswith("【青禾生活】李娜，好久不见！美妆会员专享7天双倍积分，今天回来就生效")
    assert " 领取：https://winback.example.com/offers/claim/" in text
    assert text.endswith("/ 回复TD退订") and "None" not in text  # nothing glued to the link


def test_the_in_app_free_trial_opens_its_claim_page(demo):
    customers_with_consent(1, channels=("in_app",), locale="en", name="Emma Clarke")

    run = launch("Demo: in-app free trial")

    assert run.sent == 1
    message = InboxMessage.objects.get()
    assert message.title == f"{BRAND['name']}: 14-day free trial of Plus"
    assert message.deep_link.startswith("https://winback.example.com/offers/claim/")
    assert "None" not in message.title + message.body


@pytest.mark.skipif(SPAMASSASSIN is None, reason="Debian's spamassassin is not installed (apt-get install spamassassin)")
@pytest.mark.parametrize("name", ["Demo: email win-back", "Demo: SMS double points"])
def test_demo_emails_pass_spamassassin_local_rules(demo, name):
    customers_with_consent(1, locale="zh-hans", name="王芳", favourite_category="beauty")
    campaign = Campaign.objects.get(name=name)
    launch(name, channels=["email"])  # the SMS campaign's email fallback, on its own

    raw = mail.outbox[0].message().as_bytes(linesep="\r\n")
    report = subprocess.run([SPAMASSASSIN, "-t", "-L"], input=raw, capture_output=True, timeout=120).stdout.decode()

    status = next(line for line in report.splitlines() if line.startswith("X-Spam-Status:"))
    score = float(status.split("score=")[1].split()[0])
    assert score < 1.0, report[-2000:]
    assert "HTML_OBFUSCATE" not in report and "MIME_HTML_ONLY" not in report, campaign
