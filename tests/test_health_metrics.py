"""/health/ready (dependencies and periodic task heartbeats) and /metrics (Prometheus)."""

import time

import httpx
import pytest
from celery.schedules import crontab
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from billing import metrics as usage_metrics
from billing import settlement
from core.redis import client as redis_client
from livestate.keys import shard_of, usage_stream
from modelgroups import services as catalog
from ops import heartbeats
from proxy.metrics import GATEWAY_OVERHEAD
from saas.celery import heartbeat
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

CLOSED_PORT = "redis://127.0.0.1:9/0"  # nothing listens on the discard port


@pytest.fixture(autouse=True)
def _broker_in_test_redis(settings, redis_url):
    settings.CELERY_BROKER_URL = redis_url


def all_tasks_succeeded(now: float) -> None:
    for task in heartbeats.periodic_tasks():
        heartbeats.task_succeeded(task.task, now=now)


def ready() -> tuple[int, dict]:
    response = Client().get("/health/ready")
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


def test_ready_when_every_dependency_answers_and_every_task_ran_recently(db):
    all_tasks_succeeded(time.time() - 5)

    status, body = ready()

    assert status == 200 and body["status"] == "ok"
    assert {"database", "redis", "broker", "periodic_tasks"} == set(body["checks"])
    assert all(check["ok"] for check in body["checks"].values())
    settle = body["checks"]["periodic_tasks"]["tasks"]["settle-usage"]
    assert settle["task"] == "billing.tasks.settle_usage"
    assert settle["status"] == "ok" and 4 < settle["age_seconds"] < 60
    assert settle["stale_after_seconds"] == 120  # 3 x 1 s, but at least two minutes


