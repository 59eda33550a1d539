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
from campaigns.sending import deliveries_claim, deliveries_recover_abandoned, deliveries_send_chunk
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


def test_an_in_app_chunk_is_sent_in_a_fixed_number_of_queries():
    # Claims load only some customer fields: a field a message reads but the claim left out
    # would cost a query per message, and this count would grow with the batch.
    def measure(n):
        customers_with_consent(n, channels=("in_app",), timezone="Asia/Shanghai")
        campaign = campaign_for(channels=("in_app",))
        type(campaign.in_app_template).objects.filter(channel="in_app").update(
            title="{{ customer.first_name }}", body="{{ customer.name }} {{ favourite_category|default:'-' }}",
            deep_link="app://{{ customer.external_id }}")
        run = materialized(campaign)
        ids = pending_ids(run, "in_app")
        with CaptureQueriesContext(connection) as ctx:
            result = deliveries_send_chunk(delivery_ids=ids, channel="in_app")
        assert result.counts["sent"] == len(ids) >= n
        return len(ctx.captured_queries)

    assert measure(3) == measure(40)


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


# Handing over, group by group --------------------------------------------------------------


class ScriptedTransport(Transport):
    """Records each address it sends to; ``before(message, sent_so_far)`` runs first: where a
    test makes something happen while a claimed batch goes out."""

    channel = "email"

    def __init__(self, before=None):
        self.sent, self.before = [], before

    def send(self, message):
        if self.before is not None:
            self.before(message, len(self.sent))
        self.sent.append(message.to)
        return f"id-{message.delivery_id}"


@pytest.fixture
def groups_of(settings, monkeypatch):
    """Hand-over groups of exactly ``size`` (after a first group of one fifth of it): the pace
    never shrinks them."""
    from campaigns import sending

    def configure(size):
        settings.CAMPAIGN_HAND_OVER_GROUP = size
        monkeypatch.setattr(sending, "HAND_OVER_SECONDS", 3600)

    return configure


def test_each_group_gets_its_permits_then_a_consent_check_then_the_provider(groups_of, monkeypatch):
    # given: ten recipients, groups of four (the first of one)
    from campaigns import sending
    from campaigns.ratelimit import RateLimiter

    groups_of(4)
    customers_with_consent(10)
    run = materialized(campaign_for())
    events = []
    real_acquire, real_hand_over = RateLimiter.acquire, sending.deliveries_hand_over
    monkeypatch.setattr(RateLimiter, "acquire",
                        lambda self, up_to=1: events.append(("permits", real_acquire(self, up_to))) or events[-1][1])

    def hand_over(**kwargs):
        events.append(("check", len(kwargs["deliveries"])))
        return real_hand_over(**kwargs)

    monkeypatch.setattr(sending, "deliveries_hand_over", hand_over)
    transport = ScriptedTransport(before=lambda message, _: events.append(("send", 1)))

    # when
    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=transport)

    # then: for every group, its permits, one check of all of it, then its messages
    assert events == [
        ("permits", 1), ("check", 1), ("send", 1),
        ("permits", 4), ("check", 4), *[("send", 1)] * 4,
        ("permits", 4), ("check", 4), *[("send", 1)] * 4,
        ("permits", 1), ("check", 1), ("send", 1),
    ]
    assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) == {"sent"}


def test_an_opt_out_while_the_batch_is_claimed_stops_that_customers_message(groups_of):
    # given: a claimed batch of six; while the first group goes out, one customer clicks the
    # one-click unsubscribe and another's address bounces elsewhere
    groups_of(5)
    customers = customers_with_consent(6)
    run = materialized(campaign_for())
    leaves, bounced = customers[4], customers[5]

    def meanwhile(message, sent_so_far):
        if sent_so_far == 0:
            consent_withdraw(customer=leaves, channel="email", source="one_click")
            suppression_add(channel="email", address=bounced.email, reason="hard_bounce")

    transport = ScriptedTransport(before=meanwhile)

    result = deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=transport)

    # then: the next group's check stopped both messages, with the reason
    assert sorted(transport.sent) == sorted(c.email for c in customers[:4])
    got = {d.customer_id: (d.status, d.skip_reason) for d in Delivery.objects.filter(run=run)}
    assert got[leaves.pk] == ("skipped", "consent") and got[bounced.pk] == ("skipped", "suppressed")
    assert (result.counts["sent"], result.counts["skipped_consent"], result.counts["skipped_suppressed"]) == (4, 1, 1)


