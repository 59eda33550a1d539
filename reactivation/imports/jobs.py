"""Import jobs started from the admin: upload, preview, confirm, run in Celery, report.

Jobs of one kind run one at a time, oldest first: a job's task claims it only when it is the
oldest unfinished job of its kind (the rows are locked with SELECT ... FOR UPDATE while
deciding; SQLite serializes writers anyway), otherwise it retries later. So a second customer
import started while one runs waits in the queue instead of interleaving with it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.files import File
from django.db import transaction
from django.utils import timezone

from core.masking import mask_email, mask_phone
from reactivation.imports import customers as customer_import
from reactivation.imports import events as event_import
from reactivation.imports.customers import ImportOptions, Progress, map_columns, parse_rows
from reactivation.imports.reading import UnusableFile, open_table
from reactivation.imports.staging import ErrorReport, StagingTable
from reactivation.models import ImportJob

logger = logging.getLogger(__name__)
PREVIEW_ROWS = 10
SCAN_ROWS = 5_000

OPTION_KEYS = ("encoding", "region", "time_zone", "notice_version", "dry_run")


def _options(job: ImportJob) -> ImportOptions:
    values = {key: job.options.get(key) for key in OPTION_KEYS if job.options.get(key) not in (None, "")}
    return ImportOptions(**values, file_label=job.original_name)


@contextmanager
def local_path(job: ImportJob):
    """A path on this machine for the job's file (default storage may be remote)."""
    storage = job.file.storage
    try:
        yield storage.path(job.file.name)
        return
    except NotImplementedError:
        pass
    suffix = os.path.splitext(job.file.name)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as copy, storage.open(job.file.name, "rb") as source:
        shutil.copyfileobj(source, copy, 1024 * 1024)
        copy.flush()
        yield copy.name


# Create, preview, confirm -----------------------------------------------------------------------
def import_job_create(*, kind: str, uploaded_file, user, options: dict) -> ImportJob:
    """Save the upload to default storage (shared by every web and worker process) as a draft job."""
    if kind not in ImportJob.Kind.values:
        raise ValueError(f"Unknown import kind {kind!r}.")
    name = os.path.basename(uploaded_file.name or "upload.csv")
    job = ImportJob(kind=kind, created_by=user, original_name=name[:255],
                    options={k: v for k, v in options.items() if k in OPTION_KEYS})
    job.file.save(name, uploaded_file, save=False)
    job.save()
    return job


