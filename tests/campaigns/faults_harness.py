"""What the fault tests (tests/campaigns/test_faults.py) and bench/faults.py run a campaign with:
a real ``celery worker`` process (so it can be SIGKILLed), a local SMTP server that records every
message it accepts, a TCP proxy in front of the cache (so the cache can go away), beat's two
per-minute tasks sent every second, and the figures of a run once it is over.

Needs PostgreSQL (the worker shares the database with the caller) and a Redis broker.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[2]
QUEUES = ("default", "email", "sms", "in_app")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The provider ---------------------------------------------------------------------------------


@dataclass
class Received:
    to: str
    message_id: str
    at: float  # time.time() when the server accepted it


class SmtpSink:
    """A local SMTP server that accepts every message after ``delay`` seconds and records it."""

    def __init__(self, *, delay: float = 0.0):
        self.delay = delay
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        message_id = BytesHeaderParser().parsebytes(envelope.content).get("Message-ID", "")
        with self._lock:
            for to in envelope.rcpt_tos:
                self.received.append(Received(to=to.lower(), message_id=message_id.strip(), at=time.time()))
        return "250 OK"

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def by_address(self) -> dict[str, list[Received]]:
        found: dict[str, list[Received]] = {}
        with self._lock:
            for item in self.received:
                found.setdefault(item.to, []).append(item)
        return found

    def __enter__(self):
        self._controller.start()
        return self

    def __exit__(self, *exc_info):
        self._controller.stop()


# The cache, behind a proxy that can go away ---------------------------------------------------


class CacheProxy:
    """A TCP proxy to Redis: ``down()`` drops every connection and refuses new ones, as a Redis
    that went away; ``up()`` lets them through again."""

    def __init__(self, *, target_host: str = "127.0.0.1", target_port: int = 6379):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._up = threading.Event()
        self._up.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source, sink):
        try:
            while self._up.is_set():
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def down(self):
        self._up.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def up(self):
        self._up.set()

    def close(self):
        self._closed = True
        self.down()
        self._listener.close()


# The worker -----------------------------------------------------------------------------------


class Worker:
    """``celery -A config worker`` on every queue, in its own process (solo pool), with
    ``environ`` on top of this process's environment."""

    def __init__(self, *, name: str, environ: dict, log_dir: Path):
        self.name = name
        self.log = Path(log_dir) / f"worker-{name}.log"
        self.environ = {**os.environ, **environ}
        self.process = None

    def start(self, timeout: float = 60) -> "Worker":
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", ",".join(QUEUES),
                   "--pool", "solo", "--concurrency", "1", "-n", f"{self.name}@%h", "--without-gossip",
                   "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
        self._log_file = open(self.log, "ab")
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.environ, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited at start:\n{self.log.read_text()[-4000:]}")
            if b" ready." in self.log.read_bytes():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready after {timeout}s:\n{self.log.read_text()[-4000:]}")

    def kill(self):
        """SIGKILL: no handler runs, no message is acknowledged or given back."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log_file", None):
            self._log_file.close()

    def __enter__(self):
        return self if self.process else self.start()

    def __exit__(self, *exc_info):
        self.stop()


def worker_environ(*, database_url: str, broker_url: str, smtp_port: int, cache_url: str | None = None,
                   lease_seconds: int = 2, **more) -> dict:
    """The settings a fault worker runs with: short clocks, so a lease runs out in seconds."""
    environ = {
        "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url, "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "DEBUG": "1", "SITE_URL": "https://winback.example.com", "DJANGO_SETTINGS_MODULE": "config.settings",
        "CAMPAIGN_LEASE_SECONDS": str(lease_seconds), "CAMPAIGN_RETRY_BASE_SECONDS": "1", "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    if cache_url:
        environ["CACHE_URL"] = cache_url
    environ.update({key: str(value) for key, value in more.items()})
    return environ


def database_url_for(name: str) -> str:
    """A postgres:// URL for database ``name`` on the server of this process's connection."""
    from django.db import connection

    params = connection.get_connection_params()
    user = params.get("user") or "root"
    host, port = params.get("host") or "127.0.0.1", params.get("port") or 5432
    return f"postgres://{user}@{host}:{port}/{name}"