def test_sms_switched_off_while_the_batch_is_claimed_stops_the_next_group(groups_of, settings, tmp_path):
    groups_of(5)
    settings.SMS_BACKEND, settings.SMS_FILE_PATH = "file", str(tmp_path / "sms.jsonl")
    customers_with_consent(3, channels=("sms",), timezone="UTC")
    ChannelPolicy.objects.filter(channel="sms").update(quiet_hours_enabled=False)
    run = materialized(campaign_for(channels=("sms",)))
    transport = SmsTransport(backend=FileSmsBackend(path=str(tmp_path / "sms.jsonl")))
    real_send = transport.send

    def send_then_switch_off(message):
        ContactPolicy.objects.update(sms_enabled=False)
        return real_send(message)

    transport.send = send_then_switch_off

    deliveries_send_chunk(delivery_ids=pending_ids(run, "sms"), channel="sms", transport=transport)

    assert sorted(Delivery.objects.filter(run=run).values_list("status", "skip_reason")) == [
        ("sent", ""), ("skipped", "channel_off"), ("skipped", "channel_off")]


@pytest.mark.parametrize("then, expected", [
    ("paused", {("sent", "", 1), ("pending", "", 0)}),
    ("cancelled", {("sent", "", 1), ("skipped", "cancelled", 1)}),
])
def test_a_run_paused_or_cancelled_while_its_batch_is_claimed_sends_no_further_group(groups_of, then, expected):
    groups_of(5)
    customers_with_consent(4)
    run = materialized(campaign_for())
    transport = ScriptedTransport(before=lambda message, n: CampaignRun.objects.filter(pk=run.pk).update(status=then))

    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=transport)

    # a paused run's deliveries wait for the resume, their attempt given back
    assert len(transport.sent) == 1
    assert set(Delivery.objects.filter(run=run).values_list("status", "skip_reason", "attempts")) == expected


def test_groups_shrink_to_what_a_slow_provider_sends_in_a_quarter_second(settings, monkeypatch):
    import time as real_time

    from campaigns import sending

    settings.CAMPAIGN_HAND_OVER_GROUP = 20
    customers_with_consent(12)
    run = materialized(campaign_for())
    sizes = []
    real_hand_over = sending.deliveries_hand_over
    monkeypatch.setattr(sending, "deliveries_hand_over",
                        lambda **kw: sizes.append(len(kw["deliveries"])) or real_hand_over(**kw))
    slow = ScriptedTransport(before=lambda message, n: real_time.sleep(0.1))  # ten messages a second

    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=slow)

    assert sizes[0] == 4 and all(size <= 3 for size in sizes[1:]) and sum(sizes) == 12


def test_the_hand_over_checks_what_the_claim_checks(groups_of):
    # Parity of the two forms of "may we still send this?": the claim's ORM conditions and the
    # hand-over's SQL. Two runs over the same customers, materialized while all may be sent;
    # then their states change; the first run's batch was claimed before, the second's after.
    groups_of(50)
    stays, withdrawn, suppressed, sms_only, regranted = customers_with_consent(5)
    customers_with_consent(0)
    first, second = materialized(campaign_for()), materialized(campaign_for())
    held = deliveries_claim(delivery_ids=pending_ids(first))
    consent_withdraw(customer=withdrawn, channel="email", source="one_click")
    suppression_add(channel="email", address=suppressed.email, reason="complaint")
    consent_withdraw(customer=sms_only, channel="email", source="preference_center")
    from consent.services import ConsentDecision, consent_record_bulk

    consent_record_bulk(decisions=[ConsentDecision(customer_id=sms_only.pk, channel="sms", action="grant", source="import")])
    consent_withdraw(customer=regranted, channel="email", source="one_click")
    consent_record_bulk(decisions=[ConsentDecision(customer_id=regranted.pk, channel="email", action="grant",
                                                   source="preference_center")])

    from campaigns.sending import deliveries_hand_over
    from collections import Counter

    deliveries_hand_over(deliveries=held, token=held[0].claimed_at, now=timezone.now(), counts=Counter())
    deliveries_claim(delivery_ids=pending_ids(second))

    def verdicts(run):
        return {d.customer_id: d.skip_reason for d in Delivery.objects.filter(run=run)}

    assert verdicts(first) == verdicts(second) == {
        stays.pk: "", withdrawn.pk: "consent", suppressed.pk: "suppressed", sms_only.pk: "consent", regranted.pk: "",
    }


