"""The demo world behind `make run` and `manage.py seed_demo`.

``demo_world_seed`` builds customers with activity, the two playbook dormancy rules, a few
segments, consent history, suppressions and dormancy reasons, then classifies everyone with the
real lifecycle and RFM evaluation. It is:

- deterministic: the same ``seed`` and ``now`` give the same world; customers get the external
  ids DEMO-000001, DEMO-000002, ...;
- idempotent: customers that already exist are skipped, rules and segments are fetched by name,
  so a second run with the same arguments creates nothing;
- set-based: rows are built in Python and written with ``bulk_create`` a chunk at a time, so
  3,000 customers take a couple of seconds and 100,000 work too.

Every lifecycle state is present afterwards. "Reactivated" needs history: those customers are
created as they were before they came back (dormant under both rules), classified with an
evaluation at a past ``now``, then given fresh activity before the final evaluation.

The demo uses reserved addresses (example.com / .org / .net, RFC 2606) so a demo never emails a
real person; the phone numbers are valid but random, so never point a real SMS gateway at a demo.

Campaign demo data is added by ``campaigns.demo.demo_campaigns_seed`` when that module exists
(see ``_campaigns_seed`` below for the contract).
"""

import functools
import importlib
import importlib.util
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import phonenumbers
from django.db import connection, transaction
from django.db.models import Count, Max, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from consent.models import Action, Channel, Source, Suppression
from consent.services import ConsentDecision, consent_record_bulk
from reactivation.models import ActivityEvent, Customer, DormancyReason, DormancyRule, LifecycleState, Segment

EXTERNAL_ID_PREFIX = "DEMO-"
EVENT_SOURCE = "demo"
NOTICE_VERSION = "privacy-2024-01"
CHUNK_SIZE = 2000  # customers per round of bulk inserts: bounded memory at 100,000 customers

# How long before ``now`` the returning customers were last classified as dormant.
REACTIVATION_LOOKBACK = timedelta(days=14)

ECOMMERCE_RULE = "E-commerce: no order for 90 days"
APP_RULE = "App: no login for 7 days"
RULES = {
    # App first: a customer who stopped opening the app is flagged by the short rule first.
    APP_RULE: {"signal": DormancyRule.Signal.LAST_SEEN, "inactive_days": 7, "at_risk_days": 4, "priority": 10},
    ECOMMERCE_RULE: {"signal": DormancyRule.Signal.LAST_ORDER, "inactive_days": 90, "at_risk_days": 60, "priority": 20},
}

HIGH_VALUE_DORMANT = "High-value dormant"
DORMANT_BEAUTY_LOVERS = "Dormant beauty lovers"
AT_RISK_APP_USERS = "At-risk app users"

# Order amounts in CNY per category (min, max) and how often each is someone's favourite.
CATEGORIES = {
    "beauty": ((49, 899), 24),
    "fashion": ((79, 1599), 22),
    "electronics": ((199, 7999), 14),
    "home": ((39, 2499), 16),
    "food": ((19, 299), 16),
    "sports": ((59, 1499), 8),
}

# Lifecycle profile per customer: how recent their last visit and order are. Out of 50.
PROFILE_WEIGHTS = {
    LifecycleState.NEW: 4,
    LifecycleState.ACTIVE: 15,
    LifecycleState.AT_RISK: 7,
    LifecycleState.DORMANT: 19,
    LifecycleState.REACTIVATED: 5,
}

CN_MOBILE_PREFIXES = ["130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "150", "151", "152",
                      "155", "156", "157", "158", "159", "166", "177", "180", "182", "183", "186", "187", "188", "199"]
US_AREA_CODES = ["212", "415", "646", "312", "206", "617", "213", "305"]
TIME_ZONES = {
    "CN": ["Asia/Shanghai"] * 9 + ["Asia/Hong_Kong"],
    "US": ["America/New_York", "America/Chicago", "America/Los_Angeles"],
    "GB": ["Europe/London"],
}
CITIES = {
    "CN": ["上海", "北京", "广州", "深圳", "杭州", "成都", "南京", "武汉", "西安", "苏州"],
    "US": ["New York", "San Francisco", "Chicago", "Seattle", "Boston", "Los Angeles"],
    "GB": ["London", "Manchester", "Edinburgh", "Bristol"],
}
OTHER_REASON_DETAILS = ["搬家了，附近没有门店", "Only needed it for a wedding", "换了新手机，忘记密码"]


