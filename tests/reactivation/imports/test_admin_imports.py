import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from config.celery import app as celery_app
from reactivation.imports.jobs import CLAIMED, SKIP, WAIT, import_job_claim, import_job_execute
from reactivation.models import Customer, ImportJob
from tests.factories import CustomerFactory, DormancyRuleFactory, UserFactory

pytestmark = pytest.mark.django_db

GBK_FILE = ("用户ID,姓名,邮箱,手机,注册时间,会员等级\n"
            "C1,张三,zhang@example.com,13812345678,2024/1/5 9:30,金卡\n"
            "C2,李四,not-an-email,,2024-01-06,银卡\n"
            "C3,王五,wang@example.com,13912345678,2024-01-07,\n").encode("gbk")


@pytest.fixture
def eager_celery():
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture
def admin_client_(client):
    user = UserFactory(username="boss", is_superuser=True)
    client.force_login(user)
    client.user = user
    return client


def upload(client, content: bytes, name: str = "会员.csv", kind: str = "customers", **options):
    data = {"file": SimpleUploadedFile(name, content), "encoding": "auto", "time_zone": "Asia/Shanghai", **options}
    return client.post(reverse("admin:reactivation_importjob_upload", args=[kind]), data)


def test_upload_preview_confirm_progress_result(admin_client_, eager_celery, django_capture_on_commit_callbacks):
    client = admin_client_
    # given the import page, linked from the import jobs list
    changelist = client.get(reverse("admin:reactivation_importjob_changelist"))
    assert reverse("admin:reactivation_importjob_upload", args=["customers"]) in changelist.content.decode()
    assert client.get(reverse("admin:reactivation_importjob_upload", args=["customers"])).status_code == 200

    # when a marketer uploads a GBK file
    response = upload(client, GBK_FILE, region="CN")
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:reactivation_importjob_preview", args=[job.pk])
    # then it is stored in default storage (shared by web and workers) as a draft, nothing imported yet
    assert job.status == ImportJob.Status.DRAFT and job.created_by == client.user
    assert default_storage.exists(job.file.name) and job.file.name.startswith("imports/customers/")
    assert not Customer.objects.exists()

    # and the preview shows the detected encoding, the mapping, the first rows and the quick scan
    preview = client.get(response.url)
    page = preview.content.decode()
    assert preview.status_code == 200
    assert "GB18030 / GBK" in page and "comma" in page
    assert preview.context["preview"].mapping == [
        ("用户ID", "external_id"), ("姓名", "name"), ("邮箱", "email"), ("手机", "phone"), ("注册时间", "signup_at"),
        ("会员等级", "attributes['会员等级']"),
    ]
    assert "张三" in page and preview.context["preview"].invalid == 1 and preview.context["preview"].scanned == 3
    assert not Customer.objects.exists()

    # when they confirm, the Celery task runs after commit
    with django_capture_on_commit_callbacks(execute=True):
        confirmed = client.post(response.url)
    progress_url = reverse("admin:reactivation_importjob_progress", args=[job.pk])
    assert confirmed.status_code == 302 and confirmed.url == progress_url

    # then the job is done with its counts, and the progress page and status endpoint say so
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE
    assert (job.created, job.updated, job.unchanged, job.invalid, job.rows_processed) == (2, 0, 0, 1, 3)
    assert job.started_at and job.finished_at and job.duration is not None
    assert job.detected_format == "CSV, gb18030, comma"
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"C1", "C3"}
    assert Customer.objects.get(external_id="C1").attributes == {"会员等级": "金卡"}
    page = client.get(progress_url).content.decode()
    assert "created=2 updated=0 unchanged=0 invalid=1" in page and "job-progress" in page
    status = json.loads(client.get(reverse("admin:reactivation_importjob_status", args=[job.pk])).content)
    assert status["finished"] and status["percent"] == 100 and status["summary"] == job.summary
    assert status["errors_url"] == reverse("admin:reactivation_importjob_errors", args=[job.pk])

    # and the errors file downloads as a neutralized CSV
    download = client.get(status["errors_url"])
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode("utf-8-sig"))))
    assert download["Content-Disposition"].startswith("attachment")
    assert rows == [["line", "column", "value", "reason"], ["3", "邮箱", "not-an-email", "邮箱 is not a valid email address"]]
    assert client.get(reverse("admin:reactivation_importjob_change", args=[job.pk])).status_code == 200



