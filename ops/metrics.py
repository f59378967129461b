"""Prometheus metrics at /metrics.

Sources, read at scrape time:
- settled usage per team and model, and the call-to-ledger lag histogram: counters the settler
  keeps in Redis (billing.metrics), so they move within seconds of a call and are monotonic;
- the usage stream (length, pending, undelivered, dead letters, age of the oldest unsettled
  record) and the Celery queue length: Redis and the broker;
- periodic task heartbeats (ops.heartbeats);
- the gateway overhead histogram and the refused-calls counter: in this process (proxy.metrics).

Authentication: with METRICS_TOKEN set, `Authorization: Bearer <token>` is required; unset, the
endpoint is open with DEBUG on and refused otherwise, because it names teams and their spend.
"""

import hmac
import logging

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from billing import metrics as usage_metrics
from billing import settlement
from core.redis import client as redis_client
from ops import heartbeats
from proxy.metrics import REGISTRY
from teams.models import Team

logger = logging.getLogger(__name__)

# kombu's Redis transport keeps each priority level of a queue in its own list.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)

USAGE_COUNTERS = {
    "requests": ("tollgate_usage_requests", "Settled gateway calls."),
    "errors": ("tollgate_usage_errors", "Settled calls whose status is not ok."),
    "cache_hits": ("tollgate_usage_cache_hits", "Settled calls answered from the cache."),
    "input_tokens": ("tollgate_usage_input_tokens", "Input (prompt) tokens of settled calls."),
    "output_tokens": ("tollgate_usage_output_tokens", "Output tokens of settled calls."),
    "cost_micros": ("tollgate_usage_cost_micros", "Provider cost of settled calls, micro-USD."),
    "price_micros": (
        "tollgate_usage_price_micros",
        "Price charged for settled calls, micro-credits.",
    ),
}


def metrics(request):
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            response = JsonResponse(
                {"error": {"type": "authentication_error", "message": "Bearer token required."}},
                status=401,
            )
            response["WWW-Authenticate"] = "Bearer"
            return response
    elif not settings.DEBUG:
        return JsonResponse(
            {
                "error": {
                    "type": "permission_error",
                    "message": "Set METRICS_TOKEN to enable /metrics outside DEBUG.",
                }
            },
            status=403,
        )
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


class ControlPlaneCollector:
    """Everything not kept in this process, read when scraped. A source that cannot be read
    is left out of that scrape (and tollgate_scrape_errors says which), never a failed scrape."""

    def describe(self):
        # Without it, registering (at import, often inside the server's event loop) would run
        # collect() to learn the names: Postgres and Redis reads at start, and a
        # SynchronousOnlyOperation traceback when that import happens in async code.
        return []

    def collect(self):
        errors = GaugeMetricFamily(
            "tollgate_scrape_errors",
            "1 when a source could not be read during this scrape.",
            labels=["source"],
        )
        for source, read in (
            ("usage", self._usage),
            ("usage_stream", self._stream),
            ("celery_queue", self._celery_queue),
            ("periodic_tasks", self._tasks),
        ):
            try:
                yield from read()
                errors.add_metric([source], 0)
            except Exception:  # one missing source must not fail the scrape
                logger.warning("metrics source %s could not be read", source, exc_info=True)
                errors.add_metric([source], 1)
        yield errors

    def _usage(self):
        client = redis_client()
        counters = usage_metrics.usage_counters(client)
        public = dict(
            Team.objects.filter(pk__in={team for team, _ in counters}).values_list(
                "pk", "public_id"
            )
        )
        families = {
            name: CounterMetricFamily(metric, text, labels=["team", "model"])
            for name, (metric, text) in USAGE_COUNTERS.items()
        }
        for (team, model), values in sorted(counters.items()):
            labels = [public.get(team, str(team)), model]
            for name, family in families.items():
                family.add_metric(labels, values[name])
        yield from families.values()
        buckets, total = usage_metrics.settlement_lag(client)
        yield HistogramMetricFamily(
            "tollgate_settlement_lag_seconds",
            "Time from a call's end (gateway clock) to its ledger entry's commit (settler).",
            buckets=buckets,
            sum_value=total,
        )

    def _stream(self):
        stream = settlement.backlog(redis_client())
        yield _gauge("tollgate_usage_stream_length", "Entries in the usage stream.", stream.length)
        yield _gauge(
            "tollgate_usage_stream_pending",
            "Usage records delivered to a settler and not yet acknowledged.",
            stream.pending,
        )
        yield _gauge(
            "tollgate_usage_stream_undelivered",
            "Usage records not yet read by any settler.",
            stream.undelivered,
        )
        yield _gauge(
            "tollgate_usage_dead_letters",
            "Usage records that could not be settled (dead letters), for a person to look at.",
            stream.dead_letters,
        )
        yield _gauge(
            "tollgate_settlement_oldest_unsettled_age_seconds",
            "Age of the oldest usage record not yet settled; 0 when none is waiting.",
            stream.oldest_unsettled_seconds or 0.0,
        )

    def _celery_queue(self):
        from ops.health import broker_client

        if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "unix://")):
            return
        queue = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
        client = broker_client()
        pipe = client.pipeline(transaction=False)
        pipe.llen(queue)
        for step in PRIORITY_STEPS:
            pipe.llen(f"{queue}{PRIORITY_SEPARATOR}{step}")
        family = GaugeMetricFamily(
            "tollgate_celery_queue_length", "Tasks waiting in the broker.", labels=["queue"]
        )
        family.add_metric([queue], sum(pipe.execute()))
        yield family

    def _tasks(self):
        age = GaugeMetricFamily(
            "tollgate_periodic_task_last_success_age_seconds",
            "Seconds since the periodic task last succeeded (absent: never seen).",
            labels=["entry", "task"],
        )
        stale = GaugeMetricFamily(
            "tollgate_periodic_task_stale",
            "1 when the periodic task has not succeeded within its allowance.",
            labels=["entry", "task"],
        )
        for entry, task in heartbeats.task_health().items():
            labels = [entry, task["task"]]
            if task["age_seconds"] is not None:
                age.add_metric(labels, task["age_seconds"])
            stale.add_metric(labels, 1 if task["status"] == "stale" else 0)
        yield age
        yield stale


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


REGISTRY.register(ControlPlaneCollector())
ProcessCollector(registry=REGISTRY)  # memory, CPU and open files of this (gateway) process
