"""Offers and grants, message templates, campaigns, runs, deliveries, contact policy, inbox.

Deliveries are unique per (campaign, run, customer): that key, not application logic, is what
makes launching twice or retrying a task safe.
"""

from datetime import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from consent.models import Channel
from reactivation.models import Category


# Languages of messages -------------------------------------------------------------------------


class MessageLanguage(models.TextChoices):
    """The languages a message, a claim page and the consent pages are written in."""

    ZH_HANS = "zh-hans", "简体中文"
    EN = "en", "English"


def message_language(locale: str | None) -> str | None:
    """The message language for a customer's locale ("zh-CN", "zh_Hans", "en-GB"...), or None."""
    locale = (locale or "").strip().lower()
    if locale.startswith("zh"):
        return MessageLanguage.ZH_HANS
    if locale.startswith("en"):
        return MessageLanguage.EN
    return None


# Brands ---------------------------------------------------------------------------------------


class Brand(models.Model):
    """Who a campaign speaks as: the name customers recognise, the sender, the SMS signature and
    the postal address the law wants in every marketing email (CAN-SPAM)."""

    name = models.CharField(max_length=100, unique=True, help_text="{{ brand }} in templates, e.g. 青禾生活.")
    from_name = models.CharField(max_length=100, blank=True, help_text="The From display name; blank = the brand name.")
    from_email = models.EmailField(
        blank=True, help_text="The From address (its domain should carry your SPF/DKIM/DMARC records); "
                              "blank = DEFAULT_FROM_EMAIL."
    )
    reply_to = models.EmailField(blank=True, help_text="Where replies go; blank = no Reply-To header.")
    sms_signature = models.CharField(
        max_length=20, help_text="Shown as 【signature】 at the start of every SMS; the name registered with the carrier."
    )
    postal_address = models.TextField(help_text="Printed in the footer of every email (required by CAN-SPAM).")
    logo_url = models.URLField(blank=True, help_text="An https:// image shown at the top of emails; blank = the name.")
    shop_url = models.URLField(help_text="Where the call to action leads; UTM parameters are added to every link.")
    default_locale = models.CharField(
        max_length=8, choices=MessageLanguage.choices, default=MessageLanguage.ZH_HANS,
        help_text="The language of messages for customers whose own language has no template variant.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self):
        return self.name


# Offers ---------------------------------------------------------------------------------------


class Offer(models.Model):
    class Kind(models.TextChoices):
        COUPON = "coupon", "Coupon"
        POINTS = "points", "Points bonus"
        FREE_TRIAL = "free_trial", "Free trial"
        EXCLUSIVE_ACCESS = "exclusive_access", "Exclusive access"

    class DiscountType(models.TextChoices):
        AMOUNT = "amount", "Fixed amount"
        PERCENT = "percent", "Percent"

    class UsageMode(models.TextChoices):
        SINGLE_USE = "single_use", "Single use (each code once)"
        ONCE_PER_CUSTOMER = "once_per_customer", "Once per customer"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    description = models.TextField(blank=True, help_text="Shown to the customer; may be used in templates.")
    # Coupon
    discount_type = models.CharField(max_length=8, choices=DiscountType.choices, blank=True)
    discount_value = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    min_spend = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    category = models.CharField(max_length=100, blank=True, help_text="Only valid on this category.")
    valid_days = models.PositiveIntegerField(null=True, blank=True, help_text="Valid for N days after it is granted.")
    # Points
    points = models.PositiveIntegerField(null=True, blank=True, help_text="Fixed bonus points.")
    points_multiplier = models.DecimalField(
        max_digits=4, decimal_places=2, null=True, blank=True, help_text="e.g. 2 for double points."
    )
    multiplier_days = models.PositiveIntegerField(null=True, blank=True)
    # Free trial
    trial_plan = models.CharField(max_length=100, blank=True)
    trial_days = models.PositiveIntegerField(null=True, blank=True)
    # Exclusive access
    access_title = models.CharField(max_length=200, blank=True)
    access_url = models.URLField(blank=True)

    budget = models.PositiveIntegerField(null=True, blank=True, help_text="The most grants it may give; blank = no limit.")
    granted_count = models.PositiveIntegerField(default=0, editable=False)
    usage_mode = models.CharField(max_length=20, choices=UsageMode.choices, default=UsageMode.SINGLE_USE)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if self.kind == self.Kind.COUPON:
            if not self.discount_type:
                errors["discount_type"] = "A coupon needs a discount type."
            if self.discount_value is None or self.discount_value <= 0:
                errors["discount_value"] = "A coupon needs a positive discount."
            elif self.discount_type == self.DiscountType.PERCENT and self.discount_value >= 100:
                errors["discount_value"] = "A percent discount must be below 100."
        elif self.kind == self.Kind.POINTS and not (self.points or self.points_multiplier):
            errors["points"] = "Give fixed points or a multiplier."
        elif self.kind == self.Kind.FREE_TRIAL and not (self.trial_plan and self.trial_days):
            errors["trial_days"] = "A free trial needs a plan and a number of days."
        elif self.kind == self.Kind.EXCLUSIVE_ACCESS and not (self.access_title and self.access_url):
            errors["access_url"] = "Exclusive access needs a title and a URL."
        if self.category and not Category.objects.filter(key=self.category).exists():
            # Messages and the claim page name the category in the customer's language.
            errors["category"] = (f"Give the category “{self.category}” its labels first (Categories), "
                                  "so messages can name it in each customer's language.")
        if errors:
            raise ValidationError(errors)


class OfferGrant(models.Model):
    """An offer given to one customer by one delivery. Append-only; redemption is a separate row."""

    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="grants")
    customer = models.ForeignKey("reactivation.Customer", on_delete=models.CASCADE, related_name="offer_grants")
    campaign = models.ForeignKey("Campaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="grants")
    run = models.ForeignKey("CampaignRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="grants")
    delivery = models.OneToOneField("Delivery", null=True, blank=True, on_delete=models.SET_NULL, related_name="grant")
    code = models.CharField(max_length=20, unique=True, null=True, blank=True, help_text="Coupon code, e.g. K7QM-3XPA-9RTW.")
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["customer", "offer"], name="grant_customer_offer_idx")]

    def __str__(self):
        # Codes are worth money: never spell one out where a label goes (titles, logs, selects).
        return f"Grant #{self.pk} ({self.code[:4]}-****-****)" if self.code else f"Grant #{self.pk}"

    def is_redeemable(self, customer, *, order_amount=None, category=None, now=None) -> tuple[bool, str]:
        """(True, "ok") or (False, reason); see ``campaigns.offers.grant_is_redeemable``."""
        from campaigns.offers import grant_is_redeemable

        return grant_is_redeemable(grant=self, customer=customer, order_amount=order_amount, category=category, now=now)


