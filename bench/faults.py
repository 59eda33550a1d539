#!/usr/bin/env python
"""Benchmark: one email campaign under each fault, through a real worker process.

    DATABASE_URL=postgres://root@127.0.0.1:5432/postgres CELERY_BROKER_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/faults.py --customers 10000

Uses its own database (--database, default campaigns_faults_bench; dropped and re-created,
migrated) and the Redis database of CELERY_BROKER_URL (its campaign queues are emptied first).
Seeds N customers with email consent, then for each case launches a campaign to all of them,
sent by ``celery worker`` processes (tests/campaigns/faults_harness.py, as the fault tests) to a
local aiosmtpd server that records every message, with beat's dispatch_due and sweep sent every
second and a lease of --lease seconds, and injects the fault once --at of the messages are out:

- ``no fault``: the reference;
- ``worker SIGKILL``: the worker is killed, another one starts;
- ``broker queues flushed``: every queued and unacknowledged message is lost (a Redis restarted
  without persistence);
- ``cache down 5 s``: the cache the rate limit counts in (a TCP proxy to Redis) drops every
  connection and refuses new ones for five seconds; the channel's rate is --rate per second;
- ``opt-outs while claimed``: 200 customers whose deliveries are claimed (the later half of the
  claimed batch) click the one-click unsubscribe, at --opt-out-rate emails per second (40: the
  rate at which 196 of 200 such customers used to receive the message anyway).

For each it prints targeted / sent / duplicates (customers who received it twice) / stranded
(deliveries left unfinished, or finished without a reason) / unknown / the time from the launch
to the run's final state; for the opt-outs, also how many of those customers received it and how
long after their opt-out at worst.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

# Run as `python bench/faults.py`: bench/ is on sys.path, so its sibling script imports.
from send_campaign import recreate_database

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--database", default="campaigns_faults_bench")
    parser.add_argument("--lease", type=int, default=5, help="CAMPAIGN_LEASE_SECONDS of the workers (default 5)")
    # Not a multiple of a batch (100 of 10,000): the fault lands in the middle of one, not between two.
    parser.add_argument("--at", type=float, default=0.335, help="inject the fault once this share is out (0.335)")
    parser.add_argument("--rate", type=int, default=400, help="emails/s for the cache case (400)")
    parser.add_argument("--opt-out-rate", type=int, default=40, help="emails/s for the opt-out case (40)")
    parser.add_argument("--sink-delay", type=float, default=0.002, help="seconds the SMTP server takes a message")
    parser.add_argument("--only", default="", help="comma-separated case numbers (1-5) to run")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith(("postgres://", "postgresql://")) or not broker.startswith("redis://"):
        sys.exit("Set DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://... (a Redis database of your own).")
    database_url = recreate_database(url, args.database)
    os.environ.update({
        "DATABASE_URL": database_url, "DEBUG": os.environ.get("DEBUG", "1"), "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings", "SITE_URL": "https://winback.example.com",
        "CAMPAIGN_LEASE_SECONDS": str(args.lease),
    })
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    seed(args.customers)
    from tests.campaigns import faults_harness as harness

    harness.flush_queues(broker)
    print(f"{args.customers:,} customers; lease {args.lease} s, beat's dispatch_due and sweep every second; "
          f"fault once {args.at:.1%} of the messages are out; SMTP server: {args.sink_delay * 1000:g} ms a message")
    cases = [("no fault", no_fault), ("worker SIGKILL", worker_sigkill), ("broker queues flushed", broker_flushed),
             (f"cache down 5 s ({args.rate}/s)", cache_down),
             (f"opt-outs while claimed ({args.opt_out_rate}/s)", opt_outs)]
    only = {int(n) for n in args.only.split(",") if n}
    with tempfile.TemporaryDirectory(prefix="faults-bench-") as logs:
        for number, (label, case) in enumerate(cases, start=1):
            if only and number not in only:
                continue
            line = run_case(case, label=label, args=args, broker=broker, database_url=database_url, logs=Path(logs))
            print(line, flush=True)


def seed(n: int) -> None:
    """N customers with email consent (ledger and state), all in SQL; caps out of the way, since
    every case sends to the same customers."""
    from django.db import connection

    from campaigns.models import ChannelPolicy, ContactPolicy

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO reactivation_customer (external_id, name, email, phone, locale, timezone, order_count,
                total_spent, favourite_category, attributes, lifecycle_state, lifecycle_since, created_at, updated_at)
            SELECT 'F' || lpad(i::text, 8, '0'), '用户' || i, 'f' || i || '@example.com', '', 'zh-hans', 'Asia/Shanghai',
                0, 0, '', '{}', 'dormant', now(), now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [n],
        )
        cursor.execute(
            """
            INSERT INTO consent_consentevent (customer_id, channel, purpose, action, source, notice_version, evidence, at)
            SELECT id, 'email', 'marketing', 'grant', 'import', 'bench', '{}', now() - interval '30 days'
            FROM reactivation_customer
            """
        )
        cursor.execute(
            """
            INSERT INTO consent_consentstate (customer_id, channel, purpose, status, source, notice_version, last_event_id, changed_at)
            SELECT customer_id, channel, purpose, 'granted', source, notice_version, id, at FROM consent_consentevent
            """
        )
    ContactPolicy.current()
    ContactPolicy.objects.update(daily_cap_all_channels=1000)
    ChannelPolicy.objects.update(cap_count=1000, quiet_hours_enabled=False, rate_per_second=None)


def launch(label: str):
    from campaigns.models import Brand, Campaign, MessageTemplate
    from campaigns.rendering import EMAIL_STARTING_POINTS
    from campaigns.services import campaign_launch
    from reactivation.models import Segment

    brand, _ = Brand.objects.get_or_create(name="青禾生活", defaults={
        "from_email": "hello@qinghe.example.com", "sms_signature": "青禾生活", "shop_url": "https://shop.example.com/",
        "postal_address": "上海市静安区南京西路1266号 200040", "default_locale": "zh-hans"})
    template = MessageTemplate.objects.create(
        name=f"Faults: {label}", channel="email",
        **{k: EMAIL_STARTING_POINTS["nostalgic"][k] for k in ("subject", "html_body")})
    segment, _ = Segment.objects.get_or_create(name="Faults: everyone")
    campaign = Campaign.objects.create(name=f"Faults: {label}", segment=segment, channels=["email"], brand=brand,
                                       email_template=template, holdout_percent=0, reentry_days=0)
    return campaign_launch(campaign=campaign), time.time()


def run_case(case, *, label, args, broker, database_url, logs) -> str:
    from campaigns.models import ChannelPolicy
    from tests.campaigns import faults_harness as harness

    harness.flush_queues(broker)
    ChannelPolicy.objects.filter(channel="email").update(rate_per_second=None)
    with harness.SmtpSink(delay=args.sink_delay) as sink, harness.Beat():
        context = Context(args=args, sink=sink, logs=logs, label=label, environ=harness.worker_environ(
            database_url=database_url, broker_url=broker, smtp_port=sink.port, lease_seconds=args.lease,
            LOG_LEVEL="WARNING"))
        try:
            extra = case(context) or ""
            run, started = context.run, context.started
            harness.wait_until(lambda: harness.run_finished(run), timeout=600, every=0.5, what=label)
            outcome = harness.run_outcome(run=run, sink=sink, started=started)
        finally:
            context.stop_workers()
    return outcome.line(label) + extra


class Context:
    def __init__(self, *, args, sink, logs, label, environ):
        self.args, self.sink, self.logs, self.label, self.environ = args, sink, logs, label, environ
        self.workers = []
        self.run = self.started = None

    def worker(self, name: str, **more):
        from tests.campaigns import faults_harness as harness

        environ = {**self.environ, **{key: str(value) for key, value in more.items()}}
        worker = harness.Worker(name=f"{self.label.split()[0].lower()}-{name}", environ=environ, log_dir=self.logs)
        self.workers.append(worker)
        return worker.start()

    def launch(self):
        self.run, self.started = launch(self.label)

    def wait_for_share(self, share: float):
        from tests.campaigns import faults_harness as harness

        harness.wait_until(lambda: self.sink.count() >= share * self.args.customers, timeout=600, every=0.01,
                           what="the fault's moment")

    def stop_workers(self):
        for worker in self.workers:
            worker.stop()


def no_fault(ctx: Context):
    ctx.worker("a")
    ctx.launch()


def worker_sigkill(ctx: Context):
    from collections import Counter

    from campaigns.models import Delivery

    first = ctx.worker("a")
    ctx.launch()
    ctx.wait_for_share(ctx.args.at)
    first.kill()
    held = Counter(Delivery.objects.filter(run=ctx.run, status__in=["claimed", "sending"]).values_list("status", flat=True))
    ctx.worker("b")
    return f" (the killed worker held: {held['claimed']} claimed, {held['sending']} handed over)"


def broker_flushed(ctx: Context):
    from tests.campaigns import faults_harness as harness

    ctx.worker("a")
    ctx.launch()
    ctx.wait_for_share(ctx.args.at)
    lost = harness.flush_queues(ctx.environ["CELERY_BROKER_URL"])
    return f" (messages lost: {lost})"


def cache_down(ctx: Context):
    from campaigns.models import ChannelPolicy
    from tests.campaigns import faults_harness as harness

    ChannelPolicy.objects.filter(channel="email").update(rate_per_second=ctx.args.rate)
    proxy = harness.CacheProxy()
    db = int(urlsplit(ctx.environ["CELERY_BROKER_URL"]).path.strip("/") or 0)
    try:
        ctx.worker("a", CACHE_URL=proxy.url(db))
        ctx.launch()
        ctx.wait_for_share(ctx.args.at)
        proxy.down()
        time.sleep(5)
        proxy.up()
        from tests.campaigns.faults_harness import run_finished, wait_until

        wait_until(lambda: run_finished(ctx.run), timeout=600, every=0.5, what="cache case")
    finally:
        proxy.close()


def opt_outs(ctx: Context):
    from campaigns.models import ChannelPolicy, Delivery
    from consent.services import consent_withdraw
    from reactivation.models import Customer

    ChannelPolicy.objects.filter(channel="email").update(rate_per_second=ctx.args.opt_out_rate)
    ctx.worker("a")
    ctx.launch()
    from tests.campaigns.faults_harness import run_finished, wait_until

    opted_out = {}  # address -> when the withdrawal committed
    while len(opted_out) < 200 and not run_finished(ctx.run):
        claimed = list(Delivery.objects.filter(run=ctx.run, status="claimed").order_by("pk")
                       .values_list("customer_id", "address")[:200])
        for customer_id, address in claimed[len(claimed) // 2:]:  # the later half of what is claimed
            if address not in opted_out and len(opted_out) < 200:
                consent_withdraw(customer=Customer.objects.get(pk=customer_id), channel="email", source="one_click")
                opted_out[address] = time.time()
        time.sleep(0.02)

    wait_until(lambda: run_finished(ctx.run), timeout=600, every=0.5, what="opt-out case")
    received = ctx.sink.by_address()
    late = [received[address][0].at - at for address, at in opted_out.items() if address in received]
    skipped = Delivery.objects.filter(run=ctx.run, address__in=list(opted_out), status="skipped",
                                      skip_reason="consent").count()
    worst = f", at worst {max(late):.3f} s after the opt-out" if late else ""
    return (f"\n{'':<34} opted out while claimed={len(opted_out)} skipped (consent)={skipped} "
            f"received anyway={len(late)}{worst}")


if __name__ == "__main__":
    main()
