"""One timeline of everything that happened to a customer, newest first.

Other apps add what they know without this app importing them: a module of theirs registers a
source with ``@timeline_source("kind", permission="app_label.codename")`` (campaigns registers
messages, grants and redemptions from ``campaigns/timeline.py``, imported by its
AppConfig.ready()). A source is a function

    source(*, customer, limit: int, personal_data: bool) -> list[TimelineEntry]

returning at most ``limit`` entries, newest first, in ONE query, so a page costs one query per
source whatever the customer's history. ``personal_data`` says whether the viewer may see
email addresses and phone numbers; a source masks them (core.masking) when it is False.

Seeing a customer is not seeing everything about them: each source names the permission its
entries need (the view permission of the model they come from, whose admin page they link
to), and a viewer without it gets none of that source's entries, nor its query.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.urls import NoReverseMatch, reverse

from reactivation.models import ActivityEvent, LifecycleTransition

# The most entries one page of the timeline shows ("show more" grows the page up to this).
LIMIT_MAX = 500


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # the registered source: "activity", "message", "offer", "consent", ...
    title: str
    detail: str = ""
    url: str = ""


TimelineSource = Callable[..., list[TimelineEntry]]


@dataclass(frozen=True)
class _Registered:
    function: TimelineSource
    permission: str


_sources: dict[str, _Registered] = {}


def timeline_source(kind: str, *, permission: str):
    """Register the decorated function as the source of ``kind`` entries, shown only to viewers
    with ``permission`` ("app_label.codename"). A later registration of the same kind replaces
    the earlier one, so a module imported twice adds nothing."""

    def register(function: TimelineSource) -> TimelineSource:
        _sources[kind] = _Registered(function=function, permission=permission)
        return function

    return register


def timeline_kinds(*, viewer=None) -> list[str]:
    """Every registered kind, or with ``viewer`` only those the viewer may see."""
    return [kind for kind, source in _sources.items() if viewer is None or viewer.has_perm(source.permission)]


def customer_timeline(*, customer, viewer, limit: int = 30, personal_data: bool = False) -> tuple[list[TimelineEntry], bool]:
    """The newest ``limit`` entries of every source ``viewer`` (a user) may see, merged newest
    first, and whether there are more.

    Each source gives its own newest ``limit + 1``: the newest ``limit`` of the union are among
    them, and a left-over entry means there is more to show.
    """
    limit = max(1, min(limit, LIMIT_MAX))
    entries = []
    for kind in timeline_kinds(viewer=viewer):
        entries.extend(_sources[kind].function(customer=customer, limit=limit + 1, personal_data=personal_data))
    entries.sort(key=lambda entry: entry.at, reverse=True)
    return entries[:limit], len(entries) > limit


def admin_url(obj) -> str:
    """The admin page of ``obj``, or "" when its model has none."""
    meta = obj._meta
    try:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return ""


@timeline_source("activity", permission="reactivation.view_activityevent")
def activity_entries(*, customer, limit: int, personal_data: bool) -> list[TimelineEntry]:
    events = ActivityEvent.objects.filter(customer=customer).order_by("-occurred_at", "-id")[:limit]
    entries = []
    for event in events:
        parts = [f"{event.amount}" if event.amount is not None else "", event.category, event.item_ref,
                 f"via {event.source}"]
        entries.append(TimelineEntry(
            at=event.occurred_at, kind="activity", title=event.kind.replace("_", " ").capitalize(),
            detail=" · ".join(part for part in parts if part), url=admin_url(event),
        ))
    return entries


@timeline_source("lifecycle", permission="reactivation.view_lifecycletransition")
def lifecycle_entries(*, customer, limit: int, personal_data: bool) -> list[TimelineEntry]:
    transitions = (
        LifecycleTransition.objects.filter(customer=customer).select_related("rule").order_by("-at", "-id")[:limit]
    )
    return [
        TimelineEntry(
            at=transition.at, kind="lifecycle",
            title=f"Lifecycle: {transition.get_from_state_display() or 'none'} → {transition.get_to_state_display()}",
            detail=f"rule: {transition.rule}" if transition.rule else "", url=admin_url(transition),
        )
        for transition in transitions
    ]
