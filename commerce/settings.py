"""Settings for the commerce project, read from the environment with django-environ.

Every variable is listed with its default and meaning in `.env.example`. The defaults need no
server (SQLite, a file-based Celery broker, a local Kafka on 127.0.0.1:9092); production sets
`DEBUG=off`, `SECRET_KEY`, `ALLOWED_HOSTS`, `DATABASE_URL`, `CELERY_BROKER_URL`, `CACHE_URL`.
"""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var")))


class _Env(environ.Env):
    """django-environ, with the variable named when its value cannot be read (a bare
    `ValueError: invalid literal for int() with base 10: 'abc'` names nothing), and numbers read
    strictly: django-environ keeps only the digits of a float, so `PAYMENT_REVIEW_AFTER=1h` was
    one second."""

    @classmethod
    def parse_value(cls, value: Any, cast: Any) -> Any:
        if cast is float and isinstance(value, str):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"not a finite number: {value!r}")
            return number
        return super().parse_value(value, cast)

    def get_value(
        self, var: str, cast: Any = None, default: Any = environ.Env.NOTSET, parse_default: bool = False
    ) -> Any:
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except (ValueError, TypeError) as exc:
            found = self.ENVIRON.get(var, "")
            raise environ.ImproperlyConfigured(f"{var}={found!r} cannot be read: {exc}") from exc

    def at_least(
        self, var: str, cast: type, default: Any, minimum: float, *, above: bool = False, maximum: float | None = None
    ) -> Any:
        """A number no smaller than `minimum` (larger, with `above`) and, with `maximum`, no
        larger than that: a negative tolerance refused every callback, a retention of 0 days
        emptied the inbox at its next purge, a million days overflowed the purge's date."""
        value = self.get_value(var, cast=cast, default=default)
        if value < minimum or (above and value == minimum):
            bound = "more than" if above else "at least"
            raise environ.ImproperlyConfigured(f"{var}={value!r} is out of range: it must be {bound} {minimum}")
        if maximum is not None and value > maximum:
            raise environ.ImproperlyConfigured(f"{var}={value!r} is out of range: it must be at most {maximum}")
        return value

    def rate(self, var: str, default: str) -> str:
        """A DRF throttle rate. DRF reads it at each request: a bad one was a 500 on every call."""
        value = self.str(var, default=default)
        if not re.fullmatch(r"[0-9]+/[smhd][a-z]*", value):
            raise environ.ImproperlyConfigured(
                f"{var}={value!r} cannot be read: a rate is <requests>/<second|minute|hour|day>, e.g. 10/min"
            )
        return value


env = _Env()
VAR_DIR.mkdir(parents=True, exist_ok=True)
env_file = BASE_DIR / ".env"
if env_file.exists():
    environ.Env.read_env(str(env_file))

DEBUG = env.bool("DEBUG", default=False)
if DEBUG:
    SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key-never-use-in-production")
else:
    # No default: a production process without a secret must not start (unset or empty).
    SECRET_KEY = env.str("SECRET_KEY")
    if not SECRET_KEY:
        raise environ.ImproperlyConfigured("SECRET_KEY is empty; it is required when DEBUG is off")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "commerce",  # project-wide commands (simulate_traffic) and the pipeline dashboard
    "outbox",
    "catalog",
    "orders",
    "payments",
    "backoffice",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "commerce.tracing.TraceparentMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "commerce.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "commerce" / "templates"],
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

WSGI_APPLICATION = "commerce.wsgi.application"

# --- Database ---------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=0))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (server, worker, consumer) share one SQLite file: wait for the write lock
    # instead of failing at once, and test on a file (not :memory:) so that a worker subprocess
    # sees what a test committed.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 30)
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    DATABASES["default"]["OPTIONS"].setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
    # One file per test run, so that concurrent runs on one machine do not share a database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "static"))

