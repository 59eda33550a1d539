"""Admin for bulk imports: the ImportJob list, and the upload -> preview -> progress pages.

The pages hang off the ImportJob admin:
  /admin/reactivation/importjob/import/customers/   upload (also .../import/events/)
  /admin/reactivation/importjob/<id>/preview/       detected format, mapping, first rows; confirm
  /admin/reactivation/importjob/<id>/progress/      progress bar polling .../<id>/status.json
  /admin/reactivation/importjob/<id>/errors.csv     the rejected rows (neutralized CSV)
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from core.masking import can_view_personal_data
from reactivation.imports.jobs import (
    import_job_confirm,
    import_job_create,
    import_job_preview,
    import_job_status,
    import_job_status_label,
)
from reactivation.models import ImportJob

ENCODINGS = [
    ("auto", "Detect (UTF-8 or GB18030/GBK)"),
    ("utf-8", "UTF-8"),
    ("gb18030", "GB18030 / GBK (Excel in China)"),
    ("utf-16", "UTF-16 (Excel \"Unicode text\")"),
    ("latin-1", "Latin-1"),
]


class ImportUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV (comma, semicolon or tab) or XLSX. See docs/import.md for the columns.")
    encoding = forms.ChoiceField(choices=ENCODINGS, initial="auto", required=False)
    time_zone = forms.CharField(required=False, help_text="For dates without an offset; blank means TIME_ZONE.")
    region = forms.CharField(required=False, max_length=2, help_text="Phone region for numbers without +country.")
    notice_version = forms.CharField(
        required=False, max_length=50, help_text="Privacy notice version; required when the file has consent columns."
    )
    dry_run = forms.BooleanField(required=False, help_text="Report what would change; write nothing.")

    def __init__(self, *args, kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].initial = settings.TIME_ZONE
        if kind == ImportJob.Kind.EVENTS:
            del self.fields["region"], self.fields["notice_version"]
        else:
            self.fields["region"].initial = settings.DEFAULT_REGION

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > settings.IMPORT_MAX_FILE_BYTES:
            raise forms.ValidationError(
                f"The file is too large: {upload.size:,} bytes, the limit is {settings.IMPORT_MAX_FILE_BYTES:,}."
            )
        return upload

    def clean_time_zone(self):
        from reactivation.imports.parsing import zone

        value = (self.cleaned_data.get("time_zone") or "").strip()
        if value:
            try:
                zone(value)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return value

    def clean_region(self):
        from reactivation.imports.parsing import check_region

        value = (self.cleaned_data.get("region") or "").strip()
        if value:
            try:
                value = check_region(value)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return value


class ImportConfirmForm(forms.Form):
    """The preview's confirmation: asks for what the upload left out and the file needs."""

    notice_version = forms.CharField(
        max_length=50, label="Notice version",
        help_text="The privacy notice version the customers agreed to (recorded with each consent).",
    )

    def __init__(self, *args, needs_notice_version: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not needs_notice_version:
            del self.fields["notice_version"]

    def clean_notice_version(self):
        value = self.cleaned_data["notice_version"].strip()
        if not value:
            raise forms.ValidationError("This field is required.")
        return value


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    change_list_template = "admin/reactivation/import_job_change_list.html"
    list_display = ("id", "kind", "status_display", "original_name", "created_by", "created_at", "result", "duration_display")
    list_filter = ("kind", "status")
    search_fields = ("original_name",)
    date_hierarchy = "created_at"
    list_select_related = ("created_by",)
    readonly_fields = (
        "kind", "status_display", "created_by", "created_at", "started_at", "finished_at", "original_name", "options",
        "detected_format", "rows_total", "rows_processed", "created", "updated", "unchanged", "invalid",
        "unknown_customer", "errors_download", "error_message", "progress_link",
    )
    exclude = ("file", "errors_file")

    def has_add_permission(self, request):
        return False  # jobs start from the upload page

    def has_change_permission(self, request, obj=None):
        return False  # a job is a record of what happened

    @admin.display(description="Status", ordering="status")
    def status_display(self, job):
        return import_job_status_label(job=job)

    @admin.display(description="Result")
    def result(self, job):
        if job.status == ImportJob.Status.DONE:
            return job.summary
        return job.error_message[:80] if job.status in (ImportJob.Status.FAILED, ImportJob.Status.EXPIRED) else "—"

    @admin.display(description="Duration")
    def duration_display(self, job):
        return f"{job.duration.total_seconds():.1f}s" if job.duration else "—"

    @admin.display(description="Errors file")
    def errors_download(self, job):
        if not job.errors_file:
            return "—"
        return format_html('<a href="{}">Download rejected rows (CSV)</a>',
                           reverse("admin:reactivation_importjob_errors", args=[job.pk]))

    @admin.display(description="Progress")
    def progress_link(self, job):
        return format_html('<a href="{}">Progress page</a>', reverse("admin:reactivation_importjob_progress", args=[job.pk]))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("import/<str:kind>/", wrap(self.upload_view), name="reactivation_importjob_upload"),
            path("<int:pk>/preview/", wrap(self.preview_view), name="reactivation_importjob_preview"),
            path("<int:pk>/progress/", wrap(self.progress_view), name="reactivation_importjob_progress"),
            path("<int:pk>/status.json", wrap(self.status_view), name="reactivation_importjob_status"),
            path("<int:pk>/errors.csv", wrap(self.errors_view), name="reactivation_importjob_errors"),
            *super().get_urls(),
        ]

    # Permissions: starting an import needs "add import job" and the right to change what it writes.
    def _check_can_import(self, request, kind: str) -> None:
        target = "reactivation.change_customer" if kind == ImportJob.Kind.CUSTOMERS else "reactivation.add_activityevent"
        if not (request.user.has_perm("reactivation.add_importjob") and request.user.has_perm(target)):
            raise PermissionDenied

    def _job_for(self, request, pk: int) -> ImportJob:
        job = get_object_or_404(ImportJob, pk=pk)
        if not self.has_view_permission(request, job):
            raise PermissionDenied
        return job

    def _context(self, request, **extra):
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}

    @staticmethod
    def _kind_label(kind: str) -> str:
        return "Import customers" if kind == ImportJob.Kind.CUSTOMERS else "Import activity"

    def upload_view(self, request, kind: str):
        if kind not in ImportJob.Kind.values:
            raise Http404("Unknown import kind.")
        self._check_can_import(request, kind)
        form = ImportUploadForm(request.POST or None, request.FILES or None, kind=kind)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            options = {key: data.get(key) for key in ("encoding", "time_zone", "region", "notice_version", "dry_run")}
            job = import_job_create(kind=kind, uploaded_file=data["file"], user=request.user,
                                    options={k: v for k, v in options.items() if v not in (None, "")})
            return redirect("admin:reactivation_importjob_preview", job.pk)
        return TemplateResponse(request, "admin/reactivation/import_upload.html", self._context(
            request, title=self._kind_label(kind), form=form, kind=kind,
            max_bytes=settings.IMPORT_MAX_FILE_BYTES, max_rows=settings.IMPORT_MAX_ROWS,
        ))

    def preview_view(self, request, pk: int):
        job = self._job_for(request, pk)
        self._check_can_import(request, job.kind)
        if job.status != ImportJob.Status.DRAFT:
            return redirect("admin:reactivation_importjob_progress", job.pk)
        preview = import_job_preview(job=job, mask_personal_data=not can_view_personal_data(request.user))
        form = ImportConfirmForm(request.POST if request.method == "POST" else None,
                                 needs_notice_version=preview.needs_notice_version)
        if request.method == "POST":
            if not preview.usable:
                messages.error(request, preview.problem)
            elif form.is_valid():
                import_job_confirm(job=job, notice_version=form.cleaned_data.get("notice_version", ""))
                return redirect("admin:reactivation_importjob_progress", job.pk)
        return TemplateResponse(request, "admin/reactivation/import_preview.html", self._context(
            request, title=f"{self._kind_label(job.kind)}: check the file", job=job, preview=preview,
            options=job.options, form=form,
        ))

    def progress_view(self, request, pk: int):
        job = self._job_for(request, pk)
        return TemplateResponse(request, "admin/reactivation/import_progress.html", self._context(
            request, title=f"{self._kind_label(job.kind)}: {job.original_name}", job=job,
            status=import_job_status(job=job),
        ))

    def status_view(self, request, pk: int):
        job = self._job_for(request, pk)
        status = import_job_status(job=job)
        if job.errors_file:
            status["errors_url"] = reverse("admin:reactivation_importjob_errors", args=[job.pk])
        return JsonResponse(status)

    def errors_view(self, request, pk: int):
        job = self._job_for(request, pk)
        # The rejected values are personal data (emails, phones): the uploader or staff allowed to see it.
        if job.created_by_id != request.user.pk and not can_view_personal_data(request.user):
            raise PermissionDenied
        if not job.errors_file:
            raise Http404("This import has no rejected rows.")
        stem = job.original_name.rsplit(".", 1)[0] or "import"
        return FileResponse(job.errors_file.open("rb"), as_attachment=True, filename=f"{stem}.errors.csv",
                            content_type="text/csv; charset=utf-8")

    def delete_model(self, request, obj):
        _delete_files(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for job in queryset:
            _delete_files(job)
        super().delete_queryset(request, queryset)


def _delete_files(job: ImportJob) -> None:
    """Uploaded files hold personal data: deleting the job deletes them too."""
    for field_file in (job.file, job.errors_file):
        if field_file:
            field_file.delete(save=False)
