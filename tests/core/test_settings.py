"""Settings fail loudly: a bad or insecure value stops the process with a message naming the variable.

Settings are read once per process, so each case starts a fresh interpreter with a crafted
environment (nothing inherited from the test run) and looks at its exit status and stderr.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from config import env as config_env

BASE_DIR = Path(__file__).resolve().parents[2]
STRONG_KEY = secrets.token_urlsafe(64)


@pytest.fixture
def production_env(tmp_path):
    """A production-like environment that starts cleanly; each test breaks one variable."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "VAR_DIR": str(tmp_path / "var"),
        "DEBUG": "0",
        "SECRET_KEY": STRONG_KEY,
        "ALLOWED_HOSTS": "winback.example.com",
        "SITE_URL": "https://winback.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
    }


def run_python(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def django_setup(env: dict) -> subprocess.CompletedProcess:
    return run_python(env, "-c", "import django; django.setup()")


def test_production_like_environment_starts(production_env):
    result = django_setup(production_env)

    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_with_a_production_like_environment(production_env):
    result = run_python(production_env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stderr


def test_debug_on_needs_nothing_else(production_env):
    # Given only DEBUG=1 (the `make run` defaults), when Django starts, then it starts.
    env = {k: production_env[k] for k in ("PATH", "HOME", "DJANGO_SETTINGS_MODULE", "VAR_DIR")}
    env["DEBUG"] = "1"

    result = django_setup(env)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("DEBUG", "maybe", "DEBUG must be one of"),
        ("SECRET_KEY", None, "SECRET_KEY must be set"),
        ("SECRET_KEY", "", "SECRET_KEY must be set"),
        ("SECRET_KEY", "short-key", "SECRET_KEY is too weak"),
        ("SECRET_KEY", "django-insecure-" + "x1y2z3" * 10, "SECRET_KEY is too weak"),
        ("SECRET_KEY", "ab" * 40, "SECRET_KEY is too weak"),  # long but only two distinct characters
        ("ALLOWED_HOSTS", None, "ALLOWED_HOSTS must list"),
        ("ALLOWED_HOSTS", " , ", "ALLOWED_HOSTS must list"),
        ("ALLOWED_HOSTS", "*", "ALLOWED_HOSTS must not contain '*'"),
        ("DATABASE_URL", "mysqlish://db/x", "DATABASE_URL must be a postgres:// or sqlite:///"),
        ("DATABASE_URL", "redis://127.0.0.1:6379/0", "DATABASE_URL must be a postgres:// or sqlite:///"),
        ("DATABASE_URL", "not a url", "DATABASE_URL"),
        ("DATABASE_URL", "postgres://root@127.0.0.1:notaport/x", "DATABASE_URL is not a valid database URL"),
        ("DATABASE_URL", "postgres://root@127.0.0.1:5432", "DATABASE_URL must name the database"),
        ("TIME_ZONE", "Mars/Olympus_Mons", "TIME_ZONE is not a known time zone"),
        ("DEFAULT_REGION", "XX", "DEFAULT_REGION is not a phone region code"),
        ("SITE_URL", "http://winback.example.com", "SITE_URL must be an https:// URL"),
        ("SITE_URL", "winback.example.com", "SITE_URL must be an absolute http(s) URL"),
        ("SITE_URL", "https://", "SITE_URL must be an absolute http(s) URL"),
        ("EMAIL_URL", "pigeon://coop", "EMAIL_URL is not a valid email URL"),
        ("CELERY_BROKER_URL", "pigeon://coop", "CELERY_BROKER_URL must be a broker URL"),
        ("CELERY_BROKER_URL", "localhost:6379", "CELERY_BROKER_URL must be a broker URL"),
        ("CACHE_URL", "memcached://127.0.0.1", "CACHE_URL must be a redis:// URL"),
        ("SMS_WEBHOOK_SECRET", "short", "SMS_WEBHOOK_SECRET must be at least 16"),
        ("ANYMAIL_WEBHOOK_SECRET", "nocolonhere-but-long-enough", "ANYMAIL_WEBHOOK_SECRET must be 'user:password'"),
        ("SMS_BACKEND", "carrier-pigeon", "SMS_BACKEND must be one of console, file, http"),
        ("SMS_BACKEND", "http", "SMS_HTTP_URL must be the gateway's http(s) URL"),
        ("SMS_HTTP_TIMEOUT", "soon", "SMS_HTTP_TIMEOUT must be an integer"),
        ("EMAIL_SEND_CONCURRENCY", "0", "EMAIL_SEND_CONCURRENCY must be at least 1"),
        ("CAMPAIGN_MAX_ATTEMPTS", "0", "CAMPAIGN_MAX_ATTEMPTS must be at least 1"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be one of"),
        ("CONN_MAX_AGE", "forever", "CONN_MAX_AGE must be an integer"),
        ("IMPORT_MAX_ROWS", "0", "IMPORT_MAX_ROWS must be at least 1"),
        ("SECURE_SSL_REDIRECT", "sometimes", "SECURE_SSL_REDIRECT must be one of"),
    ],
)
def test_bad_value_refuses_to_start_and_names_the_variable(production_env, variable, value, expected):
    # Given a production-like environment with one bad variable
    env = dict(production_env)
    if value is None:
        env.pop(variable, None)
    else:
        env[variable] = value
    if variable == "CONN_MAX_AGE":  # only read for PostgreSQL; parsing happens before connecting
        env["DATABASE_URL"] = "postgres://root@127.0.0.1:5432/never_connected"

    # When Django starts
    result = django_setup(env)

    # Then it exits non-zero with ImproperlyConfigured naming the variable
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured:"), result.stderr
    assert variable in last_line
    assert expected in last_line


def test_manage_py_check_also_refuses(production_env):
    env = dict(production_env, DEBUG="maybe")

    result = run_python(env, "manage.py", "check")

    assert result.returncode != 0
    assert "DEBUG must be one of" in result.stderr


def test_filesystem_broker_folders_exist_after_start(production_env, tmp_path):
    # kombu's filesystem transport writes into these folders but never creates them.
    result = django_setup(production_env)

    assert result.returncode == 0, result.stderr
    for folder in ("queue", "processed", "control"):
        assert (tmp_path / "var" / "broker" / folder).is_dir()


# The typed readers, in-process -------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [("1", True), ("true", True), (" YES ", True), ("on", True),
                                           ("0", False), ("false", False), ("No", False), ("off", False), ("", False)])
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)

    assert config_env.env_bool("FLAG") is expected


