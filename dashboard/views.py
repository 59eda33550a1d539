"""The admin home page's dashboard: the context ``templates/admin/index.html`` draws.

``core.admin_site.BackOfficeAdminSite.index`` calls ``index_context`` through the
ADMIN_INDEX_CONTEXT setting (core imports no app).

Each part is computed at most once a minute (CACHE_SECONDS) for everyone allowed to see it:
the figures are aggregates, the same for every viewer. A cache that fails (Redis down) costs a
log line and a direct computation, never the page.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from dashboard import charts, selectors
from reactivation.models import LifecycleState

logger = logging.getLogger(__name__)

CACHE_SECONDS = 60
CUSTOMERS_KEY = "dashboard:customers:v1"
CAMPAIGNS_KEY = "dashboard:campaigns:v1"

CUSTOMERS_PERMISSION = "reactivation.view_customer"
CAMPAIGNS_PERMISSION = "campaigns.view_campaign"


def _cached(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        value = cache.get(key)
    except Exception:  # any backend's error: the page computes instead
        logger.warning("dashboard cache read failed key=%s", key, exc_info=True)
        return compute()
    if value is not None:
        return value
    value = compute()
    try:
        cache.set(key, value, CACHE_SECONDS)
    except Exception:
        logger.warning("dashboard cache write failed key=%s", key, exc_info=True)
    return value


def customers_part() -> dict[str, Any]:
    """Lifecycle figures now and per week, with their charts (SVG text, not yet marked safe)."""
    now = timezone.now()
    labels = dict(LifecycleState.choices)
    history = selectors.lifecycle_history(now=now)
    counts = history[-1].states
    week_labels = [week.start.strftime("%d %b") for week in history]
    states = list(selectors.STATES)
    return {
        "computed_at": now,
        "states": [{"state": s, "label": labels[s], "count": counts[s]} for s in states],
        "total": sum(counts.values()),
        "labels": [labels[s] for s in states],
        "weeks": [
            {
                "start": week.start,
                "counts": [week.states[s] for s in states],
                "dormant_in": week.dormant_in,
                "dormant_out": week.dormant_out,
                "dormant_net": week.dormant_net,
            }
            for week in history
        ],
        "now_chart": charts.lifecycle_now_chart(counts=counts, labels=labels),
        "history_chart": charts.lifecycle_history_chart(
            weeks=week_labels, series={s: [week.states[s] for week in history] for s in states}, labels=labels,
        ),
        "flow_chart": charts.dormant_flow_chart(
            weeks=week_labels,
            inflow=[week.dormant_in for week in history],
            outflow=[week.dormant_out for week in history],
        ),
    }


def campaigns_part() -> dict[str, Any]:
    now = timezone.now()
    return {
        "computed_at": now,
        "upcoming": selectors.campaigns_upcoming(now=now),
        "runs": selectors.runs_latest(),
    }


def figures_as_of(*, computed_at, zone, now=None) -> str:
    """When a part's figures were computed, in the site's zone: a cached part can be up to a
    minute old, and the reader should know which minute the numbers describe. The date is
    named only when it is not today's."""
    local = timezone.localtime(computed_at, zone)
    today = timezone.localtime(now or timezone.now(), zone).date()
    when = f"{local:%H:%M}" if local.date() == today else f"{local:%Y-%m-%d %H:%M}"
    return f"Figures as of {when} ({zone}), refreshed every minute."


def index_context(request) -> dict[str, Any]:
    """What the home page shows this user: each part only with the permission to see it."""
    user = request.user
    zone = selectors.site_zone()
    context: dict[str, Any] = {"dashboard": True, "dashboard_time_zone": zone}
    if user.has_perm(CUSTOMERS_PERMISSION):
        part = dict(_cached(CUSTOMERS_KEY, customers_part))
        part["as_of"] = figures_as_of(computed_at=part["computed_at"], zone=zone)
        for name in ("now_chart", "history_chart", "flow_chart"):
            part[name] = mark_safe(part[name])  # matplotlib's own output, labels escaped in charts._svg
        context["dashboard_customers"] = part
        context["dashboard_customers_url"] = reverse("admin:reactivation_customer_changelist")
    if user.has_perm(CAMPAIGNS_PERMISSION):
        part = _cached(CAMPAIGNS_KEY, campaigns_part)
        context["dashboard_campaigns"] = {
            **part,
            "as_of": figures_as_of(computed_at=part["computed_at"], zone=zone),
            "upcoming": [
                {"item": item, "url": reverse("admin:campaigns_campaign_change", args=[item.id])}
                for item in part["upcoming"]
            ],
            "runs": [
                {"run": run, "url": reverse("admin:campaigns_campaign_change", args=[run.campaign_id])}
                for run in part["runs"]
            ],
        }
        context["dashboard_campaigns_url"] = reverse("admin:campaigns_campaign_changelist")
    return context
