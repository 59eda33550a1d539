"""Offers: coupon codes, personal grants, redemption.

Grants and redemptions are append-only records (STYLE 6). Two keys do the real work:

- the budget is reserved by a conditional UPDATE of ``Offer.granted_count`` that only succeeds
  while ``granted_count + n <= budget``, on the offer row locked for the issuing transaction,
  so concurrent runs never give more than the budget;
- a code redeems at most once because ``Redemption.grant`` is one-to-one: the second INSERT
  fails whatever the application thought it saw.

Usage modes. *Single use*: each grant (code) redeems once; a customer may hold several grants
of the offer from different sends. *Once per customer*: a customer is granted the offer at most
once, ever — a customer who holds any grant of it, redeemed, unredeemed or expired, gets no
second one — and can redeem it at most once.
"""

import contextlib
import csv
import io
import logging
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from campaigns.models import Offer, OfferGrant, Redemption
from core.time_bounds import time_bounded
from reactivation.lifecycle import lifecycle_follow_activity
from reactivation.models import ActivityEvent, Customer
from reactivation.services import AMOUNT_MAX, activity_record_batch

logger = logging.getLogger(__name__)

# No 0/O, 1/I/L: codes are read aloud to support and typed from a phone screen.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_GROUPS = 3
CODE_GROUP_LENGTH = 4
_CODE_LENGTH = CODE_GROUPS * CODE_GROUP_LENGTH
_CODE_SPACE = len(CODE_ALPHABET) ** _CODE_LENGTH  # 31**12 ≈ 7.9e17, about 59 bits
# Existing codes are checked with IN (...) in slices this large (SQLite allows 32,766 parameters).
_CODE_CHECK_SLICE = 10_000
_CODE_RE = re.compile(rf"^[{CODE_ALPHABET}]{{4}}-[{CODE_ALPHABET}]{{4}}-[{CODE_ALPHABET}]{{4}}$")


# Codes --------------------------------------------------------------------------------------


def _random_code() -> str:
    # One draw from the OS CSPRNG per code, written in base 31: uniform over the whole space.
    number = secrets.randbelow(_CODE_SPACE)
    chars = []
    for _ in range(_CODE_LENGTH):
        number, digit = divmod(number, len(CODE_ALPHABET))
        chars.append(CODE_ALPHABET[digit])
    raw = "".join(chars)
    return "-".join(raw[i : i + CODE_GROUP_LENGTH] for i in range(0, _CODE_LENGTH, CODE_GROUP_LENGTH))


def code_is_well_formed(code: str) -> bool:
    return bool(_CODE_RE.match(code or ""))


def code_normalize(code: str) -> str:
    """What a customer typed -> the stored form: upper case, separators restored."""
    raw = re.sub(r"[^0-9A-Za-z]", "", code or "").upper()
    if len(raw) != _CODE_LENGTH:
        return raw
    return "-".join(raw[i : i + CODE_GROUP_LENGTH] for i in range(0, _CODE_LENGTH, CODE_GROUP_LENGTH))


def _codes_taken(codes: list[str]) -> set[str]:
    taken: set[str] = set()
    for start in range(0, len(codes), _CODE_CHECK_SLICE):
        chunk = codes[start : start + _CODE_CHECK_SLICE]
        taken.update(OfferGrant.objects.filter(code__in=chunk).values_list("code", flat=True))
    return taken


def code_generate_bulk(*, count: int) -> list[str]:
    """``count`` new coupon codes, XXXX-XXXX-XXXX, unique in the batch and unused in the database.

    Codes are checked against existing grants in one query per 10,000; the (astronomically
    rare) collisions are regenerated and checked again. The unique key on ``OfferGrant.code``
    remains the final guard. Codes are never reused: grants are append-only and a code that was
    ever stored stays taken.
    """
    if count < 0:
        raise ValueError("count must be zero or more.")
    codes: set[str] = set()
    while len(codes) < count:
        fresh = set()
        while len(codes) + len(fresh) < count:
            code = _random_code()
            if code not in codes:
                fresh.add(code)
        taken = _codes_taken(list(fresh))
        if taken:
            logger.warning("code_generate_bulk: %d generated codes already existed; regenerating", len(taken))
        codes.update(fresh - taken)
    return list(codes)


# Grants -------------------------------------------------------------------------------------


