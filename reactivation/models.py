from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone as django_timezone


class LifecycleState(models.TextChoices):
    NEW = "new", "New"
    ACTIVE = "active", "Active"
    AT_RISK = "at_risk", "At risk"
    DORMANT = "dormant", "Dormant"
    REACTIVATED = "reactivated", "Reactivated"


class Customer(models.Model):
    """An end user of the marketed product (not a staff user of this back office)."""

    external_id = models.CharField(max_length=100, unique=True, help_text="The business system's id.")
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(max_length=254, blank=True, db_index=True, help_text="Stored lower-case.")
    phone = models.CharField(max_length=20, blank=True, db_index=True, help_text="E.164, e.g. +8613812345678.")
    locale = models.CharField(max_length=16, blank=True, help_text="e.g. zh-hans, en.")
    timezone = models.CharField(max_length=64, blank=True, help_text="IANA name; blank means TIME_ZONE.")
    signup_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_order_at = models.DateTimeField(null=True, blank=True, db_index=True)
    order_count = models.PositiveIntegerField(default=0)
    total_spent = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    favourite_category = models.CharField(max_length=100, blank=True, db_index=True)
    attributes = models.JSONField(default=dict, blank=True, help_text="Extra columns from imports.")

    lifecycle_state = models.CharField(
        max_length=16, choices=LifecycleState.choices, default=LifecycleState.NEW, db_index=True
    )
    lifecycle_since = models.DateTimeField(default=django_timezone.now)
    lifecycle_rule = models.ForeignKey(
        "DormancyRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The rule that made the current at-risk or dormant decision.",
    )

    rfm_recency = models.PositiveSmallIntegerField(null=True, blank=True)
    rfm_frequency = models.PositiveSmallIntegerField(null=True, blank=True)
    rfm_monetary = models.PositiveSmallIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("view_personal_data", "Can view personal data (email, phone)")]
        indexes = [
            models.Index(fields=["lifecycle_state", "lifecycle_rule"], name="customer_lifecycle_idx"),
            models.Index(fields=["rfm_recency", "rfm_frequency", "rfm_monetary"], name="customer_rfm_idx"),
        ]

    def __str__(self):
        return self.name or self.external_id


class ActivityEvent(models.Model):
    """Something a customer did in the product. ``kind`` is free text so new kinds need no migration."""

    LOGIN = "login"
    VISIT = "visit"
    ORDER = "order"
    VIEW_ITEM = "view_item"
    COMMON_KINDS = [LOGIN, VISIT, ORDER, VIEW_ITEM]

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32, db_index=True)
    occurred_at = models.DateTimeField()
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    category = models.CharField(max_length=100, blank=True)
    item_ref = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=32, default="api")
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)

    class Meta:
        indexes = [models.Index(fields=["customer", "-occurred_at"], name="event_customer_time_idx")]

    def __str__(self):
        return f"{self.kind} at {self.occurred_at:%Y-%m-%d %H:%M}"


class DormancyRule(models.Model):
    """What "dormant" means for one business, defined by marketers in the admin."""

    class Signal(models.TextChoices):
        LAST_SEEN = "last_seen", "Last seen (login or visit)"
        LAST_ORDER = "last_order", "Last order"
        ANY_ACTIVITY = "any_activity", "Any activity"

    name = models.CharField(max_length=100, unique=True)
    signal = models.CharField(max_length=16, choices=Signal.choices)
    inactive_days = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    at_risk_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Days of inactivity after which a customer is at risk; must be fewer than inactive days.",
    )
    min_orders = models.PositiveIntegerField(null=True, blank=True, help_text="Only customers with at least this many orders.")
    min_spent = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, help_text="Only customers who spent at least this much."
    )
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower wins when several rules match.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self):
        return self.name

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.at_risk_days and self.inactive_days and self.at_risk_days >= self.inactive_days:
            raise ValidationError({"at_risk_days": "Must be fewer than the inactive days."})


