"""Campaign verbs: schedule, launch, pause, resume, cancel; runs and their counters.

The django-celery-beat rows behind a campaign's schedule (``Campaign.periodic_task``) are
created, updated and removed here and nowhere else. Tasks, admin actions and the
``launch_campaign`` command only call these functions.

A run goes materializing -> sending -> done (or paused / cancelled). Materialization is one
statement (``campaigns.materialize``); sending happens in chunks on the per-channel queues
(``campaigns.sending``); deferred and retried deliveries are picked up by the per-minute
``campaigns.dispatch_due`` beat task rather than by long countdowns, which a Redis broker would
redeliver after its visibility timeout.

The delivery rows are the queue; a Celery message only wakes a worker up. A lost message (a
broker that restarted empty, a worker killed with the message it held) delays work but never
strands it: the per-minute ``campaigns.sweep`` task (``runs_sweep``) recovers what dead workers
held and dispatches again the runs nobody has worked on for a lease. A duplicated message is
harmless: every claim is conditional.

Cancelling a run only flips its status (claims then take nothing of it); its pending and
deferred deliveries are closed afterwards, in batches, by the ``run_close_cancelled`` task.
"""

import json
import logging
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, Delivery, OfferGrant
from campaigns.rendering import validate_campaign_templates
from campaigns.selectors import QuietHoursWait, campaign_runs_in_progress
from consent.models import Channel

logger = logging.getLogger(__name__)

LAUNCH_TASK = "campaigns.launch_scheduled"
ACTIVE_RUN_STATUSES = (CampaignRun.Status.MATERIALIZING, CampaignRun.Status.SENDING)
# Runs whose grants the progress counts live. A paused run's workers may still finish chunks
# they claimed (and issued grants for) after its counters were last stored; any other run had
# them stored by run_refresh_counters when it finished or was closed (and after every chunk).
GRANTING_RUN_STATUSES = (*ACTIVE_RUN_STATUSES, CampaignRun.Status.PAUSED)
# What keeps a run from being done. ``unknown`` does not: it waits for an operator, not a worker.
UNFINISHED_DELIVERY_STATUSES = (Delivery.Status.PENDING, Delivery.Status.CLAIMED, Delivery.Status.SENDING,
                                Delivery.Status.DEFERRED)
# What a cancelled run closes. Not ``claimed`` or ``sending``: a worker holds it; its hand-over
# skips it (campaign cancelled) or it records the outcome (a retry it schedules instead is closed
# when due, by deliveries_close_cancelled_due; a claim whose worker died is released by the sweeper
# and closed by it).
CLOSABLE_DELIVERY_STATUSES = (Delivery.Status.PENDING, Delivery.Status.DEFERRED)
DUE_BATCH = 50_000
# Rows per UPDATE when closing a cancelled run: each batch is its own short transaction, so a
# million-row run never holds a million row locks (or one long transaction) at once.
CLOSE_BATCH = 20_000
COUNTERS_EVERY_SECONDS = 2


# Counters -------------------------------------------------------------------------------------

COUNTER_FIELDS = [
    "targeted", "sent", "skipped_consent", "skipped_suppressed", "skipped_cap", "skipped_reentry", "skipped_budget",
    "skipped_no_address", "skipped_channel_off", "skipped_cancelled", "deferred_quiet", "holdout", "failed",
    "unknown", "offers_granted", "sent_without_offer",
]


def run_delivery_counts(*, run: CampaignRun) -> Counter:
    """{(status, skip_reason): n} for the run, in one grouped query."""
    rows = Delivery.objects.filter(run=run).order_by().values_list("status", "skip_reason").annotate(n=Count("id"))
    return Counter({(status, reason): n for status, reason, n in rows})


def _counters_from(groups: Counter) -> dict:
    by_status = Counter()
    for (status, _reason), n in groups.items():
        by_status[status] += n
    values = {
        "targeted": sum(groups.values()),
        "sent": by_status[Delivery.Status.SENT],
        "failed": by_status[Delivery.Status.FAILED],
        "unknown": by_status[Delivery.Status.UNKNOWN],
        "holdout": by_status[Delivery.Status.HOLDOUT],
        "deferred_quiet": by_status[Delivery.Status.DEFERRED],
    }
    for reason in Delivery.SkipReason.values:
        values[f"skipped_{reason}"] = groups[(Delivery.Status.SKIPPED, reason)]
    return values


