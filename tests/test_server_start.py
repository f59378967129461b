"""The server as `make run` starts it: no traceback in its log, from start to first requests."""

import asyncio
import logging
import time

import httpx
from prometheus_client import CollectorRegistry

from billing import metrics as usage_metrics
from core.redis import client as redis_client
from ops.metrics import ControlPlaneCollector
from tests.helpers.api import MASTER
from tests.helpers.servers import ServerProcess


def some_settled_usage() -> None:
    """Usage counters in Redis: reading them names their teams, from Postgres."""
    call = {"team": 1, "model": "m", "status": "ok", "in": 1, "out": 1, "cost": 1, "charged": 1}
    usage_metrics.record_settled(redis_client(), [{**call, "ts": time.time()}])


def test_registering_the_metrics_reads_nothing_even_inside_an_event_loop(db, caplog):
    some_settled_usage()

    # Registration happens at import, often inside the server's loop: it must not collect.
    async def register():
        CollectorRegistry(auto_describe=True).register(ControlPlaneCollector())

    with caplog.at_level(logging.WARNING):
        asyncio.run(register())

    assert caplog.records == []


def test_the_server_starts_and_serves_without_a_traceback(db, redis_url):
    some_settled_usage()
    server = ServerProcess(redis_url, MASTER_KEY=MASTER).start()
    try:
        base = server.url
        assert httpx.get(f"{base}/health/live", timeout=2).status_code == 200
        assert httpx.get(f"{base}/api/organizations/", headers={"X-Admin-Key": MASTER}).is_success
        assert httpx.get(f"{base}/v1/models").status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 200
    finally:
        log = server.stop()

    assert "Traceback" not in log, log
    assert "could not be read" not in log, log