def test_a_batch_is_handed_over_and_marked_in_two_statements_per_group_whatever_its_size(groups_of):
    groups_of(10)

    def measure(n):
        customers_with_consent(n)
        run = materialized(campaign_for())
        ids = pending_ids(run)
        with CaptureQueriesContext(connection) as ctx:
            result = deliveries_send_chunk(delivery_ids=ids, channel="email")
        assert result.counts["sent"] == len(ids) >= n
        sql = [q["sql"] for q in ctx.captured_queries]
        hand_overs = [i for i, q in enumerate(sql) if q.startswith("WITH v AS MATERIALIZED")]
        marks = [q for q in sql if "UPDATE" in q and "provider_id" in q]
        assert len(marks) == len(hand_overs)  # one of each per group, none per message
        per_group = hand_overs[1] - hand_overs[0]  # a hand-over and a mark, with their transaction
        return len(sql), len(hand_overs), per_group

    small, large = measure(3), measure(40)  # groups of 2 + 1, and 2 + 10 + 10 + 10 + 10 + 1

    assert (small[1], large[1]) == (2, 6)
    assert small[2] == large[2] and large[0] - small[0] == (large[1] - small[1]) * small[2]
    # each delivery got its own Message-ID (3 + 43: the second campaign reaches the first 3 too)
    provider_ids = list(Delivery.objects.filter(status="sent").values_list("provider_id", flat=True))
    assert len(provider_ids) == len(set(provider_ids)) == 46 and all(p.startswith("<") for p in provider_ids)


def test_sms_groups_cost_a_fixed_number_of_queries_whatever_the_message(groups_of, settings, tmp_path):
    # Claims load only some customer fields: a field an SMS reads but the claim left out would
    # cost a query per message.
    groups_of(10)
    settings.SMS_BACKEND, settings.SMS_FILE_PATH = "file", str(tmp_path / "sms.jsonl")
    ChannelPolicy.objects.filter(channel="sms").update(quiet_hours_enabled=False)

    def measure(n):
        customers_with_consent(n, channels=("sms",), timezone="Asia/Shanghai")
        campaign = campaign_for(channels=("sms",))
        type(campaign.sms_template).objects.filter(channel="sms").update(
            sms_text="{{ customer.name }}，{{ customer.locale }} {% now 'H' %}")
        run = materialized(campaign)
        with CaptureQueriesContext(connection) as ctx:
            result = deliveries_send_chunk(delivery_ids=pending_ids(run, "sms"), channel="sms")
        groups = sum(q["sql"].startswith("WITH v AS MATERIALIZED") for q in ctx.captured_queries)
        return len(ctx.captured_queries), groups, result.counts["sent"]

    small, large = measure(3), measure(20)  # 3 messages in 2 groups; 23 in 2 + 10 + 10 + 1

    assert (small[1:], large[1:]) == ((2, 3), (4, 23))
    assert (large[0] - small[0]) % (large[1] - small[1]) == 0


# A worker that dies ------------------------------------------------------------------------