@dataclass
class _Plan:
    """One demo customer as built in Python before insertion."""

    index: int
    profile: str
    customer: Customer
    events: list = field(default_factory=list)  # (kind, occurred_at, amount, category, item_ref)
    comeback_events: list = field(default_factory=list)  # reactivated only: after the past evaluation
    consents: list = field(default_factory=list)  # (channel, action, source, at, evidence)
    reason: tuple | None = None  # (reason, detail, source, recorded_at)
    suppression: tuple | None = None  # (channel, address, reason)


def demo_world_seed(*, customers: int, seed: int, now: datetime) -> dict:
    """Create the demo world (see the module docstring) and return the counts it created.

    Keys: customers, events, rules, segments, consent_events, suppressions, reasons (rows created
    by this call) and one key per lifecycle state (customers in that state afterwards).
    """
    from reactivation.lifecycle import lifecycle_evaluate
    from reactivation.rfm import rfm_recompute

    if customers < 0:
        raise ValueError("customers must be zero or more.")
    created = Counter()
    with transaction.atomic():
        rules, created["rules"] = _rules_ensure()
        segments, created["segments"] = _segments_ensure(rules=rules)

        existing = set(
            Customer.objects.filter(external_id__startswith=EXTERNAL_ID_PREFIX).values_list("external_id", flat=True)
        )
        world = _World(seed=seed, now=now)
        missing = [index for index in range(1, customers + 1) if _external_id(index) not in existing]
        returning = [index for index in missing if world.profile(index) == LifecycleState.REACTIVATED]
        others = [index for index in missing if world.profile(index) != LifecycleState.REACTIVATED]
        comeback_events, suppressions = [], []

        if returning:
            # They exist first, as they were while dormant, so the past evaluation only sees them
            # (on an empty database) and logs their fall into dormancy at that date.
            created.update(_plans_insert(plans=world.plans(returning), comeback_events=comeback_events,
                                         suppressions=suppressions))
            lifecycle_evaluate(now=now - REACTIVATION_LOOKBACK)
            created["events"] += _events_insert(comeback_events)
            _rollups_refresh(
                customers=Customer.objects.filter(
                    external_id__startswith=EXTERNAL_ID_PREFIX, attributes__demo_profile=LifecycleState.REACTIVATED
                )
            )
        created.update(_plans_insert(plans=world.plans(others), comeback_events=comeback_events,
                                     suppressions=suppressions))
        created["suppressions"] += _suppressions_insert(suppressions)

        lifecycle_evaluate(now=now)
        rfm_recompute(now=now)
        created.update(_campaigns_seed(segments=segments, now=now))

    summary = {key: created[key] for key in ("customers", "events", "rules", "segments", "consent_events",
                                             "suppressions", "reasons")}
    summary.update({key: value for key, value in created.items() if key not in summary})
    summary.update(lifecycle_counts())
    return summary


def lifecycle_counts() -> dict:
    """Customers per lifecycle state, every state present (zero when empty)."""
    counts = dict(Customer.objects.order_by().values_list("lifecycle_state").annotate(n=Count("id")))
    return {state: counts.get(state, 0) for state in LifecycleState.values}


def _campaigns_seed(*, segments: dict, now: datetime) -> dict:
    """The place for campaign demo data (issue 4 item 7).

    Contract: a module ``campaigns/demo.py`` defining
    ``demo_campaigns_seed(*, segments: dict[str, Segment], now: datetime) -> dict[str, int]``
    that creates the demo campaigns idempotently (get_or_create by name) and returns the counts of
    rows it created; they are added to seed_demo's summary line. Called inside the same
    transaction, after lifecycle and RFM evaluation. No module, no campaigns.
    """
    if importlib.util.find_spec("campaigns.demo") is None:
        return {}
    return importlib.import_module("campaigns.demo").demo_campaigns_seed(segments=segments, now=now)


