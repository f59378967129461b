"""The server as `make run` starts it: no traceback in its log, from start to first requests."""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings
from prometheus_client import CollectorRegistry

from billing import metrics as usage_metrics
from core.redis import client as redis_client
from ops.metrics import ControlPlaneCollector
from tests.helpers.api import MASTER
from tests.helpers.servers import free_port


def server_command(port: int) -> list[str]:
    """scripts/run.sh's server line, on another port (the same flags, read from the script)."""
    script = (Path(settings.BASE_DIR) / "scripts" / "run.sh").read_text()
    line = script.split(".venv/bin/uvicorn ", 1)[1].split("&\n", 1)[0]
    argv = line.replace("\\\n", " ").replace('"$PORT"', str(port)).split()
    return [sys.executable, "-m", "uvicorn", *argv]


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
    database = settings.DATABASES["default"]
    port = free_port()
    env = {
        **os.environ,
        "ENV_FILE": os.devnull,
        "DEBUG": "true",
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}"
        ),
        "REDIS_URL": redis_url,
        "MASTER_KEY": MASTER,
    }
    server = subprocess.Popen(  # noqa: S603 - our own command line
        server_command(port),
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{base}/health/live", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert httpx.get(f"{base}/api/organizations/", headers={"X-Admin-Key": MASTER}).is_success
        assert httpx.get(f"{base}/v1/models").status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        log = server.communicate(timeout=20)[0]

    assert "Traceback" not in log, log
    assert "could not be read" not in log, log
