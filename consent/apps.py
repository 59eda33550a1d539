from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = "Consent"

    def ready(self):
        from anymail.signals import tracking

        from consent.tracking import tracking_event_received

        # dispatch_uid: ready() can run more than once in tests; connect exactly one receiver.
        tracking.connect(tracking_event_received, dispatch_uid="consent.tracking_event_received")
