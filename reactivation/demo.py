"""The demo world behind `make run` and `manage.py seed_demo`.

``demo_world_seed`` builds customers with activity, the two playbook dormancy rules, a few
segments, consent history, suppressions and dormancy reasons, then classifies everyone with the
real lifecycle and RFM evaluation. It is:

- deterministic: the same ``seed`` and ``now`` give the same world; customers get the external
  ids DEMO-000001, DEMO-000002, ...;
- idempotent: customers that already exist are skipped, rules and segments are fetched by name,
  so a second run with the same arguments creates nothing;
- counted: the segments it ensures get their cached size (the segment list's figure) at the end;
- set-based: rows are built in Python and written with ``bulk_create`` a chunk at a time, and
  the history below is a fixed number of statements, so 3,000 customers take a few seconds and
  100,000 work too.

Each customer is built for a lifecycle state (``PROFILE_WEIGHTS``, the mix of a shop that is
doing fine) and gets an activity history that reaches it through the real evaluation: the
state is never written directly. The history covers the last quarter the way the hourly
evaluation would have seen it: on a database without customers, the customers' rollups are
rolled forward from their events one week at a time and ``lifecycle_evaluate`` runs at each
of those past instants (``history_instants``), so the transition log holds about 13 weeks of
customers slipping, lapsing and coming back, and the home page has weeks to chart. On a
database that already has customers, evaluating at past instants would re-decide those
customers from today's activity and log nonsense, so new demo customers are then classified
at ``now`` only (and the ones built to have come back show as active).

The demo uses reserved addresses (example.com / .org / .net, RFC 2606) so a demo never emails a
real person; the phone numbers are valid but random, so never point a real SMS gateway at a demo.

Campaign demo data is added by ``campaigns.demo.demo_campaigns_seed`` when that module exists
(see ``_campaigns_seed`` below for the contract).
"""

import importlib
import importlib.util
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import phonenumbers
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, DecimalField, Max, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from consent.models import Action, Channel, Source, Suppression
from consent.services import ConsentDecision, consent_record_bulk
from reactivation.models import ActivityEvent, Customer, DormancyReason, DormancyRule, LifecycleState, Segment
from reactivation.segment_sizes import segment_sizes_refresh

EXTERNAL_ID_PREFIX = "DEMO-"
EVENT_SOURCE = "demo"
NOTICE_VERSION = "privacy-2024-01"
CHUNK_SIZE = 2000  # customers per round of bulk inserts: bounded memory at 100,000 customers

# Weekly evaluations before ``now`` that the history replays. The first classifies everyone
# at once (a burst of "new -> ..." transitions), and for the month after it nobody can be
# "reactivated" yet (nobody had been seen dormant): both are over before the last 12 weeks,
# which is what the home page charts, so every transition there is a change a customer made.
HISTORY_WEEKS = 17
HISTORY_DAYS = 7 * HISTORY_WEEKS  # days from the first evaluation to now
SIGNUP_MAX_DAYS = 3 * 365