# --- Security (production values unless DEBUG) ------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# --- REST framework and OpenAPI ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["commerce.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "commerce.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Commerce API",
    "DESCRIPTION": "Catalog, orders and payments; every state change is published to Kafka "
    "through a transactional outbox.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Kafka ------------------------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = env.list("KAFKA_BOOTSTRAP_SERVERS", default=["127.0.0.1:9092"])
# The relay's producer: kafka-python (default), or confluent (librdkafka, `pip install
# confluent-kafka`; outbox/kafka_confluent.py). The back office and the admin client stay on
# kafka-python either way.
KAFKA_CLIENT = env.str("KAFKA_CLIENT", default="kafka-python")
# The relay producer's acks: only "all" keeps the idempotent producer's guarantees (checked at start).
KAFKA_PRODUCER_ACKS = env.str("KAFKA_PRODUCER_ACKS", default="all")
# Passed through to kafka-python's producer, consumer and admin client as they are.
KAFKA_SECURITY = {
    key: value
    for key, value in {
        "security_protocol": env.str("KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT"),
        "sasl_mechanism": env.str("KAFKA_SASL_MECHANISM", default=None),
        "sasl_plain_username": env.str("KAFKA_SASL_USERNAME", default=None),
        "sasl_plain_password": env.str("KAFKA_SASL_PASSWORD", default=None),
        "ssl_cafile": env.str("KAFKA_SSL_CAFILE", default=None),
        "ssl_certfile": env.str("KAFKA_SSL_CERTFILE", default=None),
        "ssl_keyfile": env.str("KAFKA_SSL_KEYFILE", default=None),
    }.items()
    if value is not None
}
# Logical stream name (used in events.py) -> Kafka topic name. Tests give each test its own names.
KAFKA_TOPICS = {
    "catalog-events": env.str("KAFKA_TOPIC_CATALOG", default="catalog-events"),
    "order-events": env.str("KAFKA_TOPIC_ORDERS", default="order-events"),
}
KAFKA_TOPIC_PARTITIONS = env.int("KAFKA_TOPIC_PARTITIONS", default=3)
# Replication of the topics ensure_topics creates (outbox/topics.py). Unset: min(3, brokers) and
# then 2 when the factor is 3 or more, else 1; unclean leader election is always off.
KAFKA_REPLICATION_FACTOR = env.int("KAFKA_REPLICATION_FACTOR", default=None)
KAFKA_MIN_INSYNC_REPLICAS = env.int("KAFKA_MIN_INSYNC_REPLICAS", default=None)

