#!/usr/bin/env python
"""Benchmark: the project's customer import against plain COPY + INSERT ... ON CONFLICT.

    DATABASE_URL=postgres://root@127.0.0.1:5432/postgres python bench/import_customers.py --rows 1000000

Uses its own database (--database, default reactivation_bench; dropped and re-created), writes a
synthetic CSV (Chinese and Latin names, CN mobile numbers, mixed date formats, thousands
separators, ~1% invalid rows, a few repeated ids, one extra column), then measures:

1. first import with ``manage.py import_customers`` in a child process (wall time, peak RSS);
2. re-import of the same file (every row already present);
3. the baseline on an empty table: COPY the same file into a staging table, then one
   INSERT ... SELECT DISTINCT ON (external_id) ... ON CONFLICT (external_id) DO UPDATE;
4. the baseline again (re-import: it rewrites every row).

It prints rows/s for both, the ratio (import / baseline) and the import's peak memory.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英"
LATIN = ["Alice Martin", "Bob Smith", "Chloé Dubois", "David Lee", "Emma Brown", "Hiro Tanaka", "Kim Min-jun"]
CATEGORIES = ["美妆", "服饰", "数码", "母婴", "食品", "家居", "books", "sports"]
CN_BLOCKS = ["138", "139", "135", "136", "137", "150", "151", "186", "187", "188", "177", "199", "158", "159"]
HEADER = [
    "external_id", "name", "email", "phone", "locale", "timezone", "signup_at", "last_seen_at",
    "last_order_at", "order_count", "total_spent", "favourite_category", "member_level",
]


def synthetic_rows(count: int, seed: int = 7):
    rng = random.Random(seed)
    for n in range(count):
        external_id = f"U{n:09d}"
        if n and rng.random() < 0.002:  # a repeated id: the later line wins
            external_id = f"U{rng.randrange(n):09d}"
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.6 else "")
        if rng.random() < 0.15:
            name = rng.choice(LATIN)
        email = f"user{n}@example.com" if rng.random() < 0.9 else ""
        phone = rng.choice(CN_BLOCKS) + f"{rng.randrange(100_000_000):08d}"
        day = rng.randrange(1, 28)
        month = rng.randrange(1, 13)
        signup = rng.choice([
            f"2023-{month:02d}-{day:02d} 10:{day:02d}:00",
            f"2023/{month}/{day} 9:{day:02d}",
            f"2023-{month:02d}-{day:02d}T08:00:00+08:00",
        ])
        last_seen = f"2025-{month:02d}-{day:02d} 21:15:00"
        last_order = f"2025-{month:02d}-{day:02d}" if rng.random() < 0.7 else ""
        orders = rng.randrange(0, 40)
        spent = f"{rng.randrange(0, 500_000) / 100:.2f}"
        if rng.random() < 0.1:
            spent = f"{rng.randrange(1000, 90_000):,}.00"
        row = [external_id, name, email, phone, "zh-hans", "Asia/Shanghai", signup, last_seen, last_order,
               str(orders), spent, rng.choice(CATEGORIES), rng.choice(["gold", "silver", ""])]
        bad = rng.random()
        if bad < 0.003:
            row[2] = "not-an-email"
        elif bad < 0.006:
            row[3] = "12345"
        elif bad < 0.008:
            row[6] = "someday"
        elif bad < 0.010:
            row[9] = "-3"
        yield row


def write_csv(path: Path, rows: int, encoding: str) -> None:
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(synthetic_rows(rows))


def bench_url(base_url: str, database: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path="/" + database))


def run_child(args: list[str], env: dict) -> tuple[float, str]:
    """Run a child process; return (wall seconds, stdout). Exits when the child fails."""
    started = time.perf_counter()
    process = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"child failed ({process.returncode}): {process.stderr.strip()}")
    return elapsed, process.stdout.strip()


def run_measured(args: list[str], env: dict) -> tuple[float, float, str]:
    """Run ``args`` through a tiny wrapper that reports the child's own peak RSS (ru_maxrss)."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
        "print('MAXRSS_KB=%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n"
    )
    elapsed, out = run_child([sys.executable, "-c", wrapper, *args], env)
    lines = out.splitlines()
    rss_kb = int(lines[-1].split("=")[1])
    return elapsed, rss_kb / 1024, "\n".join(lines[:-1])