ECOMMERCE_RULE = "E-commerce: no order for 90 days"
APP_RULE = "App: no login for 7 days"
RULES = {
    # Buyers are judged by their orders: a shop's customer who has not ordered for 90 days is
    # lost whatever the app says, and this rule decides first whenever both say dormant (or both
    # say at risk). A rule's scope can only be narrowed from below (min_orders, min_spent), so
    # the app rule watches everyone: it decides for the members who never bought, and for
    # buyers who stopped opening the app before their order gap ran out. The shop is app-first
    # (members open it for daily check-in points), so a week without a login is a real warning.
    ECOMMERCE_RULE: {"signal": DormancyRule.Signal.LAST_ORDER, "inactive_days": 90, "at_risk_days": 60,
                     "min_orders": 1, "priority": 10},
    APP_RULE: {"signal": DormancyRule.Signal.LAST_SEEN, "inactive_days": 7, "at_risk_days": 4, "priority": 20},
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

# The lifecycle state each customer is built to end in, out of 100: a growing shop that
# already works on retention. One member in ten joined in the last month; a bit under half
# come back every week and order at least every two months; about one in six is slipping
# (still browsing but no order for two months, or a few days without opening the app);
# a bit under a quarter have lapsed, as many each week as come back, so the dormant pool
# stays level; and the few in a hundred who came back in the last month are the win-back
# work paying off. A base that is mostly dormant is what a shop looks like after years
# without any of that, not what a demo should show first.
PROFILE_WEIGHTS = {
    LifecycleState.NEW: 10,
    LifecycleState.ACTIVE: 46,
    LifecycleState.AT_RISK: 16,
    LifecycleState.DORMANT: 23,
    LifecycleState.REACTIVATED: 5,
}
# Each week, the chance that an engaged customer skips the app for 4 to 7 days just before the
# evaluation (at risk for that week, active again the next).
WEEK_SKIPPED_CHANCE = 0.15
# How often a buyer's next order comes after a long pause (62-88 days: at risk for a while,
# never dormant) rather than within 12-55 days.
LONG_ORDER_GAP_CHANCE = 0.7

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
    rollups: dict = field(default_factory=dict)  # as of now, from all the events
    consents: list = field(default_factory=list)  # (channel, action, source, at, evidence)
    reason: tuple | None = None  # (reason, detail, source, recorded_at)
    suppression: tuple | None = None  # (channel, address, reason)


def history_instants(now: datetime) -> list[datetime]:
    """The past instants the demo history is evaluated at, oldest first (``now`` excluded)."""
    return [now - timedelta(weeks=weeks) for weeks in range(HISTORY_WEEKS, 0, -1)]


def demo_world_seed(*, customers: int, seed: int, now: datetime) -> dict:
    """Create the demo world (see the module docstring) and return the counts it created.

    Keys: customers, events, rules, segments, consent_events, suppressions, reasons (rows created
    by this call), transitions (lifecycle transitions logged by this call), the campaign counts,
    then one key per lifecycle state (customers in that state afterwards) and the same as a
    percentage of all customers (``new_pct``, ...).
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
        missing = [index for index in range(1, customers + 1) if _external_id(index) not in existing]
        # Replaying the past re-decides every customer at past instants: only safe when all of
        # them are the ones created here, with their activity rolled back to those instants.
        replay = bool(missing) and not Customer.objects.exists()
        instants = history_instants(now) if replay else []
        world = _World(seed=seed, now=now, rollups_at=instants[0] if instants else None)
        suppressions = []
        created.update(_plans_insert(plans=world.plans(missing), suppressions=suppressions))
        created["suppressions"] += _suppressions_insert(suppressions)

        for previous, instant in zip(instants, [*instants[1:], now]):
            created["transitions"] += lifecycle_evaluate(now=previous)["total"]
            _rollups_advance(after=previous, until=instant)
        created["transitions"] += lifecycle_evaluate(now=now)["total"]
        rfm_recompute(now=now)
        created.update(_campaigns_seed(segments=segments, now=now))
    # The segment list shows sizes counted in the background every few minutes; counted here,
    # after the commit, a fresh demo lists its segments with their sizes instead of "counting…".
    segment_sizes_refresh(segments=list(segments.values()))

    summary = {key: created[key] for key in ("customers", "events", "rules", "segments", "consent_events",
                                             "suppressions", "reasons", "transitions")}
    summary.update({key: value for key, value in created.items() if key not in summary})
    summary.update(lifecycle_mix())
    return summary


def lifecycle_counts() -> dict:
    """Customers per lifecycle state, every state present (zero when empty)."""
    counts = dict(Customer.objects.order_by().values_list("lifecycle_state").annotate(n=Count("id")))
    return {state: counts.get(state, 0) for state in LifecycleState.values}


def lifecycle_mix() -> dict:
    """``lifecycle_counts`` followed by each state's share of all customers in percent, one
    decimal (``new_pct``, ...; 0.0 when there are no customers)."""
    counts = lifecycle_counts()
    total = sum(counts.values())
    shares = {f"{state}_pct": round(100 * n / total, 1) if total else 0.0 for state, n in counts.items()}
    return {**counts, **shares}


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
    any order and memory stays flat at 100,000 customers.

    Customers are built with their rollups as of ``rollups_at`` (the first past evaluation)
    when the history is replayed, as of ``now`` otherwise."""

    def __init__(self, *, seed: int, now: datetime, rollups_at: datetime | None):
        self.seed, self.now, self.rollups_at = seed, now, rollups_at
        self.names = _NamePools(seed)
        self.cycle = _profile_cycle(random.Random(seed))
        # How many dormant profiles come before each position of the cycle.
        self.dormant_before = [self.cycle[:position].count(LifecycleState.DORMANT) for position in range(len(self.cycle))]
        self.timing = _Timing(
            new_days=settings.LIFECYCLE_NEW_DAYS, reactivated_days=settings.LIFECYCLE_REACTIVATED_DAYS
        )

    def profile(self, index: int) -> str:
        return self.cycle[(index - 1) % len(self.cycle)]

    def _dormant_ordinal(self, index: int) -> int:
        cycles, position = divmod(index - 1, len(self.cycle))
        return cycles * PROFILE_WEIGHTS[LifecycleState.DORMANT] + self.dormant_before[position]

    def plans(self, indices):
        for index in indices:
            rng = random.Random(f"{self.seed}:{index}")
            profile = self.profile(index)
            plan = _plan_build(index=index, profile=profile, rng=rng, world=self)
            if profile == LifecycleState.DORMANT:
                ordinal = self._dormant_ordinal(index)
                # The first seven dormant customers carry one reason each, so every kind is present.
                if ordinal < len(DormancyReason.Reason.values) or rng.random() < 0.25:
                    plan.reason = _reason_for(plan, rng=rng, kind_index=ordinal, now=self.now)
            elif profile == LifecycleState.AT_RISK and rng.random() < 0.1:
                plan.reason = _reason_for(plan, rng=rng, kind_index=rng.randrange(7), now=self.now)
            yield plan


def _plan_build(*, index: int, profile: str, rng: random.Random, world: _World) -> _Plan:
    names, now, seed = world.names, world.now, world.seed
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
    story = _story_for(profile=profile, rng=rng, timing=world.timing)
    signup_at = now - timedelta(days=story.signup)
    events = _events_for(story=story, favourite=favourite, rng=rng, now=now)
    rollups = _rollups_from(events)
    customer = Customer(
        external_id=_external_id(index),
        name=name,
        email=email,
        phone=phone,
        locale="zh-hans" if chinese_name else "en",
        timezone=rng.choice(TIME_ZONES[country]),
        signup_at=signup_at,
        # A member's record exists since they signed up: the home page counts newcomers by it.
        created_at=signup_at,
        lifecycle_since=signup_at,
        attributes={
            "demo_profile": profile,
            "city": rng.choice(CITIES[country]),
            "acquisition": rng.choice(["app_store", "wechat", "search", "referral", "offline"]),
        },
        **(rollups if world.rollups_at is None else _rollups_from(events, until=world.rollups_at)),
    )
    # The favourite category does not decide any state: it is the final one from the start.
    customer.favourite_category = rollups["favourite_category"]
    plan = _Plan(index=index, profile=profile, customer=customer, events=events, rollups=rollups)
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
    # numbers would take half a minute, so each range is checked once, with its first number.
    return prefix + rest if _valid_range(prefix + rest[:3], prefix + rest) else ""


_VALID_RANGES: dict[str, bool] = {}


def _valid_range(range_key: str, sample: str) -> bool:
    # Keyed by the range alone (a cache keyed by the whole number would never hit).
    if range_key not in _VALID_RANGES:
        _VALID_RANGES[range_key] = phonenumbers.is_valid_number(phonenumbers.parse(sample))
    return _VALID_RANGES[range_key]


# Activity histories ------------------------------------------------------------------------
#
# A story is told in days before ``now`` (larger is earlier): when the customer signed up,
# the spans in which they were using the app (a login at each end, and while the history is
# replayed a login in the 3.5 days before every weekly evaluation, so the app rule's 4 days
# are never reached by accident), and when they ordered. Orders happen inside spans. The
# thresholds the stories are built around: the app rule (at risk after 4 days, dormant after
# 7), the e-commerce rule (at risk after 60 days without an order, dormant after 90, buyers
# only), new for LIFECYCLE_NEW_DAYS after signup, reactivated for LIFECYCLE_REACTIVATED_DAYS.


@dataclass(frozen=True)
class _Timing:
    new_days: int
    reactivated_days: int


@dataclass
class _Span:
    start: float  # days ago, the first login
    end: float  # days ago, the last login (end <= start)
    skips: bool = False  # may skip the app for a week now and then (at risk for one evaluation)


@dataclass
class _Story:
    signup: float
    spans: list
    orders: list = field(default_factory=list)


def _uniform(rng: random.Random, low: float, high: float) -> float:
    return rng.uniform(low, max(low, high))


def _order_gap(rng: random.Random) -> float:
    return rng.uniform(62, 88) if rng.random() < LONG_ORDER_GAP_CHANCE else rng.uniform(12, 55)


def _orders_back(*, last: float, signup: float, rng: random.Random) -> list[float]:
    """Orders from ``last`` back in time: gaps below 90 days over the replayed weeks (a buyer
    who was never dormant stays so), then a few older ones scattered back to signup."""
    orders, at = [last], last
    while (at := at + _order_gap(rng)) <= min(signup, HISTORY_DAYS + 200):
        orders.append(at)
    if signup - orders[-1] > 30:
        orders += [rng.uniform(orders[-1], signup) for _ in range(rng.randint(0, 5))]
    return orders


def _orders_forward(*, first: float, until: float, rng: random.Random) -> list[float]:
    """Orders from ``first`` on, 12 to 55 days apart, none after ``until`` (days ago)."""
    orders, at = [], first
    while at >= until:
        orders.append(at)
        at -= rng.uniform(12, 55)
    return orders


def _story_for(*, profile: str, rng: random.Random, timing: _Timing) -> _Story:
    """A history that ends in ``profile``'s state.

    The shares of the variants shape the replayed weeks: members join at a steady pace (so
    about as many are new each week), about as many lapse each week as come back, and buyers
    drift in and out of "at risk" between orders, so the weekly chart stays level.
    """
    history, roll = HISTORY_DAYS, rng.random()
    # Joined since a month before the replayed weeks, past their new period.
    joined = _uniform(rng, timing.new_days + 0.5, history + timing.new_days)
    # Comebacks seen by an evaluation less than LIFECYCLE_REACTIVATED_DAYS ago (still
    # reactivated now) come before this many days, the others after.
    recent_comeback = 7 * -(-timing.reactivated_days // 7)
    if profile == LifecycleState.NEW:
        signup = rng.uniform(0.5, timing.new_days - 0.5)
        end = rng.uniform(0, min(1.5, signup))
        orders = [rng.uniform(end, signup)] if rng.random() < 0.6 else []
        return _Story(signup, [_Span(signup, end)], orders)

    if profile == LifecycleState.ACTIVE:
        end = rng.uniform(0, 3)
        if roll < 0.4:  # joined lately and stayed
            first = joined - rng.uniform(0, 20)
            orders = _orders_forward(first=first, until=end, rng=rng) if rng.random() < 0.75 else []
            return _Story(joined, [_Span(joined, end)], orders)
        if roll < 0.55:  # lapsed, came back earlier this quarter and stayed
            comeback = _uniform(rng, recent_comeback + 0.5, history - 5)
            return _comeback_story(comeback=comeback, end=end, rng=rng)
        signup = rng.uniform(history + 30, SIGNUP_MAX_DAYS)
        orders = _orders_back(last=rng.uniform(end, 55), signup=signup, rng=rng) if rng.random() < 0.85 else []
        return _Story(signup, [_Span(signup, end, skips=True)], orders)

    if profile == LifecycleState.AT_RISK:
        signup = rng.uniform(history + 60, SIGNUP_MAX_DAYS)
        if roll < 0.5:  # still browses, stopped ordering two months ago (the e-commerce rule)
            end = rng.uniform(0, 3)
            orders = _orders_back(last=rng.uniform(62, 88), signup=signup, rng=rng)
            return _Story(signup, [_Span(signup, end, skips=True)], orders)
        end = rng.uniform(4.3, 6.7)  # has not opened the app for a few days (the app rule)
        if roll < 0.8:
            signup = joined
        last = _uniform(rng, end, min(50, signup))
        orders = _orders_back(last=last, signup=signup, rng=rng) if rng.random() < 0.65 else []
        return _Story(signup, [_Span(signup, end, skips=signup > history)], orders)

    if profile == LifecycleState.DORMANT:
        if roll < 0.4:  # gone since before the replayed weeks
            signup = rng.uniform(history + 40, SIGNUP_MAX_DAYS)
            lapsed = _uniform(rng, history + 8, min(signup - 5, history + 600))
            orders = (_orders_back(last=_uniform(rng, lapsed, min(lapsed + 60, signup)), signup=signup, rng=rng)
                      if rng.random() < 0.8 else [])
            return _Story(signup, [_Span(signup, lapsed)], orders)
        lapsed = rng.uniform(8, history + 2)
        if roll < 0.65:  # a buyer who lapsed this quarter, often after weeks without an order
            signup = rng.uniform(lapsed + 60, SIGNUP_MAX_DAYS)
            orders = _orders_back(last=_uniform(rng, lapsed, min(lapsed + 80, signup)), signup=signup, rng=rng)
            return _Story(signup, [_Span(signup, lapsed, skips=True)], orders)
        signup = lapsed + rng.uniform(1, 25)  # joined, looked around, left without buying
        return _Story(signup, [_Span(signup, lapsed)])

    # REACTIVATED: lapsed, and came back lately.
    comeback = rng.uniform(0.3, recent_comeback - 0.5)
    return _comeback_story(comeback=comeback, end=rng.uniform(0, min(3, comeback)), rng=rng)


def _comeback_story(*, comeback: float, end: float, rng: random.Random) -> _Story:
    """Lapsed 20 days to a year and a half before ``comeback``, then back, with an order."""
    signup = rng.uniform(comeback + 150, SIGNUP_MAX_DAYS)
    lapsed = _uniform(rng, comeback + 20, min(signup - 5, comeback + 500))
    before = (_orders_back(last=_uniform(rng, lapsed, min(lapsed + 60, signup)), signup=signup, rng=rng)
              if rng.random() < 0.9 else [])
    after = _orders_forward(first=comeback, until=end, rng=rng)
    return _Story(signup, [_Span(signup, lapsed, skips=True), _Span(comeback, end)], before + after)


def _session_days(story: _Story, rng: random.Random) -> list[float]:
    """Login days of the story: both ends of each span, a few scattered logins before the
    replayed weeks, and in them one login in the 3.5 days before each weekly evaluation (or, on
    a skipped week, 4.3 to 6.7 days before it)."""
    instants = [7 * weeks for weeks in range(HISTORY_WEEKS, -1, -1)]
    orders = story.orders
    days = []
    for span in story.spans:
        days += [span.start, span.end]
        sparse_until = max(span.end, HISTORY_DAYS + 7)
        if span.start > sparse_until:
            days += [rng.uniform(sparse_until, span.start) for _ in range(rng.randint(1, 5))]
        for instant in instants:
            if not span.end < instant <= span.start:
                continue
            if (span.skips and span.start - instant > 7 and rng.random() < WEEK_SKIPPED_CHANCE
                    and not any(instant <= order <= instant + 4.3 for order in orders)):
                days.append(instant + rng.uniform(4.3, 6.7))
            else:
                days.append(instant + rng.uniform(0, min(3.5, span.start - instant)))
    return days


def _events_for(*, story: _Story, favourite: str, rng: random.Random, now: datetime) -> list[tuple]:
    """The story's events. The latest is always a login (orders and item views come earlier), so
    "last seen" is the same whether it counts only logins and visits or any activity."""
    last_login = story.spans[-1].end
    events = []
    for day in _session_days(story, rng):
        at = now - timedelta(days=day)
        kind = ActivityEvent.LOGIN if day == last_login else rng.choice([ActivityEvent.LOGIN, ActivityEvent.VISIT])
        events.append((kind, at, None, "", ""))
        if day > last_login + 1 and rng.random() < 0.4:
            viewed_at = at + timedelta(minutes=3)
            events.append((ActivityEvent.VIEW_ITEM, viewed_at, None, favourite, _item_ref(favourite, rng)))
    for position, day in enumerate(sorted(story.orders, reverse=True)):
        # Two orders in three are in the favourite category, so it strictly dominates.
        category = favourite if position % 3 != 2 else rng.choice([c for c in CATEGORIES if c != favourite])
        events.append(_order_event(at=now - timedelta(days=day), category=category, rng=rng))
    return events


def _order_event(*, at, category: str, rng: random.Random) -> tuple:
    low, high = CATEGORIES[category][0]
    amount = Decimal(rng.randrange(low * 100, high * 100)) / 100
    return (ActivityEvent.ORDER, at, amount, category, _item_ref(category, rng))


def _item_ref(category: str, rng: random.Random) -> str:
    return f"SKU-{category[:3].upper()}-{rng.randrange(1, 400):04d}"


def _rollups_from(events: list[tuple], *, until: datetime | None = None) -> dict:
    """The Customer rollups for these events, or for those up to ``until`` (the definitions of
    ``reactivation.services``: every kind counts as presence, only orders as orders)."""
    if until is not None:
        events = [event for event in events if event[1] <= until]
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
    last = plan.rollups["last_seen_at"] or plan.customer.signup_at
    return (reason, detail, source, min(now, last + timedelta(days=rng.uniform(1, 5))))


# Writing -----------------------------------------------------------------------------------


def _plans_insert(*, plans, suppressions: list) -> Counter:
    """Insert customers and everything that hangs off them, a chunk at a time; append the
    suppressions to ``suppressions`` (inserted once, after all customers)."""
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


def _rollups_advance(*, after: datetime, until: datetime) -> None:
    """Roll every customer's rollups forward over the events in (after, until]: one UPDATE
    joined to one grouped SELECT of those events.

    Those events are later than any already counted, so the newest of them is the new "last
    seen" (and "last order" when there is an order) and their orders add up. A join (UPDATE ...
    FROM, PostgreSQL and SQLite >= 3.33), like ``reactivation.lifecycle``; only the customers
    with events in the week are touched.
    """
    order = Q(kind=ActivityEvent.ORDER)
    total_spent = Customer._meta.get_field("total_spent")
    window = (
        ActivityEvent.objects.order_by()
        .filter(occurred_at__gt=after, occurred_at__lte=until)
        .values("customer_id")
        .annotate(
            seen=Max("occurred_at"),
            ordered=Max("occurred_at", filter=order),
            orders=Count("id", filter=order),
            spent=Coalesce(Sum("amount", filter=order), Value(Decimal("0")),
                           output_field=DecimalField(max_digits=total_spent.max_digits,
                                                     decimal_places=total_spent.decimal_places)),
        )
    )
    sql, params = window.query.sql_with_params()
    customers = connection.ops.quote_name(Customer._meta.db_table)
    column = {name: connection.ops.quote_name(Customer._meta.get_field(name).column)
              for name in ("last_seen_at", "last_order_at", "order_count", "total_spent")}
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {customers} SET
                {column["last_seen_at"]} = w.seen,
                {column["last_order_at"]} = COALESCE(w.ordered, {customers}.{column["last_order_at"]}),
                {column["order_count"]} = {customers}.{column["order_count"]} + w.orders,
                {column["total_spent"]} = {customers}.{column["total_spent"]} + w.spent
            FROM ({sql}) AS w
            WHERE w.customer_id = {customers}.{connection.ops.quote_name(Customer._meta.pk.column)}
            """,
            params,
        )
