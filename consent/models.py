from django.conf import settings
from django.db import models
from django.utils import timezone


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    IN_APP = "in_app", "In-app"


class Purpose(models.TextChoices):
    MARKETING = "marketing", "Marketing"


class Action(models.TextChoices):
    GRANT = "grant", "Grant"
    WITHDRAW = "withdraw", "Withdraw"


class Source(models.TextChoices):
    IMPORT = "import", "Import"
    SIGNUP = "signup", "Signup"
    ADMIN = "admin", "Admin"
    UNSUBSCRIBE_LINK = "unsubscribe_link", "Unsubscribe link"
    ONE_CLICK = "one_click", "One-click unsubscribe"
    PREFERENCE_CENTER = "preference_center", "Preference center"
    SMS_REPLY = "sms_reply", "SMS reply"
    BOUNCE = "bounce", "Bounce"
    COMPLAINT = "complaint", "Complaint"
    API = "api", "API"


class ConsentEvent(models.Model):
    """Append-only ledger of every consent decision (GDPR Art. 7, PIPL Art. 14-15).

    Rows are never updated or deleted; on PostgreSQL a trigger enforces it. Write through
    ``consent.services`` only, which also keeps ``ConsentState`` in step.
    """

    customer = models.ForeignKey("reactivation.Customer", on_delete=models.PROTECT, related_name="consent_events")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.MARKETING)
    action = models.CharField(max_length=8, choices=Action.choices)
    source = models.CharField(max_length=24, choices=Source.choices)
    notice_version = models.CharField(max_length=50, blank=True)
    evidence = models.JSONField(default=dict, blank=True, help_text="IP, user agent, raw SMS, import file and line, note.")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["customer", "channel", "-at"], name="consent_event_lookup_idx")]

    def __str__(self):
        return f"{self.get_action_display()} {self.channel} ({self.get_source_display()})"


class ConsentState(models.Model):
    """The current consent per customer, channel and purpose, derived from the ledger."""

    class Status(models.TextChoices):
        GRANTED = "granted", "Granted"
        WITHDRAWN = "withdrawn", "Withdrawn"

    customer = models.ForeignKey("reactivation.Customer", on_delete=models.CASCADE, related_name="consent_states")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.MARKETING)
    status = models.CharField(max_length=10, choices=Status.choices)
    source = models.CharField(max_length=24, choices=Source.choices)
    notice_version = models.CharField(max_length=50, blank=True)
    last_event = models.ForeignKey(ConsentEvent, on_delete=models.PROTECT, related_name="+")
    changed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "channel", "purpose"], name="consent_state_unique"),
        ]
        indexes = [models.Index(fields=["channel", "status", "customer"], name="consent_state_filter_idx")]

    def __str__(self):
        return f"{self.channel}: {self.status}"


class Suppression(models.Model):
    """An address that must never be contacted, whichever customer it comes back on."""

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        COMPLAINT = "complaint", "Complaint"
        MANUAL = "manual", "Manual"

    channel = models.CharField(max_length=8, choices=[(Channel.EMAIL, "Email"), (Channel.SMS, "SMS")])
    address = models.CharField(max_length=254, help_text="Lower-case email or E.164 phone.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "address"], name="suppression_unique_address")]

    def __str__(self):
        return f"{self.address} ({self.get_reason_display()})"


class SmsReply(models.Model):
    """Every inbound SMS, kept as evidence whether or not it changed consent."""

    sender = models.CharField(max_length=32, db_index=True, help_text="E.164 when it could be parsed.")
    text = models.TextField()
    customer = models.ForeignKey("reactivation.Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=16, help_text="withdraw, grant, reply or unknown_sender.")
    provider_id = models.CharField(max_length=100, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "SMS replies"
        constraints = [
            models.UniqueConstraint(
                fields=["provider_id"], condition=~models.Q(provider_id=""), name="sms_reply_unique_provider_id"
            )
        ]

    def __str__(self):
        return f"{self.sender}: {self.text[:30]}"
