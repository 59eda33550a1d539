"""Campaign, run and delivery rows for offer tests (the campaign factories belong to the pipeline)."""

import itertools

from campaigns.models import Campaign, CampaignRun, Delivery
from tests.factories import BrandFactory, SegmentFactory

_numbers = itertools.count(1)


def make_run(*, offer, customers, campaign=None):
    if campaign is None:
        campaign = Campaign.objects.create(
            name=f"Campaign {next(_numbers)}", segment=SegmentFactory(), brand=BrandFactory(), channels=["email"], offer=offer
        )
    number = CampaignRun.objects.filter(campaign=campaign).count() + 1
    run = CampaignRun.objects.create(campaign=campaign, number=number)
    deliveries = Delivery.objects.bulk_create(
        [Delivery(campaign=campaign, run=run, customer=c, channel="email", address=c.email) for c in customers]
    )
    return run, deliveries