def _grant_expiry(offer: Offer, granted_at: datetime) -> datetime | None:
    # valid_days applies to every kind; a points multiplier ("double points for N days")
    # without one expires with the multiplier.
    days = offer.valid_days or (offer.multiplier_days if offer.kind == Offer.Kind.POINTS else None)
    return granted_at + timedelta(days=days) if days else None


def _reserve_budget(*, offer: Offer, wanted: int) -> int:
    """Reserve up to ``wanted`` grants of ``offer``'s budget; return how many were reserved.

    The caller holds the offer row lock; the UPDATE's WHERE clause is the guard regardless.
    """
    if wanted <= 0:
        return 0
    if offer.budget is None:
        Offer.objects.filter(pk=offer.pk).update(granted_count=F("granted_count") + wanted)
        return wanted
    granted_count = offer.granted_count
    for _ in range(5):
        reserve = min(wanted, max(0, offer.budget - granted_count))
        if reserve == 0:
            return 0
        updated = Offer.objects.filter(pk=offer.pk, granted_count__lte=offer.budget - reserve).update(
            granted_count=F("granted_count") + reserve
        )
        if updated:
            return reserve
        # Someone else reserved in between (possible only without row locks): re-read, retry.
        granted_count = Offer.objects.values_list("granted_count", flat=True).get(pk=offer.pk)
    return 0


@transaction.atomic
def grants_issue_for_run(*, run, deliveries, now: datetime | None = None) -> dict[int, OfferGrant]:
    """Grant the run's campaign offer to the customers of ``deliveries``; return {delivery_id: grant}.

    Deliveries that already have a grant keep it (the call is idempotent: a retried task gets
    the same grants back). Deliveries left out of the result got nothing: the budget ran out,
    or the offer is once-per-customer and the customer already holds a grant of it, or the
    offer is inactive. The caller decides between sending without an offer and skipping.

    The offer row is locked for the transaction, so runs issuing the same offer take turns: the
    once-per-customer check and the budget reservation see each other's committed grants.
    A fixed number of queries whatever the number of deliveries (bulk_create batches aside).
    """
    campaign = run.campaign
    if campaign.offer_id is None or not deliveries:
        return {}
    now = now or timezone.now()
    offer = Offer.objects.select_for_update().get(pk=campaign.offer_id)

    by_id = {d.pk: d for d in deliveries}
    result: dict[int, OfferGrant] = {
        g.delivery_id: g for g in OfferGrant.objects.filter(delivery_id__in=list(by_id)).select_related("offer")
    }
    if not offer.is_active:
        return result

    candidates = [d for d in deliveries if d.pk not in result]
    if offer.usage_mode == Offer.UsageMode.ONCE_PER_CUSTOMER and candidates:
        holders = set(
            OfferGrant.objects.filter(offer=offer, customer_id__in={d.customer_id for d in candidates})
            .values_list("customer_id", flat=True)
        )
        kept = []
        for delivery in candidates:
            if delivery.customer_id not in holders:
                holders.add(delivery.customer_id)  # also one per customer within this batch
                kept.append(delivery)
        candidates = kept

    reserved = _reserve_budget(offer=offer, wanted=len(candidates))
    candidates = candidates[:reserved]
    if not candidates:
        return result

    codes = code_generate_bulk(count=len(candidates)) if offer.kind == Offer.Kind.COUPON else [None] * len(candidates)
    expires_at = _grant_expiry(offer, now)
    grants = OfferGrant.objects.bulk_create(
        [
            OfferGrant(
                offer=offer, customer_id=d.customer_id, campaign_id=run.campaign_id, run=run, delivery_id=d.pk,
                code=code, granted_at=now, expires_at=expires_at,
            )
            for d, code in zip(candidates, codes)
        ]
    )
    for grant in grants:
        result[grant.delivery_id] = grant
    logger.info("grants_issue_for_run run=%s offer=%s granted=%d asked=%d", run.pk, offer.pk, len(grants), len(deliveries))
    return result


# Redeemability ------------------------------------------------------------------------------