# Rules and segments ------------------------------------------------------------------------


def _rules_ensure() -> tuple[dict, int]:
    rules, created = {}, 0
    for name, fields in RULES.items():
        rules[name], was_created = DormancyRule.objects.get_or_create(name=name, defaults=fields)
        created += was_created
    return rules, created


def _segments_ensure(*, rules: dict) -> tuple[dict, int]:
    definitions = {
        HIGH_VALUE_DORMANT: {
            "description": "Dormant customers in the top two spending quintiles: worth the biggest offer.",
            "lifecycle_states": [LifecycleState.DORMANT],
            "rfm_monetary_min": 4,
            "rfm_monetary_max": 5,
        },
        DORMANT_BEAUTY_LOVERS: {
            "description": "Dormant customers whose favourite category is beauty: send a beauty coupon.",
            "lifecycle_states": [LifecycleState.DORMANT],
            "favourite_categories": ["beauty"],
        },
        AT_RISK_APP_USERS: {
            "description": "Stopped opening the app a few days ago: a nudge in the app before they go dormant.",
            "lifecycle_states": [LifecycleState.AT_RISK],
            "dormancy_rule": rules[APP_RULE],
        },
    }
    segments, created = {}, 0
    for name, fields in definitions.items():
        segments[name], was_created = Segment.objects.get_or_create(name=name, defaults=fields)
        created += was_created
    return segments, created


# Building the customers in Python ----------------------------------------------------------


class _NamePools:
    """Names drawn once from Faker: drawing 100,000 names one by one takes seconds, combining
    pools takes milliseconds."""

    def __init__(self, seed: int):
        from faker import Faker

        chinese = Faker("zh_CN")
        chinese.seed_instance(seed)
        international = Faker(["en_US", "en_GB"])
        international.seed_instance(seed)
        self.chinese_family = sorted({chinese.last_name() for _ in range(400)})
        self.chinese_given = sorted({chinese.first_name() for _ in range(600)})
        self.family = sorted({international.last_name() for _ in range(400)})
        self.given = sorted({international.first_name() for _ in range(400)})


def _profile_cycle(rng: random.Random) -> list[str]:
    """50 profiles in the weights above, starting with one of each so even 5 customers cover
    every lifecycle state."""
    rest = [profile for profile, weight in PROFILE_WEIGHTS.items() for _ in range(weight - 1)]
    rng.shuffle(rest)
    return list(PROFILE_WEIGHTS) + rest


def _external_id(index: int) -> str:
    return f"{EXTERNAL_ID_PREFIX}{index:06d}"


class _World:
    """Builds any customer of the demo from its index alone: each customer draws from its own
    random generator (seeded by seed and index), so customers are built a chunk at a time in
    any order and memory stays flat at 100,000 customers."""

    def __init__(self, *, seed: int, now: datetime):
        self.seed, self.now = seed, now
        self.names = _NamePools(seed)
        self.cycle = _profile_cycle(random.Random(seed))
        # How many dormant profiles come before each position of the cycle.
        self.dormant_before = [self.cycle[:position].count(LifecycleState.DORMANT) for position in range(len(self.cycle))]

    def profile(self, index: int) -> str:
        return self.cycle[(index - 1) % len(self.cycle)]

    def _dormant_ordinal(self, index: int) -> int:
        cycles, position = divmod(index - 1, len(self.cycle))
        return cycles * PROFILE_WEIGHTS[LifecycleState.DORMANT] + self.dormant_before[position]

    def plans(self, indices):
        for index in indices:
            rng = random.Random(f"{self.seed}:{index}")
            profile = self.profile(index)
            plan = _plan_build(index=index, profile=profile, rng=rng, names=self.names, now=self.now, seed=self.seed)
            if profile == LifecycleState.DORMANT:
                ordinal = self._dormant_ordinal(index)
                # The first seven dormant customers carry one reason each, so every kind is present.
                if ordinal < len(DormancyReason.Reason.values) or rng.random() < 0.25:
                    plan.reason = _reason_for(plan, rng=rng, kind_index=ordinal, now=self.now)
            elif profile == LifecycleState.AT_RISK and rng.random() < 0.1:
                plan.reason = _reason_for(plan, rng=rng, kind_index=rng.randrange(7), now=self.now)
            yield plan


