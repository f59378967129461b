"""Liveness (the process answers) and readiness (its dependencies and the workers do)."""

import logging
import time

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from ops import heartbeats

logger = logging.getLogger(__name__)


def live(request):
    return JsonResponse({"status": "ok"})


def ready(request):
    """200 when Postgres, Redis and the Celery broker answer and every periodic task has
    succeeded recently; 503 otherwise. Public, like live: it names error classes, never
    messages (which could carry hosts or credentials)."""
    checks = {
        "database": _check(_database),
        "redis": _check(_redis),
        "broker": _check(_broker),
    }
    checks["periodic_tasks"] = _check(_periodic_tasks)
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


def _check(probe) -> dict:
    started = time.perf_counter()
    try:
        detail = probe()
    except Exception as exc:  # any failure is an answer, never a 500
        logger.warning("readiness check %s failed", probe.__name__, exc_info=True)
        return {"ok": False, "error": type(exc).__name__}
    result = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    if isinstance(detail, dict):
        result.update(detail)
    return result


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis():
    heartbeats.client().ping()


def broker_client() -> redis.Redis:
    return heartbeats._client(settings.CELERY_BROKER_URL)


def _broker():
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        broker_client().ping()
        return
    from saas.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=heartbeats.TIMEOUT_S)


def _periodic_tasks() -> dict:
    tasks = heartbeats.task_health()
    stale = sorted(name for name, task in tasks.items() if task["status"] == "stale")
    if stale:
        return {"ok": False, "stale": stale, "tasks": tasks}
    return {"tasks": tasks}
