"""Claim and send (campaigns.sending): consent re-checked at claim, retries, failures, offers."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.channels.base import Transport, TransportError
from campaigns.channels.in_app import InAppTransport
from campaigns.channels.sms import FileSmsBackend, SmsTransport
from campaigns.materialize import run_materialize
from campaigns.models import CampaignRun, ChannelPolicy, ContactPolicy, Delivery, InboxMessage, OfferGrant
from campaigns.sending import STALE_NOTE, deliveries_claim, deliveries_release_stale, deliveries_send_chunk
from campaigns.services import deliveries_dispatch_due, run_dispatch, run_refresh_counters
from consent.models import Suppression
from consent.services import consent_withdraw, suppression_add
from tests.campaigns.pipeline_helpers import (
    NOON_UTC, campaign_for, customers_with_consent, new_run,
)
from tests.factories import OfferFactory

pytestmark = pytest.mark.django_db


def materialized(campaign, *, now=None):
    now = now or timezone.now()
    run = new_run(campaign, now=now)
    run_materialize(run=run, now=now)
    return run


def pending_ids(run, channel="email"):
    return list(Delivery.objects.filter(run=run, status="pending", channel=channel).order_by("pk").values_list("pk", flat=True))


class FlakyTransport(Transport):
    """Raises the queued errors first, then succeeds."""

    channel = "email"

    def __init__(self, errors):
        self.errors = list(errors)
        self.sent = []

    def send(self, message):
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(message)
        return f"id-{len(self.sent)}"


def test_email_chunk_is_sent_with_rfc8058_headers_and_marked_sent():
    customers = customers_with_consent(3)
    run = materialized(campaign_for())

    result = deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email")

    assert result.counts["sent"] == 3
    assert len(mail.outbox) == 3
    message = mail.outbox[0]
    assert message.to[0].endswith(f"<{customers[0].email}>")
    assert message.extra_headers["List-Unsubscribe"].startswith("<https://winback.example.com/consent/")
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.alternatives[0][1] == "text/html"
    delivery = Delivery.objects.get(run=run, customer=customers[0])
    assert (delivery.status, delivery.attempts, delivery.provider_id) == ("sent", 1, message.extra_headers["Message-ID"])
    assert delivery.sent_at is not None


def test_an_opt_out_between_materialization_and_claim_stops_the_message():
    # given: three customers materialized as pending
    stays, leaves, bounced = customers_with_consent(3)
    run = materialized(campaign_for())
    # when: one unsubscribes and one's address is suppressed before the chunk is claimed
    consent_withdraw(customer=leaves, channel="email", source="one_click")
    suppression_add(channel="email", address=bounced.email, reason="hard_bounce")
    result = deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email")

    # then
    assert [m.to[0].split("<")[-1].rstrip(">") for m in mail.outbox] == [stays.email]
    got = {d.customer_id: (d.status, d.skip_reason) for d in Delivery.objects.filter(run=run)}
    assert got == {stays.pk: ("sent", ""), leaves.pk: ("skipped", "consent"), bounced.pk: ("skipped", "suppressed")}
    assert (result.counts["skipped_consent"], result.counts["skipped_suppressed"]) == (1, 1)


def test_a_chunk_sent_twice_sends_each_message_once():
    customers_with_consent(2)
    run = materialized(campaign_for())
    ids = pending_ids(run)

    deliveries_send_chunk(delivery_ids=ids, channel="email")
    second = deliveries_send_chunk(delivery_ids=ids, channel="email")

    assert len(mail.outbox) == 2
    assert second.counts["sent"] == 0
    assert set(Delivery.objects.filter(run=run).values_list("attempts", flat=True)) == {1}


def test_a_paused_run_claims_nothing():
    customers_with_consent(2)
    run = materialized(campaign_for())
    CampaignRun.objects.filter(pk=run.pk).update(status="paused")

    result = deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email")

    assert result.counts["sent"] == 0 and not mail.outbox
    assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) == {"pending"}


def test_a_transient_failure_is_retried_with_backoff_and_then_sent(settings):
    settings.CAMPAIGN_RETRY_BASE_SECONDS = 60
    customers_with_consent(1)
    run = materialized(campaign_for())
    ids = pending_ids(run)
    transport = FlakyTransport([TransportError("421 try later")])
    before = timezone.now()

    first = deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport)

    delivery = Delivery.objects.get(pk=ids[0])
    assert first.counts["retry"] == 1
    assert (delivery.status, delivery.attempts, delivery.error) == ("pending", 1, "421 try later")
    assert before + timedelta(seconds=59) <= delivery.not_before <= timezone.now() + timedelta(seconds=61)
    # Not due yet: a claim now takes nothing.
    assert deliveries_claim(delivery_ids=ids) == []

    # when: the per-minute pickup runs after the backoff
    queued = deliveries_dispatch_due(now=delivery.not_before + timedelta(seconds=1))
    deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport, now=delivery.not_before + timedelta(seconds=1))

    delivery.refresh_from_db()
    assert queued == 1
    assert (delivery.status, delivery.attempts, delivery.provider_id) == ("sent", 2, "id-1")
    assert len(transport.sent) == 1


def test_transient_failures_fail_the_delivery_after_max_attempts(settings):
    settings.CAMPAIGN_MAX_ATTEMPTS = 2
    customers_with_consent(1)
    run = materialized(campaign_for())
    ids = pending_ids(run)
    transport = FlakyTransport([TransportError("timeout"), TransportError("timeout")])

    deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport)
    later = timezone.now() + timedelta(hours=2)
    Delivery.objects.filter(pk__in=ids).update(not_before=None)
    result = deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport, now=later)

    delivery = Delivery.objects.get(pk=ids[0])
    assert (delivery.status, delivery.attempts, result.counts["failed"]) == ("failed", 2, 1)


def test_a_bad_address_fails_permanently_and_is_suppressed(caplog):
    customer = customers_with_consent(1)[0]
    run = materialized(campaign_for())
    transport = FlakyTransport([TransportError("550 no such user", bad_address=True)])

    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=transport)

    delivery = Delivery.objects.get(run=run)
    assert (delivery.status, delivery.error) == ("failed", "550 no such user")
    assert Suppression.objects.filter(channel="email", address=customer.email, reason="hard_bounce").exists()
    assert "delivery_failed" in caplog.text


def test_an_unexpected_exception_is_treated_as_transient():
    customers_with_consent(1)
    run = materialized(campaign_for())
    transport = FlakyTransport([RuntimeError("boom")])

    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=transport)

    assert Delivery.objects.get(run=run).status == "pending"


def test_a_template_that_fails_for_a_customer_fails_only_that_delivery():
    customers_with_consent(2)
    campaign = campaign_for()
    campaign.email_template.subject = "{% if %}"
    campaign.email_template.save()
    run = materialized(campaign)

    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email")

    assert list(Delivery.objects.filter(run=run).values_list("status", flat=True).distinct()) == ["failed"]
    assert "render failed" in Delivery.objects.filter(run=run).first().error


def test_budget_exhausted_skip_mode_skips_and_counts():
    offer = OfferFactory(budget=1)
    customers_with_consent(3)
    run = materialized(campaign_for(offer=offer, when_budget_exhausted="skip"))

    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email")
    run_refresh_counters(run=run)

    assert len(mail.outbox) == 1
    sent = Delivery.objects.get(run=run, status="sent")
    grant = OfferGrant.objects.get(delivery=sent)
    assert grant.code in mail.outbox[0].body
    assert (run.sent, run.skipped_budget, run.offers_granted, run.sent_without_offer) == (1, 2, 1, 0)


def test_budget_exhausted_send_without_offer_mode_sends_and_counts():
    offer = OfferFactory(budget=1)
    customers_with_consent(3)
    run = materialized(campaign_for(offer=offer, when_budget_exhausted="send_without_offer"))

    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email")
    run_refresh_counters(run=run)

    assert len(mail.outbox) == 3
    assert (run.sent, run.skipped_budget, run.offers_granted, run.sent_without_offer) == (3, 0, 1, 2)


def test_in_app_batch_writes_inbox_messages_with_the_unsubscribe_link():
    customers = customers_with_consent(3, channels=("in_app",))
    run = materialized(campaign_for(channels=("in_app",)))

    result = deliveries_send_chunk(delivery_ids=pending_ids(run, "in_app"), channel="in_app")

    assert result.counts["sent"] == 3
    messages = InboxMessage.objects.order_by("customer_id")
    assert [m.customer_id for m in messages] == [c.pk for c in customers]
    assert all(m.delivery.status == "sent" and m.unsubscribe_url.startswith("https://winback.example.com/") for m in messages)


def test_an_in_app_message_that_fails_is_failed_and_not_written_while_the_others_are_sent(monkeypatch):
    # In-app batches are claimed as sent and written in one transaction; a failing message
    # must come out of that "sent" again.
    customers = customers_with_consent(3, channels=("in_app",))
    run = materialized(campaign_for(channels=("in_app",)))
    from campaigns import sending

    real_render = sending._render

    def render(delivery, grant):
        if delivery.customer_id == customers[1].pk:
            raise ValueError("no such variable")
        return real_render(delivery, grant)

    monkeypatch.setattr(sending, "_render", render)
    result = deliveries_send_chunk(delivery_ids=pending_ids(run, "in_app"), channel="in_app")

    assert (result.counts["sent"], result.counts["failed"]) == (2, 1)
    failed = Delivery.objects.get(run=run, customer=customers[1])
    assert (failed.status, failed.sent_at, failed.attempts) == ("failed", None, 1)
    assert "render failed" in failed.error
    assert sorted(InboxMessage.objects.values_list("customer_id", flat=True)) == sorted(
        [customers[0].pk, customers[2].pk])
    assert all(d.sent_at is not None for d in Delivery.objects.filter(run=run, status="sent"))


def test_an_in_app_batch_that_crashes_writes_nothing_and_stays_pending(monkeypatch):
    customers_with_consent(3, channels=("in_app",))
    run = materialized(campaign_for(channels=("in_app",)))

    def crash(self, messages, *, before_each=None):
        raise SystemExit("worker killed mid-INSERT")

    monkeypatch.setattr("campaigns.channels.in_app.InAppTransport.send_many", crash)
    with pytest.raises(SystemExit):
        deliveries_send_chunk(delivery_ids=pending_ids(run, "in_app"), channel="in_app")
    monkeypatch.undo()

    assert InboxMessage.objects.count() == 0
    assert set(Delivery.objects.filter(run=run).values_list("status", "attempts", "sent_at")) == {("pending", 0, None)}
    # and the redelivered chunk sends each message once
    assert deliveries_send_chunk(delivery_ids=pending_ids(run, "in_app"), channel="in_app").counts["sent"] == 3
    assert InboxMessage.objects.count() == 3


def test_deleting_a_run_keeps_its_inbox_messages_unlinked():
    # InboxMessage.delivery has no database constraint: the ORM's SET_NULL must do its work.
    customers_with_consent(2, channels=("in_app",))
    run = materialized(campaign_for(channels=("in_app",)))
    deliveries_send_chunk(delivery_ids=pending_ids(run, "in_app"), channel="in_app")

    run.delete()

    assert Delivery.objects.count() == 0
    assert list(InboxMessage.objects.values_list("delivery_id", flat=True)) == [None, None]


@pytest.mark.parametrize("channel, where", [("in_app", "limiter"), ("in_app", "insert"), ("email", "claim")])
def test_a_chunk_that_fails_on_an_unexpected_error_is_deferred_and_picked_up_again(monkeypatch, channel, where):
    # The task fails and is acknowledged: without the deferral nothing would ever pick these
    # deliveries up again (pending, no not_before) and the run would never finish.
    from django.db import OperationalError

    from campaigns import sending, services
    from campaigns.ratelimit import RateLimiter

    customers_with_consent(3, channels=(channel,))
    run = materialized(campaign_for(channels=(channel,)))
    ids = pending_ids(run, channel)

    def boom(*args, **kwargs):
        raise {"limiter": ConnectionError("redis: connection reset")}.get(where, OperationalError("deadlock detected"))

    target = {"limiter": (RateLimiter, "acquire"), "insert": (InAppTransport, "send_many"),
              "claim": (sending, "deliveries_claim")}[where]
    monkeypatch.setattr(*target, boom)
    with pytest.raises(Exception):
        services.chunk_send(delivery_ids=ids, channel=channel)
    monkeypatch.undo()

    deferred = list(Delivery.objects.filter(run=run).values_list("status", "attempts", "error"))
    assert {(status, attempts) for status, attempts, _ in deferred} == {("pending", 1)}
    assert all(error.startswith("chunk failed:") for _, _, error in deferred)
    assert InboxMessage.objects.count() == 0

    later = timezone.now() + timedelta(hours=1)
    assert deliveries_dispatch_due(now=later) == 3  # queued again, as a chunk task
    assert services.chunk_send(delivery_ids=ids, channel=channel).counts["sent"] == 3  # what that task runs


def test_a_batch_that_always_fails_ends_failed_after_max_attempts(monkeypatch, settings):
    from django.db import OperationalError

    from campaigns import services

    settings.CAMPAIGN_MAX_ATTEMPTS = 2
    customers_with_consent(2, channels=("in_app",))
    run = materialized(campaign_for(channels=("in_app",)))

    def boom(self, messages, *, before_each=None):
        raise OperationalError("statement timeout")

    monkeypatch.setattr(InAppTransport, "send_many", boom)
    for _ in range(2):
        ids = list(Delivery.objects.filter(run=run, status="pending").values_list("pk", flat=True))
        Delivery.objects.filter(pk__in=ids).update(not_before=None)  # as dispatch_due does when due
        with pytest.raises(OperationalError):
            services.chunk_send(delivery_ids=ids, channel="in_app")

    assert set(Delivery.objects.filter(run=run).values_list("status", "attempts")) == {("failed", 2)}


def test_sms_outside_the_window_at_claim_time_is_deferred_without_costing_an_attempt(tmp_path):
    # given: materialized at 18:00 in Shanghai (window open), claimed at 22:00 (closed)
    customers_with_consent(1, channels=("sms",), timezone="Asia/Shanghai")
    run = materialized(campaign_for(channels=("sms",)), now=NOON_UTC)
    late = NOON_UTC + timedelta(hours=4)
    transport = SmsTransport(backend=FileSmsBackend(path=str(tmp_path / "out.jsonl")), clock=lambda: late)

    result = deliveries_send_chunk(delivery_ids=pending_ids(run, "sms"), channel="sms", transport=transport, now=late)

    delivery = Delivery.objects.get(run=run)
    assert (delivery.status, delivery.attempts, result.counts["deferred_quiet"]) == ("deferred", 0, 1)
    assert delivery.not_before == datetime(2024, 6, 4, 0, 0, tzinfo=dt_timezone.utc)  # 08:00 in Shanghai
    assert not (tmp_path / "out.jsonl").exists()


def test_sms_switched_off_after_materialization_is_skipped_at_claim(settings):
    settings.SMS_BACKEND = "file"
    customers_with_consent(1, channels=("sms",), timezone="UTC")
    ChannelPolicy.objects.filter(channel="sms").update(quiet_hours_enabled=False)
    run = materialized(campaign_for(channels=("sms",)))
    ContactPolicy.objects.update(sms_enabled=False)

    deliveries_send_chunk(delivery_ids=pending_ids(run, "sms"), channel="sms")

    assert Delivery.objects.values_list("status", "skip_reason").get(run=run) == ("skipped", "channel_off")


def test_stale_claims_of_a_dead_worker_are_released():
    customers_with_consent(1)
    run = materialized(campaign_for())
    claimed = deliveries_claim(delivery_ids=pending_ids(run))
    assert [d.status for d in claimed] == ["sending"]

    assert deliveries_release_stale(now=timezone.now() + timedelta(minutes=5)) == 0
    assert deliveries_release_stale(now=timezone.now() + timedelta(minutes=16)) == 1
    assert Delivery.objects.get(run=run).status == "pending"


def test_claim_is_a_fixed_number_of_queries():
    def measure(n):
        customers_with_consent(n)
        run = materialized(campaign_for())
        ids = pending_ids(run)
        with CaptureQueriesContext(connection) as ctx:
            claimed = deliveries_claim(delivery_ids=ids)
        assert len(claimed) == len(ids) >= n
        return len(ctx.captured_queries)

    assert measure(3) == measure(60)


def test_run_dispatch_sync_sends_everything_and_finishes_the_run():
    customers_with_consent(4)
    run = materialized(campaign_for())

    run_dispatch(run=run, sync=True)

    run.refresh_from_db()
    assert (run.status, run.sent, run.targeted) == ("done", 4, 4)
    assert run.finished_at is not None
    assert len(mail.outbox) == 4


def test_an_email_batch_is_marked_sent_in_a_fixed_number_of_queries():
    def measure(n):
        customers_with_consent(n)
        run = materialized(campaign_for())
        ids = pending_ids(run)
        with CaptureQueriesContext(connection) as ctx:
            result = deliveries_send_chunk(delivery_ids=ids, channel="email")
        assert result.counts["sent"] == len(ids) >= n
        marks = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("UPDATE") and "provider_id" in q["sql"]]
        assert len(marks) == 1  # one UPDATE for the batch, not one per message
        return len(ctx.captured_queries)

    assert measure(3) == measure(40)
    # each delivery got its own Message-ID (3 + 43: the second campaign reaches the first 3 too)
    provider_ids = list(Delivery.objects.filter(status="sent").values_list("provider_id", flat=True))
    assert len(provider_ids) == len(set(provider_ids)) == 46 and all(p.startswith("<") for p in provider_ids)


@pytest.mark.parametrize("channel", ["in_app", "sms"])
def test_a_chunk_on_each_channel_is_sent_in_a_fixed_number_of_queries(channel, settings, tmp_path):
    # Claims load only some customer fields: a field a message reads but the claim left out
    # would cost a query per message, and this count would grow with the batch.
    settings.SMS_BACKEND, settings.SMS_FILE_PATH = "file", str(tmp_path / "sms.jsonl")
    ChannelPolicy.objects.filter(channel="sms").update(quiet_hours_enabled=False)
    template = {"in_app": {"title": "{{ customer.first_name }}", "body": "{{ customer.name }} {{ favourite_category|default:'-' }}",
                           "deep_link": "app://{{ customer.external_id }}"},
                "sms": {"sms_text": "{{ customer.name }}，{{ customer.locale }} {% now 'H' %}"}}[channel]

    def measure(n):
        customers_with_consent(n, channels=(channel,), timezone="Asia/Shanghai")
        campaign = campaign_for(channels=(channel,))
        type(getattr(campaign, f"{channel}_template")).objects.filter(channel=channel).update(**template)
        run = materialized(campaign)
        ids = pending_ids(run, channel)
        with CaptureQueriesContext(connection) as ctx:
            result = deliveries_send_chunk(delivery_ids=ids, channel=channel)
        assert result.counts["sent"] == len(ids) >= n
        return len(ctx.captured_queries)

    assert measure(3) == measure(40)


def test_a_crash_between_send_and_mark_leaves_the_batch_claimed_and_release_notes_it(monkeypatch):
    # given: the worker dies after the provider took the messages, before the UPDATE
    customers_with_consent(3)
    run = materialized(campaign_for())
    ids = pending_ids(run)

    def die(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr("campaigns.sending._mark_sent_many", die)
    with pytest.raises(SystemExit):
        deliveries_send_chunk(delivery_ids=ids, channel="email")
    monkeypatch.undo()
    assert len(mail.outbox) == 3

    # when: the chunk is redelivered (acks_late) at once
    result = deliveries_send_chunk(delivery_ids=ids, channel="email")

    # then: nothing is sent again: the deliveries are still claimed
    assert result.counts["sent"] == 0 and len(mail.outbox) == 3
    assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) == {"sending"}

    # and only the stale release returns them, with a note saying they may have gone out once
    assert deliveries_release_stale(now=timezone.now() + timedelta(minutes=16)) == 3
    assert set(Delivery.objects.filter(run=run).values_list("status", "error")) == {("pending", STALE_NOTE)}


def test_a_transport_bug_on_one_message_does_not_lose_the_others():
    class HalfBroken(Transport):
        channel = "email"

        def send(self, message):
            if message.delivery_id == self.broken:
                raise RuntimeError("bug")
            return f"id-{message.delivery_id}"

    customers_with_consent(3)
    run = materialized(campaign_for())
    ids = pending_ids(run)
    transport = HalfBroken()
    transport.broken = ids[1]

    result = deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport)

    assert (result.counts["sent"], result.counts["retry"]) == (2, 1)
    statuses = dict(Delivery.objects.filter(run=run).values_list("pk", "status"))
    assert statuses == {ids[0]: "sent", ids[1]: "pending", ids[2]: "sent"}
    assert Delivery.objects.get(pk=ids[0]).provider_id == f"id-{ids[0]}"


def test_in_app_with_an_offer_grants_and_sends_each_message_once():
    customers_with_consent(3, channels=("in_app",))
    run = materialized(campaign_for(channels=("in_app",), offer=OfferFactory(budget=2)))

    result = deliveries_send_chunk(delivery_ids=pending_ids(run, "in_app"), channel="in_app")

    assert result.counts["sent"] + result.counts["skipped_budget"] == 3
    assert OfferGrant.objects.filter(run=run).count() == 2
    assert InboxMessage.objects.count() == result.counts["sent"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_in_app_does_not_hold_the_offer_row_locked_while_it_writes_the_batch(monkeypatch):
    # Grants lock the offer row (its budget); holding that lock through a whole batch would
    # serialize every in-app worker sending the campaign.
    import psycopg

    customers_with_consent(3, channels=("in_app",))
    offer = OfferFactory()
    run = materialized(campaign_for(channels=("in_app",), offer=offer))
    seen = []
    real_send_many = InAppTransport.send_many
    params = connection.get_connection_params()

    def spy(self, messages, *, before_each=None):
        with psycopg.connect(dbname=connection.settings_dict["NAME"], user=params.get("user"), host=params.get("host"),
                             port=params.get("port"), autocommit=True) as other:
            try:
                other.execute("SELECT 1 FROM campaigns_offer WHERE id = %s FOR UPDATE NOWAIT", [offer.pk])
                seen.append("free")
            except psycopg.errors.LockNotAvailable:
                seen.append("locked")
        return real_send_many(self, messages, before_each=before_each)

    monkeypatch.setattr(InAppTransport, "send_many", spy)
    result = deliveries_send_chunk(delivery_ids=pending_ids(run, "in_app"), channel="in_app")

    assert seen == ["free"] and result.counts["sent"] == 3