def run_refresh_counters(*, run: CampaignRun) -> CampaignRun:
    """Recount the run's deliveries (one grouped query; two more when the campaign has an offer)
    and store the counters (one UPDATE)."""
    values = _counters_from(run_delivery_counts(run=run))
    if run.campaign.offer_id:
        values["offers_granted"] = OfferGrant.objects.filter(run=run).count()
        values["sent_without_offer"] = Delivery.objects.filter(run=run, status=Delivery.Status.SENT, grant__isnull=True).count()
    CampaignRun.objects.filter(pk=run.pk).update(**values)
    for name, value in values.items():
        setattr(run, name, value)
    return run


def run_progress(*, run: CampaignRun, now: datetime | None = None) -> dict:
    """Live progress for the admin page: counters plus what is still on its way.

    One grouped count of the deliveries; one count of the run's offer grants (on their run
    index) while the run may still grant (materializing, sending or paused with claims in
    flight) and the campaign has an offer, else the ``offers_granted`` the run stored when it
    finished; and, for a sending run whose only deliveries left wait for quiet hours, one more
    for the earliest of their times (``quiet_wait``).
    """
    groups = run_delivery_counts(run=run)
    values = _counters_from(groups)
    if run.status in GRANTING_RUN_STATUSES:
        values["offers_granted"] = OfferGrant.objects.filter(run=run).count() if run.campaign.offer_id else 0
    else:
        values["offers_granted"] = run.offers_granted
    by_status = Counter()
    for (status, _reason), n in groups.items():
        by_status[status] += n
    waiting = by_status[Delivery.Status.PENDING] + by_status[Delivery.Status.CLAIMED] + by_status[Delivery.Status.SENDING]
    total = values["targeted"]
    status_display, quiet_wait = run.get_status_display(), ""
    if run.status == CampaignRun.Status.SENDING and not waiting and values["deferred_quiet"]:
        window = Delivery.objects.filter(run=run, status=Delivery.Status.DEFERRED).aggregate(
            first=Min("not_before"), last=Max("not_before"))
        quiet_wait = QuietHoursWait(deferred=values["deferred_quiet"], first_at=window["first"],
                                    last_at=window["last"]).describe(now=now)
        status_display = "Waiting for quiet hours"
    return {
        "id": run.pk, "number": run.number, "status": run.status, "status_display": status_display,
        "quiet_wait": quiet_wait,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "pending": by_status[Delivery.Status.PENDING],
        "sending": by_status[Delivery.Status.CLAIMED] + by_status[Delivery.Status.SENDING],
        "percent_done": round(100 * (total - waiting - values["deferred_quiet"]) / total, 1) if total else 0.0,
        **values,
    }


def summary_line(run: CampaignRun) -> str:
    """The launch_campaign summary (skipped_consent also counts no address / channel off: every
    "no channel we may use" case)."""
    skipped_consent = run.skipped_consent + run.skipped_no_address + run.skipped_channel_off
    return (
        f"targeted={run.targeted} sent={run.sent} skipped_consent={skipped_consent} "
        f"skipped_suppressed={run.skipped_suppressed} skipped_cap={run.skipped_cap} "
        f"skipped_reentry={run.skipped_reentry} deferred_quiet={run.deferred_quiet} failed={run.failed} "
        f"unknown={run.unknown}"
    )


@transaction.atomic
def run_finish_if_done(*, run: CampaignRun, now: datetime | None = None) -> bool:
    """Mark a sending run done when nothing is left on its way; complete a one-off campaign."""
    if Delivery.objects.filter(run=run, status__in=UNFINISHED_DELIVERY_STATUSES).exists():
        return False
    now = now or timezone.now()
    if not CampaignRun.objects.filter(pk=run.pk, status=CampaignRun.Status.SENDING).update(
        status=CampaignRun.Status.DONE, finished_at=now
    ):
        return False
    run_refresh_counters(run=run)
    run.status, run.finished_at = CampaignRun.Status.DONE, now
    Campaign.objects.filter(pk=run.campaign_id, status=Campaign.Status.RUNNING).exclude(
        runs__status__in=ACTIVE_RUN_STATUSES
    ).update(status=Campaign.Status.COMPLETED)
    logger.info("run_done run=%s %s", run.pk, summary_line(run))
    return True