def test_a_worker_killed_mid_group_leaves_that_group_unknown_and_nothing_is_sent_twice(groups_of, settings):
    # given: groups of five; the worker is killed (no handler runs, as with SIGKILL) while the
    # second group is going out, after the provider took two of its messages
    groups_of(5)
    settings.CAMPAIGN_LEASE_SECONDS = 120
    customers_with_consent(12)
    run = materialized(campaign_for())
    ids = pending_ids(run)

    def killed(message, sent_so_far):
        if sent_so_far == 3:
            raise SystemExit("SIGKILL")

    first = ScriptedTransport(before=killed)
    with pytest.raises(SystemExit):
        deliveries_send_chunk(delivery_ids=ids, channel="email", transport=first)
    statuses = dict(Delivery.objects.filter(run=run).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["sent"] + ["sending"] * 5 + ["claimed"] * 6

    # when: the chunk is redelivered at once: nothing of the batch is pending, nothing is sent
    second = ScriptedTransport()
    assert deliveries_send_chunk(delivery_ids=ids, channel="email", transport=second).counts["sent"] == 0
    # and the lease runs out: the sweeper's recovery
    later = timezone.now() + timedelta(seconds=121)
    assert {k: v for k, v in deliveries_recover_abandoned(now=later).items() if k != "run_ids"} == {
        "released": 6, "failed": 0, "unknown": 5}
    deliveries_send_chunk(delivery_ids=ids, channel="email", transport=second)

    # then: the group the provider was handling is unknown, with time and reason, never re-sent;
    # the claimed ones, never handed over, went out once
    rows = {d.pk: d for d in Delivery.objects.filter(run=run)}
    assert [rows[pk].status for pk in ids] == ["sent"] + ["unknown"] * 5 + ["sent"] * 6
    unknown = rows[ids[1]]
    assert unknown.unknown_at == later and "Outcome unknown since" in unknown.note and "120 s" in unknown.note
    everyone = first.sent + second.sent
    assert len(everyone) == len(set(everyone)) == 9
    assert run_refresh_counters(run=run).unknown == 5


def test_a_holder_whose_lease_ran_out_cannot_touch_what_another_worker_holds(settings):
    from collections import Counter

    from campaigns.sending import _mark_sent_many, deliveries_hand_over

    settings.CAMPAIGN_LEASE_SECONDS = 60
    customers_with_consent(2)
    run = materialized(campaign_for())
    stalled = deliveries_claim(delivery_ids=pending_ids(run))  # a worker that then stalls
    deliveries_recover_abandoned(now=timezone.now() + timedelta(seconds=61))
    other = deliveries_claim(delivery_ids=pending_ids(run), now=timezone.now() + timedelta(seconds=62))
    other_token = other[0].claimed_at

    # when: the stalled worker wakes up and goes on
    moved = deliveries_hand_over(deliveries=stalled, token=stalled[0].claimed_at, now=timezone.now(), counts=Counter())
    _mark_sent_many([(d, "stale-id") for d in stalled], timezone.now(), stalled[0].claimed_at)

    # then: nothing it wrote landed
    assert moved == []
    assert set(Delivery.objects.filter(run=run).values_list("status", "claimed_at", "provider_id")) == {
        ("claimed", other_token, "")}


def test_a_late_answer_resolves_an_unknown_outcome_and_keeps_its_note(settings):
    from collections import Counter

    from campaigns.sending import _record_answers, deliveries_hand_over

    customers_with_consent(1)
    run = materialized(campaign_for())
    claimed = deliveries_claim(delivery_ids=pending_ids(run))
    handed = deliveries_hand_over(deliveries=claimed, token=claimed[0].claimed_at, now=timezone.now(), counts=Counter())
    deliveries_recover_abandoned(now=timezone.now() + timedelta(hours=1))  # the worker looked dead
    assert Delivery.objects.get(run=run).status == "unknown"

    _record_answers(handed=handed, results=["<late@id>"], token=handed[0].claimed_at, counts=Counter(),
                    clock=timezone.now)

    delivery = Delivery.objects.get(run=run)
    assert (delivery.status, delivery.provider_id) == ("sent", "<late@id>")
    assert delivery.unknown_at is not None and delivery.note.startswith("Outcome unknown since")


def test_claims_are_renewed_while_a_slow_batch_goes_out(settings):
    import time as real_time

    settings.CAMPAIGN_LEASE_SECONDS = 1  # renewed every quarter second
    settings.CAMPAIGN_HAND_OVER_GROUP = 1
    customers_with_consent(4)
    run = materialized(campaign_for())
    ids = pending_ids(run)
    leases = []

    def slow(message, sent_so_far):
        real_time.sleep(0.3)
        leases.append(set(Delivery.objects.filter(pk__in=ids, status="claimed").values_list("claimed_at", flat=True)))

    deliveries_send_chunk(delivery_ids=ids, channel="email", transport=ScriptedTransport(before=slow))

    renewed = [lease for lease in leases if lease]
    assert len(renewed) >= 2 and max(renewed[-1]) > max(renewed[0])


def test_a_batch_whose_workers_keep_dying_ends_failed_instead_of_looping(settings):
    settings.CAMPAIGN_MAX_ATTEMPTS = 2
    customers_with_consent(1)
    run = materialized(campaign_for())
    for attempt in range(2):
        deliveries_claim(delivery_ids=pending_ids(run))  # and the worker dies: no hand-over
        outcome = deliveries_recover_abandoned(now=timezone.now() + timedelta(hours=attempt + 1))

    assert (outcome["released"], outcome["failed"]) == (0, 1)
    delivery = Delivery.objects.get(run=run)
    assert (delivery.status, delivery.attempts) == ("failed", 2) and "never sent" in delivery.error


# Failures in the middle of a batch: every one records what was sent and puts the rest back ---


def outcome(run):
    return sorted(Delivery.objects.filter(run=run).values_list("status", "attempts"))


def test_the_cache_failing_mid_batch_keeps_what_was_sent_and_puts_the_rest_back(groups_of, monkeypatch):
    from campaigns.ratelimit import RateLimiter

    groups_of(5)
    ChannelPolicy.objects.filter(channel="email").update(rate_per_second=1000)
    customers_with_consent(6)
    run = materialized(campaign_for())
    ids = pending_ids(run)
    calls = []
    real_acquire = RateLimiter.acquire

    def redis_goes_away(self, up_to=1):
        calls.append(up_to)
        if len(calls) == 2:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return real_acquire(self, up_to)

    monkeypatch.setattr(RateLimiter, "acquire", redis_goes_away)
    transport = ScriptedTransport()

    with pytest.raises(ConnectionError):
        deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport)

    # the message already accepted stays sent; the five never handed over wait for a retry
    assert outcome(run) == [("pending", 1)] * 5 + [("sent", 1)]
    assert all(d.not_before and d.error.startswith("chunk failed: ConnectionError")
               for d in Delivery.objects.filter(run=run, status="pending"))
    monkeypatch.setattr(RateLimiter, "acquire", real_acquire)
    assert deliveries_dispatch_due(now=timezone.now() + timedelta(hours=1)) == 5
    deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport, now=timezone.now() + timedelta(hours=1))
    assert len(transport.sent) == len(set(transport.sent)) == 6