def _plan_build(*, index: int, profile: str, rng: random.Random, names: _NamePools, now: datetime, seed: int) -> _Plan:
    country = rng.choices(["CN", "US", "GB"], weights=[80, 12, 8])[0]
    chinese_name = country == "CN" and rng.random() < 0.94
    if chinese_name:
        name = rng.choice(names.chinese_family) + rng.choice(names.chinese_given)
        email = f"member{index:06d}@{rng.choice(['example.com', 'example.net'])}"
    else:
        given, family = rng.choice(names.given), rng.choice(names.family)
        name = f"{given} {family}"
        email = f"{given}.{family}.{index:06d}@example.org".lower().replace(" ", "").replace("'", "")
    phone = _phone_for(country=country, index=index, seed=seed, rng=rng)
    if rng.random() < 0.05:
        email = ""
    elif rng.random() < 0.05:
        phone = ""

    favourite = rng.choices(list(CATEGORIES), weights=[weight for _, weight in CATEGORIES.values()])[0]
    signup_at, events, comeback = _activity_for(profile=profile, favourite=favourite, rng=rng, now=now)
    customer = Customer(
        external_id=_external_id(index),
        name=name,
        email=email,
        phone=phone,
        locale="zh-hans" if chinese_name else "en",
        timezone=rng.choice(TIME_ZONES[country]),
        signup_at=signup_at,
        attributes={
            "demo_profile": profile,
            "city": rng.choice(CITIES[country]),
            "acquisition": rng.choice(["app_store", "wechat", "search", "referral", "offline"]),
        },
        **_rollups_from(events),
    )
    plan = _Plan(index=index, profile=profile, customer=customer, events=events, comeback_events=comeback)
    plan.consents = _consents_for(customer=customer, rng=rng, now=now)
    plan.suppression = _suppression_for(index=index, customer=customer)
    return plan


def _phone_for(*, country: str, index: int, seed: int, rng: random.Random) -> str:
    # (index * 48271 + seed) modulo m is a bijection for any m made of 2s and 5s (48271 is
    # coprime with 10), so every customer of a country gets a different number.
    if country == "CN":
        prefix, rest = f"+86{rng.choice(CN_MOBILE_PREFIXES)}", f"{(index * 48271 + seed) % 10**8:08d}"
    elif country == "US":
        prefix, rest = f"+1{rng.choice(US_AREA_CODES)}", f"{2_000_000 + (index * 48271 + seed) % 8_000_000}"
    else:
        prefix, rest = "+447400", f"{(index * 48271 + seed) % 10**6:06d}"
    # Validity depends on the number's range, not its last digits: parsing every one of 100,000
    # numbers would take half a minute, so each range is checked once.
    return prefix + rest if _valid_range(prefix + rest[:3], prefix + rest) else ""


@functools.cache
def _valid_range(range_key: str, sample: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(sample))