# --- Outbox relay -----------------------------------------------------------------------------
OUTBOX_POLL_INTERVAL = env.float("OUTBOX_POLL_INTERVAL", default=1.0)
OUTBOX_BATCH_SIZE = env.int("OUTBOX_BATCH_SIZE", default=500)
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=12)
OUTBOX_BACKOFF_BASE = env.float("OUTBOX_BACKOFF_BASE", default=0.5)
OUTBOX_BACKOFF_MAX = env.float("OUTBOX_BACKOFF_MAX", default=60.0)
OUTBOX_CLAIM_TTL = env.float("OUTBOX_CLAIM_TTL", default=60.0)
OUTBOX_DEAD_BLOCKS_KEY = env.bool("OUTBOX_DEAD_BLOCKS_KEY", default=False)
# Each topic gets an equal share of every claim (the rest goes oldest first): a flood of events on
# one topic (product views) cannot push another's (orders) behind it. docs/OUTBOX.md, "Lanes".
OUTBOX_FAIR_SHARE = env.bool("OUTBOX_FAIR_SHARE", default=True)
OUTBOX_KICK_DEBOUNCE = env.float("OUTBOX_KICK_DEBOUNCE", default=0.05)
OUTBOX_KICK_ENABLED = env.bool("OUTBOX_KICK_ENABLED", default=True)
# The relay's wake-up after a commit (docs/OUTBOX.md, "Wake-up"): `notify` (PostgreSQL: a NOTIFY in
# the recording transaction, heard by `manage.py relay_loop`; no Celery kick), `celery` (the
# on-commit kick through the Celery broker), `auto` (notify on PostgreSQL, celery elsewhere).
OUTBOX_WAKEUP = env.str("OUTBOX_WAKEUP", default="auto")
# The relay loop drains this often even without a notification (a NOTIFY lost with the loop's
# connection, rows whose backoff ran out); the beat drain stays the last safety net.
OUTBOX_LOOP_POLL_INTERVAL = env.float("OUTBOX_LOOP_POLL_INTERVAL", default=1.0)
# Beside a relay loop, the beat's drain takes only rows due for this long: what just committed is
# the loop's (its poll comes every OUTBOX_LOOP_POLL_INTERVAL); an older row means no loop sent it.
OUTBOX_SAFETY_NET_AGE = env.float("OUTBOX_SAFETY_NET_AGE", default=5.0)
# The relay producer's linger: 0 sends a lone record at once (latency); under load kafka-python
# still batches what accumulates while requests are in flight (bench/latency.py, bench/relay.py).
OUTBOX_PRODUCER_LINGER_MS = env.int("OUTBOX_PRODUCER_LINGER_MS", default=0)
# The relay loop's claim is a prepared statement (planned once per connection, not per wake-up).
# Off behind a transaction-pooling PgBouncer (any version: it keeps protocol-level prepared
# statements at best, never SQL PREPARE, which this is).
OUTBOX_CLAIM_PREPARED = env.bool("OUTBOX_CLAIM_PREPARED", default=True)
# Recording prepares its INSERT (psycopg 3's protocol-level prepared statement, per connection).
# Off behind a transaction-mode pooler that does not keep those: PgBouncer before 1.22 (psycopg
# sends DEALLOCATE ALL at each rollback), or with max_prepared_statements = 0.
OUTBOX_RECORD_PREPARED = env.bool("OUTBOX_RECORD_PREPARED", default=True)
OUTBOX_RETENTION = timedelta(days=env.float("OUTBOX_RETENTION_DAYS", default=7))
OUTBOX_STALE_SECONDS = env.float("OUTBOX_STALE_SECONDS", default=60.0)
# Fault tests only: seconds the relay waits between the broker's acknowledgement and marking rows.
OUTBOX_FAULT_PAUSE_AFTER_SEND = env.float("OUTBOX_FAULT_PAUSE_AFTER_SEND", default=0.0)
# Fault tests only: the relay process kills itself (SIGKILL) when it is about to send this event id.
OUTBOX_FAULT_CRASH_ON_EVENT_ID = env.str("OUTBOX_FAULT_CRASH_ON_EVENT_ID", default="")

# --- Payments (fail closed: outside DEBUG nothing defaults; commerce/checks.py refuses to run
# without a gateway, with the simulator, or with a missing or short callback secret) -----------
PAYMENT_GATEWAY = env.str("PAYMENT_GATEWAY", default="payments.simulator.SimulatedGateway" if DEBUG else "")
PAYMENT_CALLBACK_SECRET = env.str(
    "PAYMENT_CALLBACK_SECRET",
    default="dev-only-callback-secret-never-use-in-production" if DEBUG else "",
)
PAYMENT_CALLBACK_SECRET_MIN_LENGTH = 32
# Seconds a callback's signed X-Gateway-Timestamp may differ from our clock.
PAYMENT_CALLBACK_TOLERANCE = env.at_least("PAYMENT_CALLBACK_TOLERANCE", float, 300.0, 0, above=True, maximum=86400)
# A larger callback body is refused with 413 before it is read.
PAYMENT_CALLBACK_MAX_BYTES = env.int("PAYMENT_CALLBACK_MAX_BYTES", default=64 * 1024)
PAYMENT_SIM_FAILURE_RATE = env.float("PAYMENT_SIM_FAILURE_RATE", default=0.1)
PAYMENT_SIM_DELAY = env.float("PAYMENT_SIM_DELAY", default=0.2)
# Seconds without an answer after which the reconciliation asks the gateway about a payment.
PAYMENT_RECONCILE_AFTER = env.float("PAYMENT_RECONCILE_AFTER", default=30.0)
# Seconds after which a payment the gateway still calls "processing" goes to manual review.
PAYMENT_REVIEW_AFTER = env.float("PAYMENT_REVIEW_AFTER", default=3600.0)
PAYMENT_RECONCILE_INTERVAL = env.float("PAYMENT_RECONCILE_INTERVAL", default=30.0)
# An order awaiting payment this long, with no payment open or captured, is cancelled and its
# stock put back on sale (the beat's `orders.expire_unpaid`); 0: never.
ORDER_PAYMENT_TIMEOUT_MINUTES = env.at_least("ORDER_PAYMENT_TIMEOUT_MINUTES", float, 30.0, 0, maximum=525_600)
# Where the simulated gateway POSTs its callbacks; empty: it calls the callback handler in-process.
PAYMENT_CALLBACK_BASE_URL = env.str("PAYMENT_CALLBACK_BASE_URL", default="")