class Redemption(models.Model):
    """A grant used in an order. One per grant: the unique key is what stops double redemption."""

    grant = models.OneToOneField(OfferGrant, on_delete=models.PROTECT, related_name="redemption")
    customer = models.ForeignKey("reactivation.Customer", on_delete=models.CASCADE, related_name="redemptions")
    order_amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    order_ref = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=16, default="api")
    redeemed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self):
        return f"{self.grant} redeemed"


# Templates ------------------------------------------------------------------------------------


class MessageTemplate(models.Model):
    """A message in the Django template language, rendered in a restricted context.

    Its own fields are written in ``locale``; ``translations`` hold the same message in other
    languages. A customer gets the variant in their language, else the brand's default one,
    else this one (``campaigns.rendering.template_variant``).
    """

    name = models.CharField(max_length=100, unique=True)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    locale = models.CharField(max_length=8, choices=MessageLanguage.choices, default=MessageLanguage.ZH_HANS,
                              help_text="The language of the fields below.")
    # Email
    subject = models.CharField(max_length=200, blank=True)
    html_body = models.TextField(blank=True)
    text_body = models.TextField(blank=True, help_text="Derived from the HTML when blank.")
    # SMS
    sms_text = models.TextField(blank=True, help_text="Signature and opt-out text are added by the SMS channel.")
    # In-app
    title = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    deep_link = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.name} ({self.get_channel_display()})"