def test_a_confirmed_customer_import_moves_the_lifecycle_of_its_customers(
        admin_client_, eager_celery, django_capture_on_commit_callbacks):
    # given a shop rule, and a file whose customer last ordered long ago
    DormancyRuleFactory(name="No order for 90 days", signal="last_order", inactive_days=90, min_orders=1)
    last_order = (timezone.now() - timedelta(days=400)).strftime("%Y-%m-%d")
    response = upload(admin_client_, f"external_id,last_order_at,order_count\nADMIN,{last_order},2\n".encode())
    # when the import is confirmed and its task runs
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_.post(response.url)
    # then the customer is dormant as soon as the job is done, not "new" until the hourly run
    job = ImportJob.objects.get()
    assert (job.status, job.created) == (ImportJob.Status.DONE, 1)
    assert Customer.objects.get(external_id="ADMIN").lifecycle_state == "dormant"

def test_unusable_file_is_explained_on_the_preview_and_cannot_be_confirmed(admin_client_):
    response = upload(admin_client_, b"name,email\nLi,l@x.com\n")
    job = ImportJob.objects.get()
    page = admin_client_.get(response.url)
    assert "no external_id column" in page.content.decode()
    admin_client_.post(response.url)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DRAFT and not Customer.objects.exists()


def test_consent_columns_need_a_notice_version_before_confirming(admin_client_):
    response = upload(admin_client_, b"external_id,email_consent\nC1,yes\n")
    assert "notice version" in admin_client_.get(response.url).content.decode()


def test_the_preview_asks_for_the_missing_notice_version_and_confirming_with_it_imports(
    admin_client_, eager_celery, django_capture_on_commit_callbacks
):
    from consent.models import ConsentEvent

    # given a file with consent columns uploaded without a notice version
    response = upload(admin_client_, b"external_id,email,email_consent\nC1,li@example.com,yes\n")
    job = ImportJob.objects.get()

    # then the preview asks for it, and still offers to confirm
    page = admin_client_.get(response.url)
    assert page.context["preview"].needs_notice_version and page.context["preview"].usable
    assert "notice_version" in page.context["form"].fields
    assert 'name="notice_version"' in page.content.decode() and "Confirm and import" in page.content.decode()

    # when the marketer confirms without giving it, nothing is queued and the field says why
    refused = admin_client_.post(response.url, {"notice_version": "  "})
    assert refused.status_code == 200 and "notice_version" in refused.context["form"].errors
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DRAFT

    # when they give it, the job runs with it and the consent is recorded under that version
    with django_capture_on_commit_callbacks(execute=True):
        confirmed = admin_client_.post(response.url, {"notice_version": " privacy-2024-03 "})
    assert confirmed.status_code == 302
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and job.options["notice_version"] == "privacy-2024-03"
    event = ConsentEvent.objects.get(customer__external_id="C1")
    assert event.notice_version == "privacy-2024-03"


def test_a_file_without_consent_columns_asks_for_no_notice_version(admin_client_):
    response = upload(admin_client_, GBK_FILE)
    page = admin_client_.get(response.url)
    assert not page.context["preview"].needs_notice_version
    assert "notice_version" not in page.context["form"].fields
    assert 'name="notice_version"' not in page.content.decode()


def test_a_notice_version_given_at_upload_is_not_asked_again(admin_client_):
    response = upload(admin_client_, b"external_id,email_consent\nC1,yes\n", notice_version="v1")
    page = admin_client_.get(response.url)
    assert not page.context["preview"].needs_notice_version
    assert 'name="notice_version"' not in page.content.decode()


def test_xlsx_upload_preview(admin_client_, xlsx_file):
    path = xlsx_file([["external_id", "phone"], ["C1", 13812345678]])
    response = upload(admin_client_, path.read_bytes(), name="list.xlsx")
    preview = admin_client_.get(response.url).context["preview"]
    assert preview.format == "XLSX" and preview.encoding == "XLSX (no text encoding)"
    assert preview.rows == [(2, ["C1", "13812345678"])] and preview.invalid == 0


def test_personal_data_is_masked_in_the_preview_without_permission(client):
    from django.contrib.auth.models import Permission

    user = UserFactory(username="marketer")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["add_importjob", "view_importjob", "change_customer"]))
    client.force_login(user)
    response = upload(client, b"external_id,email,phone\nC1,zhang@example.com,13812345678\n")
    page = client.get(response.url)
    assert page.context["preview"].rows == [(2, ["C1", "z***@e***.com", "138****5678"])]
    assert "zhang@example.com" not in page.content.decode()