# --- API rate limits (DRF throttles, commerce/throttling.py; 429 with Retry-After) -----------
# Per client IP for anonymous requests, per user for authenticated ones, per IP for the token
# endpoint (password guessing). The test settings raise the first two for the suite and the
# load tools; set them in the environment of a load test against a running server.
THROTTLE_ANON = env.rate("THROTTLE_ANON", default="120/min")
THROTTLE_USER = env.rate("THROTTLE_USER", default="1200/min")
THROTTLE_LOGIN = env.rate("THROTTLE_LOGIN", default="10/min")
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["commerce.throttling.AnonThrottle", "commerce.throttling.UserThrottle"]
# How many reverse proxies in front of the API append to X-Forwarded-For: the client's address
# for the rate limits is the entry the outermost of them wrote. 0 (no proxy): the connection's
# address, the header ignored; DRF's default trusted the whole header, which any client writes,
# so a new value per request was a new allowance (unlimited password guesses).
TRUSTED_PROXIES = env.at_least("TRUSTED_PROXIES", int, 0, 0)
# Said explicitly (0 included): with DEBUG off a system check warns otherwise, since behind a
# proxy the default makes every client one (the proxy's address): one rate-limit bucket for all.
TRUSTED_PROXIES_GIVEN = bool(env.str("TRUSTED_PROXIES", default=""))
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXIES
# Bearer token that lets monitoring read /health/relay without a staff session; empty: staff only.
HEALTH_TOKEN = env.str("HEALTH_TOKEN", default="")
# /health/backoffice is unhealthy when events wait and the consumer handled none for this long.
BACKOFFICE_STALE_SECONDS = env.float("BACKOFFICE_STALE_SECONDS", default=60.0)

# --- Back office ------------------------------------------------------------------------------
BACKOFFICE_GROUP_ID = env.str("BACKOFFICE_GROUP_ID", default="backoffice")
BACKOFFICE_BATCH_SIZE = env.int("BACKOFFICE_BATCH_SIZE", default=500)
BACKOFFICE_SESSION_TIMEOUT_MS = env.int("BACKOFFICE_SESSION_TIMEOUT_MS", default=10000)
# The consumer's latency knobs (docs/BACKOFFICE.md, tuning): the longest the broker holds an
# empty fetch, and the longest one poll waits for records (both return as soon as records come).
BACKOFFICE_FETCH_MAX_WAIT_MS = env.int("BACKOFFICE_FETCH_MAX_WAIT_MS", default=100)
BACKOFFICE_POLL_TIMEOUT_MS = env.int("BACKOFFICE_POLL_TIMEOUT_MS", default=500)
BACKOFFICE_INBOX_RETENTION = timedelta(
    days=env.at_least("BACKOFFICE_INBOX_RETENTION_DAYS", float, 14.0, 0, above=True, maximum=36500)
)
PRODUCT_CACHE_KEY = "catalog:product:{product_id}"