# The fields a translation repeats; the channel and the name stay the template's.
TEMPLATE_CONTENT_FIELDS = ("subject", "html_body", "text_body", "sms_text", "title", "body", "deep_link")


class MessageTemplateTranslation(models.Model):
    """The same message in another language (fill the fields of the template's channel)."""

    template = models.ForeignKey(MessageTemplate, on_delete=models.CASCADE, related_name="translations")
    locale = models.CharField(max_length=8, choices=MessageLanguage.choices)
    subject = models.CharField(max_length=200, blank=True)
    html_body = models.TextField(blank=True)
    text_body = models.TextField(blank=True)
    sms_text = models.TextField(blank=True)
    title = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    deep_link = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["template", "locale"], name="template_translation_unique_locale")]

    def __str__(self):
        return f"{self.template.name} [{self.locale}]"

    @property
    def channel(self):
        return self.template.channel


# Contact policy -------------------------------------------------------------------------------


class ContactPolicy(models.Model):
    """The global contact rules (a single row, edited in the admin)."""

    daily_cap_all_channels = models.PositiveSmallIntegerField(
        default=3, help_text="At most this many marketing messages per customer per day over all channels."
    )
    sms_enabled = models.BooleanField(default=True, help_text="Switch the SMS channel off for every campaign.")
    sms_signature = models.CharField(
        max_length=20, default="品牌", help_text="Shown as 【signature】 when a message has no brand (test sends)."
    )
    sms_opt_out_text = models.CharField(max_length=40, default="回复TD退订", help_text="Added at the end of every SMS.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "contact policy"

    def __str__(self):
        return "Contact policy"

    @classmethod
    def current(cls) -> "ContactPolicy":
        policy, _ = cls.objects.get_or_create(pk=1)
        return policy


class ChannelPolicy(models.Model):
    """Per-channel frequency cap, quiet hours and send rate."""

    channel = models.CharField(max_length=8, choices=Channel.choices, unique=True)
    cap_count = models.PositiveSmallIntegerField(default=2, help_text="At most N marketing messages…")
    cap_days = models.PositiveSmallIntegerField(default=7, validators=[MinValueValidator(1)], help_text="…in a rolling D days.")
    quiet_hours_enabled = models.BooleanField(default=False)
    window_start = models.TimeField(default=time(8, 0), help_text="Sending window opens (customer's local time).")
    window_end = models.TimeField(default=time(21, 0), help_text="Sending window closes (customer's local time).")
    rate_per_second = models.PositiveIntegerField(
        null=True, blank=True, help_text="Messages per second across all workers; blank = no limit."
    )

    class Meta:
        verbose_name_plural = "channel policies"

    def __str__(self):
        return f"{self.get_channel_display()} policy"


# Campaigns ------------------------------------------------------------------------------------

# Ten years: longer means "once ever" in practice, and the re-entry cut (now minus this many days)
# must stay a date Python and the database can represent.
REENTRY_DAYS_MAX = 3650


# Each channel as a word inside a sentence; every one of them takes "an" ("an SMS").
CHANNEL_NOUNS = {Channel.EMAIL: "email", Channel.SMS: "SMS", Channel.IN_APP: "in-app"}


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"
        COMPLETED = "completed", "Completed"

    class ScheduleKind(models.TextChoices):
        ONCE = "once", "Once, at a time"
        RECURRING = "recurring", "Recurring (crontab)"

    class WhenBudgetExhausted(models.TextChoices):
        SEND_WITHOUT_OFFER = "send_without_offer", "Send the message without an offer"
        SKIP = "skip", "Skip the customer"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    segment = models.ForeignKey("reactivation.Segment", on_delete=models.PROTECT, related_name="campaigns")
    channels = models.JSONField(default=list, help_text="Channels in order of preference, e.g. [\"email\", \"sms\"].")
    email_template = models.ForeignKey(
        MessageTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+", limit_choices_to={"channel": Channel.EMAIL}
    )
    sms_template = models.ForeignKey(
        MessageTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+", limit_choices_to={"channel": Channel.SMS}
    )
    in_app_template = models.ForeignKey(
        MessageTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="+", limit_choices_to={"channel": Channel.IN_APP}
    )
    brand = models.ForeignKey(Brand, null=True, blank=False, on_delete=models.PROTECT, related_name="campaigns",
                              help_text="Who the messages come from: name, sender, SMS signature, address, shop.")
    offer = models.ForeignKey(Offer, null=True, blank=True, on_delete=models.PROTECT, related_name="campaigns")
    when_budget_exhausted = models.CharField(
        max_length=20, choices=WhenBudgetExhausted.choices, default=WhenBudgetExhausted.SEND_WITHOUT_OFFER
    )
    is_marketing = models.BooleanField(default=True)
    cap_exempt = models.BooleanField(default=False, help_text="Ignore frequency caps (only for non-marketing messages).")
    sms_enabled = models.BooleanField(default=True, help_text="Switch SMS off for this campaign (e.g. a market that refuses recall SMS).")
    reentry_days = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(REENTRY_DAYS_MAX)],
        help_text=f"The same customer gets this campaign at most once per N days (at most {REENTRY_DAYS_MAX}).",
    )
    holdout_percent = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(50)], help_text="Share of targeted customers kept as a holdout that gets nothing."
    )

    schedule_kind = models.CharField(max_length=10, choices=ScheduleKind.choices, default=ScheduleKind.ONCE)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    cron_minute = models.CharField(max_length=64, default="0")
    cron_hour = models.CharField(max_length=64, default="10")
    cron_day_of_week = models.CharField(max_length=64, default="*")
    cron_day_of_month = models.CharField(max_length=64, default="*")
    cron_month_of_year = models.CharField(max_length=64, default="*")
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if self.cap_exempt and self.is_marketing:
            errors["cap_exempt"] = "Only non-marketing campaigns may ignore frequency caps."
        unknown = [c for c in self.channels or [] if c not in Channel.values]
        if unknown:
            errors["channels"] = f"Unknown channels: {', '.join(unknown)}."
        elif not self.channels:
            errors["channels"] = "Choose at least one channel."
        else:
            for channel in self.channels:
                if getattr(self, f"{channel}_template_id", None) is None:
                    noun = CHANNEL_NOUNS[channel]
                    errors[f"{channel}_template"] = f"An {noun} campaign needs an {noun} template."
        if self.schedule_kind == self.ScheduleKind.ONCE and self.status == self.Status.SCHEDULED and not self.scheduled_at:
            errors["scheduled_at"] = "Say when to send."
        if errors:
            raise ValidationError(errors)