def test_staff_without_permission_cannot_import(client):
    client.force_login(UserFactory(username="viewer"))
    response = client.get(reverse("admin:reactivation_importjob_upload", args=["customers"]))
    assert response.status_code == 403


def test_upload_over_the_size_limit_is_refused(admin_client_, settings):
    settings.IMPORT_MAX_FILE_BYTES = 10
    response = upload(admin_client_, b"external_id\nC1\nC2\nC3\n")
    assert response.status_code == 200 and "too large" in response.content.decode()
    assert not ImportJob.objects.exists()


def _job(kind="customers", status=ImportJob.Status.QUEUED, content=b"external_id\nC1\n"):
    job = ImportJob(kind=kind, status=status, original_name="x.csv")
    job.file.save("x.csv", SimpleUploadedFile("x.csv", content), save=False)
    job.save()
    return job


def test_customer_imports_are_serialized_oldest_first():
    # given two queued customer imports and one activity import
    first, second = _job(), _job()
    events = _job(kind="events", content=b"external_id,kind,occurred_at\n")
    # when the second one's task arrives first, it waits for the first
    assert import_job_claim(job_id=second.pk) == WAIT
    # while the first is running, the second still waits; other kinds are not blocked
    assert import_job_claim(job_id=first.pk) == CLAIMED
    assert import_job_claim(job_id=second.pk) == WAIT
    assert import_job_claim(job_id=events.pk) == CLAIMED
    # once the first is done the second runs; a finished job is never run again
    ImportJob.objects.filter(pk=first.pk).update(status=ImportJob.Status.DONE)
    assert import_job_execute(job_id=second.pk) == CLAIMED
    assert import_job_execute(job_id=second.pk) == SKIP
    second.refresh_from_db()
    assert second.status == ImportJob.Status.DONE and second.created == 1


def test_task_retries_while_another_import_runs(monkeypatch):
    from celery.exceptions import Retry

    from reactivation.import_tasks import import_job_run

    first, second = _job(), _job()
    ImportJob.objects.filter(pk=first.pk).update(status=ImportJob.Status.RUNNING)
    with pytest.raises(Retry):
        import_job_run.apply(args=[second.pk], throw=True).get()
    second.refresh_from_db()
    assert second.status == ImportJob.Status.QUEUED


def test_failed_job_records_the_reason():
    job = _job(content=b"name\nLi\n")
    import_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED and "no external_id column" in job.error_message
    assert job.finished_at and not Customer.objects.exists()


def test_deleting_a_job_deletes_its_files(admin_client_):
    job = _job()
    name = job.file.name
    admin_client_.post(reverse("admin:reactivation_importjob_delete", args=[job.pk]), {"post": "yes"})
    assert not ImportJob.objects.exists() and not default_storage.exists(name)


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_real_worker_imports_the_file():
    """A real Celery worker thread consumes the task from the broker (Redis on CI)."""
    from celery.contrib.testing.worker import start_worker

    from reactivation.imports.jobs import import_job_confirm

    CustomerFactory(external_id="C1", name="Old")
    job = _job(status=ImportJob.Status.DRAFT, content="external_id,name\nC1,新\nC2,Li\n".encode())
    with start_worker(celery_app, perform_ping_check=False, pool="solo", concurrency=1, shutdown_timeout=30):
        import_job_confirm(job=job)  # outside a transaction: dispatched at once
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED):
                break
            time.sleep(0.2)
    assert job.status == ImportJob.Status.DONE, job.error_message
    assert (job.created, job.updated) == (1, 1)
    assert Customer.objects.get(external_id="C1").name == "新"


def test_activity_import_from_the_admin(admin_client_, eager_celery, django_capture_on_commit_callbacks):
    # given a known customer and an activity file naming one unknown customer
    known = CustomerFactory(external_id="A", order_count=0)
    response = upload(admin_client_, b"external_id,kind,occurred_at,amount\nA,order,2024-01-05,10\nB,login,2024-01-05,\n",
                      name="activity.csv", kind="events")
    job = ImportJob.objects.get()
    preview = admin_client_.get(response.url).context["preview"]
    assert preview.mapping == [("external_id", "external_id"), ("kind", "kind"), ("occurred_at", "occurred_at"),
                               ("amount", "amount")]
    # when confirmed
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_.post(response.url)
    # then the known row is recorded, the unknown one reported, and the rollups moved
    job.refresh_from_db()
    assert (job.status, job.summary) == (ImportJob.Status.DONE, "created=1 invalid=0 unknown_customer=1")
    known.refresh_from_db()
    assert known.order_count == 1 and bool(job.errors_file)


