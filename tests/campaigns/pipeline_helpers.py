"""Shared setup for the campaign pipeline tests: customers with consent, campaigns, runs."""

from datetime import datetime, timezone as dt_timezone

from campaigns.models import CampaignRun, ChannelPolicy
from consent.services import ConsentDecision, consent_record_bulk
from tests.factories import CampaignFactory, CustomerFactory, MessageTemplateFactory

# A moment when it is 18:00 in Shanghai and 06:00 in New York (EDT): SMS window open in
# Shanghai, closed in New York.
NOON_UTC = datetime(2024, 6, 3, 10, 0, tzinfo=dt_timezone.utc)


def customers_with_consent(n, *, channels=("email",), **fields):
    customers = CustomerFactory.create_batch(n, **fields)
    consent_record_bulk(
        decisions=[
            ConsentDecision(customer_id=c.pk, channel=channel, action="grant", source="import")
            for c in customers for channel in channels
        ]
    )
    return customers


def campaign_for(channels=("email",), **fields):
    templates = {
        f"{channel}_template": MessageTemplateFactory(channel=channel) for channel in channels
    }
    templates.update({key: fields.pop(key) for key in list(fields) if key.endswith("_template")})
    return CampaignFactory(channels=list(channels), **templates, **fields)


def new_run(campaign, *, now=NOON_UTC):
    number = CampaignRun.objects.filter(campaign=campaign).count() + 1
    return CampaignRun.objects.create(campaign=campaign, number=number, started_at=now)


def channel_policy(channel):
    return ChannelPolicy.objects.get(channel=channel)