@dataclass
class Preview:
    problem: str = ""
    format: str = ""
    encoding: str = ""
    delimiter: str = ""
    mapping: list[tuple[str, str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[tuple[int, list[str]]] = field(default_factory=list)
    scanned: int = 0
    invalid: int = 0
    errors: list[list] = field(default_factory=list)
    estimated_rows: int | None = None
    consent_columns: list[str] = field(default_factory=list)
    # Consent columns record what customers agreed to, which is only evidence with the version of
    # the notice they saw: the confirmation must give one when the upload did not.
    needs_notice_version: bool = False

    @property
    def usable(self) -> bool:
        return not self.problem


def import_job_preview(*, job: ImportJob, mask_personal_data: bool = True, scan_rows: int = SCAN_ROWS) -> Preview:
    """What the file looks like to the importer, from a quick scan of its first rows. Writes nothing."""
    from django.conf import settings

    preview = Preview()
    try:
        options = _options(job).resolved()
        with local_path(job) as path, open_table(path, encoding=options.encoding,
                                                 max_bytes=settings.IMPORT_MAX_FILE_BYTES) as table:
            preview.format = table.format.upper()
            preview.encoding = table.encoding_label
            preview.delimiter = table.delimiter_label
            preview.header = table.header
            preview.estimated_rows = table.estimated_rows
            if job.kind == ImportJob.Kind.EVENTS:
                module, required = event_import, event_import.REQUIRED
                mapping = map_columns(table.header, aliases=event_import.HEADER_TO_FIELD, required=required)
                mapping.ignored.extend(mapping.attributes.values())
                mapping.attributes = {}
            else:
                module, required = customer_import, ("external_id",)
                mapping = map_columns(table.header)
                preview.consent_columns = mapping.consent_fields
                preview.needs_notice_version = bool(mapping.consent_fields) and not options.notice_version
            preview.mapping = mapping.describe()
            masked = {i for f, i in mapping.fields.items() if f in ("email", "phone")} if mask_personal_data else set()
            report = ErrorReport(None)
            stage = StagingTable(module.STAGE_TABLE, module.STAGE_COLUMNS)  # adapters only: nothing is created
            rows = _remember_first_rows(table.rows(), preview, masked, mapping, scan_rows)
            for _ in parse_rows(_Rows(rows), mapping, module._field_parsers(stage, options), report, Progress(),
                                module.STAGE_INDEX, required=required):
                pass
            preview.scanned = len(preview.rows) if preview.scanned == 0 else preview.scanned
            preview.invalid = report.lines
            preview.errors = report.samples if not mask_personal_data else [e[:2] + ["…"] + e[3:] for e in report.samples]
    except UnusableFile as exc:
        preview.problem = str(exc)
    return preview


class _Rows:
    def __init__(self, rows):
        self._rows = rows

    def rows(self):
        return self._rows


def _remember_first_rows(rows, preview: Preview, masked: set[int], mapping, limit: int):
    for count, (line, cells) in enumerate(rows, start=1):
        if count > limit:
            return
        preview.scanned = count
        if count <= PREVIEW_ROWS:
            shown = list(cells)
            for index in masked:
                if index < len(shown):
                    shown[index] = mask_email(shown[index]) if "@" in shown[index] else mask_phone(shown[index])
            preview.rows.append((line, shown))
        yield line, cells


@transaction.atomic
def import_job_confirm(*, job: ImportJob, notice_version: str = "") -> ImportJob:
    """Queue a draft job; its task starts once this transaction commits. ``notice_version``,
    when given, is the privacy notice version the file's consent columns were agreed under (the
    upload may have left it out)."""
    from reactivation.import_tasks import import_job_run  # the tasks module imports this one

    job = ImportJob.objects.select_for_update().get(pk=job.pk)
    if job.status != ImportJob.Status.DRAFT:
        return job  # a second click on "Confirm" queues nothing more
    job.status = ImportJob.Status.QUEUED
    update_fields = ["status"]
    if notice_version := (notice_version or "").strip():
        job.options = {**job.options, "notice_version": notice_version}
        update_fields.append("options")
    job.save(update_fields=update_fields)
    import_job_run.delay_on_commit(job.pk)
    return job


# Expire -------------------------------------------------------------------------------------------
# Where django-import-export's MediaStorage keeps a file between an import's preview and its
# confirmation (its MEDIA_FOLDER default).
IMPORT_EXPORT_FOLDER = "django-import-export"

# A draft nobody confirmed in time (ImportJob.Status.EXPIRED) has its upload deleted (it holds
# personal data); the row stays as the record that a file was uploaded and discarded.


def import_drafts_expire(*, now=None) -> dict[str, int]:
    """Expire uploads nobody confirmed within IMPORT_DRAFT_HOURS: each draft import job's files
    are deleted from storage and the job marked expired; django-import-export's preview copies
    older than that are deleted too. Returns ``{"drafts": n, "previews": m}``. Safe to run twice.

    A draft being confirmed right now is skipped (its row is locked by the confirmation, which
    queues it). A draft expired here cannot be confirmed afterwards: the confirmation locks the
    row and finds it no longer a draft. Files go before the row is marked, so a crash in between
    leaves a draft whose missing file the next run deletes again (a no-op) before marking it.
    """
    from django.conf import settings
    from django.core.files.storage import default_storage

    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.IMPORT_DRAFT_HOURS)
    counts = {"drafts": 0, "previews": 0}
    with transaction.atomic():
        drafts = list(
            ImportJob.objects.select_for_update(skip_locked=True)
            .filter(status=ImportJob.Status.DRAFT, created_at__lt=cutoff)
            .order_by("pk")
        )
        for job in drafts:
            for field_file in (job.file, job.errors_file):
                if field_file:
                    field_file.delete(save=False)
        counts["drafts"] = ImportJob.objects.filter(pk__in=[job.pk for job in drafts]).update(
            status=ImportJob.Status.EXPIRED, file="", errors_file="", finished_at=now,
            error_message=f"Not confirmed within {settings.IMPORT_DRAFT_HOURS} hours: the uploaded file was deleted.",
        )
    try:
        _folders, names = default_storage.listdir(IMPORT_EXPORT_FOLDER)
    except FileNotFoundError:
        names = []
    for name in names:
        path = f"{IMPORT_EXPORT_FOLDER}/{name}"
        try:
            if default_storage.get_modified_time(path) < cutoff:
                default_storage.delete(path)
                counts["previews"] += 1
        except FileNotFoundError:  # confirmed (and removed) meanwhile
            continue
    logger.info("import drafts expired drafts=%d previews=%d", counts["drafts"], counts["previews"])
    return counts


# Run ----------------------------------------------------------------------------------------------
CLAIMED, WAIT, SKIP = "claimed", "wait", "skip"


@transaction.atomic
def import_job_claim(*, job_id: int) -> str:
    """Mark the job running if it is the oldest unfinished job of its kind.

    Returns CLAIMED, WAIT (another job of the kind is ahead: retry later) or SKIP (finished,
    not confirmed, or gone). A job found already running is claimed again: its worker died
    (tasks are acks_late) and the import, all-or-nothing, left nothing behind.
    """
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None or job.status not in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING):
        return SKIP
    unfinished = list(
        ImportJob.objects.select_for_update()
        .filter(kind=job.kind, status__in=[ImportJob.Status.QUEUED, ImportJob.Status.RUNNING])
        .order_by("id")
        .values_list("id", flat=True)
    )
    if not unfinished or unfinished[0] != job.pk:
        return WAIT
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING, started_at=timezone.now(), rows_processed=0, error_message=""
    )
    return CLAIMED