# The broker -----------------------------------------------------------------------------------


def flush_queues(broker_url: str) -> int:
    """Lose every message waiting in the campaign queues, and those workers hold unacknowledged,
    as a Redis restarted without persistence loses them. Returns how many were lost."""
    import redis

    client = redis.Redis.from_url(broker_url)
    # kombu keeps a queue's priorities in extra lists named "<queue>\\x06\\x16<priority>".
    keys = [f"{queue}{suffix}" for queue in QUEUES for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169")]
    lost = sum(client.llen(key) for key in keys) + client.hlen("unacked")
    client.delete(*keys, "unacked", "unacked_index")
    return lost


class Beat:
    """Beat's two per-minute campaign tasks (dispatch_due, sweep), sent through the broker every
    ``every`` seconds instead, so a test sees in seconds what production sees in minutes."""

    def __init__(self, *, every: float = 1.0):
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        from campaigns import tasks

        while not self._stop.wait(self.every):
            try:
                tasks.dispatch_due.apply_async(queue="default")
                tasks.sweep.apply_async(queue="default")
            except Exception:  # noqa: BLE001 - a broker hiccup skips a tick, as for beat
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5)


# Figures --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    targeted: int
    statuses: Counter
    received: int
    duplicates: list = field(default_factory=list)  # addresses that received the campaign twice
    stranded: list = field(default_factory=list)  # deliveries not in a final state, or without their reason
    unexplained: list = field(default_factory=list)  # received, but neither sent nor unknown
    run_status: str = ""
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return self.statuses["sent"]

    @property
    def unknown(self) -> int:
        return self.statuses["unknown"]

    def line(self, label: str) -> str:
        return (f"{label:<34} targeted={self.targeted:>6} sent={self.sent:>6} duplicates={len(self.duplicates):>3} "
                f"stranded={len(self.stranded):>3} unknown={self.unknown:>3} "
                f"skipped={self.statuses['skipped']:>4} failed={self.statuses['failed']:>3} "
                f"final_state={self.run_status} in {self.seconds:5.1f}s")


FINAL = {"sent", "skipped", "failed", "unknown"}


def run_outcome(*, run, sink: SmtpSink, started: float) -> Outcome:
    """Where every delivery of ``run`` (email, not held out) ended, against what ``sink`` received."""
    from campaigns.models import CampaignRun, Delivery

    run = CampaignRun.objects.get(pk=run.pk)
    rows = list(Delivery.objects.filter(run=run, channel="email").exclude(status="holdout")
                .values("pk", "address", "status", "skip_reason", "error", "note", "unknown_at", "provider_id"))
    received = sink.by_address()
    outcome = Outcome(targeted=len(rows), statuses=Counter(r["status"] for r in rows),
                      received=sum(len(v) for v in received.values()), run_status=run.status,
                      seconds=(run.finished_at.timestamp() if run.finished_at else time.time()) - started)
    outcome.duplicates = sorted(address for address, items in received.items() if len(items) > 1)
    for row in rows:
        explained = {
            "sent": True, "skipped": bool(row["skip_reason"]), "failed": bool(row["error"]),
            "unknown": bool(row["note"]) and row["unknown_at"] is not None,
        }.get(row["status"], False)
        if row["status"] not in FINAL or not explained:
            outcome.stranded.append((row["pk"], row["status"]))
        if row["address"].lower() in received and row["status"] not in ("sent", "unknown"):
            outcome.unexplained.append((row["pk"], row["status"]))
    return outcome


def wait_until(predicate, *, timeout: float, every: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not reached within {timeout}s")


def run_finished(run) -> bool:
    from campaigns.models import CampaignRun

    return CampaignRun.objects.filter(pk=run.pk, status__in=["done", "cancelled", "failed"]).exists()


def broker_db_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))