class RedeemRefusal:
    """Why a grant cannot be redeemed (the ``reason`` returned with False)."""

    UNKNOWN_CODE = "unknown_code"
    UNKNOWN_CUSTOMER = "unknown_customer"
    WRONG_CUSTOMER = "wrong_customer"
    ALREADY_REDEEMED = "already_redeemed"
    ONCE_PER_CUSTOMER_USED = "once_per_customer_used"
    OFFER_INACTIVE = "offer_inactive"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    BELOW_MIN_SPEND = "below_min_spend"
    WRONG_CATEGORY = "wrong_category"

    MESSAGES = {
        UNKNOWN_CODE: "No grant has this code.",
        UNKNOWN_CUSTOMER: "No customer has this external id.",
        WRONG_CUSTOMER: "This code was granted to another customer.",
        ALREADY_REDEEMED: "This code was already redeemed.",
        ONCE_PER_CUSTOMER_USED: "This customer already redeemed this offer, which is once per customer.",
        OFFER_INACTIVE: "The offer has been switched off.",
        NOT_YET_VALID: "The order is dated before the grant.",
        EXPIRED: "The grant has expired.",
        BELOW_MIN_SPEND: "The order is below the offer's minimum spend (or its amount was not given).",
        WRONG_CATEGORY: "The offer is only valid on another category.",
    }
    # Refusals caused by the current state (another redemption) rather than by the request.
    CONFLICTS = frozenset({ALREADY_REDEEMED, ONCE_PER_CUSTOMER_USED})


OK = "ok"


def grant_is_redeemable(*, grant: OfferGrant, customer, order_amount=None, category: str | None = None,
                        now: datetime | None = None) -> tuple[bool, str]:
    """(True, "ok") or (False, reason) with a ``RedeemRefusal`` reason.

    ``now`` is when the order happened (defaults to now). The minimum spend needs an order
    amount: without one the grant is refused. The category is checked only when given, since an
    order may mix categories and the product decides which lines the coupon applies to.
    """
    now = now or timezone.now()
    offer = grant.offer
    if customer is None or grant.customer_id != customer.pk:
        return False, RedeemRefusal.WRONG_CUSTOMER
    if Redemption.objects.filter(grant_id=grant.pk).exists():
        return False, RedeemRefusal.ALREADY_REDEEMED
    if not offer.is_active:
        return False, RedeemRefusal.OFFER_INACTIVE
    if now < grant.granted_at - timedelta(minutes=5):  # tolerate clock skew between servers
        return False, RedeemRefusal.NOT_YET_VALID
    if grant.expires_at is not None and now >= grant.expires_at:
        return False, RedeemRefusal.EXPIRED
    if offer.usage_mode == Offer.UsageMode.ONCE_PER_CUSTOMER and Redemption.objects.filter(
        grant__offer_id=offer.pk, customer_id=customer.pk
    ).exists():
        return False, RedeemRefusal.ONCE_PER_CUSTOMER_USED
    if offer.min_spend is not None and (order_amount is None or Decimal(order_amount) < offer.min_spend):
        return False, RedeemRefusal.BELOW_MIN_SPEND
    if offer.category and category is not None and category.strip().lower() != offer.category.strip().lower():
        return False, RedeemRefusal.WRONG_CATEGORY
    return True, OK


# Redemption ---------------------------------------------------------------------------------


class RedemptionRefused(Exception):
    """A redemption was refused; ``reason`` is a ``RedeemRefusal`` value."""

    def __init__(self, reason: str, message: str = ""):
        self.reason = reason
        self.message = message or RedeemRefusal.MESSAGES.get(reason, reason)
        super().__init__(f"{reason}: {self.message}")

    @property
    def is_conflict(self) -> bool:
        return self.reason in RedeemRefusal.CONFLICTS


REDEMPTION_INVALID = "invalid"  # the order itself cannot be recorded (see redemption_record)