def test_a_task_that_stopped_succeeding_makes_the_service_unready(db):
    # given every task fresh except the hourly purge, last seen four hours ago
    now = time.time()
    all_tasks_succeeded(now)
    heartbeats.task_succeeded("billing.tasks.purge_call_logs", now=now - 4 * 3600)

    status, body = ready()

    assert status == 503 and body["status"] == "unavailable"
    tasks = body["checks"]["periodic_tasks"]
    assert not tasks["ok"] and tasks["stale"] == ["purge-call-logs"]
    assert tasks["tasks"]["purge-call-logs"]["stale_after_seconds"] == 3 * 3600
    assert tasks["tasks"]["reset-budget-periods"]["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]


def test_a_task_never_seen_is_pending_for_its_allowance_then_stale(db):
    # given a fresh install: heartbeats watched from now on, nothing has run yet
    status, body = ready()
    assert status == 200
    assert body["checks"]["periodic_tasks"]["tasks"]["settle-usage"]["status"] == "pending"

    # when the allowance has passed without a run
    redis_client().set(heartbeats.WATCH_SINCE, time.time() - 3600)
    status, body = ready()

    # then the frequent tasks are stale, the hourly ones still pending
    assert status == 503
    tasks = body["checks"]["periodic_tasks"]["tasks"]
    assert tasks["settle-usage"]["status"] == "stale"
    assert tasks["settle-usage"]["last_success"] is None
    assert tasks["purge-call-logs"]["status"] == "pending"


def test_unreachable_redis_and_broker_are_reported_without_details(db, settings):
    settings.REDIS_URL = CLOSED_PORT
    settings.CELERY_BROKER_URL = CLOSED_PORT

    status, body = ready()

    assert status == 503
    checks = body["checks"]
    assert checks["database"]["ok"]
    assert checks["redis"] == {"ok": False, "error": "ConnectionError"}
    assert checks["broker"] == {"ok": False, "error": "ConnectionError"}
    assert not checks["periodic_tasks"]["ok"]
    assert "127.0.0.1" not in str(body)


def test_a_periodic_task_run_through_celery_records_its_heartbeat(db):
    before = time.time()

    heartbeat.delay()

    raw = redis_client().hget(heartbeats.LAST_SUCCESS, "saas.celery.heartbeat")
    assert raw is not None and float(raw) >= before


def test_schedule_intervals_cover_crontabs():
    assert heartbeats.interval_seconds(1.0) == 1
    assert heartbeats.interval_seconds(crontab(minute="*")) == 60
    assert heartbeats.interval_seconds(crontab(minute=17)) == 3600
    # Weekdays at midnight: the longest gap is the weekend.
    assert heartbeats.interval_seconds(crontab(minute=0, hour=0, day_of_week="1-5")) == 3 * 86400


# --- /metrics -------------------------------------------------------------------------------


def scrape(client=None, **headers) -> str:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample in the exposition text."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def test_metrics_need_the_bearer_token_when_one_is_set(db, settings):
    settings.METRICS_TOKEN = "scrape-secret"

    missing = Client().get("/metrics")
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    text = scrape(HTTP_AUTHORIZATION="Bearer scrape-secret")

    assert missing.status_code == wrong.status_code == 401
    assert missing["WWW-Authenticate"] == "Bearer"
    assert "tollgate_gateway_overhead_seconds_bucket" in text


def test_metrics_without_a_token_are_open_only_in_debug(db, settings):
    settings.METRICS_TOKEN = ""
    settings.DEBUG = False
    assert Client().get("/metrics").status_code == 403
    settings.DEBUG = True
    assert "tollgate_usage_stream_length" in scrape()


def test_settled_calls_are_counted_per_team_and_model_once(live, gw_team, settings):
    settings.DEBUG = True
    overhead_before = GATEWAY_OVERHEAD._sum.get(), histogram_count()
    # given two answered calls and one that every model failed
    for model in ("chat", "chat", "broken"):
        httpx.post(
            f"{live.url}/v1/chat/completions",
            headers=gw_team.headers(),
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
    client = redis_client()
    stream = usage_stream(shard_of(gw_team.team.pk))
    queued = client.xrange(stream)
    text = scrape()
    assert sample(text, "tollgate_usage_stream_undelivered") == 3
    assert sample(text, "tollgate_settlement_oldest_unsettled_age_seconds") > 0

    # when they are settled, then delivered and settled again (a duplicate)
    settlement.settle_usage()
    for _, fields in queued:
        client.xadd(stream, fields)
    settlement.settle_usage()

    # then each counts once
    text = scrape()
    team = gw_team.team.public_id
    assert sample(text, "tollgate_usage_requests_total", team=team, model="mock-a") == 2
    assert sample(text, "tollgate_usage_errors_total", team=team, model="mock-a") == 0
    assert sample(text, "tollgate_usage_requests_total", team=team, model="") == 1
    assert sample(text, "tollgate_usage_errors_total", team=team, model="") == 1
    price = sample(text, "tollgate_usage_price_micros_total", team=team, model="mock-a")
    assert price > 0
    assert sample(text, "tollgate_usage_cost_micros_total", team=team, model="mock-a") > 0
    assert sample(text, "tollgate_usage_input_tokens_total", team=team, model="mock-a") > 0
    assert sample(text, "tollgate_settlement_lag_seconds_count") == 3
    assert sample(text, "tollgate_settlement_lag_seconds_bucket", le="+Inf") == 3
    assert sample(text, "tollgate_usage_stream_pending") == 0
    assert sample(text, "tollgate_settlement_oldest_unsettled_age_seconds") == 0
    assert sample(text, "tollgate_scrape_errors", source="usage") == 0
    assert observations_since(overhead_before[1], 3) >= 3
    charged = -sum(
        gw_team.team.account.entries.filter(kind="usage").values_list("amount_micros", flat=True)
    )
    assert price == charged


def histogram_count() -> float:
    return sum(b.get() for b in GATEWAY_OVERHEAD._buckets)


def observations_since(before: float, expected: int) -> float:
    """The gateway observes a request after sending its response: wait for the last one."""
    eventually(lambda: histogram_count() - before >= expected, interval=0.01)
    return histogram_count() - before


def test_the_overhead_histogram_leaves_out_the_upstream_wait(live, mock_catalog, gw_org):
    slow = catalog.model_create(
        actor="test",
        name="mock-slow",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-slow-300",
    )
    group = catalog.model_group_create(actor="test", name="slow", members=[{"model": slow}])
    tenant = GatewayTenant("slow", gw_org, [group], 10_000_000)
    before_sum, before_count = GATEWAY_OVERHEAD._sum.get(), histogram_count()

    started = time.perf_counter()
    for stream in (False, True):
        r = httpx.post(
            f"{live.url}/v1/chat/completions",
            headers=tenant.headers(),
            json={
                "model": "slow",
                "stream": stream,
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        assert r.status_code == 200
    elapsed = time.perf_counter() - started

    observed = observations_since(before_count, 2)
    overhead = GATEWAY_OVERHEAD._sum.get() - before_sum
    assert observed == 2
    assert elapsed > 0.6  # two upstream waits of 300 ms
    assert overhead < 0.2  # what is left is the gateway's own work


def test_the_celery_queue_length_is_read_from_the_broker(db, settings):
    settings.DEBUG = True
    redis_client().lpush("celery", b"a", b"b")
    redis_client().lpush("celery\x06\x163", b"c")

    assert sample(scrape(), "tollgate_celery_queue_length", queue="celery") == 3


def test_periodic_task_ages_are_exported(db, settings):
    settings.DEBUG = True
    all_tasks_succeeded(time.time() - 30)

    text = scrape()

    age = sample(
        text,
        "tollgate_periodic_task_last_success_age_seconds",
        entry="settle-usage",
        task="billing.tasks.settle_usage",
    )
    assert 29 < age < 60
    assert (
        sample(
            text,
            "tollgate_periodic_task_stale",
            entry="settle-usage",
            task="billing.tasks.settle_usage",
        )
        == 0
    )


def test_the_settler_records_each_call_lag_in_its_bucket(db):
    client = redis_client()
    now = 1_000_000.0
    calls = [
        {"team": 1, "model": "m", "status": "ok", "in": 1, "out": 2, "cost": 3, "charged": 4,
         "ts": now - lag}
        for lag in (0.05, 0.3, 2.5, 2000)
    ]  # fmt: skip

    usage_metrics.record_settled(client, calls, settled_at=now)

    buckets, total = usage_metrics.settlement_lag(client)
    cumulative = dict(buckets)
    assert cumulative["0.1"] == 1 and cumulative["0.5"] == 2 and cumulative["3"] == 3
    assert cumulative["600"] == 3 and cumulative["+Inf"] == 4
    assert total == pytest.approx(2002.85)