def import_job_execute(*, job_id: int) -> str:
    """Claim and run the job; returns what happened (CLAIMED when it ran, WAIT, SKIP)."""
    outcome = import_job_claim(job_id=job_id)
    if outcome != CLAIMED:
        return outcome
    job = ImportJob.objects.get(pk=job_id)
    options = _options(job)
    run = customer_import.customers_import if job.kind == ImportJob.Kind.CUSTOMERS else event_import.events_import

    def on_progress(progress: Progress) -> None:
        ImportJob.objects.filter(pk=job.pk).update(
            rows_processed=progress.rows,
            rows_total=max(progress.estimated_total or 0, progress.rows) or None,
        )

    errors = tempfile.NamedTemporaryFile("w+", encoding="utf-8-sig", newline="", suffix=".csv", delete=False)
    updates: dict = {}
    try:
        with local_path(job) as path:
            result = run(path=path, errors_out=errors, options=options, on_progress=on_progress)
        errors.close()
        updates.update(
            status=ImportJob.Status.DONE, created=result.created, invalid=result.invalid, rows_processed=result.rows,
            updated=getattr(result, "updated", 0), unchanged=getattr(result, "unchanged", 0),
            unknown_customer=getattr(result, "unknown_customer", 0),
            detected_format=_format_label(result),
        )
        if result.invalid or getattr(result, "unknown_customer", 0) or getattr(result, "consent_refused", 0):
            with open(errors.name, "rb") as handle:
                job.errors_file.save(f"job-{job.pk}-errors.csv", File(handle), save=False)
            updates["errors_file"] = job.errors_file.name
        logger.info("import job %s done: %s", job.pk, result.summary)
    except UnusableFile as exc:
        updates.update(status=ImportJob.Status.FAILED, error_message=str(exc))
        logger.info("import job %s refused the file: %s", job.pk, exc)
    except Exception as exc:  # the job must say it failed; the traceback goes to the log
        logger.exception("import job %s failed", job.pk)
        updates.update(status=ImportJob.Status.FAILED, error_message=f"{exc.__class__.__name__}: {exc}"[:2000])
    finally:
        errors.close()
        os.unlink(errors.name)
    updates["finished_at"] = timezone.now()
    ImportJob.objects.filter(pk=job.pk).update(**updates)
    return CLAIMED


def _format_label(result) -> str:
    if result.format == "xlsx":
        return "XLSX"
    delimiter = {",": "comma", ";": "semicolon", "\t": "tab"}.get(result.delimiter, result.delimiter or "")
    return f"CSV, {result.encoding}, {delimiter}"


def import_job_status_label(*, job: ImportJob) -> str:
    return job.get_status_display()


def import_job_status(*, job: ImportJob) -> dict:
    """The small JSON the progress page polls."""
    total = job.rows_total or 0
    processed = job.rows_processed or 0
    finished = job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED, ImportJob.Status.EXPIRED)
    if job.status == ImportJob.Status.DONE:
        percent = 100
    elif total:
        percent = min(int(processed * 100 / total), 99)
    else:
        percent = 0
    return {
        "id": job.pk,
        "status": job.status,
        "status_display": import_job_status_label(job=job),
        "finished": finished,
        "rows_processed": processed,
        "rows_total": job.rows_total,
        "percent": percent,
        "created": job.created,
        "updated": job.updated,
        "unchanged": job.unchanged,
        "invalid": job.invalid,
        "unknown_customer": job.unknown_customer,
        "summary": job.summary if job.status == ImportJob.Status.DONE else "",
        "error_message": job.error_message,
        "has_errors_file": bool(job.errors_file),
        "dry_run": bool(job.options.get("dry_run")),
        "duration_seconds": job.duration.total_seconds() if job.duration else None,
    }
