"""What campaigns add to a customer's timeline (reactivation.timeline): the messages sent to
them with their status, the offers granted and the offers redeemed, each for staff who may view
that model. Imported by CampaignsConfig.ready(), which registers the sources; one query per source."""

from django.db.models.functions import Coalesce

from campaigns.models import Delivery, OfferGrant, Redemption
from core.masking import mask_address
from reactivation.timeline import TimelineEntry, admin_url, timeline_source


@timeline_source("message", permission="campaigns.view_delivery")
def message_entries(*, customer, limit: int, personal_data: bool) -> list[TimelineEntry]:
    deliveries = (
        Delivery.objects.filter(customer=customer).select_related("campaign")
        .annotate(at=Coalesce("sent_at", "created_at")).order_by("-at", "-id")[:limit]
    )
    entries = []
    for delivery in deliveries:
        channel = delivery.get_channel_display() if delivery.channel else "Message"
        status = delivery.get_status_display()
        if delivery.skip_reason:
            status += f" ({delivery.get_skip_reason_display().lower()})"
        if delivery.clicked_at:
            status += ", clicked"
        elif delivery.opened_at:
            status += ", opened"
        address = delivery.address if personal_data else mask_address(delivery.address)
        entries.append(TimelineEntry(
            at=delivery.at, kind="message", title=f"{channel}: {delivery.campaign.name}",
            detail=" · ".join(part for part in (status, address) if part), url=admin_url(delivery),
        ))
    return entries


@timeline_source("offer", permission="campaigns.view_offergrant")
def grant_entries(*, customer, limit: int, personal_data: bool) -> list[TimelineEntry]:
    grants = OfferGrant.objects.filter(customer=customer).select_related("offer").order_by("-granted_at", "-id")[:limit]
    return [
        TimelineEntry(
            # str(grant) shows only the start of the code: a code is worth money.
            at=grant.granted_at, kind="offer", title=f"Offer granted: {grant.offer.name}",
            detail=" · ".join(part for part in (
                str(grant), f"expires {grant.expires_at:%Y-%m-%d}" if grant.expires_at else "") if part),
            url=admin_url(grant),
        )
        for grant in grants
    ]


@timeline_source("redemption", permission="campaigns.view_redemption")
def redemption_entries(*, customer, limit: int, personal_data: bool) -> list[TimelineEntry]:
    redemptions = (
        Redemption.objects.filter(customer=customer).select_related("grant__offer")
        .order_by("-redeemed_at", "-id")[:limit]
    )
    return [
        TimelineEntry(
            at=redemption.redeemed_at, kind="redemption", title=f"Offer redeemed: {redemption.grant.offer.name}",
            detail=" · ".join(part for part in (
                f"order {redemption.order_amount}" if redemption.order_amount is not None else "",
                redemption.order_ref, f"via {redemption.source}") if part),
            url=admin_url(redemption),
        )
        for redemption in redemptions
    ]
