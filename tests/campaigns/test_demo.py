"""Demo campaigns (campaigns.demo): idempotent, valid, and sendable."""

import pytest
from django.core import mail
from django.utils import timezone

from campaigns.demo import demo_campaigns_seed
from campaigns.models import Campaign, Delivery
from campaigns.rendering import validate_template
from campaigns.services import campaign_launch
from reactivation import demo
from reactivation.demo import demo_world_seed
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


# In the demo world ---------------------------------------------------------------------------


@pytest.fixture
def demo_world(settings, tmp_path):
    """The world `make run` seeds, smaller: its segments have members in the states they select."""
    settings.SMS_BACKEND, settings.SMS_FILE_PATH = "file", str(tmp_path / "sms.jsonl")
    return demo_world_seed(customers=300, seed=7, now=timezone.now())


@pytest.mark.parametrize(
    "name, state, rule",
    [
        ("Demo: email win-back", "dormant", None),
        ("Demo: SMS double points", "dormant", None),
        ("Demo: in-app free trial", "at_risk", demo.APP_RULE),
    ],
)
def test_each_demo_campaign_reaches_its_segment_in_the_demo_world(demo_world, name, state, rule):
    campaign = Campaign.objects.get(name=name)

    run = campaign_launch(campaign=campaign, sync=True)

    run.refresh_from_db()
    reached = Delivery.objects.filter(run=run).exclude(status__in=[Delivery.Status.SKIPPED, Delivery.Status.HOLDOUT])
    assert run.targeted >= 3 and reached.count() >= 2, (run.targeted, reached.count())
    assert run.sent + run.deferred_quiet >= 2 and run.failed == 0
    assert not Delivery.objects.filter(run=run).exclude(customer__lifecycle_state=state).exists()
    if rule:
        assert not Delivery.objects.filter(run=run).exclude(customer__lifecycle_rule__name=rule).exists()