class LifecycleTransition(models.Model):
    """Append-only log of lifecycle changes."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="lifecycle_transitions")
    from_state = models.CharField(max_length=16, choices=LifecycleState.choices, blank=True)
    to_state = models.CharField(max_length=16, choices=LifecycleState.choices)
    rule = models.ForeignKey(DormancyRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(default=django_timezone.now, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["customer", "-at"], name="transition_customer_at_idx")]

    def __str__(self):
        return f"{self.from_state or '∅'} → {self.to_state}"


class DormancyReason(models.Model):
    class Reason(models.TextChoices):
        NEED_CHANGED = "need_changed", "Need changed"
        BAD_EXPERIENCE = "bad_experience", "Bad experience"
        COMPETITOR = "competitor", "Went to a competitor"
        FORGOT = "forgot", "Forgot about us"
        INFORMATION_OVERLOAD = "information_overload", "Information overload"
        PRIVACY_CONCERN = "privacy_concern", "Privacy concern"
        OTHER = "other", "Other"

    class Source(models.TextChoices):
        SURVEY = "survey", "Survey"
        SUPPORT = "support", "Support"
        IMPORT = "import", "Import"

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="dormancy_reasons")
    reason = models.CharField(max_length=32, choices=Reason.choices, db_index=True)
    detail = models.TextField(blank=True, help_text="Free text; required for 'other'.")
    source = models.CharField(max_length=16, choices=Source.choices)
    recorded_at = models.DateTimeField(default=django_timezone.now)

    def __str__(self):
        return self.get_reason_display()

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.reason == self.Reason.OTHER and not self.detail.strip():
            raise ValidationError({"detail": "Say what the other reason is."})


class Category(models.Model):
    """Display labels of a product category key (``Customer.favourite_category``, offers'
    ``category``): messages show the label in the customer's language, never the key."""

    key = models.CharField(max_length=100, unique=True, help_text="As it appears in imports, e.g. beauty.")
    label_zh_hans = models.CharField("label (简体中文)", max_length=100, help_text="e.g. 美妆.")
    label_en = models.CharField("label (English)", max_length=100, help_text="e.g. Beauty.")

    class Meta:
        verbose_name_plural = "categories"
        ordering = ["key"]

    def __str__(self):
        return f"{self.key} ({self.label_zh_hans} / {self.label_en})"

    def label(self, language: str) -> str:
        return self.label_en if language == "en" else self.label_zh_hans


class Segment(models.Model):
    """A saved, named filter over customers. Empty criteria match everyone."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    lifecycle_states = models.JSONField(default=list, blank=True, help_text="Any of these states.")
    dormancy_rule = models.ForeignKey(
        DormancyRule, null=True, blank=True, on_delete=models.PROTECT, related_name="segments",
        help_text="Only customers whose state was decided by this rule.",
    )
    rfm_recency_min = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    rfm_recency_max = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    rfm_frequency_min = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    rfm_frequency_max = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    rfm_monetary_min = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    rfm_monetary_max = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)])
    spent_min = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    spent_max = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    orders_min = models.PositiveIntegerField(null=True, blank=True)
    orders_max = models.PositiveIntegerField(null=True, blank=True)
    favourite_categories = models.JSONField(default=list, blank=True, help_text="Any of these categories.")
    locales = models.JSONField(default=list, blank=True, help_text="Any of these locales.")
    dormancy_reasons = models.JSONField(default=list, blank=True, help_text="Customers with any of these reasons.")
    consent_channels = models.JSONField(
        default=list, blank=True, help_text="Customers with current marketing consent on every one of these channels."
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # Counting a segment of millions takes seconds: the list shows this cached count and its time,
    # refreshed in the background.
    size = models.PositiveBigIntegerField(null=True, blank=True, editable=False)
    size_counted_at = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self):
        return self.name

    def customers(self):
        """The matching customers, as a queryset."""
        from reactivation.selectors import segment_customers

        return segment_customers(segment=self)


def _import_upload_to(instance, filename):
    return f"imports/{instance.kind}/{django_timezone.now():%Y/%m}/{filename}"


class ImportJob(models.Model):
    """One bulk import of customers or activity started from the admin (or a script).

    The uploaded file lives in default storage (MEDIA_ROOT), which every web and worker process
    can read. A job runs in a Celery task; jobs of the same kind run one at a time, oldest first.
    """

    class Kind(models.TextChoices):
        CUSTOMERS = "customers", "Customers"
        EVENTS = "events", "Activity events"

    class Status(models.TextChoices):
        DRAFT = "draft", "Awaiting confirmation"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired (not confirmed in time)"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    file = models.FileField(upload_to=_import_upload_to, max_length=300)
    original_name = models.CharField(max_length=255)
    options = models.JSONField(
        default=dict, blank=True, help_text="encoding, region, timezone, notice_version, dry_run."
    )
    detected_format = models.CharField(max_length=60, blank=True, help_text="e.g. CSV, gb18030, ';'.")
    rows_total = models.PositiveBigIntegerField(null=True, blank=True, help_text="Estimated from the file size.")
    rows_processed = models.PositiveBigIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)
    unknown_customer = models.PositiveIntegerField(default=0)
    errors_file = models.FileField(upload_to="imports/errors/", max_length=300, blank=True)
    error_message = models.TextField(blank=True, help_text="Why the whole file was refused or the job failed.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["kind", "status", "id"], name="importjob_queue_idx")]

    def __str__(self):
        return f"{self.get_kind_display()} import #{self.pk} ({self.original_name})"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def summary(self) -> str:
        if self.kind == self.Kind.EVENTS:
            return f"created={self.created} invalid={self.invalid} unknown_customer={self.unknown_customer}"
        return f"created={self.created} updated={self.updated} unchanged={self.unchanged} invalid={self.invalid}"
