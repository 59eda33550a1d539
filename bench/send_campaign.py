#!/usr/bin/env python
"""Benchmark: materialize a campaign run over N customers, then send email and in-app.

    DATABASE_URL=postgres://root@127.0.0.1:5432/postgres python bench/send_campaign.py --customers 1000000

Uses its own database (--database, default campaigns_send_bench; dropped and re-created,
migrated). Then:

1. creates N customers set-based (INSERT ... SELECT generate_series): four time zones, email
   consent for 90%, SMS for 50%, in-app for 95%, 1% of emails suppressed, earlier sends that
   trip the frequency cap (5%) and the campaign's own re-entry rule (2%);
2. materializes the email campaign (email, then SMS; 10% holdout) with every exclusion, timed;
3. measures the sink's own ceiling (a bare smtplib loop with one prebuilt message, over one
   session and over as many sessions as the transport uses), then sends --email-sample pending
   email deliveries in-process through the real pipeline (claim with consent re-check, render,
   EmailTransport over SMTP, one UPDATE per batch) to an aiosmtpd sink running in its own
   process (so it never competes for this process's GIL), and reports messages/s for this
   one worker process and its ratio to the ceiling;
4. materializes an in-app campaign, measures a bare INSERT of inbox rows as the baseline, and
   sends --in-app-sample deliveries through the pipeline.

Each transaction commits per message batch as in production. The numbers depend on the machine's
load: run it when nothing else is (check `uptime`).

Targets (issue 4): materialization of 1,000,000 in <= 15 s; email >= 1,000/s per worker
process; in-app >= 10,000/s.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def recreate_database(url: str, name: str) -> str:
    import psycopg

    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # a killed bench's sessions too
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--email-sample", type=int, default=10_000)
    parser.add_argument("--in-app-sample", type=int, default=50_000)
    parser.add_argument("--database", default="campaigns_send_bench")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL=postgres://... (the benchmark targets PostgreSQL).")
    smtp_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{smtp_port}", "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        os.environ.update({
            "DATABASE_URL": recreate_database(url, args.database), "DEBUG": os.environ.get("DEBUG", "1"),
            "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}", "CELERY_BROKER_URL": "memory://", "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "config.settings", "SITE_URL": "https://winback.example.com",
        })
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        run_bench(args, smtp_port)
    finally:
        sink.terminate()
        sink.wait(timeout=10)


def run_bench(args, smtp_port) -> None:
    from django.core.management import call_command
    from django.db import connection

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrate: {time.perf_counter() - t0:.1f}s")
    n = args.customers
    t0 = time.perf_counter()
    seed_customers(connection, n)
    print(f"seed {n:,} customers with consent, suppressions and history: {time.perf_counter() - t0:.1f}s")

    from campaigns.materialize import run_materialize
    from campaigns.demo import BRAND
    from campaigns.models import Brand, Campaign, CampaignRun, Delivery, MessageTemplate
    from campaigns.rendering import EMAIL_STARTING_POINTS
    from campaigns.sending import chunk_size, deliveries_send_chunk
    from campaigns.services import run_refresh_counters, summary_line
    from reactivation.models import Segment

    email_template = MessageTemplate.objects.create(
        name="Bench email", channel="email", **{k: EMAIL_STARTING_POINTS["nostalgic"][k] for k in ("subject", "html_body")})
    sms_template = MessageTemplate.objects.create(name="Bench SMS", channel="sms", sms_text="{{ customer.name }}，好久不见！")
    in_app_template = MessageTemplate.objects.create(name="Bench in-app", channel="in_app", title="{{ brand }} 想你了",
                                                     body="{{ customer.name }}，回来看看吧", deep_link="app://home")
    everyone = Segment.objects.create(name="Bench: everyone")
    # A brand as the demo's: messages carry its header, call to action and postal address.
    brand = Brand.objects.create(**BRAND)
    campaign = Campaign.objects.get(name="Bench: email")
    campaign.segment, campaign.email_template, campaign.sms_template = everyone, email_template, sms_template
    campaign.brand = brand
    campaign.channels, campaign.holdout_percent = ["email", "sms"], 10
    campaign.save()
    connection.cursor().execute("ANALYZE")
    # Flush the seed's dirty pages now, so that a checkpoint does not land inside the timing.
    connection.cursor().execute("CHECKPOINT")

    run = CampaignRun.objects.create(campaign=campaign, number=2)
    t0 = time.perf_counter()
    inserted = run_materialize(run=run)
    elapsed = time.perf_counter() - t0
    run = run_refresh_counters(run=run)
    connection.cursor().execute("ANALYZE campaigns_delivery")  # what autovacuum does after a big insert
    print(f"materialize {inserted:,} recipients with every exclusion: {elapsed:.2f}s "
          f"({inserted / elapsed:,.0f}/s; target 1,000,000 in <= 15 s)")
    print(f"  {summary_line(run)} holdout={run.holdout} skipped_no_address={run.skipped_no_address}")

    from campaigns.channels.email import send_concurrency
    from django.urls import reverse

    # A worker imports the URLconf once, on its first message: not part of a steady rate.
    reverse("consent:unsubscribe", args=["warm-up"])
    sample = min(args.email_sample, 2000)
    one_session = smtp_sink_ceiling(smtp_port, sample, sessions=1)
    many_sessions = smtp_sink_ceiling(smtp_port, sample, sessions=send_concurrency())
    print(f"baseline: raw smtplib loop (one prebuilt message, no Django) into the same aiosmtpd sink: "
          f"{one_session:,.0f} messages/s over 1 session, {many_sessions:,.0f}/s over {send_concurrency()} sessions")

    ids = list(Delivery.objects.filter(run=run, status="pending", channel="email").order_by("pk")
               .values_list("pk", flat=True)[:args.email_sample])
    t0 = time.perf_counter()
    sent = 0
    size = chunk_size("email")  # as the workers get them
    for start in range(0, len(ids), size):
        sent += deliveries_send_chunk(delivery_ids=ids[start:start + size], channel="email").counts["sent"]
    elapsed = time.perf_counter() - t0
    rate = sent / elapsed
    print(f"email: {sent:,} sent over SMTP to aiosmtpd (127.0.0.1:{smtp_port}) in {elapsed:.2f}s = "
          f"{rate:,.0f} messages/s in one worker process, {send_concurrency()} SMTP sessions (target >= 1,000/s)")
    print(f"  ratio to the sink's ceiling: {rate / one_session:.2f}x the 1-session raw loop, "
          f"{rate / many_sessions:.2f}x the {send_concurrency()}-session raw loop")

    in_app = Campaign.objects.create(name="Bench: in-app", segment=everyone, channels=["in_app"], brand=brand,
                                     in_app_template=in_app_template, reentry_days=0)
    in_app_run = CampaignRun.objects.create(campaign=in_app, number=1)
    t0 = time.perf_counter()
    inserted = run_materialize(run=in_app_run)
    print(f"materialize in-app campaign: {inserted:,} in {time.perf_counter() - t0:.2f}s")
    ids = list(Delivery.objects.filter(run=in_app_run, status="pending").order_by("pk")
               .values_list("pk", flat=True)[:args.in_app_sample])
    baseline = inbox_insert_ceiling(connection, in_app_run, min(len(ids), 20_000))
    print(f"baseline: raw INSERT of prebuilt inbox rows, 500 per statement, in one transaction rolled back (no claim, no rendering, no commit): "
          f"{baseline:,.0f} rows/s")
    t0 = time.perf_counter()
    sent = 0
    size = chunk_size("in_app")
    for start in range(0, len(ids), size):
        sent += deliveries_send_chunk(delivery_ids=ids[start:start + size], channel="in_app").counts["sent"]
    elapsed = time.perf_counter() - t0
    rate = sent / elapsed
    print(f"in-app: {sent:,} inbox messages in {elapsed:.2f}s = {rate:,.0f} messages/s in one process "
          f"(target >= 10,000/s); {rate / baseline:.2f}x the raw INSERT baseline")


def smtp_sink_ceiling(port: int, n: int, *, sessions: int) -> float:
    """Messages/s a bare smtplib loop gets into the sink: what the sink (and the shared CPUs)
    allow at all, measured in the same run as the pipeline."""
    import smtplib
    from concurrent.futures import ThreadPoolExecutor
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bench@example.com", "sink@example.com", "baseline"
    message.set_content("baseline message line\n" * 40)
    raw = message.as_string()  # a str: smtplib sends it with CRLF line ends, as SMTP requires

    def loop(count):
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for _ in range(count):
                smtp.sendmail("bench@example.com", ["sink@example.com"], raw)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=sessions) as pool:
        list(pool.map(loop, [n // sessions] * sessions))
    return (n // sessions) * sessions / (time.perf_counter() - t0)


def inbox_insert_ceiling(connection, run, n: int) -> float:
    """Rows/s of the bare INSERTs the in-app channel must do anyway (rolled back afterwards)."""
    from django.db import transaction

    customer_ids = list(run.deliveries.order_by("pk").values_list("customer_id", flat=True)[:n])
    t0 = time.perf_counter()
    with transaction.atomic():
        with connection.cursor() as cursor:
            for start in range(0, len(customer_ids), 500):
                part = customer_ids[start:start + 500]
                cursor.execute(
                    "INSERT INTO campaigns_inboxmessage (customer_id, title, body, deep_link, unsubscribe_url, created_at) "
                    "SELECT unnest(%s::bigint[]), 'title', 'body of the message', 'app://home', "
                    "'https://winback.example.com/consent/unsubscribe/token/', now() RETURNING id",
                    [part],
                )
        elapsed = time.perf_counter() - t0
        transaction.set_rollback(True)
    return len(customer_ids) / elapsed


def seed_customers(connection, n: int) -> None:
    """Customers, consent (ledger + state), suppressions and earlier sends, all in SQL."""
    from campaigns.models import Campaign, CampaignRun
    from reactivation.models import Segment

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO reactivation_customer (external_id, name, email, phone, locale, timezone, order_count,
                total_spent, favourite_category, attributes, lifecycle_state, lifecycle_since, created_at, updated_at)
            SELECT 'B' || lpad(i::text, 8, '0'), '用户' || i, CASE WHEN i %% 50 = 3 THEN '' ELSE 'b' || i || '@example.com' END,
                '+86138' || lpad(i::text, 8, '0'), 'zh-hans',
                (ARRAY['Asia/Shanghai', 'America/New_York', 'Europe/London', ''])[1 + i %% 4], 0, 0, '', '{}',
                'dormant', now(), now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [n],
        )
        for channel, modulo_keep in (("email", 10), ("sms", 2), ("in_app", 20)):
            # email: 9 in 10 consent; sms: 1 in 2; in_app: 19 in 20.
            keep = {"email": "c.id %% 10 <> 0", "sms": "c.id %% 2 = 0", "in_app": "c.id %% 20 <> 5"}[channel]
            cursor.execute(
                f"""
                INSERT INTO consent_consentevent (customer_id, channel, purpose, action, source, notice_version, evidence, at)
                SELECT c.id, %s, 'marketing', 'grant', 'import', 'bench', '{{}}', now() - interval '30 days'
                FROM reactivation_customer c WHERE {keep}
                """,
                [channel],
            )
        cursor.execute(
            """
            INSERT INTO consent_consentstate (customer_id, channel, purpose, status, source, notice_version, last_event_id, changed_at)
            SELECT customer_id, channel, purpose, 'granted', source, notice_version, id, at FROM consent_consentevent
            """
        )
        cursor.execute(
            """
            INSERT INTO consent_suppression (channel, address, reason, note, created_at)
            SELECT 'email', email, 'hard_bounce', 'bench', now() FROM reactivation_customer WHERE id %% 100 = 7 AND email <> ''
            """,
            [],
        )
    segment = Segment.objects.create(name="Bench: history")
    other = Campaign.objects.create(name="Bench: earlier campaign", segment=segment, channels=["email"])
    bench = Campaign.objects.create(name="Bench: email", segment=segment, channels=["email"])
    earlier = [CampaignRun.objects.create(campaign=other, number=k) for k in (1, 2)]
    own = CampaignRun.objects.create(campaign=bench, number=1)
    with connection.cursor() as cursor:
        for run, days, condition in ((earlier[0], 1, "id %% 20 = 1"), (earlier[1], 3, "id %% 20 = 1"),
                                     (own, 5, "id %% 50 = 1")):
            cursor.execute(
                f"""
                INSERT INTO campaigns_delivery (campaign_id, run_id, customer_id, channel, address, status, skip_reason,
                    attempts, provider_id, error, created_at, sent_at)
                SELECT %s, %s, id, 'email', email, 'sent', '', 1, '', '', now() - %s * interval '1 day',
                    now() - %s * interval '1 day'
                FROM reactivation_customer WHERE {condition}
                """,
                [run.campaign_id, run.pk, days, days],
            )


if __name__ == "__main__":
    main()