def runs_after_chunk(*, run_ids, force: bool = False) -> None:
    """After a chunk: refresh counters at most every COUNTERS_EVERY_SECONDS per run (a grouped
    count over a million rows is not free), and finish runs with nothing left."""
    for run in CampaignRun.objects.filter(pk__in=list(run_ids)).select_related("campaign"):
        try:
            due = force or cache.add(f"campaigns:counters:{run.pk}", 1, timeout=COUNTERS_EVERY_SECONDS)
        except Exception:  # noqa: BLE001 - the cache down costs a recount, never the run's end
            logger.warning("runs_after_chunk_cache_unavailable run=%s", run.pk, exc_info=True)
            due = True
        if due:
            run_refresh_counters(run=run)
        run_finish_if_done(run=run)


# Dispatch -------------------------------------------------------------------------------------


def _chunks_by_channel(rows, size=None):
    """(channel, ids) chunks of ``size`` or, by default, the channel's chunk size."""
    from campaigns.sending import chunk_size

    buffers: dict[str, list[int]] = {}
    for pk, channel in rows:
        buffer = buffers.setdefault(channel, [])
        buffer.append(pk)
        if len(buffer) >= (size or chunk_size(channel)):
            yield channel, buffer
            buffers[channel] = []
    for channel, buffer in buffers.items():
        if buffer:
            yield channel, buffer


def chunks_enqueue(*, chunks) -> int:
    """Queue each (channel, ids) chunk on its channel's queue once the transaction commits."""
    from campaigns.tasks import send_chunk

    count = 0
    for channel, ids in chunks:
        queue = channel if channel in Channel.values else settings.CELERY_TASK_DEFAULT_QUEUE
        transaction.on_commit(lambda ids=ids, channel=channel, queue=queue: send_chunk.apply_async(args=[ids, channel], queue=queue))
        count += 1
    return count


def chunk_send(*, delivery_ids: list[int], channel: str, transport=None, force_counters: bool = False):
    """Send one chunk, then update its runs (the body of the send_chunk task)."""
    from campaigns.sending import deliveries_send_chunk

    result = deliveries_send_chunk(delivery_ids=delivery_ids, channel=channel, transport=transport)
    runs_after_chunk(run_ids=result.run_ids, force=force_counters)
    return result


def run_dispatch(*, run: CampaignRun, sync: bool = False, transports: dict | None = None,
                 now: datetime | None = None) -> int:
    """Send the run's due pending deliveries: queued in chunks per channel, or (sync) here.

    Returns the number of chunks. In sync mode every chunk is sent in this process before the
    function returns; retries due later are left to ``dispatch_due``. Queuing marks the run
    active (``active_at``), so the sweeper leaves it to these chunks for a lease.
    """
    now = now or timezone.now()
    rows = (
        Delivery.objects.filter(run=run, status=Delivery.Status.PENDING)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .order_by("pk").values_list("pk", "channel")
    )
    if not sync:
        with transaction.atomic():
            CampaignRun.objects.filter(pk=run.pk).update(active_at=now)
            return chunks_enqueue(chunks=_chunks_by_channel(rows.iterator(chunk_size=10_000)))
    chunks = list(_chunks_by_channel(rows))
    for channel, ids in chunks:
        chunk_send(delivery_ids=ids, channel=channel, transport=(transports or {}).get(channel))
    run_refresh_counters(run=run)
    run_finish_if_done(run=run)
    return len(chunks)


def run_execute(*, run: CampaignRun, now: datetime | None = None, sync: bool = False, transports: dict | None = None) -> CampaignRun:
    """Materialize the run (if it still waits for it) and dispatch it (the run_execute task)."""
    from campaigns.materialize import run_materialize

    run = CampaignRun.objects.select_related("campaign", "campaign__segment").get(pk=run.pk)
    if run.status == CampaignRun.Status.MATERIALIZING:
        CampaignRun.objects.filter(pk=run.pk).update(active_at=timezone.now())
        try:
            run_materialize(run=run, now=now)
        except Exception as exc:
            CampaignRun.objects.filter(pk=run.pk).update(
                status=CampaignRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
            )
            raise
        if run.status == CampaignRun.Status.CANCELLED:
            # Cancelled while the INSERT was uncommitted: the close task queued by the cancel may
            # have found nothing to close yet, so close what was just written here.
            run_close_cancelled(run=run)
    if run.status == CampaignRun.Status.SENDING:
        run_dispatch(run=run, sync=sync, transports=transports)
        run_finish_if_done(run=run)
    run.refresh_from_db()
    return run


# Launch ---------------------------------------------------------------------------------------