def test_env_bool_default_when_unset(monkeypatch):
    monkeypatch.delenv("FLAG", raising=False)

    assert config_env.env_bool("FLAG", True) is True


def test_env_list_strips_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("HOSTS", " a.example.com, ,b.example.com ")

    assert config_env.env_list("HOSTS", []) == ["a.example.com", "b.example.com"]


def test_env_database_reads_postgres(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://root:pw@db.internal:5433/winback")

    config = config_env.env_database("DATABASE_URL", "sqlite:///x.sqlite3")

    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == ("db.internal", 5433, "winback", "root")


@pytest.mark.parametrize("raw", ["redis://127.0.0.1:6379/3", "amqp://guest:guest@127.0.0.1:5672//", "filesystem://"])
def test_env_broker_accepts_real_brokers(monkeypatch, raw):
    monkeypatch.setenv("CELERY_BROKER_URL", raw)

    assert config_env.env_broker("CELERY_BROKER_URL", "filesystem://") == raw


def test_env_email_accepts_shorthands_and_smtp(monkeypatch):
    monkeypatch.setenv("EMAIL_URL", "console")
    assert config_env.env_email("EMAIL_URL", "")["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"

    monkeypatch.setenv("EMAIL_URL", "smtp+tls://user:pw@smtp.example.com:587")
    smtp = config_env.env_email("EMAIL_URL", "")
    assert smtp["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert (smtp["EMAIL_HOST"], smtp["EMAIL_PORT"], smtp["EMAIL_USE_TLS"]) == ("smtp.example.com", 587, True)


def test_env_region_is_case_insensitive(monkeypatch):
    monkeypatch.setenv("DEFAULT_REGION", "us")

    assert config_env.env_region("DEFAULT_REGION", "CN") == "US"


def test_env_url_drops_the_trailing_slash(monkeypatch):
    monkeypatch.setenv("SITE_URL", "https://winback.example.com/")

    assert config_env.env_url("SITE_URL", "http://localhost:8000") == "https://winback.example.com"
