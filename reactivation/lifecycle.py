"""Lifecycle evaluation: new / active / at_risk / dormant / reactivated for every customer, or
for the customers whose activity just arrived (``lifecycle_evaluate_customers``, and
``lifecycle_follow_activity`` on the request path).

The state is decided in SQL (Case/When annotations built from the active DormancyRules), so the
evaluation is a fixed number of statements whatever the number of customers:

1. read the active rules (one SELECT);
2. on PostgreSQL, take a transaction-scoped advisory lock so two overlapping runs (a slow run and
   the next beat tick) cannot both log the same change (the request path only tries it: see
   ``lifecycle_follow_activity``);
3. INSERT INTO LifecycleTransition ... SELECT the customers whose state or deciding rule changes;
4. UPDATE those customers from the rows just logged (state, since, rule), a join;
5. count the new transitions by state (one grouped SELECT) for the summary.
"""

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Case, CharField, Count, DateTimeField, F, IntegerField, Max, Q, QuerySet, Value, When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Greatest
from django.db.models.lookups import GreaterThan, LessThanOrEqual
from django.utils import timezone

from reactivation.models import Customer, DormancyRule, LifecycleState, LifecycleTransition

logger = logging.getLogger(__name__)

# Any stable 64-bit number: it names the lock, it is not a secret.
ADVISORY_LOCK_ID = 0x6C69666563796331  # "lifecyc1"

# The task that evaluates customers whose follow-up found the lock busy (reactivation/tasks.py),
# reached by its registered name: tasks.py imports this module.
FOLLOW_TASK_NAME = "reactivation.lifecycle_evaluate_customers"
# Customers per queued follow-up task: a short message and a short transaction in the worker.
FOLLOW_TASK_CHUNK = 1_000


def _signal_expression(signal: str):
    """The timestamp a rule measures inactivity from, before the signup/created fallback."""
    if signal == DormancyRule.Signal.LAST_SEEN:
        return F("last_seen_at")
    if signal == DormancyRule.Signal.LAST_ORDER:
        return F("last_order_at")
    if signal == DormancyRule.Signal.ANY_ACTIVITY:
        # GREATEST is NULL on SQLite as soon as one side is NULL; the crossed COALESCEs keep the
        # other side instead, on both databases.
        return Greatest(Coalesce("last_seen_at", "last_order_at"), Coalesce("last_order_at", "last_seen_at"))
    raise ValueError(f"Unknown dormancy signal {signal!r}.")


def _reference(signal: str):
    return Coalesce(_signal_expression(signal), "signup_at", "created_at", output_field=DateTimeField())


def _eligible(rule: DormancyRule) -> Q:
    q = Q()
    if rule.min_orders is not None:
        q &= Q(order_count__gte=rule.min_orders)
    if rule.min_spent is not None:
        q &= Q(total_spent__gte=rule.min_spent)
    return q


def _decisions(rules: list[DormancyRule], now: datetime) -> list[tuple[Q, str, int]]:
    """(condition, state, rule id), in the order they must be tried: every dormant test before
    any at-risk test, each in (priority, id) order, so the first match is the deciding rule."""
    dormant, at_risk = [], []
    for rule in rules:
        reference = _reference(rule.signal)
        eligible = _eligible(rule)
        cutoff = Value(now - timedelta(days=rule.inactive_days), output_field=DateTimeField())
        dormant.append((eligible & Q(LessThanOrEqual(reference, cutoff)), LifecycleState.DORMANT, rule.pk))
        if rule.at_risk_days:
            cutoff = Value(now - timedelta(days=rule.at_risk_days), output_field=DateTimeField())
            at_risk.append((eligible & Q(LessThanOrEqual(reference, cutoff)), LifecycleState.AT_RISK, rule.pk))
    return dormant + at_risk


def _new_state_and_rule(rules: list[DormancyRule], now: datetime) -> tuple[Case, Case]:
    decisions = _decisions(rules, now)
    reactivated_since = Value(now - timedelta(days=settings.LIFECYCLE_REACTIVATED_DAYS), output_field=DateTimeField())
    new_since = Value(now - timedelta(days=settings.LIFECYCLE_NEW_DAYS), output_field=DateTimeField())
    signed_up = Coalesce("signup_at", "created_at", output_field=DateTimeField())
    state = Case(
        *[When(condition, then=Value(to_state)) for condition, to_state, _ in decisions],
        When(lifecycle_state=LifecycleState.DORMANT, then=Value(LifecycleState.REACTIVATED)),
        When(Q(lifecycle_state=LifecycleState.REACTIVATED) & Q(GreaterThan(F("lifecycle_since"), reactivated_since)),
             then=Value(LifecycleState.REACTIVATED)),
        When(Q(lifecycle_state=LifecycleState.NEW) & Q(GreaterThan(signed_up, new_since)),
             then=Value(LifecycleState.NEW)),
        default=Value(LifecycleState.ACTIVE),
        output_field=CharField(),
    )
    rule = Case(
        *[When(condition, then=Value(rule_id)) for condition, _, rule_id in decisions],
        default=Value(None),
        output_field=IntegerField(),
    )
    return state, rule