def test_status_reports_progress_while_running():
    job = _job(status=ImportJob.Status.RUNNING)
    ImportJob.objects.filter(pk=job.pk).update(rows_processed=50, rows_total=200)
    job.refresh_from_db()
    from reactivation.imports.jobs import import_job_status

    status = import_job_status(job=job)
    assert (status["percent"], status["finished"], status["summary"]) == (25, False, "")


def test_progress_is_recorded_between_staging_chunks(monkeypatch):
    from reactivation.imports import staging

    monkeypatch.setattr(staging, "COPY_CHUNK_ROWS", 2)
    monkeypatch.setattr(staging, "EXECUTEMANY_CHUNK_ROWS", 2)
    from reactivation.imports import jobs

    job = _job(content=b"external_id\nC1\nC2\nC3\nC4\nC5\n")
    calls = []
    monkeypatch.setattr(
        jobs.customer_import, "customers_import",
        _recording(jobs.customer_import.customers_import, calls),
    )
    import_job_execute(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and job.rows_processed == 5
    assert calls[:3] == [2, 4, 5]


def _recording(function, calls):
    def wrapper(**kwargs):
        on_progress = kwargs["on_progress"]

        def record(progress):
            calls.append(progress.rows)
            on_progress(progress)
            assert ImportJob.objects.get().rows_processed == progress.rows

        kwargs["on_progress"] = record
        return function(**kwargs)

    return wrapper


# Uploads bounded ------------------------------------------------------------------------------


def _xlsx(fill) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    fill(book.active)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_an_xlsx_row_bomb_is_refused_at_the_preview_quickly(admin_client_, settings):
    import time

    # given a tiny workbook with one value on the sheet's last row (openpyxl would yield a
    # million empty rows before it)
    def bomb(sheet):
        sheet.append(["external_id", "name"])
        sheet.cell(row=1_048_576, column=1, value="C9")

    settings.IMPORT_MAX_ROWS = 100_000
    upload(admin_client_, _xlsx(bomb), name="bomb.xlsx")
    job = ImportJob.objects.get()
    # when the preview opens
    started = time.monotonic()
    response = admin_client_.get(reverse("admin:reactivation_importjob_preview", args=[job.pk]))
    # then it says why, at once, and nothing can be confirmed
    assert time.monotonic() - started < 2
    assert "row 1,048,576" in response.content.decode()
    admin_client_.post(reverse("admin:reactivation_importjob_preview", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DRAFT


def test_an_xlsx_whose_strings_inflate_past_the_limit_is_refused(admin_client_, settings):
    settings.IMPORT_XLSX_MAX_BYTES = 500_000

    def strings(sheet):
        sheet.append(["external_id", "name"])
        for row in range(2000):
            sheet.append([f"C{row}", f"{row:06d}" + "名" * 300])

    upload(admin_client_, _xlsx(strings), name="strings.xlsx")
    job = ImportJob.objects.get()
    response = admin_client_.get(reverse("admin:reactivation_importjob_preview", args=[job.pk]))
    assert "once unzipped" in response.content.decode()


def test_a_csv_value_over_the_field_limit_is_reported_as_such(tmp_path):
    from reactivation.imports.reading import UnusableFile, open_table

    path = tmp_path / "long.csv"
    path.write_text("external_id,name\nC1," + "x" * 200_000 + "\n")
    with pytest.raises(UnusableFile) as error, open_table(path) as table:
        list(table.rows())
    assert "line 2 is longer than 131,072 characters" in str(error.value)
    assert "unbalanced" not in str(error.value)


def test_drafts_nobody_confirmed_expire_and_their_files_are_deleted(admin_client_, settings):
    import os
    from datetime import timedelta

    from django.utils import timezone

    from reactivation.import_tasks import import_drafts_expire as hourly_task
    from reactivation.imports.jobs import import_drafts_expire

    # given an old draft, a fresh one, an old finished job, and old and fresh import-export previews
    upload(admin_client_, GBK_FILE, name="old.csv")
    upload(admin_client_, GBK_FILE, name="fresh.csv")
    upload(admin_client_, GBK_FILE, name="done.csv")
    old, fresh, done = ImportJob.objects.order_by("id")
    ImportJob.objects.filter(pk__in=[old.pk, done.pk]).update(created_at=timezone.now() - timedelta(hours=25))
    ImportJob.objects.filter(pk=done.pk).update(status=ImportJob.Status.DONE)
    stale = default_storage.save("django-import-export/stale", io.BytesIO(b"email\na@example.com\n"))
    recent = default_storage.save("django-import-export/recent", io.BytesIO(b"email\nb@example.com\n"))
    day_ago = (timezone.now() - timedelta(hours=25)).timestamp()
    os.utime(default_storage.path(stale), (day_ago, day_ago))

    # when the hourly task runs
    assert hourly_task() == {"drafts": 1, "previews": 1}

    # then the old draft's file is gone from storage and the job says it expired; the rest is kept
    assert not default_storage.exists(old.file.name) and default_storage.exists(fresh.file.name)
    assert default_storage.exists(done.file.name)
    assert not default_storage.exists(stale) and default_storage.exists(recent)
    old.refresh_from_db()
    assert old.status == ImportJob.Status.EXPIRED and not old.file and old.finished_at is not None
    assert "Not confirmed within 24 hours" in old.error_message
    assert dict(ImportJob.objects.exclude(pk=old.pk).values_list("pk", "status")) == {
        fresh.pk: ImportJob.Status.DRAFT, done.pk: ImportJob.Status.DONE,
    }
    # and running it again changes nothing
    assert import_drafts_expire() == {"drafts": 0, "previews": 0}


def test_an_expired_draft_cannot_be_confirmed_and_its_progress_page_says_why(admin_client_, eager_celery):
    from datetime import timedelta

    from django.utils import timezone

    from reactivation.imports.jobs import import_drafts_expire, import_job_confirm

    response = upload(admin_client_, GBK_FILE)
    job = ImportJob.objects.get()
    ImportJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=25))
    import_drafts_expire()

    # confirming (a page left open since the upload) queues nothing
    confirmed = admin_client_.post(response.url)
    assert confirmed.url == reverse("admin:reactivation_importjob_progress", args=[job.pk])
    assert import_job_confirm(job=job).status == "expired" and not Customer.objects.exists()

    # the progress page and the status endpoint say it is over and why
    status = json.loads(admin_client_.get(reverse("admin:reactivation_importjob_status", args=[job.pk])).content)
    assert status["finished"] and status["status_display"] == "Expired (not confirmed in time)"
    page = admin_client_.get(confirmed.url).content.decode()
    assert "Expired (not confirmed in time)" in page and "the uploaded file was deleted" in page
    listing = admin_client_.get(reverse("admin:reactivation_importjob_changelist")).content.decode()
    assert "Expired (not confirmed in time)" in listing
    assert admin_client_.get(reverse("admin:reactivation_importjob_change", args=[job.pk])).status_code == 200


def test_a_confirmed_job_is_not_expired_however_old(admin_client_):
    from datetime import timedelta

    from django.utils import timezone

    from reactivation.imports.jobs import import_drafts_expire

    upload(admin_client_, GBK_FILE)
    job = ImportJob.objects.get()
    later = timezone.now() + timedelta(hours=25)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.QUEUED)

    assert import_drafts_expire(now=later)["drafts"] == 0
    job.refresh_from_db()
    assert job.status == ImportJob.Status.QUEUED and default_storage.exists(job.file.name)


def test_a_clean_import_shows_no_error_box(admin_client_, eager_celery, django_capture_on_commit_callbacks):
    response = upload(admin_client_, b"external_id,name\nC1,Li\n")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client_.post(response.url)
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.DONE and not job.error_message

    page = admin_client_.get(reverse("admin:reactivation_importjob_progress", args=[job.pk])).content.decode()

    assert 'id="job-error" hidden' in page
    assert "errornote" not in page.split('id="job-error"')[1].split(">")[0]


def test_a_failed_import_shows_its_error_box(admin_client_):
    upload(admin_client_, GBK_FILE)
    job = ImportJob.objects.get()
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.FAILED, error_message="Boom: disk full")

    page = admin_client_.get(reverse("admin:reactivation_importjob_progress", args=[job.pk])).content.decode()

    assert '<p id="job-error" class="errornote">Boom: disk full</p>' in page