def _validate_ready(campaign: Campaign) -> None:
    if campaign.status == Campaign.Status.CANCELLED:
        raise ValidationError("This campaign was cancelled; copy it to send again.")
    if campaign.status == Campaign.Status.PAUSED:
        raise ValidationError("This campaign is paused; resume it first.")
    campaign.full_clean(exclude=["periodic_task", "created_by"])
    validate_campaign_templates(campaign=campaign)


def campaign_launch(*, campaign: Campaign, now: datetime | None = None, trigger: str = "manual", sync: bool = False,
                    transports: dict | None = None) -> CampaignRun:
    """Start a new run now. Materializes and sends through the queues (a ``run_execute`` task
    queued on commit), or, with ``sync``, entirely in this process before returning.

    Refuses (ValidationError) a cancelled or paused campaign, an invalid one, and one with a
    run still materializing or sending: two overlapping runs are how duplicate sends start.

    A run whose only deliveries left wait for quiet hours (deferred to the customer's sending
    window) does not hold a new one back, provided the campaign has a re-entry period: the new
    run's materialization then skips (re-entry) everyone the waiting run still has on its way,
    as well as everyone it reached, so nobody is contacted twice; the waiting deliveries go out
    when their window opens. Without a re-entry period nothing would keep the two runs apart.
    """
    now = now or timezone.now()
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        _validate_ready(campaign)
        in_progress, waits = campaign_runs_in_progress(campaign=campaign)
        if any(run.pk not in waits for run in in_progress):
            raise ValidationError("A run of this campaign is still in progress.")
        if waits and not campaign.reentry_days:
            run = next(run for run in in_progress if run.pk in waits)
            raise ValidationError(
                f"Run #{run.number} waits for quiet hours ({waits[run.pk].describe(now=now)}). With re-entry "
                "set to 0 days a new run could reach the same customers again: set a re-entry period, or launch "
                "once it is done.")
        number = (campaign.runs.aggregate(n=Max("number"))["n"] or 0) + 1
        run = CampaignRun.objects.create(campaign=campaign, number=number, trigger=trigger, started_at=now,
                                         active_at=timezone.now())
        if not (campaign.status == Campaign.Status.SCHEDULED and campaign.schedule_kind == Campaign.ScheduleKind.RECURRING):
            campaign.status = Campaign.Status.RUNNING
            campaign.save(update_fields=["status", "updated_at"])
        if not sync:
            from campaigns.tasks import run_execute as run_execute_task

            run_execute_task.delay_on_commit(run.pk)
    logger.info("campaign_launch campaign=%s run=%s trigger=%s sync=%s", campaign.pk, run.pk, trigger, sync)
    if sync:
        run = run_execute(run=run, now=now, sync=True, transports=transports)
    return run


