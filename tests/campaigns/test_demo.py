"""Demo campaigns (campaigns.demo): idempotent, valid, and sendable."""

import pytest
from django.core import mail

from campaigns.demo import demo_campaigns_seed
from campaigns.models import Campaign
from campaigns.rendering import validate_template
from campaigns.services import campaign_launch
from tests.campaigns.pipeline_helpers import customers_with_consent

pytestmark = pytest.mark.django_db


def test_seed_creates_three_ready_campaigns_once():
    first = demo_campaigns_seed(segments={})
    second = demo_campaigns_seed(segments={})

    assert first == {"brands": 1, "categories": 6, "offers": 3, "templates": 4, "campaigns": 3}
    assert second == {"brands": 0, "categories": 0, "offers": 0, "templates": 0, "campaigns": 0}
    names = set(Campaign.objects.values_list("name", flat=True))
    assert names == {"Demo: email win-back", "Demo: SMS double points", "Demo: in-app free trial"}
    for campaign in Campaign.objects.all():
        campaign.full_clean()
        for channel in campaign.channels:
            validate_template(template=getattr(campaign, f"{channel}_template"), campaign=campaign, offer=campaign.offer)


def test_the_email_win_back_sends_a_coupon():
    demo_campaigns_seed(segments={})
    campaign = Campaign.objects.get(name="Demo: email win-back")
    campaign.holdout_percent = 0
    campaign.save()
    customers_with_consent(2)  # the segment is created empty of criteria here: everyone matches

    run = campaign_launch(campaign=campaign, sync=True)

    assert (run.sent, run.offers_granted) == (2, 2)
    assert "专属惊喜" in mail.outbox[0].subject
