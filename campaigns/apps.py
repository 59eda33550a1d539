from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self):
        # Registers messages, grants and redemptions as sources of the customer timeline
        # (reactivation cannot import campaigns; campaigns adds itself).
        from campaigns import timeline  # noqa: F401