@pytest.mark.parametrize("fails", ["hand_over", "heartbeat", "grants", "render"])
def test_the_database_failing_before_a_hand_over_sends_nothing_more_and_puts_the_batch_back(
        groups_of, monkeypatch, fails):
    from django.db import OperationalError

    from campaigns import sending

    groups_of(5)
    customers_with_consent(6)
    run = materialized(campaign_for())
    ids = pending_ids(run)
    real = {"hand_over": sending.deliveries_hand_over, "heartbeat": sending.runs_heartbeat,
            "grants": sending._issue_grants, "render": sending._render}
    name = {"hand_over": "deliveries_hand_over", "heartbeat": "runs_heartbeat", "grants": "_issue_grants",
            "render": "_render"}[fails]
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if fails != "hand_over" or len(calls) == 2:
            try:
                raise OperationalError("server closed the connection unexpectedly")
            except OperationalError as exc:
                if fails == "render":  # the template engine wraps what it catches
                    raise RuntimeError("render") from exc
                raise
        return real[fails](*args, **kwargs)

    monkeypatch.setattr(sending, name, flaky)
    transport = ScriptedTransport()

    with pytest.raises((OperationalError, RuntimeError)):
        deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport)

    sent_before = 1 if fails == "hand_over" else 0
    assert len(transport.sent) == sent_before
    assert outcome(run) == [("pending", 1)] * (6 - sent_before) + [("sent", 1)] * sent_before
    assert not Delivery.objects.filter(run=run, status__in=["claimed", "sending", "unknown", "failed"]).exists()


