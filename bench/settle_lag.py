"""Call-to-ledger lag under steady load: the gateway, a Celery worker and beat, as `make run`.

`python -m bench.settle_lag [--rate 200] [--duration 60]` starts, on free loopback ports, the
mock upstream (--upstream-latency-ms), the ASGI app under uvicorn, a Celery worker (2
processes) and beat, all on their own database and a throwaway redis-server (or --redis-url,
flushed); then sends chat calls
at a fixed rate (an open loop: a new call every 1/rate s, whatever the answers) and waits for
the usage stream to drain. Reports the lag the settler measured (tollgate_settlement_lag_seconds,
quantiles interpolated in its buckets as Prometheus' histogram_quantile does) and, as a check,
the exact quantiles of ledger entry time minus call time from the database.
"""

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench.procs import Procs, free_port, start_redis_server
from core.redis import client as redis_client
from livestate.keys import SHARD_RANGE, usage_stream

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.settle_lag", description=__doc__)
    p.add_argument("--rate", type=float, default=200.0, help="calls per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--upstream-latency-ms", type=int, default=50)
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_settle_lag"
        ),
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL"),
        help="a Redis db to use (FLUSHED) instead of a throwaway redis-server",
    )
    args = p.parse_args(argv)
    if args.redis_url and args.redis_url.rstrip("/").endswith(("/0", ":6379")):
        p.error("--redis-url must name a Redis db of its own (not 0): it is flushed")
    logs = REPO / ".bench" / "settle-lag-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with Procs(logs) as own:
        if not args.redis_url:
            binary = shutil.which("redis-server")
            if not binary:
                p.error("redis-server not found: install it, or pass --redis-url (flushed)")
            _, args.redis_url = start_redis_server(own, binary, logs)
        run(args, logs)


def run(args, logs: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "CELERY_BROKER_URL": args.redis_url,
        "DJANGO_SETTINGS_MODULE": "saas.settings",
    }
    py = sys.executable
    for step in (["scripts/ensure_services.py"], ["manage.py", "migrate", "-v", "0"]):
        subprocess.run([py, *step], check=True, env=env, cwd=REPO)
    upstream_port, gateway_port = free_port(), free_port()
    key_file = REPO / ".bench" / "settle-lag-key"
    subprocess.run(
        [
            py,
            "-m",
            "bench.tenant",
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
            "--key-file",
            str(key_file),
            "--flush-redis",
        ],
        check=True,
        env=env,
        cwd=REPO,
        capture_output=True,
    )
    key = key_file.read_text().strip()
    model = "bench"  # bench.tenant's chat group
    procs = []

    def start(name: str, argv: list[str]) -> None:
        log = (logs / f"{name}.log").open("w")
        procs.append(
            subprocess.Popen(
                argv,
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    try:
        start(
            "upstream",
            [
                py,
                "-m",
                "devtools.mock_upstream",
                "--port",
                str(upstream_port),
                "--latency-ms",
                str(args.upstream_latency_ms),
            ],
        )
        start(
            "gateway",
            [
                py,
                "-m",
                "uvicorn",
                "saas.asgi:application",
                "--port",
                str(gateway_port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
        )
        start(
            "worker",
            [
                py,
                "-m",
                "celery",
                "-A",
                "saas",
                "worker",
                "--loglevel",
                "WARNING",
                "--concurrency",
                "2",
                "--without-heartbeat",
                "--without-mingle",
                "--without-gossip",
            ],
        )
        start(
            "beat",
            [
                py,
                "-m",
                "celery",
                "-A",
                "saas",
                "beat",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(logs / "celerybeat-schedule"),
            ],
        )
        base = f"http://127.0.0.1:{gateway_port}"
        wait_live(f"{base}/health/live", 30)
        time.sleep(3)  # the worker and beat settle in
        sent, failed = asyncio.run(drive(base, key, model, args.rate, args.duration))
        print(f"sent {sent} calls in {args.duration:.0f} s at {args.rate:.0f}/s ({failed} failed)")
        drained = wait_drained(env)
        report(env, drained)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_live(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def drive(base: str, key: str, model: str, rate: float, duration: float):
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
    headers = {"Authorization": f"Bearer {key}"}
    results = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one():
            try:
                async with session.post(
                    f"{base}/v1/chat/completions", json=body, headers=headers
                ) as r:
                    await r.read()
                    results.append(r.status == 200)
            except aiohttp.ClientError:
                results.append(False)

        tasks = []
        started = time.monotonic()
        n = int(rate * duration)
        for i in range(n):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
    return len(results), results.count(False)


def _django(env):
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
    import django

    django.setup()


def wait_drained(env, timeout: float = 60.0) -> float:
    """Seconds until the usage stream has nothing undelivered or pending."""
    _django(env)
    from livestate.keys import SETTLER_GROUP

    client = redis_client()
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all(_drained(client, usage_stream(shard), SETTLER_GROUP) for shard in SHARD_RANGE):
            return time.monotonic() - started
        time.sleep(0.2)
    return float("inf")


def _drained(client, stream: str, group_name: str) -> bool:
    if not client.exists(stream):
        return True
    groups = {g["name"]: g for g in client.xinfo_groups(stream)}
    group = groups.get(group_name.encode())
    return bool(group) and not group["lag"] and not group["pending"]


def report(env, drained_s: float) -> None:
    _django(env)
    from django.db import connection

    from billing import metrics

    buckets, total = metrics.settlement_lag(redis_client())
    count = buckets[-1][1]
    print(f"stream drained {drained_s:.1f} s after the last call")
    print(f"settler-measured lag: {count} calls, mean {total / max(count, 1):.3f} s")
    for q in (0.5, 0.9, 0.99, 1.0):
        print(f"  p{q * 100:g}: {histogram_quantile(q, buckets):.3f} s (interpolated)")
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99, 1.0]) WITHIN GROUP (
                ORDER BY extract(epoch FROM l.created_at - u.created_at)), count(*)
            FROM billing_usagerecord u
            JOIN billing_ledgerentry l ON l.idempotency_key = 'usage:' || u.request_id
            WHERE u.created_at > now() - interval '1 hour'
            """
        )
        quantiles, n = cursor.fetchone()
    print(f"database (ledger entry created_at - call time), {n} calls:")
    for q, v in zip((0.5, 0.9, 0.99, 1.0), quantiles or [], strict=False):
        print(f"  p{q * 100:g}: {v:.3f} s")


def histogram_quantile(q: float, buckets: list[tuple[str, int]]) -> float:
    count = buckets[-1][1]
    if not count:
        return float("nan")
    rank, lower, below = q * count, 0.0, 0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == "+Inf":
                return lower
            upper = float(bound)
            in_bucket = cumulative - below
            return lower + (upper - lower) * ((rank - below) / in_bucket if in_bucket else 0)
        lower, below = float(bound), cumulative
    return lower


if __name__ == "__main__":
    main()
