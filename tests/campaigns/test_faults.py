"""A campaign survives faults: sent by a real worker process to a local SMTP server, with a fault
injected mid-send, it ends with every customer sent, skipped with a reason, failed with a reason
or "unknown" with a reason; nobody gets it twice or after opting out; and the run finishes on its
own (beat's dispatch_due and sweep sent every second, a lease of two seconds).

PostgreSQL and a Redis broker: the worker runs in its own process (a real SIGKILL) and shares
the test database.
"""

import time

import pytest
from django.db import connection

from campaigns.models import ChannelPolicy, Delivery
from campaigns.services import campaign_launch
from consent.services import consent_withdraw
from reactivation.models import Customer
from tests.campaigns import faults_harness as harness
from tests.campaigns.pipeline_helpers import campaign_for, customers_with_consent

pytestmark = [
    pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

LEASE_SECONDS = 2
GROUP = 20
BOUND_SECONDS = 50  # from the launch to a finished run


@pytest.fixture
def fault_setup(settings, monkeypatch, tmp_path):
    """The test process's settings match the worker's; tasks go through the broker."""
    from config.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    settings.CAMPAIGN_LEASE_SECONDS = LEASE_SECONDS
    settings.CAMPAIGN_HAND_OVER_GROUP = GROUP
    harness.flush_queues(settings.CELERY_BROKER_URL)
    return tmp_path


def start_worker(name, *, sink, tmp_path, settings, **environ):
    return harness.Worker(name=name, log_dir=tmp_path, environ=harness.worker_environ(
        database_url=harness.database_url_for(connection.settings_dict["NAME"]),
        broker_url=settings.CELERY_BROKER_URL, smtp_port=sink.port, lease_seconds=LEASE_SECONDS,
        CAMPAIGN_HAND_OVER_GROUP=GROUP, **environ)).start()


def launched(n):
    customers_with_consent(n)
    campaign = campaign_for(holdout_percent=0)
    started = time.time()
    return campaign_launch(campaign=campaign), started


def assert_survived(run, sink, started, *, unknown_at_most=2 * GROUP):
    harness.wait_until(lambda: harness.run_finished(run), timeout=BOUND_SECONDS, what="the run finishes on its own")
    outcome = harness.run_outcome(run=run, sink=sink, started=started)
    assert outcome.run_status == "done"
    assert outcome.stranded == [], "every delivery ends sent, or skipped, failed or unknown with its reason"
    assert outcome.duplicates == [], "nobody receives the campaign twice"
    assert outcome.unexplained == [], "every message received is recorded as sent or unknown"
    assert outcome.unknown <= unknown_at_most
    print(outcome.line(run.campaign.name))  # shown with pytest -s: what the fault left
    # What is recorded as sent was received, under the Message-ID the delivery keeps.
    received = {r.message_id for items in sink.by_address().values() for r in items}
    assert set(Delivery.objects.filter(run=run, status="sent").values_list("provider_id", flat=True)) <= received
    return outcome


def test_a_worker_killed_mid_batch_is_replaced_and_nothing_is_sent_twice(fault_setup, settings):
    # given: a worker sending 600 emails, slowly enough to be killed mid-group
    with harness.SmtpSink(delay=0.01) as sink, harness.Beat():
        first = start_worker("a", sink=sink, tmp_path=fault_setup, settings=settings)
        try:
            run, started = launched(600)
            harness.wait_until(lambda: sink.count() >= 120, timeout=30, what="sending under way")
            # when: it is killed, and another worker starts
            first.kill()
        finally:
            first.stop()
        with start_worker("b", sink=sink, tmp_path=fault_setup, settings=settings):
            outcome = assert_survived(run, sink, started)

    # then: what the killed worker had claimed but not handed over went out through the other one
    assert outcome.sent + outcome.unknown == outcome.targeted == 600


def test_lost_queue_messages_delay_the_run_but_do_not_strand_it(fault_setup, settings):
    with harness.SmtpSink(delay=0.005) as sink, harness.Beat():
        with start_worker("a", sink=sink, tmp_path=fault_setup, settings=settings):
            run, started = launched(1500)  # three chunks
            harness.wait_until(lambda: sink.count() >= 50, timeout=30, what="sending under way")
            # when: the broker loses every queued message (a Redis restarted without persistence)
            lost = harness.flush_queues(settings.CELERY_BROKER_URL)
            outcome = assert_survived(run, sink, started)

    assert lost >= 1
    assert (outcome.sent, outcome.unknown) == (1500, 0)


def test_the_cache_going_away_mid_batch_loses_no_outcome(fault_setup, settings):
    # given: the send rate is counted in the cache, reached through a proxy that can drop it
    ChannelPolicy.objects.filter(channel="email").update(rate_per_second=400)
    proxy = harness.CacheProxy()
    try:
        with harness.SmtpSink(delay=0.002) as sink, harness.Beat():
            cache_url = proxy.url(int(settings.CELERY_BROKER_URL.rsplit("/", 1)[1] or 0))
            with start_worker("a", sink=sink, tmp_path=fault_setup, settings=settings, CACHE_URL=cache_url):
                run, started = launched(800)
                harness.wait_until(lambda: sink.count() >= 100, timeout=30, what="sending under way")
                # when: the cache goes away for two seconds mid-batch
                proxy.down()
                time.sleep(2)
                proxy.up()
                outcome = assert_survived(run, sink, started, unknown_at_most=0)
    finally:
        proxy.close()

    # then: the messages the provider had accepted are recorded; the others went out later, once
    assert outcome.sent == 800
    assert Delivery.objects.filter(run=run, error__startswith="chunk failed: ConnectionError").exists()


def test_customers_who_opt_out_while_their_batch_is_claimed_get_nothing(fault_setup, settings):
    # given: 25 emails a second, so the last 40 of a claimed batch of 100 wait more than a second
    # (two rate windows) for their permits
    ChannelPolicy.objects.filter(channel="email").update(rate_per_second=25)
    opted_out = {}  # address -> time the withdrawal committed
    with harness.SmtpSink() as sink, harness.Beat():
        with start_worker("a", sink=sink, tmp_path=fault_setup, settings=settings):
            run, started = launched(300)
            deadline = time.monotonic() + 20
            while len(opted_out) < 60 and time.monotonic() < deadline:
                # when: customers at the end of a claimed batch unsubscribe (RFC 8058 one-click)
                claimed = list(Delivery.objects.filter(run=run, status="claimed").order_by("pk")
                               .values_list("customer_id", "address"))
                for customer_id, address in claimed[-40:]:
                    if address not in opted_out:
                        consent_withdraw(customer=Customer.objects.get(pk=customer_id), channel="email", source="one_click")
                        opted_out[address] = time.time()
                time.sleep(0.1)
            outcome = assert_survived(run, sink, started, unknown_at_most=0)

    # then: none of them got the message: each was skipped at the hand-over, with the reason
    assert len(opted_out) >= 40
    received = sink.by_address()
    assert [address for address in opted_out if address in received] == []
    assert set(Delivery.objects.filter(run=run, address__in=list(opted_out)).values_list("status", "skip_reason")) == {
        ("skipped", "consent")}
    assert outcome.sent == 300 - len(opted_out)
