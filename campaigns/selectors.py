"""Reads of the campaigns app that more than one edge needs (querysets, no writes)."""

from django.db.models import Q, QuerySet

from campaigns.models import Campaign


def campaigns_using(*, template) -> QuerySet[Campaign]:
    """Campaigns, not cancelled or completed, that send ``template`` on some channel."""
    return (
        Campaign.objects.filter(Q(email_template=template) | Q(sms_template=template) | Q(in_app_template=template))
        .exclude(status__in=[Campaign.Status.CANCELLED, Campaign.Status.COMPLETED])
        .select_related("offer", "brand", "email_template", "sms_template", "in_app_template")
    )
