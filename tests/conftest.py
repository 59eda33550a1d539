import pytest
from django.db import connection

from reactivation.categories import category_labels_forget


def pytest_collection_modifyitems(config, items):
    """Skip tests that need PostgreSQL or a broker server when the run has neither."""
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    broker_server = settings.CELERY_BROKER_URL.startswith(("redis", "amqp", "pyamqp"))
    for item in items:
        _restore_migrated_data_after_transactional_tests(item)
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL=postgres://...)"))
        if "broker" in item.keywords and not broker_server:
            item.add_marker(pytest.mark.skip(reason="needs a Redis or RabbitMQ broker (set CELERY_BROKER_URL)"))


def _restore_migrated_data_after_transactional_tests(item):
    """Every transactional test gets serialized_rollback.

    A transactional test ends with a flush, which empties the rows data migrations created
    (groups, channel policies) and re-creates content types under new ids; a later test that
    restores serialized data then collides with them. Restoring the serialized data after every
    flush keeps the database the same for every test, whatever the order.
    """
    marker = item.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction") or marker.kwargs.get("serialized_rollback"):
        return
    item.add_marker(pytest.mark.django_db(*marker.args, **{**marker.kwargs, "serialized_rollback": True}), append=False)


@pytest.fixture(autouse=True)
def _isolated_files(settings, tmp_path):
    """Uploads, mail and SMS files go to a per-test folder."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")
    settings.SMS_FILE_PATH = str(tmp_path / "sms" / "outbox.jsonl")
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://winback.example.com"


@pytest.fixture(autouse=True)
def _fresh_category_labels():
    """Category labels are cached per process; each test starts from its own database's."""
    category_labels_forget()
    yield
    category_labels_forget()


@pytest.fixture
def on_postgres():
    return connection.vendor == "postgresql"
