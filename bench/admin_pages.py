#!/usr/bin/env python
"""Benchmark: the admin home page and the customer search at N customers, against plain SQL.

    DATABASE_URL=postgres://root@127.0.0.1:5432/postgres python bench/admin_pages.py --customers 1000000

Uses its own database (--database, default admin_pages_bench; dropped and re-created,
migrated). Then:

1. creates N customers set-based (INSERT ... SELECT generate_series): Chinese names such as
   "崔洋" and Latin names such as "Julian Rivera", half each; lifecycle states in a realistic
   mix (active 45%, dormant 25%, at risk 15%, new 8%, reactivated 7%), created over two years;
   and about 16 weeks of lifecycle transitions that lead to each customer's state (one or two
   per customer that is not new), a few campaigns with runs and one on a crontab;
2. VACUUM ANALYZE (what autovacuum does after a bulk load);
3. measures, as the server's time for the whole request through django.test.Client logged in
   as a superuser (median of --repeat requests, the cache cleared before each):
   - GET /admin/ (the home page, its figures computed each time), against the baseline: the
     same GROUP BY queries alone in plain SQL;
   - GET /admin/reactivation/customer/?q=<part of a name>, for a Chinese and a Latin part,
     against the baseline SELECT ... WHERE name ILIKE '%x%' LIMIT 50, run twice: on the table
     as it is (an index on an expression of the name does not serve a plain ILIKE), and with a
     plain trigram index on the name made for it (gin (name gin_trgm_ops), dropped after);
   and prints each median, the baseline's and their ratio.

It measures URLs only, so it runs the same before and after a change to either page.
The numbers depend on the machine's load: run it when nothing else is (check `uptime`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.send_campaign import recreate_database  # noqa: E402  (after the path)

CHINESE_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
CHINESE_GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
                 "超", "秀兰", "霞", "平", "刚", "桂英", "建华", "文", "华", "金凤", "玉兰", "辉", "鑫", "婷", "浩然",
                 "子涵", "欣怡", "梓萱", "宇轩", "雨桐", "一诺", "俊杰", "思远"]
LATIN_FIRST = ["Julian", "Maria", "James", "Sofia", "Liam", "Emma", "Noah", "Olivia", "Lucas", "Ava", "Mateo",
               "Isabella", "Ethan", "Mia", "Daniel", "Charlotte", "Adrian", "Amelia", "Brian", "Harper", "Gabriel",
               "Lucia", "Samuel", "Elena", "David", "Camila", "Leo", "Valentina", "Oliver", "Chloe"]
LATIN_LAST = ["Rivera", "Smith", "Garcia", "Johnson", "Brown", "Martinez", "Lopez", "Wilson", "Anderson", "Thomas",
              "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
              "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott",
              "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Campbell"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7, help="requests per measurement (median printed)")
    parser.add_argument("--chinese", default="崔洋", help="the Chinese part of a name searched for")
    parser.add_argument("--latin", default="ian Riv", help="the Latin part of a name searched for")
    parser.add_argument("--database", default="admin_pages_bench")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL=postgres://... (the benchmark targets PostgreSQL).")
    os.environ.update({
        "DATABASE_URL": recreate_database(url, args.database), "DEBUG": os.environ.get("DEBUG", "1"),
        "CELERY_BROKER_URL": "memory://", "CACHE_URL": "locmem://", "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    })
    import django

    django.setup()
    run_bench(args)


def _sql_text_array(values) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def seed(connection, n: int) -> None:
    """Customers, their lifecycle history, campaigns and runs, all in SQL."""
    from campaigns.models import Campaign, CampaignRun
    from django.utils import timezone
    from django_celery_beat.models import CrontabSchedule, PeriodicTask
    from reactivation.models import Segment

    surnames = _sql_text_array(CHINESE_SURNAMES)
    given = _sql_text_array(CHINESE_GIVEN)
    first = _sql_text_array(LATIN_FIRST)
    last = _sql_text_array(LATIN_LAST)
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.42)")
        # r: one uniform draw per customer for its state; the name's parts from i's hash.
        cursor.execute(
            f"""
            INSERT INTO reactivation_customer (external_id, name, email, phone, locale, timezone, order_count,
                total_spent, favourite_category, attributes, lifecycle_state, lifecycle_since, created_at, updated_at)
            SELECT 'A' || lpad(i::text, 9, '0'),
                CASE WHEN i %% 2 = 0
                    THEN ({surnames})[1 + (h %% {len(CHINESE_SURNAMES)})] || ({given})[1 + ((h / 131) %% {len(CHINESE_GIVEN)})]
                    ELSE ({first})[1 + (h %% {len(LATIN_FIRST)})] || ' ' || ({last})[1 + ((h / 131) %% {len(LATIN_LAST)})]
                END,
                'a' || i || '@example.com', '+86139' || lpad(i::text, 8, '0'),
                CASE WHEN i %% 2 = 0 THEN 'zh-hans' ELSE 'en' END, '', (h %% 20), (h %% 5000), '', '{{}}',
                CASE WHEN r < 0.45 THEN 'active' WHEN r < 0.70 THEN 'dormant' WHEN r < 0.85 THEN 'at_risk'
                     WHEN r < 0.93 THEN 'new' ELSE 'reactivated' END,
                since, created, now()
            FROM (
                SELECT i, r, h, created,
                    -- entered its state at a moment of the last 16 weeks, after joining
                    greatest(created + interval '1 hour', now() - random() * interval '112 days') AS since
                FROM (
                    SELECT i, r, h,
                        -- new customers joined in the last 30 days; the others over two years
                        CASE WHEN r >= 0.85 AND r < 0.93 THEN now() - (h %% 30) * interval '1 day' - interval '2 hours'
                             ELSE now() - interval '30 days' - (h %% 700) * interval '1 day' END AS created
                    FROM (SELECT i, random() AS r, abs(hashint4(i)) AS h FROM generate_series(1, %s) AS i) AS drawn
                ) AS dated
            ) AS s
            """,
            [n],
        )
        # The transition into each customer's state, when it entered it; for the dormant and the
        # reactivated, the step before it 1 to 5 weeks earlier.
        cursor.execute(
            """
            INSERT INTO reactivation_lifecycletransition (customer_id, from_state, to_state, at)
            SELECT id,
                CASE lifecycle_state WHEN 'active' THEN 'new' WHEN 'at_risk' THEN 'active'
                    WHEN 'dormant' THEN 'at_risk' ELSE 'dormant' END,
                lifecycle_state, lifecycle_since
            FROM reactivation_customer WHERE lifecycle_state <> 'new'
            """
        )
        cursor.execute(
            """
            INSERT INTO reactivation_lifecycletransition (customer_id, from_state, to_state, at)
            SELECT t.customer_id, CASE t.to_state WHEN 'dormant' THEN 'active' ELSE 'at_risk' END,
                t.from_state, t.at - (1 + random() * 4) * interval '7 days'
            FROM reactivation_lifecycletransition t WHERE t.to_state IN ('dormant', 'reactivated')
            """
        )
    segment = Segment.objects.create(name="Bench: dormant", lifecycle_states=["dormant"])
    now = timezone.now()
    for k in range(5):
        campaign = Campaign.objects.create(name=f"Bench campaign {k}", segment=segment, channels=["email"],
                                           status=Campaign.Status.RUNNING)
        CampaignRun.objects.bulk_create(
            CampaignRun(campaign=campaign, number=number, status=CampaignRun.Status.DONE,
                        started_at=now - (8 - number) * timezone.timedelta(days=7), targeted=50_000, sent=41_000,
                        skipped_consent=5_000, skipped_cap=3_000, failed=120, offers_granted=30_000)
            for number in range(1, 8)
        )
    crontab = CrontabSchedule.objects.create(minute="0", hour="10", day_of_week="1", timezone="UTC")
    task = PeriodicTask.objects.create(name="campaign:bench", task="campaigns.launch_scheduled", crontab=crontab)
    Campaign.objects.filter(name="Bench campaign 0").update(status=Campaign.Status.SCHEDULED, periodic_task=task)


def median_seconds(action, repeat: int, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def home_baseline_sql(connection, since) -> None:
    """The home page's GROUP BY queries, plain: what the page cannot do with less."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT lifecycle_state, count(*) FROM reactivation_customer GROUP BY 1")
        cursor.fetchall()
        cursor.execute(
            "SELECT date_trunc('week', at), from_state, to_state, count(*) FROM reactivation_lifecycletransition "
            "WHERE at >= %s AND from_state <> to_state GROUP BY 1, 2, 3",
            [since],
        )
        cursor.fetchall()
        cursor.execute(
            "SELECT date_trunc('week', created_at), count(*) FROM reactivation_customer WHERE created_at >= %s GROUP BY 1",
            [since],
        )
        cursor.fetchall()