def campaign_launch_scheduled(*, campaign_id: int, now: datetime | None = None) -> CampaignRun | None:
    """What beat runs: launch if the campaign is still scheduled; skip (logged) otherwise."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None or campaign.status != Campaign.Status.SCHEDULED:
        logger.info("campaign_launch_scheduled_skipped campaign=%s status=%s", campaign_id, getattr(campaign, "status", None))
        return None
    try:
        return campaign_launch(campaign=campaign, now=now, trigger="schedule")
    except ValidationError as exc:
        logger.warning("campaign_launch_scheduled_refused campaign=%s reason=%s", campaign_id, "; ".join(exc.messages))
        return None


# Schedule -------------------------------------------------------------------------------------


def _crontab_validate(campaign: Campaign) -> None:
    from celery.schedules import crontab

    try:
        crontab(minute=campaign.cron_minute, hour=campaign.cron_hour, day_of_week=campaign.cron_day_of_week,
                day_of_month=campaign.cron_day_of_month, month_of_year=campaign.cron_month_of_year)
    except (ValueError, TypeError) as exc:
        raise ValidationError({"cron_minute": f"Not a valid crontab: {exc}"}) from None


@transaction.atomic
def campaign_schedule(*, campaign: Campaign, now: datetime | None = None) -> Campaign:
    """Create or update the beat row that launches the campaign: once at ``scheduled_at``
    (a one-off clocked task) or on its crontab in settings.TIME_ZONE."""
    from django_celery_beat.models import ClockedSchedule, CrontabSchedule, PeriodicTask

    now = now or timezone.now()
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status == Campaign.Status.CANCELLED:
        raise ValidationError("This campaign was cancelled; copy it to send again.")
    campaign.status = Campaign.Status.SCHEDULED
    campaign.full_clean(exclude=["periodic_task", "created_by"])
    task = campaign.periodic_task or PeriodicTask(name=f"campaign:{campaign.pk}")
    task.interval = task.crontab = task.solar = task.clocked = None
    if campaign.schedule_kind == Campaign.ScheduleKind.ONCE:
        if campaign.scheduled_at <= now:
            raise ValidationError({"scheduled_at": "This time has passed; choose a later one or launch now."})
        task.clocked, _ = ClockedSchedule.objects.get_or_create(clocked_time=campaign.scheduled_at)
        task.one_off = True
    else:
        _crontab_validate(campaign)
        task.crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=campaign.cron_minute, hour=campaign.cron_hour, day_of_week=campaign.cron_day_of_week,
            day_of_month=campaign.cron_day_of_month, month_of_year=campaign.cron_month_of_year,
            timezone=settings.TIME_ZONE,
        )
        task.one_off = False
    task.task = LAUNCH_TASK
    task.args = json.dumps([campaign.pk])
    task.kwargs = "{}"
    task.queue = settings.CELERY_TASK_DEFAULT_QUEUE
    task.enabled = True
    task.description = f"Launches campaign {campaign.name!r} (managed by campaigns.services; do not edit)."
    task.save()  # the save signal bumps PeriodicTasks, so beat reloads
    campaign.periodic_task = task
    campaign.save(update_fields=["status", "periodic_task", "updated_at"])
    logger.info("campaign_schedule campaign=%s kind=%s", campaign.pk, campaign.schedule_kind)
    return campaign


def _periodic_task_enable(campaign: Campaign, enabled: bool) -> None:
    if campaign.periodic_task_id:
        from django_celery_beat.models import PeriodicTask, PeriodicTasks

        PeriodicTask.objects.filter(pk=campaign.periodic_task_id).update(enabled=enabled)
        PeriodicTasks.update_changed()  # .update() sends no signal


@transaction.atomic
def campaign_pause(*, campaign: Campaign) -> int:
    """Stop the schedule and the runs in progress: later claims find the run paused and send
    nothing. Returns the number of runs paused."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status in (Campaign.Status.CANCELLED, Campaign.Status.COMPLETED, Campaign.Status.DRAFT):
        raise ValidationError(f"A {campaign.get_status_display().lower()} campaign cannot be paused.")
    paused = CampaignRun.objects.filter(campaign=campaign, status__in=ACTIVE_RUN_STATUSES).update(status=CampaignRun.Status.PAUSED)
    _periodic_task_enable(campaign, False)
    campaign.status = Campaign.Status.PAUSED
    campaign.save(update_fields=["status", "updated_at"])
    logger.info("campaign_pause campaign=%s runs=%d", campaign.pk, paused)
    return paused


