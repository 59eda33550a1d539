"""Typed readers for environment variables.

Every reader raises ``ImproperlyConfigured`` naming the variable when a value is set but
cannot be parsed, so a typo in production stops the process at start-up instead of being
silently read as a default (healthchecks ``hc/settings.py`` does the same).
"""

import os
import zoneinfo
from datetime import date
from urllib.parse import urlsplit

import environ
import phonenumbers
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}.")


def env_choice(name: str, default: str, *, choices: list[str]) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer; got {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {value}.")
    return value


def env_date(name: str, default: str) -> date:
    """A calendar date written YYYY-MM-DD."""
    raw = os.environ.get(name) or default
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a date written YYYY-MM-DD; got {raw!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


_SUPPORTED_DATABASE_ENGINES = {"django.db.backends.postgresql", "django.db.backends.sqlite3"}


def env_database(name: str, default: str) -> dict:
    raw = os.environ.get(name) or default
    try:
        config = environ.Env.db_url_config(raw)
    except Exception as exc:  # django-environ raises several types for a bad URL
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    engine = config.get("ENGINE") or ""
    if engine not in _SUPPORTED_DATABASE_ENGINES:
        raise ImproperlyConfigured(
            f"{name} must be a postgres:// or sqlite:/// URL (the two databases this project supports); "
            f"got scheme {raw.split(':', 1)[0]!r}."
        )
    if engine.endswith("postgresql") and not config.get("NAME"):
        raise ImproperlyConfigured(f"{name} must name the database, e.g. postgres://user@host:5432/dbname.")
    return config



_EMAIL_SHORTHANDS = {"console": "consolemail://", "file": "filemail://", "locmem": "memorymail://"}


def env_email(name: str, default: str) -> dict:
    raw = os.environ.get(name) or default
    raw = _EMAIL_SHORTHANDS.get(raw, raw)
    try:
        return environ.Env.email_url_config(raw)
    except Exception as exc:
        raise ImproperlyConfigured(f"{name} is not a valid email URL: {exc}") from None


def env_timezone(name: str, default: str) -> str:
    value = os.environ.get(name) or default
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(f"{name} is not a known time zone: {value!r}.") from None
    return value


def env_region(name: str, default: str) -> str:
    value = (os.environ.get(name) or default).upper()
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ImproperlyConfigured(f"{name} is not a phone region code such as CN or US: {value!r}.")
    return value


def env_url(name: str, default: str) -> str:
    value = (os.environ.get(name) or default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImproperlyConfigured(f"{name} must be an absolute http(s) URL such as https://winback.example.com; got {value!r}.")
    return value


# Transports Celery (kombu) can reach; "filesystem" needs no server and is the embedded default.
_BROKER_SCHEMES = {"filesystem", "redis", "rediss", "amqp", "amqps", "pyamqp", "memory", "sqs"}


def env_broker(name: str, default: str) -> str:
    value = os.environ.get(name) or default
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in _BROKER_SCHEMES:
        raise ImproperlyConfigured(
            f"{name} must be a broker URL such as redis://host:6379/0, amqp://user:pass@host:5672// "
            f"or filesystem://; got {value!r}."
        )
    return value


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def env_log_level(name: str, default: str) -> str:
    value = (os.environ.get(name) or default).upper()
    if value not in _LOG_LEVELS:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(_LOG_LEVELS)}; got {value!r}.")
    return value