def _days(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(seconds=rng.uniform(low * 86400, high * 86400))


def _activity_for(*, profile: str, favourite: str, rng: random.Random, now: datetime):
    """Return (signup_at, events, comeback_events) with the profile's recency.

    Thresholds they are built around: the app rule (at risk after 4 days, dormant after 7) and
    the e-commerce rule (at risk after 60 days without an order, dormant after 90), and a
    customer counts as new for 30 days after signing up.
    """
    comeback = []
    if profile == LifecycleState.NEW:
        signup_at = now - _days(rng, 2, 25)
        last_seen = now - _days(rng, 0, 1.5)
        last_order = signup_at + (last_seen - signup_at) * rng.random() if rng.random() < 0.6 else None
        orders = 1 if last_order else 0
    elif profile == LifecycleState.ACTIVE:
        signup_at = now - _days(rng, 90, 3 * 365)
        last_seen = now - _days(rng, 0, 3)
        last_order = now - _days(rng, 3, 40)
        orders = rng.randint(2, 14)
    elif profile == LifecycleState.AT_RISK:
        signup_at = now - _days(rng, 120, 3 * 365)
        last_seen = now - _days(rng, 4.3, 6.5)
        # Half also slipped on orders (the e-commerce rule agrees), half still ordered lately.
        last_order = now - (_days(rng, 62, 85) if rng.random() < 0.5 else _days(rng, 10, 50))
        orders = rng.randint(1, 8)
    elif profile == LifecycleState.DORMANT:
        signup_at = now - _days(rng, 200, 3 * 365)
        last_seen = now - _days(rng, 10, min(700, (now - signup_at).days - 5))
        if rng.random() < 0.15:  # looked around, never bought
            last_order, orders = None, 0
        else:  # the last order at least 95 days ago, after signing up, no later than the last visit
            last_order = min(last_seen, now - _days(rng, 95, (now - signup_at).days - 1))
            orders = rng.randint(1, 10)
    else:  # REACTIVATED: dormant as of the past evaluation, back since
        past_now = now - REACTIVATION_LOOKBACK
        signup_at = now - _days(rng, 300, 3 * 365)
        last_seen = past_now - _days(rng, 95, 200)
        last_order = last_seen - _days(rng, 0, 60)
        orders = rng.randint(1, 10)
        comeback_at = now - _days(rng, 0.1, 3)
        comeback = [
            (ActivityEvent.LOGIN, comeback_at - timedelta(minutes=12), None, "", ""),
            (ActivityEvent.LOGIN, comeback_at, None, "", ""),
            _order_event(at=comeback_at, category=favourite, rng=rng),
        ]
    events = _history(signup_at=signup_at, last_seen=last_seen, last_order=last_order, orders=orders,
                      favourite=favourite, rng=rng)
    return signup_at, events, comeback


def _history(*, signup_at, last_seen, last_order, orders, favourite, rng: random.Random) -> list[tuple]:
    """Sessions between signup and last_seen, ``orders`` orders ending exactly at last_order.

    The last event is always a login at ``last_seen`` (orders are never later), so "last seen"
    is the same whether it counts only logins and visits or any activity.
    """
    events = [(ActivityEvent.LOGIN, last_seen, None, "", "")]
    sessions = rng.randint(1, 6)
    for _ in range(sessions):
        at = signup_at + (last_seen - signup_at) * rng.random()
        kind = rng.choice([ActivityEvent.LOGIN, ActivityEvent.VISIT])
        events.append((kind, at, None, "", ""))
        if rng.random() < 0.5:
            events.append((ActivityEvent.VIEW_ITEM, at + timedelta(minutes=3), None, favourite, _item_ref(favourite, rng)))
    if orders:
        times = [last_order] + [signup_at + (last_order - signup_at) * rng.random() for _ in range(orders - 1)]
        for position, at in enumerate(sorted(times)):
            # Two orders in three are in the favourite category, so it strictly dominates.
            category = favourite if position % 3 != 2 else rng.choice([c for c in CATEGORIES if c != favourite])
            events.append(_order_event(at=at, category=category, rng=rng))
    return events


def _order_event(*, at, category: str, rng: random.Random) -> tuple:
    low, high = CATEGORIES[category][0]
    amount = Decimal(rng.randrange(low * 100, high * 100)) / 100
    return (ActivityEvent.ORDER, at, amount, category, _item_ref(category, rng))


def _item_ref(category: str, rng: random.Random) -> str:
    return f"SKU-{category[:3].upper()}-{rng.randrange(1, 400):04d}"


def _rollups_from(events: list[tuple]) -> dict:
    """The Customer rollups for these events (the same definitions as ``_rollups_refresh``)."""
    orders = [event for event in events if event[0] == ActivityEvent.ORDER]
    by_category = Counter(event[3] for event in orders if event[3])
    favourite = min(by_category, key=lambda c: (-by_category[c], c)) if by_category else ""
    return {
        "last_seen_at": max((event[1] for event in events), default=None),
        "last_order_at": max((event[1] for event in orders), default=None),
        "order_count": len(orders),
        "total_spent": sum((event[2] for event in orders), Decimal("0")),
        "favourite_category": favourite,
    }


def _consents_for(*, customer: Customer, rng: random.Random, now: datetime) -> list[tuple]:
    """Consent history in time order: grants at signup or import, later changes, withdrawals."""
    signup_at = customer.signup_at
    ip = f"203.0.113.{rng.randrange(1, 255)}"  # TEST-NET-3: never a real visitor
    signup_evidence = {"ip": ip, "user_agent": rng.choice(["WeChat/8.0 iPhone", "Android App 5.2", "Mozilla/5.0"])}
    source = Source.SIGNUP if rng.random() < 0.8 else Source.IMPORT
    evidence = signup_evidence if source == Source.SIGNUP else {"file": "crm-export-2024.csv", "line": rng.randrange(2, 90000)}
    consents = [(Channel.IN_APP, Action.GRANT, source, signup_at, evidence)]
    if customer.email and rng.random() < 0.85:
        consents.append((Channel.EMAIL, Action.GRANT, source, signup_at, evidence))
    if customer.phone and rng.random() < 0.7:
        consents.append((Channel.SMS, Action.GRANT, source, signup_at, evidence))
    later = signup_at + (now - signup_at) * rng.uniform(0.3, 0.95)
    roll = rng.random()
    if roll < 0.06 and customer.email:
        consents.append((Channel.EMAIL, Action.WITHDRAW, Source.UNSUBSCRIBE_LINK, later, {"ip": ip}))
    elif roll < 0.10 and customer.phone:
        consents.append((Channel.SMS, Action.WITHDRAW, Source.SMS_REPLY, later, {"text": rng.choice(["TD", "退订", "T"])}))
    elif roll < 0.14 and customer.email:
        consents.append((Channel.EMAIL, Action.GRANT, Source.PREFERENCE_CENTER, later, {"ip": ip}))
    elif roll < 0.16:
        consents.append((Channel.IN_APP, Action.WITHDRAW, Source.PREFERENCE_CENTER, later, {"ip": ip}))
    elif roll < 0.19 and customer.phone:
        consents.append((Channel.SMS, Action.GRANT, Source.ADMIN, later, {"note": "Asked the call centre to receive offers."}))
    return consents


def _suppression_for(*, index: int, customer: Customer) -> tuple | None:
    """Three customers in a hundred: a bounced address, a spam complaint, a phone suppressed by hand."""
    kind = index % 100
    if kind == 7 and customer.email:
        return (Channel.EMAIL, customer.email, Suppression.Reason.HARD_BOUNCE)
    if kind == 41 and customer.email:
        return (Channel.EMAIL, customer.email, Suppression.Reason.COMPLAINT)
    if kind == 73 and customer.phone:
        return (Channel.SMS, customer.phone, Suppression.Reason.MANUAL)
    return None


def _reason_for(plan: _Plan, *, rng: random.Random, kind_index: int, now: datetime) -> tuple:
    reasons = DormancyReason.Reason.values
    reason = reasons[kind_index % len(reasons)]
    detail = rng.choice(OTHER_REASON_DETAILS) if reason == DormancyReason.Reason.OTHER else ""
    source = DormancyReason.Source.values[kind_index % len(DormancyReason.Source.values)]
    last = plan.customer.last_seen_at or plan.customer.signup_at
    return (reason, detail, source, min(now, last + _days(rng, 1, 5)))


# Writing -----------------------------------------------------------------------------------


def _plans_insert(*, plans, comeback_events: list, suppressions: list) -> Counter:
    """Insert customers and everything that hangs off them, a chunk at a time.

    Appends what must wait to ``comeback_events`` (customer id, event...) and ``suppressions``.
    """
    created = Counter()
    while chunk := list(itertools.islice(plans, CHUNK_SIZE)):
        Customer.objects.bulk_create([plan.customer for plan in chunk], batch_size=CHUNK_SIZE)
        created["customers"] += len(chunk)
        created["events"] += _events_insert([(plan.customer.pk, *event) for plan in chunk for event in plan.events])
        created["consent_events"] += consent_record_bulk(
            decisions=[
                ConsentDecision(customer_id=plan.customer.pk, channel=channel, action=action, source=source,
                                notice_version=NOTICE_VERSION, evidence=evidence, at=at)
                for plan in chunk
                for channel, action, source, at, evidence in plan.consents
            ]
        )
        reasons = DormancyReason.objects.bulk_create(
            [
                DormancyReason(customer_id=plan.customer.pk, reason=reason, detail=detail, source=source, recorded_at=at)
                for plan in chunk if plan.reason
                for reason, detail, source, at in [plan.reason]
            ]
        )
        created["reasons"] += len(reasons)
        comeback_events.extend((plan.customer.pk, *event) for plan in chunk for event in plan.comeback_events)
        suppressions.extend(plan.suppression for plan in chunk if plan.suppression)
    return created


def _events_insert(rows: list[tuple]) -> int:
    """Insert events with one executemany per chunk of rows.

    The events are a dozen per customer and nothing needs their ids back, so they skip model
    instances: on the ORM path, building and adapting 1.2 million instances for 100,000
    customers took most of the seeding time. Values are adapted by the database backend's own
    operations, exactly as ``bulk_create`` would.
    """
    if not rows:
        return 0
    meta = ActivityEvent._meta
    names = ["customer", "kind", "occurred_at", "amount", "category", "item_ref", "source", "created_at"]
    fields = [meta.get_field(name) for name in names]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    ops, amount_field = connection.ops, meta.get_field("amount")
    created_at = ops.adapt_datetimefield_value(timezone.now())
    values = [
        (
            customer_id, kind, ops.adapt_datetimefield_value(at),
            None if amount is None else ops.adapt_decimalfield_value(amount, amount_field.max_digits, amount_field.decimal_places),
            category, item_ref, EVENT_SOURCE, created_at,
        )
        for customer_id, kind, at, amount, category, item_ref in rows
    ]
    with connection.cursor() as cursor:
        for start in range(0, len(values), 10 * CHUNK_SIZE):
            cursor.executemany(sql, values[start:start + 10 * CHUNK_SIZE])
    return len(values)


def _suppressions_insert(rows: list[tuple]) -> int:
    """Suppress addresses not yet suppressed (an address may already be, from a real bounce).

    Addresses are already normalized (lower-case email, E.164 phone), as ``suppression_add``
    would store them; the count is taken around the insert because ignored conflicts are not
    reported by ``bulk_create``."""
    before = Suppression.objects.count()
    Suppression.objects.bulk_create(
        [Suppression(channel=channel, address=address, reason=reason, note="Demo data") for channel, address, reason in rows],
        batch_size=CHUNK_SIZE,
        ignore_conflicts=True,
    )
    return Suppression.objects.count() - before


def _rollups_refresh(*, customers) -> int:
    """Recompute the rollups of ``customers`` from their events in one UPDATE."""
    events = ActivityEvent.objects.filter(customer=OuterRef("pk")).order_by().values("customer")
    orders = events.filter(kind=ActivityEvent.ORDER)
    favourite = (
        ActivityEvent.objects.filter(customer=OuterRef("pk"), kind=ActivityEvent.ORDER)
        .exclude(category="")
        .order_by()
        .values("category")
        .annotate(n=Count("id"))
        .order_by("-n", "category")
        .values("category")[:1]
    )
    return customers.update(
        last_seen_at=Subquery(events.annotate(m=Max("occurred_at")).values("m")),
        last_order_at=Subquery(orders.annotate(m=Max("occurred_at")).values("m")),
        order_count=Coalesce(Subquery(orders.annotate(n=Count("id")).values("n")), 0),
        total_spent=Coalesce(Subquery(orders.annotate(s=Sum("amount")).values("s")), Value(Decimal("0"))),
        favourite_category=Coalesce(Subquery(favourite), Value("")),
    )