# --- Event contract (docs/EVENTS.md) ----------------------------------------------------------
# The shop's one currency (ISO 4217): OrderConfirmed v2 carries it, and the back office gives
# it to the OrderConfirmed v1 records it upcasts (their amounts were in it).
SHOP_CURRENCY = env.str("SHOP_CURRENCY", default="EUR")
# Check each event's payload against its JSON Schema when it is recorded (a mismatch raises in
# the service that records it). On in development and tests; off in production, where the back
# office checks the same schema and dead-letters a mismatch.
OUTBOX_EVENT_SCHEMA_CHECK = env.bool("OUTBOX_EVENT_SCHEMA_CHECK", default=DEBUG)

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _celery_dir = VAR_DIR / "celery"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "processed_folder": str(_celery_dir / "processed"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
        # The file transport polls its folder; its default of 1 s would add up to a second to
        # every kick and reaction.
        "polling_interval": 0.05,
    }
    for _folder in ("queue", "processed", "control"):
        (_celery_dir / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
# Relay drains (kicks and beat) on a queue of their own, so that they never wait in line in front
# of domain reactions; a worker started without -Q consumes both queues (commerce/celery.py).
OUTBOX_CELERY_QUEUE = env.str("OUTBOX_CELERY_QUEUE", default=f"{CELERY_TASK_DEFAULT_QUEUE}-outbox")
CELERY_TASK_IGNORE_RESULT = True
# The project's structured logging (LOGGING below) applies in the worker too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "outbox-drain": {"task": "outbox.relay_drain", "schedule": OUTBOX_POLL_INTERVAL, "kwargs": {"safety_net": True}},
    "outbox-purge-published": {"task": "outbox.purge_published", "schedule": 3600.0},
    "payments-reconcile": {"task": "payments.reconcile", "schedule": PAYMENT_RECONCILE_INTERVAL},
    "orders-follow-lost-payments": {"task": "orders.follow_lost_payments", "schedule": PAYMENT_RECONCILE_INTERVAL},
    "orders-expire-unpaid": {"task": "orders.expire_unpaid", "schedule": 60.0},
    "backoffice-purge-inbox": {"task": "backoffice.purge_inbox", "schedule": 3600.0},
}

# --- Observability (docs/OPERATIONS.md, Observability) ----------------------------------------
# /metrics answers a bearer token equal to METRICS_TOKEN, or a staff session; empty: staff only.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Metrics ports of the Celery worker (its prefork children summed: PROMETHEUS_MULTIPROC_DIR) and of
# consume_events; 0 turns the exporter off.
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
CONSUMER_METRICS_PORT = env.int("CONSUMER_METRICS_PORT", default=0)
# Traces: none (default), otlp (OTEL_EXPORTER_OTLP_ENDPOINT, read by the exporter) or console.
OTEL_TRACES_EXPORTER = env.str("OTEL_TRACES_EXPORTER", default="none")
OTEL_SERVICE_NAME = env.str("OTEL_SERVICE_NAME", default="commerce")

# --- Logging ----------------------------------------------------------------------------------
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "commerce.logging.ContextFilter"},
        "once_a_minute": {"()": "commerce.logging.RepeatedFilter", "every_s": 60.0},
    },
    "formatters": {
        "json": {"()": "commerce.logging.JsonFormatter"},
        "text": {"()": "commerce.logging.TextFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "kafka": {"level": env.str("KAFKA_LOG_LEVEL", default="WARNING")},
        # A missing topic, asked for every 100 ms: the same error line once a minute is enough.
        "kafka.cluster": {"filters": ["once_a_minute"]},
        "django.db.backends": {"level": "INFO"},
        # The file broker has no host name; kombu warns about it on every publish.
        "kombu.connection": {"level": "ERROR"},
    },
}