def ids_param(ids: Iterable[int]) -> RawSQL:
    """``pk__in`` over many ids as one JSON parameter (SQLite caps bound parameters per statement)."""
    payload = json.dumps(sorted(ids))
    if connection.vendor == "postgresql":
        return RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)::bigint", [payload])
    return RawSQL("SELECT value FROM json_each(%s)", [payload])


def _changed_customers(rules: list[DormancyRule], now: datetime, subset=None):
    """Customers annotated with ``new_state`` / ``new_rule``, only those whose state or deciding
    rule differs from what is stored (only among ``subset``, a ``pk__in`` value, when given)."""
    state, rule = _new_state_and_rule(rules, now)
    customers = Customer.objects.all()
    if subset is not None:
        customers = customers.filter(pk__in=subset)
    return (
        customers.order_by()
        .annotate(new_state=state, new_rule=rule)
        # Rule ids are positive, so 0 stands for "no rule" in a NULL-safe comparison.
        .annotate(old_rule_or_0=Coalesce("lifecycle_rule", 0), new_rule_or_0=Coalesce("new_rule", 0))
        .filter(~Q(lifecycle_state=F("new_state")) | ~Q(old_rule_or_0=F("new_rule_or_0")))
    )


def _transitions_insert(changed, now: datetime) -> None:
    """INSERT INTO transitions SELECT ... from the changed customers: one statement."""
    select = changed.values(
        customer_ref=F("pk"),
        from_ref=F("lifecycle_state"),
        to_ref=F("new_state"),
        rule_ref=F("new_rule"),
        at_ref=Value(now, output_field=DateTimeField()),
    )
    # The compiled SELECT lists its columns in the order Django's values() iterable reads them.
    names = [*select.query.extra_select, *select.query.values_select, *select.query.annotation_select]
    assert names == ["customer_ref", "from_ref", "to_ref", "rule_ref", "at_ref"], names
    meta = LifecycleTransition._meta
    columns = ", ".join(
        connection.ops.quote_name(meta.get_field(name).column)
        for name in ("customer", "from_state", "to_state", "rule", "at")
    )
    sql, params = select.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) {sql}", params)