def search_baseline_sql(connection, part: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, external_id, name, email, phone, lifecycle_state, last_seen_at "
            "FROM reactivation_customer WHERE name ILIKE %s LIMIT 50",
            ["%" + part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"],
        )
        return len(cursor.fetchall())


def run_bench(args) -> None:
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from dashboard import selectors, views

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrate: {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    seed(connection, args.customers)
    connection.cursor().execute("VACUUM ANALYZE")
    print(f"seed {args.customers:,} customers with 16 weeks of lifecycle history: {time.perf_counter() - t0:.1f}s")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM reactivation_lifecycletransition")
        transitions = cursor.fetchone()[0]
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'reactivation_customer' AND indexdef ILIKE '%%(name%%'"
        )
        name_indexes = [row[0] for row in cursor.fetchall()]
    print(f"  transitions={transitions:,} indexes on customer.name: {name_indexes or 'none'}")

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password-1")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)

    def get(url: str):
        def action():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        return action

    print(f"\nmedian of {args.repeat} requests, cache cleared before each")
    since = selectors.week_starts(now=timezone.now())[0]
    home = median_seconds(get("/admin/"), args.repeat, before=cache.clear)
    home_sql = median_seconds(lambda: home_baseline_sql(connection, since), args.repeat)
    print(f"GET /admin/                         {home * 1000:8.1f} ms   "
          f"baseline (the GROUP BY queries alone) {home_sql * 1000:8.1f} ms   ratio {home / home_sql:5.2f}")
    parts = {
        "lifecycle_history (3 queries)": lambda: selectors.lifecycle_history(),
        "campaigns_upcoming + runs_latest": lambda: (selectors.campaigns_upcoming(), selectors.runs_latest()),
        "customers part (queries + 3 charts)": views.customers_part,
    }
    for label, action in parts.items():
        print(f"  {label:<38} {median_seconds(action, args.repeat) * 1000:8.1f} ms")
    cached = median_seconds(get("/admin/"), args.repeat)
    print(f"  GET /admin/ from the cache             {cached * 1000:8.1f} ms")

    searches = (("Chinese", args.chinese), ("Latin", args.latin))
    pages = {}
    for label, part in searches:
        pages[part] = median_seconds(get(f"/admin/reactivation/customer/?q={quote(part)}"), args.repeat,
                                     before=cache.clear)
    as_is = {part: median_seconds(lambda: search_baseline_sql(connection, part), args.repeat) for _, part in searches}
    # The plain ILIKE can use a trigram index only on the column itself (an index on an
    # expression of it serves only queries on that expression): measured again with one, made
    # for the baseline and dropped before anything else runs.
    with_trigram = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            cursor.execute("CREATE INDEX bench_name_trgm ON reactivation_customer USING gin (name gin_trgm_ops)")
            cursor.execute("ANALYZE reactivation_customer")
        with_trigram = {part: median_seconds(lambda: search_baseline_sql(connection, part), args.repeat)
                        for _, part in searches}
    except Exception as exc:  # no pg_trgm on this server: the as-is baseline only
        print(f"  (no trigram baseline: {exc})")
    finally:
        connection.cursor().execute("DROP INDEX IF EXISTS bench_name_trgm")
    for label, part in searches:
        found = search_baseline_sql(connection, part)
        page = pages[part]
        line = (f"GET customers ?q={part!r:<10} {page * 1000:8.1f} ms   baseline ILIKE ... LIMIT 50 ({found} rows): "
                f"table as is {as_is[part] * 1000:7.1f} ms (ratio {page / as_is[part]:5.2f})")
        if part in with_trigram:
            line += f", with gin (name gin_trgm_ops) {with_trigram[part] * 1000:7.1f} ms (ratio {page / with_trigram[part]:5.2f})"
        print(line)


if __name__ == "__main__":
    main()