class CampaignRun(models.Model):
    class Status(models.TextChoices):
        MATERIALIZING = "materializing", "Choosing recipients"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=16, default="manual", help_text="manual, schedule or command.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.MATERIALIZING)
    started_at = models.DateTimeField(default=timezone.now)
    materialized_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Counters, refreshed from the deliveries (set-based) as chunks finish.
    targeted = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    skipped_consent = models.PositiveIntegerField(default=0)
    skipped_suppressed = models.PositiveIntegerField(default=0)
    skipped_cap = models.PositiveIntegerField(default=0)
    skipped_reentry = models.PositiveIntegerField(default=0)
    skipped_budget = models.PositiveIntegerField(default=0)
    skipped_no_address = models.PositiveIntegerField(default=0)
    skipped_channel_off = models.PositiveIntegerField(default=0)
    skipped_cancelled = models.PositiveIntegerField(default=0)
    deferred_quiet = models.PositiveIntegerField(default=0)
    holdout = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Handed to the provider by a worker that stopped before recording the answer: maybe
    # delivered, never re-sent without an operator's decision (see Delivery.Status.UNKNOWN).
    unknown = models.PositiveIntegerField(default=0)
    offers_granted = models.PositiveIntegerField(default=0)
    sent_without_offer = models.PositiveIntegerField(default=0)
    # The last sign that someone works on this run: chunks queued for it, or a worker claiming
    # its deliveries. The sweeper re-dispatches a sending run whose pending deliveries nobody
    # has touched for a lease (campaigns.services.runs_sweep).
    active_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "number"], name="run_unique_number")]
        ordering = ["-started_at"]

    def __str__(self):
        return f"{self.campaign} #{self.number}"


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DEFERRED = "deferred", "Deferred (quiet hours)"
        # Taken by a worker (consent checked), not yet handed to the provider: a worker that
        # stops leaves it safe to send again.
        CLAIMED = "claimed", "Claimed"
        # Handed to the provider, answer not yet recorded.
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        HOLDOUT = "holdout", "Holdout"
        # Was "sending" when its worker stopped: the provider may have accepted it. Final until
        # an operator re-sends it (campaigns.services.deliveries_resend_unknown).
        UNKNOWN = "unknown", "Outcome unknown"

    class SkipReason(models.TextChoices):
        CONSENT = "consent", "No consent on any allowed channel"
        SUPPRESSED = "suppressed", "Address suppressed"
        CAP = "cap", "Frequency cap"
        REENTRY = "reentry", "Re-entry rule"
        BUDGET = "budget", "Offer budget exhausted"
        CHANNEL_OFF = "channel_off", "Channel switched off"
        NO_ADDRESS = "no_address", "No address on any allowed channel"
        # Closed after the campaign was cancelled: never sent, never to be sent.
        CANCELLED = "cancelled", "Campaign cancelled"

    # No single-column FK indexes: each is the prefix of a composite index below (campaign:
    # delivery_unique_per_run, run: delivery_run_status_idx, customer: delivery_cap_idx), and
    # every extra index slows the million-row INSERT of a run.
    #
    # No database constraint on campaign and run either: checking three foreign keys per row was
    # about 40% of materializing a million deliveries. Integrity still holds: deliveries are
    # written only by run_materialize, in one INSERT whose campaign_id and run_id come from the
    # run row itself (and campaigns_campaignrun.campaign_id keeps its enforced FK); Django
    # emulates on_delete=CASCADE, so deleting a campaign or run through the ORM (admin,
    # services) deletes its deliveries. Only raw SQL deleting runs could orphan rows. The
    # customer FK stays enforced: customers are deleted and erased outside this app.
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="deliveries", db_index=False,
                                 db_constraint=False)
    run = models.ForeignKey(CampaignRun, on_delete=models.CASCADE, related_name="deliveries", db_index=False,
                            db_constraint=False)
    customer = models.ForeignKey("reactivation.Customer", on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    channel = models.CharField(max_length=8, choices=Channel.choices, blank=True)
    address = models.CharField(max_length=254, blank=True, help_text="Email or phone at materialization.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    skip_reason = models.CharField(max_length=16, choices=SkipReason.choices, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="Deferred until the sending window opens.")
    attempts = models.PositiveSmallIntegerField(default=0)
    provider_id = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    # What an operator needs to explain this delivery later (an unknown outcome, a re-send):
    # appended to, never cleared, whatever happens to the delivery afterwards. A database
    # default, because materialization writes deliveries with a raw INSERT.
    note = models.TextField(blank=True, db_default="")
    created_at = models.DateTimeField(default=timezone.now)
    # When the current holder took it (claimed) or handed it to the provider (sending): the
    # holder's lease, renewed while it works, and its token: every later write of that holder
    # is conditional on this value, so a holder whose lease ran out changes nothing.
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    unknown_at = models.DateTimeField(null=True, blank=True, help_text="When the outcome was found unknown.")
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        permissions = [("resend_delivery", "Can re-send a delivery whose outcome is unknown")]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "run", "customer"], name="delivery_unique_per_run"),
        ]
        indexes = [
            models.Index(fields=["run", "status"], name="delivery_run_status_idx"),
            # Frequency caps look back over sent messages per customer. Re-entry (one campaign's
            # earlier deliveries) needs no index of its own: delivery_unique_per_run starts with
            # campaign, and at scale the lookup is a hash join anyway. Dropping it took ~2 s off
            # writing a million-row run.
            models.Index(fields=["customer", "channel", "sent_at"], name="delivery_cap_idx"),
            # The per-minute pickup of deferred and retried deliveries that are due.
            models.Index(
                fields=["not_before"], condition=models.Q(status__in=["pending", "deferred"]) & models.Q(not_before__isnull=False),
                name="delivery_due_idx",
            ),
            # The sweeper's lookup of holders whose lease ran out: a handful of rows at any time.
            models.Index(
                fields=["claimed_at"], condition=models.Q(status__in=["claimed", "sending"]), name="delivery_held_idx",
            ),
        ]

    def __str__(self):
        # Reads campaign and customer: lists of deliveries select_related both.
        customer = self.customer
        who = f"{customer.name} ({customer.external_id})" if customer.name else customer.external_id
        state = f"{self.status}: {self.skip_reason}" if self.skip_reason else self.status
        return f"{self.campaign} → {who} ({state})"