def _customers_apply(*, last_id: int, now: datetime) -> int:
    """Copy this run's transitions onto their customers: one UPDATE ... FROM the log.

    Reading the rows just logged rather than evaluating the rules again guarantees the customers
    say exactly what the log says. A join (UPDATE ... FROM, PostgreSQL and SQLite >= 3.33), not
    correlated subqueries: those took 30 s instead of a few for 200,000 changes on PostgreSQL.
    """
    customers = connection.ops.quote_name(Customer._meta.db_table)
    transitions = connection.ops.quote_name(LifecycleTransition._meta.db_table)
    at = connection.ops.adapt_datetimefield_value(now)
    sql = f"""
        UPDATE {customers} SET
            lifecycle_state = t.to_state,
            lifecycle_rule_id = t.rule_id,
            -- A rule-only change (from == to) keeps the date the customer entered the state.
            lifecycle_since = CASE WHEN t.from_state = t.to_state THEN {customers}.lifecycle_since ELSE %s END
        FROM {transitions} AS t
        WHERE t.customer_id = {customers}.id AND t.id > %s AND t.at = %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [at, last_id, at])
        return cursor.rowcount


def lifecycle_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """Re-evaluate every customer's lifecycle state at ``now`` (default: the current time).

    Rules (only active ones; a customer is eligible for a rule when order_count >= min_orders
    and total_spent >= min_spent, each when set). A rule's reference time is its signal
    (last_seen_at, last_order_at, or the later of both for any_activity), else signup_at, else
    created_at.

    - dormant: reference <= now - inactive_days for some eligible rule;
    - at_risk: not dormant, and reference <= now - at_risk_days for some eligible rule;
      in both cases the deciding rule is the matching one with the lowest (priority, id);
    - otherwise reactivated when the customer was dormant, or was reactivated less than
      LIFECYCLE_REACTIVATED_DAYS ago; new when still new and signed up (or created) less than
      LIFECYCLE_NEW_DAYS ago; active else.

    Every change is appended to LifecycleTransition (customer, from, to, rule, at=now) and stored
    on the customer (state, since=now, rule). A change of the deciding rule alone (a rule was
    edited) is logged too, with from_state == to_state, and keeps lifecycle_since. Idempotent:
    a second run at the same ``now`` changes nothing.

    Returns {to_state: transitions, ..., "total": transitions} with every state present.
    """
    return _evaluate(now=now or timezone.now())


def lifecycle_evaluate_customers(*, customer_ids: Iterable[int] | QuerySet, now: datetime | None = None,
                                 wait: bool = True) -> dict[str, int] | None:
    """Re-evaluate only these customers, exactly as ``lifecycle_evaluate`` decides and logs.

    ``customer_ids`` is a collection of ids (they travel as one JSON parameter) or a Customer
    queryset (used as a subquery, so "all 1,000,000 selected" never comes through Python).
    The same statements as the full run, under the same advisory lock, so it never logs a change
    twice beside it. Used by the admin's "Re-evaluate lifecycle now" and by the follow-up task;
    activity on the request path goes through ``lifecycle_follow_activity``.

    ``wait=False`` only tries the lock (PostgreSQL): while another evaluation holds it, nothing
    is evaluated and None is returned at once. On SQLite, which has no advisory lock, both
    evaluate at once.

    Take no customer row lock in the same transaction before calling this with ``wait=True``:
    the full run holds the advisory lock while it updates customers, so waiting for the lock
    while holding a row it needs is a deadlock.
    """
    if isinstance(customer_ids, QuerySet):
        subset, count = customer_ids.order_by().values("pk"), "query"
    else:
        ids = set(customer_ids)
        if not ids:
            return {**{state: 0 for state in LifecycleState.values}, "total": 0}
        subset, count = ids_param(ids), len(ids)
    return _evaluate(now=now or timezone.now(), subset=subset, customers=count, wait=wait)


def lifecycle_follow_activity(*, customer_ids: Iterable[int]) -> dict[str, int] | None:
    """Let these customers' lifecycle follow the activity just committed, without waiting.

    Called after every batch of activity (events API, admin, CSV, redemptions): a customer who
    comes back is reactivated at once, not at the next hourly run. The hourly full run holds
    the lifecycle lock for seconds to tens of seconds on a large base; a request that waited
    behind it would time out and be retried by its client, recording its events twice. So the
    lock is only tried: when free, the customers are evaluated here and the summary returned;
    when busy, they are queued to the ``reactivation.lifecycle_evaluate_customers`` task in
    chunks of FOLLOW_TASK_CHUNK (which waits for the lock in a worker) once the current
    transaction commits, and None is returned. A broker that is down loses nothing that
    matters: the failure is logged and the next full run evaluates those customers.
    """
    ids = set(customer_ids)
    result = lifecycle_evaluate_customers(customer_ids=ids, wait=False)
    if result is None:
        transaction.on_commit(lambda: _follow_queue(sorted(ids)))
    return result


def _follow_queue(ids: list[int]) -> None:
    task = current_app.tasks[FOLLOW_TASK_NAME]
    for start in range(0, len(ids), FOLLOW_TASK_CHUNK):
        chunk = ids[start:start + FOLLOW_TASK_CHUNK]
        try:
            # retry=False: with the broker down, fail now rather than hold the request in retries.
            task.apply_async(kwargs={"customer_ids": chunk}, retry=False)
        except Exception:
            logger.exception("lifecycle follow-up not queued customers=%d; the full evaluation will catch up",
                             len(ids) - start)
            return
    logger.info("lifecycle busy: follow-up queued customers=%d", len(ids))


def _evaluate(*, now: datetime, subset=None, customers="all", wait: bool = True) -> dict[str, int] | None:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if wait:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_ID])
                else:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ADVISORY_LOCK_ID])
                    if not cursor.fetchone()[0]:
                        logger.debug("lifecycle lock busy customers=%s", customers)
                        return None
        rules = list(DormancyRule.objects.filter(is_active=True).order_by("priority", "id"))
        last_id = LifecycleTransition.objects.aggregate(last=Max("id"))["last"] or 0
        changed = _changed_customers(rules, now, subset)
        _transitions_insert(changed, now)
        updated = _customers_apply(last_id=last_id, now=now)
        counts = dict(
            LifecycleTransition.objects.filter(id__gt=last_id, at=now)
            .order_by()
            .values_list("to_state")
            .annotate(n=Count("id"))
        )
    summary = {state: counts.get(state, 0) for state in LifecycleState.values}
    summary["total"] = sum(counts.values())
    if summary["total"] != updated:  # pragma: no cover - would mean the two statements disagreed
        logger.error("lifecycle transitions=%d but customers updated=%d", summary["total"], updated)
    # The full run is worth a line in the log; a batch of activity (every API call) is not.
    logger.log(
        logging.INFO if subset is None else logging.DEBUG,
        "lifecycle evaluated at=%s rules=%d customers=%s %s",
        now.isoformat(), len(rules), customers,
        " ".join(f"{key}={value}" for key, value in summary.items()),
    )
    return summary