def redemption_record(*, code: str, external_id: str, order_amount=None, order_ref: str = "",
                      at: datetime | None = None, source: str = "api", category: str | None = None,
                      evaluate_lifecycle: bool = True) -> Redemption:
    """Record that ``code`` was used in an order by the customer ``external_id``.

    Raises ``RedemptionRefused`` with the reason. A code redeems at most once even under
    concurrent requests: the grant row is locked (PostgreSQL; SQLite serializes writers), and the
    one-to-one key on ``Redemption.grant`` turns any second INSERT into ``already_redeemed``.

    A redemption is an order: in the same transaction an ``order`` event (amount, category,
    order_ref as item_ref) is recorded through ``reactivation.services.activity_record_batch``,
    so the customer's rollups move with it and, once committed, the lifecycle follows (a dormant
    customer who redeems is reactivated at once). ``evaluate_lifecycle=False`` leaves that to
    the caller (a CSV import evaluates its customers in batches). An order the event service
    refuses (an amount above its maximum) refuses the redemption with reason ``invalid``.
    """
    at = at or timezone.now()
    if order_amount is not None:
        order_amount = Decimal(order_amount)
    try:
        with transaction.atomic():
            # The customer first: "unknown customer" must not depend on whether the code exists.
            customer = Customer.objects.filter(external_id=external_id).first()
            if customer is None:
                raise RedemptionRefused(RedeemRefusal.UNKNOWN_CUSTOMER)
            grant = (
                OfferGrant.objects.select_for_update(of=("self",)).select_related("offer")
                .filter(code=code_normalize(code)).first()
            )
            if grant is None:
                raise RedemptionRefused(RedeemRefusal.UNKNOWN_CODE)
            ok, reason = grant_is_redeemable(
                grant=grant, customer=customer, order_amount=order_amount, category=category, now=at
            )
            if not ok:
                raise RedemptionRefused(reason)
            redemption = Redemption.objects.create(
                grant=grant, customer=customer, order_amount=order_amount, order_ref=order_ref or "",
                source=source, redeemed_at=at,
            )
            order = ActivityEvent(
                customer_id=customer.pk, kind=ActivityEvent.ORDER, occurred_at=at, amount=order_amount,
                category=(category or "")[:100], item_ref=redemption.order_ref, source=source,
            )
            try:
                activity_record_batch(events=[order], evaluate_lifecycle=evaluate_lifecycle)
            except ValidationError as exc:
                raise RedemptionRefused(REDEMPTION_INVALID, " ".join(exc.messages)) from None
    except IntegrityError:
        # Another request inserted the redemption between our check and our INSERT.
        raise RedemptionRefused(RedeemRefusal.ALREADY_REDEEMED) from None
    logger.info("redemption_record grant=%s customer=%s source=%s", grant.pk, customer.pk, source)
    return redemption


# CSV import ---------------------------------------------------------------------------------

REDEMPTION_CSV_COLUMNS = ("code", "external_id", "order_amount", "order_ref", "at", "category")


@dataclass
class RedemptionImportResult:
    created: int = 0
    refused: int = 0
    invalid: int = 0
    errors: list[dict] = field(default_factory=list)  # {"line", "code", "reason", "message"}

    def summary(self) -> str:
        return f"created={self.created} refused={self.refused} invalid={self.invalid}"


# A redemption is recorded as an order event too: the largest amount an event holds (below
# what Redemption.order_amount, numeric(14, 2), could store).
ORDER_AMOUNT_MAX = AMOUNT_MAX


def _parse_amount(text: str) -> Decimal | None:
    """A CSV order amount ("1,299.00" allowed), or ValueError with a message for the report.

    Decimal() accepts "NaN", "Infinity" and "1e30"; they are refused here rather than crashing on
    a comparison (InvalidOperation) or failing the INSERT mid-file on PostgreSQL.
    """
    text = text.strip().replace(",", "")
    if not text:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"order_amount {text!r} is not a number.") from None
    if not amount.is_finite():
        raise ValueError(f"order_amount {text!r} is not a finite number.")
    if amount < 0:
        raise ValueError("order_amount must not be negative.")
    if amount > ORDER_AMOUNT_MAX:
        raise ValueError(f"order_amount must not exceed {ORDER_AMOUNT_MAX}.")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError("order_amount must have at most 2 decimal places.")
    return amount


def _parse_row(row: dict) -> dict:
    code = (row.get("code") or "").strip()
    external_id = (row.get("external_id") or "").strip()
    if not code or not external_id:
        raise ValueError("code and external_id are required.")
    amount = _parse_amount(row.get("order_amount") or "")
    at_text = (row.get("at") or "").strip()
    at = None
    if at_text:
        try:
            at = time_bounded(at_text.replace("/", "-"), naive_allowed=True)
        except ValueError as exc:
            raise ValueError(f"at {at_text[:40]!r}: {exc}") from None
    category = (row.get("category") or "").strip() or None
    return {"code": code, "external_id": external_id, "order_amount": amount,
            "order_ref": (row.get("order_ref") or "").strip()[:100], "at": at, "category": category}


_CSV_ENCODINGS = ("utf-8-sig", "gb18030")  # UTF-8 (with or without BOM), else Excel in China