# In-app inbox and API tokens -----------------------------------------------------------------


class InboxMessage(models.Model):
    # No single-column index on customer: inbox_customer_idx starts with it, and every index is
    # written once per in-app message sent.
    customer = models.ForeignKey("reactivation.Customer", on_delete=models.CASCADE, related_name="inbox", db_index=False)
    # No database constraint on delivery (the unique index stays): checking it cost 6% of an
    # in-app message. Messages are written only by the in-app transport, in the transaction
    # that claims their deliveries, so the delivery exists; Django emulates SET_NULL when a
    # delivery is deleted through the ORM (a run or campaign deleted in the admin).
    delivery = models.OneToOneField(Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="inbox_message",
                                    db_constraint=False)
    title = models.CharField(max_length=200)
    body = models.TextField()
    deep_link = models.CharField(max_length=500, blank=True)
    unsubscribe_url = models.URLField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["customer", "-created_at"], name="inbox_customer_idx")]

    def __str__(self):
        return self.title


class ApiScope(models.TextChoices):
    """What a token may do, chosen when it is made (least privilege: a shop's order system needs
    redemptions:write, its app backend inbox:read, its event pipeline events:write)."""

    EVENTS_WRITE = "events:write", "Record activity events (POST /api/v1/events/)"
    INBOX_READ = "inbox:read", "Read customers' in-app messages and mark them read"
    REDEMPTIONS_WRITE = "redemptions:write", "Record coupon redemptions (POST /api/v1/redemptions/)"
    CUSTOMERS_LOOKUP = "customers:lookup", "Tell an unknown customer (404) from one without messages"
    # Reserved for endpoints to come; granting them now gives nothing yet.
    GRANTS_READ = "grants:read", "Read offer grants (reserved)"
    RESULTS_READ = "results:read", "Read campaign results (reserved)"


class ApiToken(models.Model):
    """A token for the product's servers to call /api/v1/. Only a hash is stored."""

    name = models.CharField(max_length=100)
    scopes = models.JSONField(default=list, blank=True, help_text="ApiScope values; chosen at creation.")
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])
