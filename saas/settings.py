"""Tollgate settings: everything that differs between machines comes from the environment."""

from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The variables already in the environment win over the file; ENV_FILE names another file
# (/dev/null: the environment alone, as in a container or the settings' own tests).
environ.Env.read_env(env.str("ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="insecure-dev-only" if DEBUG else "")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

# The bootstrap admin credential, always accepted by the admin API so a fresh install can mint
# named admin keys. Empty disables it, which only DEBUG allows (see the production checks).
MASTER_KEY = env("MASTER_KEY", default="")
# Fernet key(s), comma separated, newest first: encrypts provider API keys at rest. Older keys
# stay listed while rows are re-encrypted, so rotation needs no downtime.
SECRETS_ENCRYPTION_KEYS = env.list("SECRETS_ENCRYPTION_KEYS", default=[])

# Behind TLS (a reverse proxy that terminates it and sets X-Forwarded-Proto): secure cookies,
# HSTS, and plain-HTTP requests redirected, except the probes and scrapes that arrive on the
# pod's own address. Off by default: a plain-HTTP deployment would lose its cookies.
HTTPS = env.bool("HTTPS", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("HSTS_SECONDS", default=365 * 86400 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is a request to browser vendors, slow to undo: the operator's call, not a default
# (hence check --deploy's W021 is silenced below).
SECURE_HSTS_PRELOAD = env.bool("HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "orgs",
    "teams",
    "modelgroups",
    "billing",
    "mirrors",
    "devtools",
    "alerts",
    "panel",
    "litellm_sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.headers.ContentSecurityPolicyMiddleware",
    # Before anything reads a body (the CSRF check): too large is a 413, not Django's 400.
    "panel.middleware.BodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Panel roles (viewers never write) and error pages instead of stack traces.
    "panel.middleware.PanelMiddleware",
]

ROOT_URLCONF = "saas.urls"
WSGI_APPLICATION = "saas.wsgi.application"
ASGI_APPLICATION = "saas.asgi.application"

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
                "panel.context.panel",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/tollgate"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("TEST", {})["NAME"] = env(
    "TEST_DATABASE_NAME", default="test_" + DATABASES["default"]["NAME"]
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
# A Redis Cluster: REDIS_URL=redis+cluster://host:port[,host:port...], or these seed nodes
# (host:port,host:port) with REDIS_URL's credentials. See core/redis.py.
REDIS_CLUSTER_NODES = env("REDIS_CLUSTER_NODES", default="")
REDIS_IS_CLUSTER = REDIS_URL.startswith("redis+cluster://") or bool(REDIS_CLUSTER_NODES.strip())
# Django's cache (nothing of ours uses it yet) needs one plain Redis: CACHE_URL, by default
# REDIS_URL; with a cluster and no CACHE_URL, each process's memory.
CACHE_URL = env("CACHE_URL", default="" if REDIS_IS_CLUSTER else REDIS_URL)
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            # Apart from the names the gateway shares with the control plane (livestate/keys.py).
            "KEY_PREFIX": "django",
        }
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Served by core.static straight from the ASGI router (see there for why not whitenoise).
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# The web panel: Django users; platform admins are superusers or in the `admin` group, the
# `viewer` group reads everything and changes nothing.
LOGIN_URL = "panel:login"
LOGIN_REDIRECT_URL = "panel:dashboard"
LOGOUT_REDIRECT_URL = "panel:login"
# An idle timeout: the session is renewed on every request and ends after this much silence.
SESSION_COOKIE_AGE = env.int("PANEL_SESSION_IDLE_SECONDS", default=8 * 3600)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# The panel's playground calls the gateway over HTTP, like a customer. Empty: the server that
# served the page (the same ASGI application serves /v1); set it when that address is not
# reachable from the server itself (TLS on a public name, a unix socket).
PANEL_GATEWAY_URL = env.str("PANEL_GATEWAY_URL", default="")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["orgs.auth.AdminKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["orgs.auth.IsAdmin"],
    # JSON only: a browser hitting the API with bad input still gets JSON, never an HTML page.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tollgate admin API",
    "DESCRIPTION": (
        "Manage organizations, teams, model groups, credits and virtual keys. "
        "Authenticate with the `X-Admin-Key` header."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api",
    "ENUM_NAME_OVERRIDES": {
        "OrganizationStatusEnum": "orgs.models.Organization.Status",
        "TeamStatusEnum": "teams.models.Team.Status",
        "KeyStatusEnum": "teams.models.VirtualKey.Status",
        "UpstreamKindEnum": "modelgroups.models.Upstream.Kind",
        "UpstreamHealthCheckEnum": "modelgroups.models.Upstream.HealthCheck",
        "ModelHealthStatusEnum": "modelgroups.models.ModelHealth.Status",
        "UpstreamKeyModeEnum": "modelgroups.models.Upstream.KeyMode",
        "LedgerKindEnum": "billing.models.LedgerEntry.Kind",
        "CallStatusEnum": "billing.models.UsageRecord.Status",
        "JobStatusEnum": "billing.models.Job.Status",
        "AlertKindEnum": "alerts.models.Alert.Kind",
        "WebhookDeliveryStatusEnum": "alerts.models.WebhookDelivery.Status",
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums"],
}

# Prices: when a model has no explicit credit price, price = provider cost x markup.
# 1 credit is priced like 1 USD by default, so a markup of 1.25 is a 25% margin.
DEFAULT_PRICE_MARKUP = env.float("DEFAULT_PRICE_MARKUP", default=1.25)

# Gateway (the /v1 hot path).
GATEWAY_MAX_BODY_BYTES = env.int("GATEWAY_MAX_BODY_BYTES", default=4 * 1024 * 1024)
# A multipart upload (audio transcriptions), file and fields: OpenAI's own limit, 25 MiB.
GATEWAY_MAX_UPLOAD_BYTES = env.int("GATEWAY_MAX_UPLOAD_BYTES", default=25 * 1024 * 1024)
# How often each gateway process follows control-plane changes (revocations, suspensions…).
GATEWAY_REFRESH_SECONDS = env.float("GATEWAY_REFRESH_SECONDS", default=0.2)
GATEWAY_REDIS_CONNECTIONS = env.int("GATEWAY_REDIS_CONNECTIONS", default=64)
# Jobs left open this long are closed as `expired` by a worker (billed like completed if they
# did work and nothing failed); closed jobs stay readable from Redis this long, then Postgres.
GATEWAY_JOB_TTL_SECONDS = env.int("GATEWAY_JOB_TTL_SECONDS", default=24 * 3600)
# How long a revoked or expired key keeps answering its precise 401 (key_revoked, key_expired)
# before it leaves the gateway's live state and answers as unknown (invalid_api_key).
GATEWAY_RETIRED_KEY_GRACE_SECONDS = env.int("GATEWAY_RETIRED_KEY_GRACE_SECONDS", default=24 * 3600)
GATEWAY_JOB_RETAIN_SECONDS = env.int("GATEWAY_JOB_RETAIN_SECONDS", default=7 * 86400)
# Response cache: entries larger than this are not stored.
GATEWAY_CACHE_MAX_BYTES = env.int("GATEWAY_CACHE_MAX_BYTES", default=1024 * 1024)
# Compliance logging: each logged body is cut at this size (the record says so).
GATEWAY_LOG_MAX_BYTES = env.int("GATEWAY_LOG_MAX_BYTES", default=256 * 1024)
# Refused calls (proxy/refusals.py): counted in memory, flushed to Redis this often (seconds);
# closed minutes are rolled up into billing.RefusalHourly (billing/refusals.py).
REFUSALS_FLUSH_SECONDS = env.float("REFUSALS_FLUSH_SECONDS", default=1.0)
# Circuit breaker (proxy/breaker.py): this many consecutive failed attempts at a model in one
# gateway process, or a probe marking it down, move it to the end of the fallback order for
# the cooldown; then one request tries it again.
GATEWAY_BREAKER_FAILURES = env.int("GATEWAY_BREAKER_FAILURES", default=5)
GATEWAY_BREAKER_COOLDOWN_SECONDS = env.float("GATEWAY_BREAKER_COOLDOWN_SECONDS", default=30.0)
# Leases (livestate/leases.py): each gateway process is an instance, a seat plus a token minted
# at start. The seat is GATEWAY_INSTANCE (unique per process; e.g. the pod name), else host:pid.
# A restart on the same seat releases the earlier incarnation's calls at once; otherwise an
# instance whose heartbeat (every GATEWAY_HEARTBEAT_SECONDS) is older than the lease TTL is
# dead, and its calls' reservations and parallel slots are released, charged for what the
# client had received (recorded in the lease at most every GATEWAY_LEASE_PROGRESS_SECONDS).
# Every gateway sweeps dead leases as often as it heartbeats (one process at a time), and so
# does the reap-leases beat task.
GATEWAY_INSTANCE = env.str("GATEWAY_INSTANCE", default="")
GATEWAY_HEARTBEAT_SECONDS = env.float("GATEWAY_HEARTBEAT_SECONDS", default=2.0)
GATEWAY_LEASE_TTL_SECONDS = env.float("GATEWAY_LEASE_TTL_SECONDS", default=10.0)
GATEWAY_LEASE_PROGRESS_SECONDS = env.float("GATEWAY_LEASE_PROGRESS_SECONDS", default=1.0)
if GATEWAY_LEASE_TTL_SECONDS < 2 * GATEWAY_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "GATEWAY_LEASE_TTL_SECONDS must be at least twice GATEWAY_HEARTBEAT_SECONDS: a live "
        "gateway's calls would be reaped between two of its heartbeats."
    )
# Redis faults (proxy/recovery.py, proxy/settlement.py). A settlement that cannot be written
# is retried with backoff for up to this long while the client's answer waits for it; then the
# client gets an error (503, or an error event ending the stream) and the gateway keeps the
# record and writes it when Redis answers again.
GATEWAY_SETTLE_RETRY_SECONDS = env.float("GATEWAY_SETTLE_RETRY_SECONDS", default=5.0)
# Each gateway keeps every usage record it wrote for this long (far longer than the settler's
# usual second of lag) and appends them again when Redis comes back without its data.
GATEWAY_USAGE_COPY_SECONDS = env.float("GATEWAY_USAGE_COPY_SECONDS", default=60.0)
# ...and within this many bytes per process (records carry logged bodies for teams that log
# them): past it the oldest copies go first. About 100k plain records (~500 B each).
GATEWAY_USAGE_COPY_MAX_BYTES = env.int("GATEWAY_USAGE_COPY_MAX_BYTES", default=64 * 1024 * 1024)
# A team refused as `account_not_ready` (Redis lost its account) is rebuilt from Postgres on
# demand, at most once per this interval per gateway process.
GATEWAY_REBUILD_INTERVAL_SECONDS = env.float("GATEWAY_REBUILD_INTERVAL_SECONDS", default=0.5)

# Upstream health probes (modelgroups.probe): every enabled model, once per interval.
HEALTH_PROBE_INTERVAL_SECONDS = env.int("HEALTH_PROBE_INTERVAL_SECONDS", default=60)
# Per probe, connect included (the upstream's own connect timeout applies if shorter).
HEALTH_PROBE_TIMEOUT_SECONDS = env.float("HEALTH_PROBE_TIMEOUT_SECONDS", default=10.0)
HEALTH_PROBE_CONCURRENCY = env.int("HEALTH_PROBE_CONCURRENCY", default=16)
# A working model slower than this is "degraded" (still routed normally).
HEALTH_PROBE_SLOW_MS = env.int("HEALTH_PROBE_SLOW_MS", default=5000)
# A round stops waiting after this; unfinished probes get no verdict. Below the task's
# soft time limit (modelgroups.tasks.probe_models).
HEALTH_PROBE_ROUND_SECONDS = env.float("HEALTH_PROBE_ROUND_SECONDS", default=45.0)

# Usage: raw call records (and closed jobs) are kept this many days, then pruned; the hourly
# and daily roll-ups are kept for good. At least 3: roll-ups never recompute an hour within a
# day of the cutoff (see billing/rollups.py).
USAGE_RAW_RETENTION_DAYS = env.int("USAGE_RAW_RETENTION_DAYS", default=90)
if USAGE_RAW_RETENTION_DAYS < 3:
    raise ImproperlyConfigured("USAGE_RAW_RETENTION_DAYS must be at least 3.")

# Celery: Redis broker; tasks ack late and are idempotent (see STYLE.md). kombu has no Redis
# Cluster transport: with a cluster as REDIS_URL the broker is a plain Redis of its own.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="" if REDIS_IS_CLUSTER else REDIS_URL)
if not CELERY_BROKER_URL:
    raise ImproperlyConfigured(
        "REDIS_URL names a Redis Cluster, which Celery cannot use as its broker: set "
        "CELERY_BROKER_URL to a plain Redis (redis://host:port/0)."
    )
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE: dict = {
    "heartbeat": {"task": "saas.celery.heartbeat", "schedule": crontab(minute="*")},
    # Usage from the gateway's Redis stream into the Postgres ledger: seconds of lag.
    "settle-usage": {
        "task": "billing.tasks.settle_usage",
        "schedule": 1.0,
        "options": {"expires": 5},
    },
    # Leases of dead gateway instances (also swept by every live gateway): with every gateway
    # down, their reservations are still released within seconds.
    "reap-leases": {
        "task": "billing.tasks.reap_leases",
        "schedule": 3.0,
        "options": {"expires": 3},
    },
    # The backstop for in-flight records that name no instance (written before leases).
    "reap-abandoned-calls": {
        "task": "billing.tasks.reap_abandoned",
        "schedule": 60.0,
        "options": {"expires": 30},
    },
    # Redis account state against the ledger; rebuilds it after a Redis flush.
    "reconcile-gateway-state": {
        "task": "billing.tasks.reconcile_gateway_state",
        "schedule": 60.0,
        "options": {"expires": 50},
    },
    "expire-jobs": {
        "task": "billing.tasks.expire_jobs",
        "schedule": 60.0,
        "options": {"expires": 30},
    },
    # Closed hours into the hourly and daily roll-ups (the usage API reads the open hour raw).
    "roll-up-usage": {
        "task": "billing.tasks.roll_up_usage",
        "schedule": 60.0,
        "options": {"expires": 50},
    },
    # Refused calls' closed minutes from Redis into RefusalHourly (the usage API's `refused`).
    "roll-up-refusals": {
        "task": "billing.tasks.roll_up_refusals",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    # Months of raw call records created ahead (a record outside them lands in the default).
    "ensure-usage-partitions": {
        "task": "billing.tasks.ensure_usage_partitions",
        "schedule": crontab(minute=23),
        "options": {"expires": 600},
    },
    "prune-usage": {
        "task": "billing.tasks.prune_usage",
        "schedule": crontab(minute=41),
        "options": {"expires": 600},
    },
    "purge-call-logs": {
        "task": "billing.tasks.purge_call_logs",
        "schedule": crontab(minute=17),
        "options": {"expires": 600},
    },
    # At second 0 of each minute, so a period starts seconds after its boundary (00:00 UTC).
    "reset-budget-periods": {
        "task": "billing.tasks.reset_budget_periods",
        "schedule": crontab(minute="*"),
        "options": {"expires": 50},
    },
    "expire-keys": {
        "task": "teams.tasks.expire_keys",
        "schedule": crontab(minute="*"),
        "options": {"expires": 50},
    },
    # Budget thresholds and low balances, from settled data; notifications go out as tasks.
    "evaluate-alerts": {
        "task": "alerts.tasks.evaluate_alerts",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    "redeliver-stuck-webhooks": {
        "task": "alerts.tasks.redeliver_stuck_webhooks",
        "schedule": 300.0,
        "options": {"expires": 60},
    },
    # Upstream health: probe the models that are due, publish verdicts to the gateways.
    "probe-models": {
        "task": "modelgroups.tasks.probe_models",
        "schedule": float(HEALTH_PROBE_INTERVAL_SECONDS),
        "options": {"expires": HEALTH_PROBE_INTERVAL_SECONDS},
    },
    # Full republish of gateway state: repairs anything a failed after-commit publish missed.
    "publish-gateway-state": {
        "task": "mirrors.tasks.publish_gateway_state",
        "schedule": 300.0,
        "options": {"expires": 60},
    },
}

# /health/ready: a periodic task is stale (and the service not ready) when its last success is
# older than this many schedule intervals, and at least this many seconds.
HEALTH_TASK_STALE_FACTOR = env.float("HEALTH_TASK_STALE_FACTOR", default=3.0)
HEALTH_TASK_STALE_MIN_SECONDS = env.float("HEALTH_TASK_STALE_MIN_SECONDS", default=120.0)
# /metrics: scrapers send `Authorization: Bearer <METRICS_TOKEN>`. Unset, /metrics is open with
# DEBUG on and refused (403) otherwise: it names teams and their spend.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
# LiteLLM integration (docs/litellm.md): off unless both are set. Tollgate's teams and keys are
# then mirrored into that LiteLLM proxy, and Upstreams of kind `litellm` may call it with the
# team's own key.
LITELLM_BASE_URL = env("LITELLM_BASE_URL", default="")
LITELLM_MASTER_KEY = env("LITELLM_MASTER_KEY", default="")
LITELLM_CONNECT_TIMEOUT_SECONDS = env.float("LITELLM_CONNECT_TIMEOUT_SECONDS", default=3.0)
LITELLM_TIMEOUT_SECONDS = env.float("LITELLM_TIMEOUT_SECONDS", default=15.0)
# A key found missing in LiteLLM (deleted there by hand): "flag" marks it failed for an operator;
# "recreate" puts it back, which needs its secret, so the encrypted secret is then kept for the
# key's lifetime instead of being wiped after the first successful sync.
LITELLM_MISSING_KEY_ACTION = env("LITELLM_MISSING_KEY_ACTION", default="flag")
# Credits per USD of LiteLLM spend: converts remaining credits into LiteLLM's USD budgets
# (teams priced cost_markup use their own credits_per_usd).
LITELLM_CREDITS_PER_USD = env.float("LITELLM_CREDITS_PER_USD", default=DEFAULT_PRICE_MARKUP)
# A team's LiteLLM budget follows its credits: pushed at once on grants and adjustments, and
# after usage at most this often.
LITELLM_BUDGET_REFRESH_SECONDS = env.int("LITELLM_BUDGET_REFRESH_SECONDS", default=60)
# Spend-log reconciliation: each pull re-reads this much before its cursor (late rows: LiteLLM
# batches its writes and filters on request start), and stops this far behind now.
LITELLM_SPEND_OVERLAP_SECONDS = env.int("LITELLM_SPEND_OVERLAP_SECONDS", default=900)
LITELLM_SPEND_LAG_SECONDS = env.int("LITELLM_SPEND_LAG_SECONDS", default=60)
# Cost differences below this (micro-USD per team, model and day) are not drift.
LITELLM_DRIFT_TOLERANCE_MICROS = env.int("LITELLM_DRIFT_TOLERANCE_MICROS", default=10_000)
if LITELLM_BASE_URL and LITELLM_MASTER_KEY:
    CELERY_BEAT_SCHEDULE |= {
        # Retries of failed pushes whose backoff is over, and budgets that moved with usage.
        "litellm-sync-due": {
            "task": "litellm_sync.tasks.sync_due",
            "schedule": 30.0,
            "options": {"expires": 25},
        },
        # Every team and key compared with LiteLLM: repairs drift both ways.
        "litellm-full-resync": {
            "task": "litellm_sync.tasks.full_resync",
            "schedule": 600.0,
            "options": {"expires": 300},
        },
        "litellm-pull-spend": {
            "task": "litellm_sync.tasks.pull_spend",
            "schedule": 120.0,
            "options": {"expires": 100},
        },
    }

LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "httpx": {"level": "WARNING"},  # one INFO line per outgoing call is noise
    },
}

EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
# For the SMTP backend (django.core.mail.backends.smtp.EmailBackend):
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = 10  # seconds: a hung mail server must not hold a worker
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Tollgate <alerts@localhost>")

# Alert webhooks: attempts per delivery, and the first retry delay (doubling each time:
# 30 s, 1 min, 2 min ... about an hour in all with 8 attempts).
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)
# Customers choose webhook URLs: in production they may not point into private networks.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", default=DEBUG)


# The dev mock upstream at /mock (devtools.mock_upstream): for `make run`, the tests and load
# tests; a production deployment has no use for a fake provider, so it is off there by default.
MOCK_UPSTREAM_ENABLED = env.bool("MOCK_UPSTREAM_ENABLED", default=DEBUG)

# The admin API and the panel: larger request bodies are a 413 (core.api, panel.middleware).
# The gateway's own limit is GATEWAY_MAX_BODY_BYTES.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=2_621_440)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

# Slow clients (saas/server.py): a request's headers must arrive within this many seconds of
# its first byte, and its body within this many seconds of its headers, or the connection is
# closed. Keep-alive idle time is uvicorn's --timeout-keep-alive.
REQUEST_HEADER_TIMEOUT_SECONDS = env.float("REQUEST_HEADER_TIMEOUT_SECONDS", default=10.0)
REQUEST_BODY_TIMEOUT_SECONDS = env.float("REQUEST_BODY_TIMEOUT_SECONDS", default=60.0)


# Production (DEBUG off) refuses to start on a setting that would make it unsafe: better a
# process that does not start, with the setting named, than an install open to anyone who read
# .env.example.
PLACEHOLDER_SECRETS = {"change-me", "tgm-change-me", "insecure-dev-only"}
MASTER_KEY_MIN_LENGTH = 32


def _production_refusals() -> list[str]:
    def placeholder(value: str) -> bool:
        return not value.strip() or value.strip() in PLACEHOLDER_SECRETS or "change-me" in value

    refusals = []
    if placeholder(SECRET_KEY):
        refusals.append(
            "SECRET_KEY is missing or the .env.example placeholder: set it to a long random "
            "value (python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    if placeholder(MASTER_KEY):
        refusals.append(
            "MASTER_KEY is missing or the .env.example placeholder: set it to a long random "
            "value (python -c 'import secrets; print(\"tgm-\" + secrets.token_urlsafe(32))')."
        )
    elif len(MASTER_KEY) < MASTER_KEY_MIN_LENGTH:
        refusals.append(
            f"MASTER_KEY is shorter than {MASTER_KEY_MIN_LENGTH} characters: set a longer "
            'random value (python -c \'import secrets; print("tgm-" + '
            "secrets.token_urlsafe(32))')."
        )
    fernet_hint = (
        "(python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())')"
    )
    if not SECRETS_ENCRYPTION_KEYS or any(placeholder(k) for k in SECRETS_ENCRYPTION_KEYS):
        refusals.append(
            "SECRETS_ENCRYPTION_KEYS is missing or a placeholder: set it to one Fernet key "
            f"{fernet_hint}."
        )
    else:
        from cryptography.fernet import Fernet

        try:
            for key in SECRETS_ENCRYPTION_KEYS:
                Fernet(key)
        except ValueError:
            refusals.append(
                "SECRETS_ENCRYPTION_KEYS holds a value that is not a Fernet key: generate one "
                f"{fernet_hint}."
            )
    if not METRICS_TOKEN:
        refusals.append(
            "METRICS_TOKEN is not set, which would leave /metrics (teams and their spend) "
            "unprotected: set it to a random value and give it to your scraper as a bearer token."
        )
    if "*" in ALLOWED_HOSTS:
        refusals.append(
            "ALLOWED_HOSTS is '*': list the host names this deployment answers to, comma "
            "separated (e.g. ALLOWED_HOSTS=tollgate.example.com)."
        )
    if HTTPS and not (SESSION_COOKIE_SECURE and CSRF_COOKIE_SECURE):
        refusals.append(
            "SECURE_COOKIES is false while HTTPS=true: the session and CSRF cookies would also "
            "travel over plain HTTP. Remove SECURE_COOKIES (it follows HTTPS) or set it to true."
        )
    return refusals


if not DEBUG and (_refusals := _production_refusals()):
    raise ImproperlyConfigured(
        "Refusing to start with DEBUG=false:\n- "
        + "\n- ".join(_refusals)
        + "\n(DEBUG=true is for development only.)"
    )