def _csv_rows(file, encoding: str | None):
    """Yield (line, row dict) from the CSV, streamed: only one row is in memory at a time.

    Binary files are decoded through a TextIOWrapper that is detached afterwards, so the caller's
    file stays open. Raises ValueError for a missing header or a malformed CSV.
    """
    text = io.TextIOWrapper(file, encoding=encoding, newline="") if encoding else file
    try:
        reader = csv.DictReader(text)
        try:
            headers = [h.strip().lower() for h in (reader.fieldnames or [])]
            if "code" not in headers or "external_id" not in headers:
                raise ValueError("The CSV needs a header row with at least code and external_id.")
            reader.fieldnames = headers
            for index, row in enumerate(reader):
                yield index + 2, row  # the header is line 1
        except csv.Error as exc:
            raise ValueError(f"Line {reader.line_num}: {exc}") from None
    finally:
        if encoding:
            text.detach()


def _seekable(file):
    """The file itself when it can be read twice, else a spooled copy (memory-bounded)."""
    if getattr(file, "seekable", lambda: False)():
        return file
    copy = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+b" if isinstance(file.read(0), bytes)
                                         else "w+")
    shutil.copyfileobj(file, copy)
    copy.seek(0)
    return copy


LIFECYCLE_BATCH = 2_000


def redemptions_import_csv(*, file, source: str = "import", max_rows: int = 1_000_000) -> RedemptionImportResult:
    """Record the redemptions listed in a CSV (header: code, external_id[, order_amount, order_ref, at, category]).

    Each row goes through ``redemption_record`` so the single-use guarantee holds exactly as
    for the API; refused and malformed rows are reported with their line number, not dropped.
    ``file`` is a binary or text file object; UTF-8 (with or without BOM) or GB18030 (Excel in China).

    The file is streamed twice: a first pass picks the encoding, checks the header and CSV syntax
    and counts the rows, so a file over ``max_rows`` (ValueError) redeems nothing; the second pass
    records. Raises ValueError for a bad header, a malformed CSV or too many rows, and
    UnicodeDecodeError when the file is neither UTF-8 nor GB18030; nothing is recorded then.
    """
    file = _seekable(file)
    start = file.tell()
    encodings = _CSV_ENCODINGS if isinstance(file.read(0), bytes) else (None,)
    for encoding in encodings:
        file.seek(start)
        try:
            # closing(): the generator's finally detaches the wrapper at once, even on an early exit.
            with contextlib.closing(_csv_rows(file, encoding)) as rows:
                for count, _ in enumerate(rows, start=1):
                    if count > max_rows:
                        raise ValueError(f"The file has more than {max_rows} rows; nothing was imported.")
            break
        except UnicodeDecodeError:
            if encoding == encodings[-1]:
                raise
    file.seek(start)
    result = RedemptionImportResult()
    # Each row's order moves the rollups at once; the lifecycle of the customers who redeemed is
    # evaluated set-based, once per LIFECYCLE_BATCH of them, not once per row.
    redeemed_by: set[int] = set()
    with contextlib.closing(_csv_rows(file, encoding)) as rows:
        for line, row in rows:
            try:
                values = _parse_row(row)
            except ValueError as exc:
                result.invalid += 1
                result.errors.append({"line": line, "code": row.get("code", ""), "reason": "invalid",
                                      "message": str(exc)})
                continue
            try:
                redemption = redemption_record(**values, source=source, evaluate_lifecycle=False)
            except RedemptionRefused as exc:
                if exc.reason == REDEMPTION_INVALID:
                    result.invalid += 1
                else:
                    result.refused += 1
                result.errors.append({"line": line, "code": values["code"], "reason": exc.reason,
                                      "message": exc.message})
                continue
            result.created += 1
            redeemed_by.add(redemption.customer_id)
            if len(redeemed_by) >= LIFECYCLE_BATCH:
                _lifecycle_follow(redeemed_by)
                redeemed_by = set()
    _lifecycle_follow(redeemed_by)
    return result


def _lifecycle_follow(customer_ids: set[int]) -> None:
    # After the commit, as activity_record_batch does: a caller's transaction may still hold the
    # rows the hourly evaluation needs while that evaluation holds the lifecycle lock.
    transaction.on_commit(lambda: lifecycle_follow_activity(customer_ids=customer_ids), robust=True)