def baseline(dsn: str, path: Path, encoding: str) -> float:
    """COPY the file into a staging table and upsert it with one statement."""
    import psycopg

    pg_encoding = {"utf-8": "UTF8", "gb18030": "GB18030", "gbk": "GBK"}[encoding]
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=False) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE baseline_stage (" + ", ".join(f"{c} text" for c in HEADER) + ") ON COMMIT DROP"
        )
        with open(path, "rb") as handle, cur.copy(
            f"COPY baseline_stage FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING '{pg_encoding}')"
        ) as copy:
            while data := handle.read(1 << 20):
                copy.write(data)
        ts = "CASE WHEN {0} ~ '^\\d{{4}}[-/]\\d' THEN {0}::timestamptz END"
        cur.execute(
            "INSERT INTO reactivation_customer (external_id, name, email, phone, locale, timezone, signup_at, "
            "last_seen_at, last_order_at, order_count, total_spent, favourite_category, attributes, "
            "lifecycle_state, lifecycle_since, created_at, updated_at) "
            "SELECT DISTINCT ON (external_id) external_id, coalesce(name, ''), coalesce(email, ''), "
            "coalesce(phone, ''), coalesce(locale, ''), coalesce(timezone, ''), "
            f"{ts.format('signup_at')}, {ts.format('last_seen_at')}, {ts.format('last_order_at')}, "
            "CASE WHEN order_count ~ '^\\d+$' THEN order_count::integer ELSE 0 END, "
            "coalesce(replace(total_spent, ',', '')::numeric, 0), coalesce(favourite_category, ''), "
            "jsonb_build_object('member_level', member_level), 'new', now(), now(), now() "
            "FROM baseline_stage WHERE external_id <> '' ORDER BY external_id "
            "ON CONFLICT (external_id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, "
            "phone = EXCLUDED.phone, locale = EXCLUDED.locale, timezone = EXCLUDED.timezone, "
            "signup_at = EXCLUDED.signup_at, last_seen_at = EXCLUDED.last_seen_at, "
            "last_order_at = EXCLUDED.last_order_at, order_count = EXCLUDED.order_count, "
            "total_spent = EXCLUDED.total_spent, favourite_category = EXCLUDED.favourite_category, "
            "attributes = EXCLUDED.attributes, updated_at = EXCLUDED.updated_at"
        )
        conn.commit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database", default="reactivation_bench")
    parser.add_argument("--encoding", default="utf-8", choices=["utf-8", "gb18030", "gbk"])
    parser.add_argument("--keep-file", action="store_true")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL server, e.g. postgres://root@127.0.0.1:5432/postgres")
    import psycopg

    admin_dsn = bench_url(base_url, "postgres").replace("postgres://", "postgresql://", 1)
    dsn = bench_url(base_url, args.database).replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}"')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    env = {**os.environ, "DATABASE_URL": bench_url(base_url, args.database), "DEBUG": os.environ.get("DEBUG", "1"),
           "IMPORT_MAX_ROWS": str(max(args.rows * 2, 10)), "CONN_MAX_AGE": "0"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0", "--skip-checks"], env=env, cwd=ROOT, check=True)

    workdir = Path(tempfile.mkdtemp(prefix="import-bench-"))
    path = workdir / f"customers-{args.rows}.csv"
    started = time.perf_counter()
    write_csv(path, args.rows, args.encoding)
    print(f"generated {args.rows:,} rows ({path.stat().st_size / 1e6:.1f} MB, {args.encoding}) "
          f"in {time.perf_counter() - started:.1f}s")

    def reset() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE reactivation_customer CASCADE")
            conn.execute("VACUUM ANALYZE reactivation_customer")
            conn.execute("CHECKPOINT")

    def checkpoint() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE reactivation_customer")
            conn.execute("CHECKPOINT")

    command = [*manage, "import_customers", str(path), "--skip-checks", "--errors-out", str(workdir / "errors.csv")]
    results = {}
    reset()
    results["import first"] = run_measured(command, env)
    checkpoint()
    results["import again"] = run_measured(command, env)
    reset()
    results["baseline first"] = (baseline(dsn, path, args.encoding), None, "")
    checkpoint()
    results["baseline again"] = (baseline(dsn, path, args.encoding), None, "")

    rows = args.rows
    print(f"{'run':<16}{'seconds':>9}{'rows/s':>11}{'peak MB':>9}  summary")
    for name, (seconds, rss, summary) in results.items():
        peak = f"{rss:.0f}" if rss is not None else "-"
        print(f"{name:<16}{seconds:>9.2f}{rows / seconds:>11,.0f}{peak:>9}  {summary.splitlines()[-1] if summary else ''}")
    for phase in ("first", "again"):
        ratio = results[f"baseline {phase}"][0] / results[f"import {phase}"][0]
        print(f"ratio import/baseline ({'first import' if phase == 'first' else 're-import'}): {ratio:.2f} "
              f"(target >= 0.50)")
    print(f"import peak memory: {max(results['import first'][1], results['import again'][1]):.0f} MB (target <= 250)")
    if not args.keep_file:
        path.unlink()


if __name__ == "__main__":
    main()