@transaction.atomic
def campaign_resume(*, campaign: Campaign) -> int:
    """Resume paused runs (materializing what was not yet, re-queueing what is pending) and the
    schedule. Returns the number of runs resumed."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status != Campaign.Status.PAUSED:
        raise ValidationError("Only a paused campaign can be resumed.")
    runs = list(CampaignRun.objects.filter(campaign=campaign, status=CampaignRun.Status.PAUSED).select_related("campaign"))
    from campaigns.tasks import run_execute as run_execute_task

    for run in runs:
        run.status = CampaignRun.Status.SENDING if run.materialized_at else CampaignRun.Status.MATERIALIZING
        run.save(update_fields=["status"])
        if run.status == CampaignRun.Status.SENDING:
            run_dispatch(run=run)
        else:
            run_execute_task.delay_on_commit(run.pk)
    _periodic_task_enable(campaign, True)
    campaign.status = Campaign.Status.SCHEDULED if campaign.periodic_task_id else Campaign.Status.RUNNING
    if campaign.status == Campaign.Status.RUNNING and not runs:
        campaign.status = Campaign.Status.COMPLETED if campaign.runs.exists() else Campaign.Status.DRAFT
    campaign.save(update_fields=["status", "updated_at"])
    logger.info("campaign_resume campaign=%s runs=%d", campaign.pk, len(runs))
    return len(runs)


@transaction.atomic
def campaign_cancel(*, campaign: Campaign, now: datetime | None = None) -> int:
    """Cancel for good: the beat row is deleted and runs in progress stop (their pending
    deliveries are never claimed). Returns the number of runs cancelled.

    Only the statuses change here, so the admin request stays short whatever the size of the
    runs; once this commits, a ``run_close_cancelled`` task per run closes its pending and
    deferred deliveries (skipped, reason ``cancelled``) in batches.
    """
    from campaigns.tasks import run_close_cancelled as run_close_cancelled_task

    now = now or timezone.now()
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status == Campaign.Status.CANCELLED:
        return 0
    # Locked, so a run finishing concurrently is either cancelled here or left done, not both.
    run_ids = list(
        CampaignRun.objects.select_for_update()
        .filter(campaign=campaign, status__in=(*ACTIVE_RUN_STATUSES, CampaignRun.Status.PAUSED))
        .values_list("pk", flat=True)
    )
    cancelled = CampaignRun.objects.filter(pk__in=run_ids).update(status=CampaignRun.Status.CANCELLED, finished_at=now)
    for run_id in run_ids:
        run_close_cancelled_task.delay_on_commit(run_id)
    task = campaign.periodic_task
    campaign.periodic_task = None
    campaign.status = Campaign.Status.CANCELLED
    campaign.save(update_fields=["status", "periodic_task", "updated_at"])
    if task is not None:
        task.delete()  # the delete signal bumps PeriodicTasks
    logger.info("campaign_cancel campaign=%s runs=%d", campaign.pk, cancelled)
    return cancelled


def run_close_cancelled(*, run: CampaignRun, now: datetime | None = None) -> int:
    """Close what a cancelled run will never send: its pending and deferred deliveries become
    skipped (reason ``cancelled``), then the counters are refreshed. Returns the number closed.

    One UPDATE per CLOSE_BATCH primary keys, each in its own transaction, so locks stay short
    on a million-row run. Deliveries a worker holds (``claimed``, ``sending``) are left to it: its
    hand-over skips them, or it marks them sent or failed (or puts them back for a retry: see
    ``deliveries_close_cancelled_due``). Idempotent: a second call finds nothing left to close. Does
    nothing for a run that is not cancelled.
    """
    now = now or timezone.now()
    run = CampaignRun.objects.select_related("campaign").get(pk=run.pk)
    if run.status != CampaignRun.Status.CANCELLED:
        logger.info("run_close_cancelled_skipped run=%s status=%s", run.pk, run.status)
        return 0
    closable = Delivery.objects.filter(run=run, status__in=CLOSABLE_DELIVERY_STATUSES)
    bounds = closable.aggregate(first=Min("pk"), last=Max("pk"))
    closed = 0
    if bounds["first"] is not None:
        for start in range(bounds["first"], bounds["last"] + 1, CLOSE_BATCH):
            with transaction.atomic():
                # Still conditional on the status: a row a worker claimed meanwhile is its to finish.
                closed += closable.filter(pk__gte=start, pk__lt=start + CLOSE_BATCH).update(
                    status=Delivery.Status.SKIPPED, skip_reason=Delivery.SkipReason.CANCELLED, claimed_at=now
                )
    run_refresh_counters(run=run)
    logger.info("run_close_cancelled run=%s closed=%d", run.pk, closed)
    return closed


def deliveries_close_cancelled_due(*, now: datetime | None = None, limit: int = DUE_BATCH) -> int:
    """Close stragglers of cancelled runs: deliveries a worker put back to pending (transient
    error, retry later) or deferred (quiet hours) after the run was closed. All of them carry a
    ``not_before``; they are closed when it is due, found on the same index as the due pickup
    (claims of a dead worker, released without one, are the sweeper's: ``runs_sweep``).
    Returns the number closed."""
    now = now or timezone.now()
    rows = list(
        Delivery.objects.filter(status__in=CLOSABLE_DELIVERY_STATUSES, not_before__isnull=False, not_before__lte=now,
                                run__status=CampaignRun.Status.CANCELLED)
        .values_list("pk", "run_id")[:limit]
    )
    if not rows:
        return 0
    with transaction.atomic():
        closed = Delivery.objects.filter(pk__in=[pk for pk, _ in rows], status__in=CLOSABLE_DELIVERY_STATUSES).update(
            status=Delivery.Status.SKIPPED, skip_reason=Delivery.SkipReason.CANCELLED, claimed_at=now
        )
    for run in CampaignRun.objects.filter(pk__in={run_id for _, run_id in rows}).select_related("campaign"):
        run_refresh_counters(run=run)
    logger.info("deliveries_close_cancelled_due closed=%d", closed)
    return closed


# Due deliveries -------------------------------------------------------------------------------


def deliveries_dispatch_due(*, now: datetime | None = None, limit: int = DUE_BATCH) -> int:
    """Beat, every minute: queue deliveries whose time has come (quiet hours over, retry
    backoff elapsed) and close what is due of cancelled runs. Returns the number of deliveries
    queued.

    Safe to run concurrently: rows are taken with SKIP LOCKED on PostgreSQL and each claim is
    conditional anyway.
    """
    now = now or timezone.now()
    deliveries_close_cancelled_due(now=now)
    with transaction.atomic():
        due = (
            Delivery.objects.filter(status__in=(Delivery.Status.PENDING, Delivery.Status.DEFERRED), not_before__isnull=False,
                                    not_before__lte=now, run__status=CampaignRun.Status.SENDING)
            .order_by("not_before")
        )
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        rows = list(due.values_list("pk", "channel", "run_id")[:limit])
        if not rows:
            return 0
        Delivery.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(status=Delivery.Status.PENDING, not_before=None)
        CampaignRun.objects.filter(pk__in={run_id for _, _, run_id in rows}).update(active_at=now)
        rows = sorted((pk, channel) for pk, channel, _ in rows)
        chunks_enqueue(chunks=_chunks_by_channel(rows))
    logger.info("dispatch_due queued=%d", len(rows))
    return len(rows)


# Sweeping: what a lost message or a dead worker left behind ------------------------------------

# A materialization is one statement (about 15 s for a million recipients): a run still
# "materializing" this many leases after its last sign of life lost its run_execute message.
MATERIALIZING_QUIET_LEASES = 10
# A sending run waits this many leases for its channel's queue to drain before it is dispatched
# again anyway (a queue that never empties must not strand it for ever).
BUSY_QUEUE_LEASES = 10
# How far back the sweeper looks for cancelled runs whose closing task was lost.
CANCELLED_LOOKBACK = timedelta(days=7)


def broker_queue_length(*, queue: str) -> int | None:
    """Messages waiting in ``queue`` (not those a worker holds); None when the broker cannot say."""
    from celery import current_app

    try:
        with current_app.connection_for_read() as conn:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
    except Exception as exc:  # noqa: BLE001 - a missing queue is an empty one; anything else: unknown
        if "NOT_FOUND" in str(exc) or "no queue" in str(exc).lower():
            return 0
        logger.warning("broker_queue_length_unavailable queue=%s error=%s", queue, exc)
        return None


def _queues_busy(run: CampaignRun) -> bool:
    """Whether a queue the run's chunks go to still has messages waiting: they may be its own,
    held up behind other runs' chunks, and will reach a worker without help."""
    for channel in run.campaign.channels or []:
        queue = channel if channel in Channel.values else settings.CELERY_TASK_DEFAULT_QUEUE
        if broker_queue_length(queue=queue):
            return True
    return False


def runs_sweep(*, now: datetime | None = None) -> dict:
    """Beat, every minute: make every run reach a final state whatever message was lost or
    worker killed. Returns what it did, by kind.

    1. ``deliveries_recover_abandoned``: claims whose holder stopped renewing its lease go back
       to pending; hand-overs without a recorded answer become ``unknown``;
    2. a sending run with nothing left to send is finished (its last chunk's worker may have
       died before finishing it);
    3. a sending run with due pending deliveries that nobody has dispatched or worked on for a
       lease (``CampaignRun.active_at``) is dispatched again, unless a queue of its channels
       still has messages waiting (for at most ``BUSY_QUEUE_LEASES`` leases);
    4. a run still materializing ``MATERIALIZING_QUIET_LEASES`` leases after its last sign of
       life gets a new ``run_execute`` message (materializing is idempotent);
    5. a cancelled run with deliveries still open a lease after the cancel gets a new
       ``run_close_cancelled`` message.

    Dispatching twice is harmless (claims are conditional), so the rules only keep the queues
    from filling with duplicates; none of them is needed for correctness.
    """
    from campaigns.sending import deliveries_recover_abandoned, lease
    from campaigns.tasks import run_close_cancelled as run_close_cancelled_task
    from campaigns.tasks import run_execute as run_execute_task

    now = now or timezone.now()
    quiet = now - lease()
    recovered = deliveries_recover_abandoned(now=now)
    done = {"released": recovered["released"], "failed": recovered["failed"], "unknown": recovered["unknown"],
            "finished": 0, "dispatched": 0, "rematerialized": 0, "closing": 0}
    stale = Q(active_at__isnull=True) | Q(active_at__lt=quiet)

    for run in CampaignRun.objects.filter(status=CampaignRun.Status.SENDING).select_related("campaign"):
        if run.pk in recovered["run_ids"]:
            run_refresh_counters(run=run)
        if run_finish_if_done(run=run, now=now):
            done["finished"] += 1
            continue
        if run.active_at is not None and run.active_at >= quiet:
            continue  # dispatched or worked on within a lease
        due = Delivery.objects.filter(run=run, status=Delivery.Status.PENDING).filter(
            Q(not_before__isnull=True) | Q(not_before__lte=now))
        if not due.exists():
            continue  # deferred or held by a live worker: dispatch_due or the lease moves it
        waited_long = run.active_at is None or run.active_at < now - BUSY_QUEUE_LEASES * lease()
        if not waited_long and _queues_busy(run):
            continue
        chunks = run_dispatch(run=run, now=now)
        done["dispatched"] += 1
        logger.warning("runs_sweep_dispatched run=%s chunks=%d idle_since=%s", run.pk, chunks, run.active_at)

    materializing_quiet = now - MATERIALIZING_QUIET_LEASES * lease()
    for run_id in CampaignRun.objects.filter(status=CampaignRun.Status.MATERIALIZING).filter(
            Q(active_at__isnull=True, started_at__lt=materializing_quiet) | Q(active_at__lt=materializing_quiet)
    ).values_list("pk", flat=True):
        with transaction.atomic():
            CampaignRun.objects.filter(pk=run_id).update(active_at=now)
            run_execute_task.delay_on_commit(run_id)
        done["rematerialized"] += 1
        logger.warning("runs_sweep_rematerialize run=%s", run_id)

    for run_id in CampaignRun.objects.filter(status=CampaignRun.Status.CANCELLED, finished_at__lt=quiet,
                                             finished_at__gte=now - CANCELLED_LOOKBACK).filter(stale) \
            .values_list("pk", flat=True):
        if not Delivery.objects.filter(run_id=run_id, status__in=CLOSABLE_DELIVERY_STATUSES, not_before__isnull=True).exists():
            continue
        with transaction.atomic():
            CampaignRun.objects.filter(pk=run_id).update(active_at=now)
            run_close_cancelled_task.delay_on_commit(run_id)
        done["closing"] += 1
        logger.warning("runs_sweep_close_cancelled run=%s", run_id)

    if any(done.values()):
        logger.info("runs_sweep %s", " ".join(f"{k}={v}" for k, v in done.items()))
    return done


# Unknown outcomes -----------------------------------------------------------------------------

RESEND_NOTE = ("Re-sent by {by} at {now:%Y-%m-%d %H:%M:%S %Z}: an operator chose to send again a message whose "
               "outcome was unknown; the customer may receive it twice.")


def deliveries_resend_unknown(*, deliveries, by: str, now: datetime | None = None) -> int:
    """Send again the deliveries of ``deliveries`` whose outcome is unknown: the operator's
    decision, after checking with the provider (its logs, the Message-ID) that they did not go
    out, or accepting a possible duplicate. Returns how many were put back.

    Each goes back to ``pending`` (consent and suppression are checked again when it is
    claimed and handed over), with the operator and time appended to its note; a done run
    becomes ``sending`` again and is dispatched. Deliveries of cancelled or failed runs stay
    as they are; those of a paused run go out when it resumes.
    """
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            deliveries.filter(status=Delivery.Status.UNKNOWN)
            .exclude(run__status__in=(CampaignRun.Status.CANCELLED, CampaignRun.Status.FAILED))
            .values_list("pk", "run_id")
        )
        if not rows:
            return 0
        from campaigns.sending import note_appended

        # claimed_at cleared: the worker that handed it over can no longer record an answer on it.
        resent = Delivery.objects.filter(pk__in=[pk for pk, _ in rows], status=Delivery.Status.UNKNOWN).update(
            status=Delivery.Status.PENDING, not_before=None, claimed_at=None,
            note=note_appended(RESEND_NOTE.format(by=by, now=now)),
        )
        run_ids = {run_id for _, run_id in rows}
        CampaignRun.objects.filter(pk__in=run_ids, status=CampaignRun.Status.DONE).update(
            status=CampaignRun.Status.SENDING, finished_at=None)
        for run in CampaignRun.objects.filter(pk__in=run_ids).select_related("campaign"):
            run_refresh_counters(run=run)
            if run.status == CampaignRun.Status.SENDING:
                run_dispatch(run=run)
    logger.warning("deliveries_resend_unknown count=%d by=%s runs=%s", resent, by, sorted(run_ids))
    return resent
