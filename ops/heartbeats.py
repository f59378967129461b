"""The last successful run of each periodic task, kept in Redis, for /health/ready and /metrics.

Workers record a task's success (saas.celery connects this to Celery's task_success signal);
readers compare its age with the task's schedule. A task that has not succeeded for
HEALTH_TASK_STALE_FACTOR schedule intervals (and at least HEALTH_TASK_STALE_MIN_SECONDS) is
stale. A task never seen to succeed is only given that long from the moment the heartbeats
were first watched in this Redis (a new install, or Redis emptied), then counts as stale too.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise

import redis
from celery.schedules import crontab
from celery.schedules import schedule as every
from django.conf import settings

from core.redis import make_client
from livestate.keys import TASKS_LAST_SUCCESS as LAST_SUCCESS
from livestate.keys import TASKS_WATCH_SINCE as WATCH_SINCE

logger = logging.getLogger(__name__)


TIMEOUT_S = 2.0


@cache
def _client(url: str, nodes: str = "") -> redis.Redis:
    # Short timeouts: a health check must answer even when Redis does not.
    return make_client(url, nodes, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL, settings.REDIS_CLUSTER_NODES)


@dataclass(frozen=True)
class PeriodicTask:
    entry: str  # the beat schedule entry's name
    task: str  # the task's name
    interval_s: float  # the longest gap between two scheduled runs

    @property
    def stale_after_s(self) -> float:
        return max(
            self.interval_s * settings.HEALTH_TASK_STALE_FACTOR,
            settings.HEALTH_TASK_STALE_MIN_SECONDS,
        )


def periodic_tasks() -> list[PeriodicTask]:
    return [
        PeriodicTask(name, entry["task"], interval_seconds(entry["schedule"]))
        for name, entry in sorted(settings.CELERY_BEAT_SCHEDULE.items())
    ]


def interval_seconds(schedule) -> float:
    if isinstance(schedule, int | float):
        return float(schedule)
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    if isinstance(schedule, crontab):
        return _crontab_gap(schedule)
    if isinstance(schedule, every):
        return schedule.run_every.total_seconds()
    raise TypeError(f"unsupported beat schedule {schedule!r}")


_gaps: dict[str, float] = {}


def _crontab_gap(schedule: crontab) -> float:
    """The longest gap between two runs, found by walking a week and a day minute by minute."""
    key = repr(schedule)
    if key not in _gaps:
        anchor = datetime(2024, 1, 1, tzinfo=UTC)  # any week will do
        runs = []
        for minute in range(8 * 24 * 60):
            t = anchor + timedelta(minutes=minute)
            if (
                t.minute in schedule.minute
                and t.hour in schedule.hour
                and (t.isoweekday() % 7) in schedule.day_of_week
                and t.day in schedule.day_of_month
                and t.month in schedule.month_of_year
            ):
                runs.append(minute)
        gaps = [b - a for a, b in pairwise(runs)]
        # Fewer than two runs in eight days: a monthly or yearly task.
        _gaps[key] = max(gaps) * 60.0 if gaps else 31 * 86400.0
    return _gaps[key]


def task_succeeded(task_name: str, now: float | None = None) -> None:
    """Record a periodic task's success (other tasks are not watched)."""
    if task_name not in {t.task for t in periodic_tasks()}:
        return
    try:
        now = time.time() if now is None else now
        pipe = client().pipeline(transaction=False)
        pipe.hset(LAST_SUCCESS, task_name, repr(now))
        pipe.set(WATCH_SINCE, repr(now), nx=True)
        pipe.execute()
    except redis.RedisError:
        # The task did its work; only its heartbeat is lost, and the health check will say so.
        logger.warning("could not record the heartbeat of %s", task_name, exc_info=True)


def task_health(now: float | None = None) -> dict[str, dict]:
    """Per beat entry: its task, last success, age and status (ok, pending or stale)."""
    now = time.time() if now is None else now
    c = client()
    c.set(WATCH_SINCE, repr(now), nx=True)
    watch_since, last = c.get(WATCH_SINCE), c.hgetall(LAST_SUCCESS)
    watched_s = now - float(watch_since) if watch_since else 0.0
    report = {}
    for task in periodic_tasks():
        raw = last.get(task.task.encode())
        age = None if raw is None else max(now - float(raw), 0.0)
        if age is not None:
            status = "ok" if age <= task.stale_after_s else "stale"
        else:
            status = "pending" if watched_s <= task.stale_after_s else "stale"
        report[task.entry] = {
            "task": task.task,
            "status": status,
            "last_success": None
            if raw is None
            else datetime.fromtimestamp(float(raw), tz=UTC).isoformat(),
            "age_seconds": None if age is None else round(age, 3),
            "stale_after_seconds": task.stale_after_s,
        }
    return report
