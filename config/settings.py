"""Settings, read from the environment (see README "Configuration").

Embedded defaults need no server: a SQLite file and kombu's filesystem broker under var/.
With DEBUG off, insecure values stop the process with a message naming the variable.
"""

import re
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_choice,
    env_broker,
    env_date,
    env_database,
    env_email,
    env_int,
    env_list,
    env_log_level,
    env_region,
    env_str,
    env_timezone,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)

_DEV_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = _DEV_SECRET_KEY
elif not DEBUG and (SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    raise ImproperlyConfigured(
        "SECRET_KEY is too weak for DEBUG off: use at least 50 random characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(64))')."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list the site's host names when DEBUG is off.")
if not DEBUG and "*" in ALLOWED_HOSTS:
    # A wildcard lets a forged Host header into absolute URLs (password resets, unsubscribe links).
    raise ImproperlyConfigured("ALLOWED_HOSTS must not contain '*' when DEBUG is off; list the host names.")

SITE_URL = env_url("SITE_URL", "http://localhost:8000")
if not DEBUG and not SITE_URL.startswith("https://"):
    raise ImproperlyConfigured("SITE_URL must be an https:// URL when DEBUG is off (it goes into every message).")
CSRF_TRUSTED_ORIGINS = [SITE_URL]
# utm_source of every link to the shop in a message (utm_medium is the channel).
UTM_SOURCE = env_str("UTM_SOURCE", "winback")
# The SMS refusal instruction of English messages (Chinese ones use the contact policy's).
SMS_OPT_OUT_TEXT_EN = env_str("SMS_OPT_OUT_TEXT_EN", "Reply STOP to opt out")

INSTALLED_APPS = [
    "core.apps.BackOfficeAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "import_export",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "anymail",
    "core",
    "reactivation",
    "campaigns",
    "consent",
    "dashboard",
]
# The admin home page's extra context (core/admin_site.py reads it; core imports no app).
ADMIN_INDEX_CONTEXT = "dashboard.views.index_context"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.security_headers.SecurityHeadersMiddleware",
    # Last, as django-axes requires: it answers a locked-out login attempt.
    "axes.middleware.AxesMiddleware",
]

if not DEBUG:
    # Static files from the app server in production; runserver serves them in development.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database ---------------------------------------------------------------------------------
DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: WAL lets readers run beside one writer, and
    # IMMEDIATE transactions queue writers instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env_int("CONN_MAX_AGE", 60, minimum=0))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cache: Redis when the broker is Redis (shared counters such as send rates), else local memory.
# ------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_broker("CELERY_BROKER_URL", "filesystem://")
CACHE_URL = env_str("CACHE_URL", CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
elif CACHE_URL in ("", "locmem://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    raise ImproperlyConfigured(f"CACHE_URL must be a redis:// URL or locmem:// (or unset); got {CACHE_URL!r}.")

# Auth, i18n --------------------------------------------------------------------------------
# Login throttling (django-axes): LOGIN_FAILURE_LIMIT wrong passwords for one account, or from
# one IP address, lock that account or address out of the login form for LOGIN_LOCKOUT_MINUTES
# (429), whatever the password; a successful login resets the count. The IP is REMOTE_ADDR:
# behind a proxy, the proxy must set it (gunicorn --forwarded-allow-ips).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
TIME_ZONE = env_timezone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
DEFAULT_REGION = env_region("DEFAULT_REGION", "CN")

# Static and uploaded files (uploads live where every web and worker process can read them) -----
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
IMPORT_MAX_FILE_BYTES = env_int("IMPORT_MAX_FILE_BYTES", 2 * 1024**3, minimum=1)
IMPORT_MAX_ROWS = env_int("IMPORT_MAX_ROWS", 10_000_000, minimum=1)
# An XLSX upload is measured before it is parsed (core/xlsx_limits.py): its size once unzipped and
# the cells its sheets span (rows x columns, empty ones included). Bigger tables go as CSV.
IMPORT_XLSX_MAX_BYTES = env_int("IMPORT_XLSX_MAX_BYTES", 100 * 1024**2, minimum=1)
IMPORT_XLSX_MAX_CELLS = env_int("IMPORT_XLSX_MAX_CELLS", 20_000_000, minimum=1)
# The small tables' imports (django-import-export: suppressions, offers, templates, rules...) run
# inside the web request and hold the file in memory: a file (or an unzipped XLSX) and a row count
# that fit in the web worker's time.
ADMIN_IMPORT_MAX_BYTES = env_int("ADMIN_IMPORT_MAX_BYTES", 5 * 1024**2, minimum=1)
ADMIN_IMPORT_MAX_ROWS = env_int("ADMIN_IMPORT_MAX_ROWS", 20_000, minimum=1)
# Uploads never confirmed (import drafts, django-import-export previews) are deleted after this.
IMPORT_DRAFT_HOURS = env_int("IMPORT_DRAFT_HOURS", 24, minimum=1)

# Security (production) ---------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Email and SMS -----------------------------------------------------------------------------
_email = env_email("EMAIL_URL", "consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST", "")
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
EMAIL_FILE_PATH = _email.get("EMAIL_FILE_PATH") or str(VAR_DIR / "mail")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Win-back <winback@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# DKIM: mail sent over SMTP is signed with this key (rsa-sha256) when its From domain is
# DKIM_DOMAIN or a subdomain; publish the public key at <selector>._domainkey.<domain>.
# All three or none: a half-configured signer would send unsigned mail without a word.
DKIM_DOMAIN = env_str("DKIM_DOMAIN", "").strip().lower().rstrip(".")
DKIM_SELECTOR = env_str("DKIM_SELECTOR", "").strip()
DKIM_PRIVATE_KEY_FILE = env_str("DKIM_PRIVATE_KEY_FILE", "").strip()
if DKIM_DOMAIN or DKIM_SELECTOR or DKIM_PRIVATE_KEY_FILE:
    for _name, _value in (("DKIM_DOMAIN", DKIM_DOMAIN), ("DKIM_SELECTOR", DKIM_SELECTOR),
                          ("DKIM_PRIVATE_KEY_FILE", DKIM_PRIVATE_KEY_FILE)):
        if not _value:
            raise ImproperlyConfigured(
                f"{_name} must be set too: DKIM signing needs DKIM_DOMAIN, DKIM_SELECTOR and "
                "DKIM_PRIVATE_KEY_FILE (unset all three to send unsigned)."
            )
    if "@" in DKIM_DOMAIN or "." not in DKIM_DOMAIN or not DKIM_DOMAIN.isascii():
        raise ImproperlyConfigured(f"DKIM_DOMAIN must be a domain name such as example.com (punycode); got {DKIM_DOMAIN!r}.")
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key

    try:
        # Parsed as the signer will parse it (dkimpy wants LF line ends), then dropped.
        _dkim_bits = parse_pem_private_key(
            Path(DKIM_PRIVATE_KEY_FILE).read_bytes().replace(b"\r\n", b"\n"))["modulus"].bit_length()
    except OSError as exc:
        raise ImproperlyConfigured(f"DKIM_PRIVATE_KEY_FILE cannot be read: {exc}") from None
    except (UnparsableKeyError, ValueError):
        raise ImproperlyConfigured(
            f"DKIM_PRIVATE_KEY_FILE is not a PEM RSA private key: {DKIM_PRIVATE_KEY_FILE} "
            "(make one with: openssl genrsa -out dkim.pem 2048)."
        ) from None
    if _dkim_bits < 1024:
        raise ImproperlyConfigured(f"DKIM_PRIVATE_KEY_FILE holds a {_dkim_bits}-bit RSA key, which receivers ignore; use 2048.")

SMS_BACKEND = env_choice("SMS_BACKEND", "console", choices=["console", "file", "http"])
SMS_FILE_PATH = env_str("SMS_FILE_PATH", str(VAR_DIR / "sms" / "outbox.jsonl"))
# The file backend's replies, pulled by beat (one JSON object a line: from, text, id, received_at).
SMS_REPLIES_PATH = env_str("SMS_REPLIES_PATH", str(VAR_DIR / "sms" / "replies.jsonl"))
# The HTTP gateway adapter (request format: campaigns/channels/sms.py and the README).
SMS_HTTP_URL = env_str("SMS_HTTP_URL", "")
SMS_HTTP_TOKEN = env_str("SMS_HTTP_TOKEN", "")
SMS_HTTP_REPLIES_URL = env_str("SMS_HTTP_REPLIES_URL", "")
SMS_HTTP_TIMEOUT = env_int("SMS_HTTP_TIMEOUT", 10, minimum=1)
if SMS_BACKEND == "http" and not SMS_HTTP_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("SMS_HTTP_URL must be the gateway's http(s) URL when SMS_BACKEND=http.")
# Email providers' bounce and complaint webhooks (django-anymail) at /anymail/<esp>/tracking/,
# protected by HTTP basic auth "user:password". Unset, the webhooks are not mounted at all:
# anymail would otherwise accept unauthenticated events from anyone.
ANYMAIL_WEBHOOK_SECRET = env_str("ANYMAIL_WEBHOOK_SECRET", "")
if ANYMAIL_WEBHOOK_SECRET and (":" not in ANYMAIL_WEBHOOK_SECRET or len(ANYMAIL_WEBHOOK_SECRET) < 16):
    raise ImproperlyConfigured("ANYMAIL_WEBHOOK_SECRET must be 'user:password', at least 16 characters in all.")
ANYMAIL = {"WEBHOOK_SECRET": ANYMAIL_WEBHOOK_SECRET}
LIST_UNSUBSCRIBE_MAILTO = env_str("LIST_UNSUBSCRIBE_MAILTO", "")
# SMTP sessions one worker process spreads a batch of email over (one thread each).
EMAIL_SEND_CONCURRENCY = env_int("EMAIL_SEND_CONCURRENCY", 4, minimum=1)
CAMPAIGN_MAX_ATTEMPTS = env_int("CAMPAIGN_MAX_ATTEMPTS", 5, minimum=1)
CAMPAIGN_RETRY_BASE_SECONDS = env_int("CAMPAIGN_RETRY_BASE_SECONDS", 60, minimum=1)
# A worker's hold on the deliveries it claimed or handed to a provider, renewed every quarter of
# it while it works: held longer without renewal, they are recovered by the sweeper (claimed:
# sent again; handed over: "unknown"), and a run nobody touched for this long is dispatched again.
CAMPAIGN_LEASE_SECONDS = env_int("CAMPAIGN_LEASE_SECONDS", 120, minimum=1)
# Most messages handed to a provider after one consent check; the most one worker process can
# leave with an unknown outcome when it dies.
CAMPAIGN_HAND_OVER_GROUP = env_int("CAMPAIGN_HAND_OVER_GROUP", 20, minimum=1)
SMS_WEBHOOK_SECRET = env_str("SMS_WEBHOOK_SECRET", "")
if not DEBUG and SMS_WEBHOOK_SECRET and len(SMS_WEBHOOK_SECRET) < 16:
    raise ImproperlyConfigured("SMS_WEBHOOK_SECRET must be at least 16 characters when set.")

# Celery ------------------------------------------------------------------------------------
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        # kombu's default is a "control" folder relative to the working directory.
        "control_folder": str(_broker_dir / "control"),
    }
    # kombu writes into these folders but never creates them: the first .delay() from the web
    # process, or the worker's first poll, would fail with FileNotFoundError.
    try:
        for _folder in ("queue", "processed", "control"):
            (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(f"VAR_DIR: cannot create the broker folders under {_broker_dir}: {exc}") from None
elif CELERY_BROKER_URL.startswith("redis"):
    # How long Redis waits before giving an unacknowledged message (its worker died) to another
    # worker. No work depends on it: deferrals wait in the delivery rows (not_before, picked up by
    # dispatch_due), and the sweeper re-dispatches a run whose messages were lost. It must exceed
    # the longest a task can legitimately hold its message, or a message still in progress is
    # handed out twice (harmless, since claims are conditional, but wasted): the longest retry
    # countdown (send_chunk: 10 minutes) and the slowest chunk (500 messages at 1 per second).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Django REST framework ---------------------------------------------------------------------
API_RATE_LIMIT = env_str("API_RATE_LIMIT", "6000/min").strip()
if not re.fullmatch(r"[1-9]\d*/(s|sec|second|m|min|minute|h|hour|d|day)", API_RATE_LIMIT):
    raise ImproperlyConfigured(f"API_RATE_LIMIT must be a count per period such as 6000/min or 100/s; got {API_RATE_LIMIT!r}.")
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    # JSON only, with its nesting bounded (core/json_parser.py); form bodies answer 415.
    "DEFAULT_PARSER_CLASSES": ["core.json_parser.BoundedJSONParser"],
    # Per token (campaigns/api/throttling.py): API_RATE_LIMIT requests, e.g. "6000/min"; 429 beyond.
    "DEFAULT_THROTTLE_CLASSES": ["campaigns.api.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_token": API_RATE_LIMIT},
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Win-back back office API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files from this installation (drf-spectacular-sidecar), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api_schema.error_responses_add",
    ],
}

# Import/export: formula escaping for every exported cell is done by core.csv_safety. ----------
IMPORT_EXPORT_SKIP_ADMIN_LOG = True
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "add"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"

# Product defaults ---------------------------------------------------------------------------
# Times from outside (API, webhooks, provider polls) must lie between EARLIEST_DATE (never before
# 1970; later if the shop opened later) and MAX_CLOCK_AHEAD_SECONDS after now (core/time_bounds.py).
EARLIEST_DATE = env_date("EARLIEST_DATE", "1970-01-01")
if EARLIEST_DATE.year < 1970:
    raise ImproperlyConfigured(f"EARLIEST_DATE must not be before 1970-01-01; got {EARLIEST_DATE.isoformat()}.")
MAX_CLOCK_AHEAD_SECONDS = env_int("MAX_CLOCK_AHEAD_SECONDS", 300, minimum=0)
if MAX_CLOCK_AHEAD_SECONDS > 3600:
    raise ImproperlyConfigured("MAX_CLOCK_AHEAD_SECONDS must be at most 3600 (a clock an hour fast is a broken clock).")
# The privacy notice version in force: recorded on every consent event that does not name one
# (a grant in the preference center, an SMS reply, a withdrawal). The notice itself is published
# by the product, so its version changes with a deployment, like this setting.
NOTICE_VERSION = env_str("NOTICE_VERSION", "1").strip()
if not NOTICE_VERSION or len(NOTICE_VERSION) > 50:
    raise ImproperlyConfigured("NOTICE_VERSION must be 1 to 50 characters (the privacy notice version in force).")
LIFECYCLE_NEW_DAYS = env_int("LIFECYCLE_NEW_DAYS", 30, minimum=1)
LIFECYCLE_REACTIVATED_DAYS = env_int("LIFECYCLE_REACTIVATED_DAYS", 30, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_log_level("LOG_LEVEL", "INFO")},
    # django-axes logs every successful login's counter reset at INFO; lockouts are WARNING.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
