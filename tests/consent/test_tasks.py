"""consent.sms_replies_pull: beat pulls replies from polling-only SMS providers."""

import logging
import sys
from types import SimpleNamespace
from unittest import mock

import pytest
from django.utils import timezone

from consent import tasks
from consent.models import ConsentEvent, SmsReply
from consent.selectors import consent_is_granted
from consent.services import consent_grant
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


class FakeBackend:
    """Stands in for campaigns.channels.sms's backend: only fetch_replies() matters here."""

    def __init__(self, replies):
        self.replies = replies
        self.calls = 0

    def fetch_replies(self):
        self.calls += 1
        return iter(self.replies)


def _reply(sender="+8613812345678", text="TD", provider_id="p-1", received_at=None):
    return SimpleNamespace(sender=sender, text=text, provider_id=provider_id, received_at=received_at)


def _run(backend):
    with mock.patch.object(tasks, "sms_backend_for_polling", return_value=backend):
        return tasks.sms_replies_pull.apply().get()


def _customer(phone="+8613812345678"):
    customer = CustomerFactory(phone=phone)
    consent_grant(customer=customer, channel="sms", source="signup")
    return customer


def test_pulled_replies_go_through_the_same_service_as_the_webhook(caplog):
    stopper, talker = _customer(), _customer(phone="+8613900000001")
    backend = FakeBackend([_reply(text="退订", provider_id="a"), _reply(sender="13900000001", text="谢谢", provider_id="b")])

    with caplog.at_level(logging.INFO, logger="consent.tasks"):
        counts = _run(backend)

    assert counts == {"pulled": 2, "recorded": 2, "duplicate": 0, "failed": 0}
    assert dict(SmsReply.objects.values_list("provider_id", "outcome")) == {"a": "withdraw", "b": "reply"}
    assert not consent_is_granted(customer=stopper, channel="sms")
    assert consent_is_granted(customer=talker, channel="sms")
    assert ConsentEvent.objects.get(action="withdraw").source == "sms_reply"
    assert "sms_replies_pull pulled=2 recorded=2 duplicate=0 failed=0" in caplog.text


def test_pulling_the_same_replies_again_records_nothing_new():
    customer = _customer()
    backend = FakeBackend([_reply(provider_id="a"), _reply(text="hello", provider_id="b")])
    _run(backend)

    counts = _run(backend)

    assert counts == {"pulled": 2, "recorded": 0, "duplicate": 2, "failed": 0}
    assert SmsReply.objects.count() == 2
    assert ConsentEvent.objects.filter(customer=customer, action="withdraw").count() == 1


def test_replies_without_a_provider_id_are_deduplicated_by_content():
    _customer()
    at = "2026-01-05T10:00:00+08:00"
    backend = FakeBackend([_reply(provider_id="", received_at=at), _reply(provider_id=None, text="hi", received_at=at)])

    first, second = _run(backend), _run(backend)

    assert first["recorded"] == 2 and second["duplicate"] == 2
    ids = list(SmsReply.objects.values_list("provider_id", flat=True))
    assert len(ids) == 2 and all(pid.startswith("sha256:") for pid in ids)


def test_received_at_strings_are_parsed_and_kept():
    _customer()
    at = (timezone.now() - timezone.timedelta(hours=1)).replace(microsecond=0)

    _run(FakeBackend([_reply(received_at=at.isoformat())]))

    assert SmsReply.objects.get().received_at == at


def test_one_bad_reply_is_logged_and_the_others_are_still_recorded(caplog):
    customer = _customer()
    backend = FakeBackend([_reply(provider_id="bad", received_at="not a date"), _reply(provider_id="good")])

    with caplog.at_level(logging.ERROR, logger="consent.services"):
        counts = _run(backend)

    assert counts == {"pulled": 2, "recorded": 1, "duplicate": 0, "failed": 1}
    assert list(SmsReply.objects.values_list("provider_id", flat=True)) == ["good"]
    assert not consent_is_granted(customer=customer, channel="sms")
    assert "sms_reply_pull_failed provider_id=bad" in caplog.text


def test_a_push_only_backend_is_a_no_op():
    class PushOnly:
        def fetch_replies(self):
            raise NotImplementedError

    assert _run(PushOnly()) == {"pulled": 0, "recorded": 0, "duplicate": 0, "failed": 0}
    assert _run(SimpleNamespace()) == {"pulled": 0, "recorded": 0, "duplicate": 0, "failed": 0}
    assert not SmsReply.objects.exists()


def test_without_the_sms_channel_module_the_task_skips_with_a_warning(caplog):
    with mock.patch.dict(sys.modules, {"campaigns.channels.sms": None}), caplog.at_level(logging.WARNING):
        counts = tasks.sms_replies_pull.apply().get()

    assert counts["pulled"] == 0
    assert "sms_replies_pull_skipped reason=no_sms_backend_module" in caplog.text


def test_the_default_backend_comes_from_the_sms_channel_module():
    fake_module = SimpleNamespace(sms_backend=lambda: FakeBackend([_reply(text="hello", provider_id="m-1")]))
    _customer()

    with mock.patch.dict(sys.modules, {"campaigns.channels.sms": fake_module}):
        counts = tasks.sms_replies_pull.apply().get()

    assert counts["recorded"] == 1
    assert SmsReply.objects.get().provider_id == "m-1"


def test_the_task_is_registered_under_its_beat_name():
    from config.celery import app

    assert "consent.sms_replies_pull" in app.tasks