def test_a_transport_that_raises_leaves_its_group_unknown_at_once_and_puts_the_rest_back(groups_of):
    groups_of(5)
    customers_with_consent(6)
    run = materialized(campaign_for())

    class Exploding(ScriptedTransport):
        def start_many(self, messages, *, before_each=None):
            if self.sent:
                raise RuntimeError("lane pool gone")
            return super().start_many(messages)

    with pytest.raises(RuntimeError):
        deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=Exploding())

    assert outcome(run) == [("sent", 1)] + [("unknown", 1)] * 5
    unknown = Delivery.objects.filter(run=run, status="unknown").first()
    assert "the transport failed: RuntimeError: lane pool gone" in unknown.note and unknown.unknown_at


def test_a_mark_that_fails_once_is_recorded_by_the_recovery(groups_of, monkeypatch):
    from django.db import OperationalError

    from campaigns import sending

    groups_of(5)
    customers_with_consent(3)
    run = materialized(campaign_for())
    real_mark = sending._mark_sent_many
    calls = []

    def blip(*args):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("could not serialize access")
        return real_mark(*args)

    monkeypatch.setattr(sending, "_mark_sent_many", blip)
    with pytest.raises(OperationalError):
        deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=ScriptedTransport())

    # the provider's answer was kept in memory and recorded; the rest released
    assert outcome(run) == [("pending", 1), ("pending", 1), ("sent", 1)]


def test_a_mark_that_cannot_be_written_leaves_the_group_for_the_sweeper_never_resent(groups_of, monkeypatch, settings):
    from django.db import OperationalError

    from campaigns import sending

    groups_of(5)
    settings.CAMPAIGN_LEASE_SECONDS = 60
    customers_with_consent(3)
    run = materialized(campaign_for())
    ids = pending_ids(run)

    def database_gone(*args, **kwargs):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(sending, "_mark_sent_many", database_gone)
    monkeypatch.setattr(sending, "deliveries_mark_unknown", database_gone)
    transport = ScriptedTransport()
    with pytest.raises(OperationalError):
        deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport)
    monkeypatch.undo()
    assert outcome(run) == [("pending", 1), ("pending", 1), ("sending", 1)]

    deliveries_recover_abandoned(now=timezone.now() + timedelta(seconds=61))
    deliveries_dispatch_due(now=timezone.now() + timedelta(hours=1))
    deliveries_send_chunk(delivery_ids=ids, channel="email", transport=transport, now=timezone.now() + timedelta(hours=1))

    assert outcome(run) == [("sent", 2), ("sent", 2), ("unknown", 1)]
    assert len(transport.sent) == len(set(transport.sent)) == 3


def test_when_even_the_recovery_cannot_write_the_claims_wait_for_their_lease(groups_of, monkeypatch, settings, caplog):
    from django.db import OperationalError
    from django.db.models.query import QuerySet

    from campaigns import sending
    from campaigns.ratelimit import RateLimiter

    groups_of(5)
    settings.CAMPAIGN_LEASE_SECONDS = 60
    customers_with_consent(2)
    run = materialized(campaign_for())

    def gone(*args, **kwargs):
        raise OperationalError("connection refused")

    def cache_and_database_gone(*args, **kwargs):
        monkeypatch.setattr(QuerySet, "update", gone)  # every write of the recovery fails too
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(RateLimiter, "acquire", cache_and_database_gone)
    with pytest.raises(ConnectionError):
        sending.deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email", transport=ScriptedTransport())
    monkeypatch.undo()

    assert "deliveries_release_after_crash_failed" in caplog.text
    assert outcome(run) == [("claimed", 1), ("claimed", 1)]
    assert deliveries_recover_abandoned(now=timezone.now() + timedelta(seconds=61))["released"] == 2


def test_sending_a_delivery_keeps_the_notes_that_explain_it():
    customers_with_consent(1)
    run = materialized(campaign_for())
    Delivery.objects.filter(run=run).update(error="421 try later", note="Re-sent by ops at 10:00")

    deliveries_send_chunk(delivery_ids=pending_ids(run), channel="email")

    assert Delivery.objects.values_list("status", "error", "note").get(run=run) == (
        "sent", "421 try later", "Re-sent by ops at 10:00")
