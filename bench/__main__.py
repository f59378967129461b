"""`python -m bench`: Tollgate's gateway against LiteLLM and the bare upstream, on this machine.

Default run (~5 minutes): start a throwaway redis-server and a fake upstream (nginx), then one
system at a time (the upstream direct, the Tollgate gateway, LiteLLM), each warmed up, then
driven at every --concurrency for --duration seconds, at c=1 for latency, probed for streaming
TTFB, and sent a fixed number of calls (--cost-calls) while its CPU is read from /proc (and, for
the gateway, its Redis's INFO). A real Celery worker then settles the gateway's last calls, also
measured per call. Prints a markdown table with PASS/FAIL against the targets and writes
bench/results/latest.json.

`python -m bench --soak 100000`: drive that many requests at the gateway, with a Celery worker
and its beat settling as deployed, while sampling the gateway's RSS, and judge the growth
(bench/results/soak-latest.json).
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import redis

from bench import install, report
from bench.costs import CostMeter
from bench.load import LoadResult, Target, run_python, run_wrk, ttfb_probe
from bench.procs import (
    Child,
    ForeignCpu,
    Procs,
    RssSampler,
    StartError,
    start_redis_server,
    tree_peak_kib,
    wait_idle,
)
from bench.systems import (
    GatewayOptions,
    System,
    Upstream,
    direct,
    prepare_tenant,
    settle_now,
    start_gateway,
    start_litellm,
    start_settler,
    start_upstream,
)
from livestate.keys import SETTLER_GROUP, SHARD_RANGE, usage_stream

RESULTS = Path(__file__).resolve().parent / "results"
SYSTEMS = ("direct", "gateway", "litellm")
SOAK_CHUNK_S = 10.0
# Calls per system for the CPU-per-call run: enough for a few seconds of each system's CPU
# (/proc counts in 10 ms ticks), at the speeds each reaches here.
COST_CALLS = "direct=200000,gateway=10000,litellm=1000"
COST_CONCURRENCY = 16
SETTLE_TIMEOUT_S = 300.0


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        default="direct,gateway,litellm",
        help="systems to run, e.g. 'gateway' or 'direct+litellm'; the direct upstream always "
        "runs, as the baseline (default: all)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per system")
    p.add_argument(
        "--concurrency",
        default="16,64",
        help="comma-separated connection counts for throughput (c=1 is always run for latency)",
    )
    p.add_argument("--ttfb-requests", type=int, default=300, help="sequential streaming requests")
    p.add_argument(
        "--cost-calls",
        default=COST_CALLS,
        help=f"calls per system for CPU per call, at c={COST_CONCURRENCY}, and the gateway's "
        f"calls the settlement worker then settles (default: {COST_CALLS})",
    )
    p.add_argument("--workers", type=int, default=1, help="gateway processes (uvicorn --workers)")
    p.add_argument(
        "--server",
        choices=("uvicorn", "granian"),
        default="uvicorn",
        help="the gateway's ASGI server: uvicorn with the httptools protocol and read deadlines "
        "(what make run and the image run), or granian (must be installed; for comparison)",
    )
    p.add_argument(
        "--no-settle", action="store_true", help="skip the settlement worker's measurement"
    )
    p.add_argument("--soak", type=int, metavar="N", help="soak mode: N requests at the gateway")
    p.add_argument("--soak-concurrency", type=int, default=16)
    p.add_argument("--soak-timeout", type=float, default=1200, help="upper bound, seconds")
    p.add_argument("--sample-every", type=float, default=2.0, help="soak RSS sampling, seconds")
    p.add_argument(
        "--tools",
        choices=("auto", "python"),
        default="auto",
        help="auto: nginx + wrk (installed with apt-get if missing, as root); "
        "python: the pure-Python upstream and load generator",
    )
    p.add_argument("--no-install", action="store_true", help="never run apt-get or pip")
    p.add_argument("--gateway-app", default="saas.asgi:application", help="ASGI app to serve")
    p.add_argument("--gateway-health", default="/health/live", help="GET path that answers 200")
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the gateway (repeatable)",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_bench"
        ),
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL"),
        help="use this Redis db instead of a throwaway redis-server: it is FLUSHED at every run, "
        "and Redis commands per call are not counted (others may use the server)",
    )
    p.add_argument("--json", type=Path, help="where to write the results")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target FAILs")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    args = p.parse_args(argv)
    args.only = set(args.only.replace("+", ",").split(",")) | {"direct"}
    unknown = args.only - set(SYSTEMS)
    if unknown:
        p.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {SYSTEMS}")
    if args.redis_url and urlsplit(args.redis_url).path.strip("/") in ("", "0"):
        p.error("--redis-url must name a Redis db of its own (not 0): the bench flushes it")
    if args.workers < 1:
        p.error("--workers must be at least 1")
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    try:
        calls = _parse_calls(args.cost_calls)
    except ValueError:
        p.error(f"--cost-calls needs SYSTEM=N[,SYSTEM=N], got {args.cost_calls!r}")
    if set(calls) - set(SYSTEMS):
        p.error(f"--cost-calls: unknown system(s); choose from {SYSTEMS}")
    args.cost_calls = _parse_calls(COST_CALLS) | calls
    for item in args.gateway_env:
        if "=" not in item:
            p.error(f"--gateway-env needs NAME=VALUE, got {item!r}")
    return args


def _parse_calls(spec: str) -> dict[str, int]:
    return {name: int(n) for name, n in (item.split("=", 1) for item in spec.split(",") if item)}


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


class Bench:
    def __init__(self, args: argparse.Namespace, procs: Procs, workdir: Path):
        self.args, self.procs, self.workdir = args, procs, workdir
        # Redis commands per call are counted only on a Redis nobody else uses.
        self.own_redis: redis.Redis | None = None
        self.settled_through = 0  # usage records added before the last drain
        redis_url = args.redis_url
        if not redis_url:
            binary = shutil.which("redis-server")
            if not binary:
                raise StartError(
                    "redis-server not found: install it (apt-get install redis-server), or pass "
                    "--redis-url naming a Redis db of its own (it is flushed)"
                )
            _, redis_url = start_redis_server(procs, binary, workdir)
            log(f"redis: a throwaway redis-server at {redis_url}")
            self.own_redis = redis.Redis.from_url(redis_url)
        self.tools = install.Tools(None, None, "--tools python")
        if args.tools == "auto":
            self.tools = install.ensure_debian_tools(allow_install=not args.no_install)
            if self.tools.note:
                log(f"nginx/wrk: {self.tools.note}; using the Python fallbacks where missing")
        self.wrk = self.tools.wrk
        self.gateway_opts = GatewayOptions(
            app=args.gateway_app,
            health=args.gateway_health,
            database_url=args.database_url,
            redis_url=redis_url,
            env=dict(item.split("=", 1) for item in args.gateway_env),
            workers=args.workers,
            server=args.server,
        )

    def load(
        self,
        target: Target,
        concurrency: int,
        duration: float,
        limit: int | None = None,
        server: Child | None = None,
    ) -> LoadResult:
        """Drive target for duration seconds or `limit` requests, whichever comes first, then
        let the server finish any backlog so the next run starts from idle."""
        if self.wrk:
            result = run_wrk(
                self.wrk,
                target,
                concurrency=concurrency,
                duration=duration,
                workdir=self.workdir,
                limit=limit,
            )
        else:
            result = run_python(
                target,
                concurrency=concurrency,
                duration=duration,
                workdir=self.workdir,
                limit=limit,
            )
        if server is not None and not wait_idle(server.pid):
            log(f"{server.name} still busy 60 s after the load stopped")
        return result

    def meta(self, upstream_kind: str) -> dict:
        a = self.args
        return {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "upstream": upstream_kind
            + (f" ({_version([self.tools.nginx, '-v'])})" if upstream_kind == "nginx" else ""),
            "load_tool": " ".join(_version([self.wrk, "-v"]).split()[:2])
            if self.wrk
            else "python (bench.load)",
            # Other work on the machine skews every number: shown in the report when high.
            "loadavg_1m_before": os.getloadavg()[0],
            "duration": a.duration,
            "warmup": a.warmup,
            "concurrency": a.concurrency,
            "ttfb_requests": a.ttfb_requests,
            "cost_calls": a.cost_calls,
            "cost_concurrency": COST_CONCURRENCY,
            "own_redis": self.own_redis is not None,
            "gateway_workers": a.workers,
            "gateway_server": a.server,
            "gateway_app": a.gateway_app,
            "litellm_version": install.LITELLM_VERSION,
        }

    def start_upstream(self) -> Upstream:
        python = not self.tools.nginx
        up = start_upstream(self.procs, self.tools, self.workdir, prefer_python=python)
        log(f"upstream: {up.kind} at {up.base_url}")
        return up

    def start_gateway(self, upstream_base: str) -> System:
        log("gateway: preparing the bench database and tenant ...")
        try:
            tenant = prepare_tenant(self.gateway_opts, upstream_base)
            log(f"gateway: starting {self.args.gateway_app} ...")
            return start_gateway(self.procs, self.gateway_opts, tenant)
        except StartError as exc:
            return System("gateway", "Tollgate gateway", error=str(exc))

    def measure(self, system: System, before_cost=None) -> dict:
        a = self.args
        result = {
            "name": system.name,
            "label": system.label,
            "available": not system.error,
            "error": system.error,
            "stream_error": system.stream_error,
            "info": system.info,
            "load": {},
            "ttfb": None,
            "peak_rss_mib": None,
            "cost": None,
            "errors": 0,
        }
        if system.error:
            log(f"{system.label}: unavailable: {system.error}")
            return result
        assert system.chat is not None
        log(f"{system.label}: warm-up {a.warmup:g} s at c={max(a.concurrency)}")
        self.load(system.chat, max(a.concurrency), a.warmup, server=system.child)
        for c in [*a.concurrency, 1]:
            run = self.load(system.chat, c, a.duration, server=system.child)
            result["load"][str(c)] = run.to_dict()
            result["errors"] += run.errors
            log(
                f"{system.label}: c={c}: {run.rps:,.0f} req/s, p50 {run.p50_ms:.3f} ms, "
                f"p99 {run.p99_ms:.3f} ms, {run.errors} errors"
            )
        if system.stream is not None and not system.stream_error:
            ttfb = ttfb_probe(system.stream, requests=a.ttfb_requests)
            result["ttfb"] = vars(ttfb)
            result["errors"] += ttfb.errors
            log(
                f"{system.label}: stream TTFB p50 {ttfb.ttfb_p50_ms:.3f} ms, "
                f"p99 {ttfb.ttfb_p99_ms:.3f} ms"
            )
        elif system.stream_error:
            log(f"{system.label}: streaming not measured: {system.stream_error}")
        if before_cost is not None:
            before_cost()
        result["cost"] = self.cost(system, result["load"].get(str(COST_CONCURRENCY)))
        result["errors"] += result["cost"]["errors"]
        if system.child is not None and system.name != "direct":
            result["peak_rss_mib"] = tree_peak_kib(system.child.pid) / 1024
        return result

    def cost(self, system: System, seen: dict | None) -> dict:
        """CPU (and, for the gateway, Redis work) per call over a fixed number of calls."""
        assert system.chat is not None and system.child is not None
        calls = self.args.cost_calls[system.name]
        # The count ends the run; time is only a bound, from the rate already seen.
        rate = (seen or {}).get("rps") or 50.0
        bound = min(600.0, calls / rate * 3 + 10)
        counted = self.own_redis if system.name == "gateway" else None
        log(f"{system.label}: {calls:,} calls at c={COST_CONCURRENCY} for CPU per call")
        meter = CostMeter(system.child.pid, counted).start()
        recorded = _usage_recorded(counted) if counted is not None else None
        run = self.load(system.chat, COST_CONCURRENCY, bound, limit=calls, server=system.child)
        served = run.requests
        if recorded is not None:
            # The calls in flight when the load stops are served (and cost CPU) too, though
            # their client is gone: the gateway's usage records count them all.
            served = _usage_recorded(counted) - recorded
        cost = meter.stop(served) | {"errors": run.errors, "rps": run.rps}
        log(
            f"{system.label}: {served:,} calls, {cost['cpu_us_per_call'] or 0:,.0f} µs CPU "
            "per call"
            + (
                f", {cost['redis_commands_per_call']:.1f} Redis commands per call"
                if counted is not None and run.requests
                else ""
            )
        )
        return cost

    def settle(self, settler: Child) -> int:
        """Queue settle_usage until the usage stream is drained; returns the records settled
        (added to the stream since the last drain: every one is acknowledged now)."""
        client = redis.Redis.from_url(self.gateway_opts.redis_url)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not _usage_drained(client):
            if time.monotonic() > deadline or not settler.alive():
                raise StartError(
                    f"the settlement worker did not drain the usage stream. "
                    f"Last lines of {settler.log}:\n{settler.tail()}"
                )
            settle_now(self.gateway_opts)
            time.sleep(0.5)  # the task is picked up, then loops over batches
            wait_idle(settler.pid, timeout=max(1.0, deadline - time.monotonic()))
        recorded, self.settled_through = self.settled_through, _usage_recorded(client)
        return self.settled_through - recorded

    def measure_settlement(self, settler: Child, gateway_calls: int) -> dict:
        """The worker's CPU (and Redis work) for the records of the gateway's cost run."""
        log(f"settlement: one Celery worker settles the {gateway_calls:,} calls of that run")
        meter = CostMeter(settler.pid, self.own_redis).start()
        pace = AckPace(self.gateway_opts.redis_url)
        pace.start()
        settled = self.settle(settler)
        pace.stop()
        wait_idle(settler.pid)
        cost = meter.stop(settled) | {"records_per_s": pace.per_second()}
        log(
            f"settlement: {settled:,} records in {cost['seconds']:.1f} s, "
            f"{cost['cpu_us_per_call'] or 0:,.0f} µs CPU per call, "
            f"{cost['records_per_s'] or 0:,.0f} records/s once settling"
        )
        return cost

    def run(self) -> dict:
        a = self.args
        litellm = None
        if "litellm" in a.only:
            litellm = install.ensure_litellm(allow_install=not a.no_install)
        up = self.start_upstream()
        results: dict = {"mode": "compare", "meta": self.meta(up.kind), "systems": {}}

        results["systems"]["direct"] = self.measure(direct(up))
        if "gateway" in a.only:
            system = self.start_gateway(up.base_url)
            settler = None
            if not system.error and not a.no_settle:
                log("settlement: starting a Celery worker ...")
                settler = start_settler(self.procs, self.gateway_opts)
                wait_idle(settler.pid)  # its start-up is not the gateway's CPU
            # The worker settles the backlog of the earlier runs first, so that it then settles
            # exactly the calls of the cost run.
            before = (lambda: self.settle(settler)) if settler else None
            results["systems"]["gateway"] = gw = self.measure(system, before_cost=before)
            if system.child is not None:
                self.procs.stop(system.child)
            if settler is not None and gw.get("cost"):
                results["settlement"] = self.measure_settlement(settler, gw["cost"]["calls"])
                self.procs.stop(settler)
        if litellm is not None:
            if litellm.bin is None:
                system = System("litellm", f"LiteLLM {install.LITELLM_VERSION}")
                system.error = f"install failed: {litellm.reason}"
            else:
                log("litellm: starting ...")
                try:
                    system = start_litellm(self.procs, litellm.bin, up.base_url, self.workdir)
                except StartError as exc:
                    system = System("litellm", f"LiteLLM {install.LITELLM_VERSION}")
                    system.error = str(exc)
            results["systems"]["litellm"] = self.measure(system)
            if system.child is not None:
                self.procs.stop(system.child)
        report.derive(results)
        return results

    def soak(self) -> dict:
        a = self.args
        up = self.start_upstream()
        results: dict = {"mode": "soak", "meta": self.meta(up.kind), "systems": {}}
        system = self.start_gateway(up.base_url)
        if system.error:
            results["soak_error"] = system.error
            report.derive(results)
            return results
        assert system.chat is not None and system.child is not None
        # As deployed: usage settles every second while the gateway serves (the gateway keeps
        # each usage record until the settlers acknowledged it).
        start_settler(self.procs, self.gateway_opts, beat_dir=self.workdir)
        log(f"soak: warm-up {a.warmup:g} s at c={a.soak_concurrency}")
        warm = self.load(system.chat, a.soak_concurrency, a.warmup, server=system.child)
        rate = warm.rps or 100.0
        log(f"soak: {a.soak:,} requests at c={a.soak_concurrency} (at most {a.soak_timeout:g} s)")
        sampler = RssSampler(system.child.pid, every=a.sample_every).start()
        started = time.monotonic()
        chunks: list[LoadResult] = []
        try:
            # wrk runs for a time, not a count: drive chunks of at most SOAK_CHUNK_S seconds,
            # sized by the rate seen so far, until N requests are done.
            while (done := sum(c.requests for c in chunks)) < a.soak:
                left = a.soak_timeout - (time.monotonic() - started)
                if left < 1:
                    log(f"soak: only {done:,} of {a.soak:,} requests within --soak-timeout")
                    break
                seconds = min(SOAK_CHUNK_S, left, max(1.0, (a.soak - done) / rate))
                run = self.load(system.chat, a.soak_concurrency, seconds, limit=a.soak - done)
                chunks.append(run)
                rate = run.rps or rate
                rss = sampler.samples[-1][1] / 1024 if sampler.samples else 0
                log(f"soak: {done + run.requests:,} requests, {run.rps:,.0f} req/s, {rss:.1f} MiB")
        finally:
            sampler.stop()
        seconds = time.monotonic() - started
        kib = [k for _, k in sampler.samples]
        start, end, peak = kib[0] / 1024, kib[-1] / 1024, max(kib) / 1024
        requests = sum(c.requests for c in chunks)
        results["soak"] = {
            "requested": a.soak,
            "requests": requests,
            "concurrency": a.soak_concurrency,
            "seconds": seconds,
            "rps": requests / seconds if seconds else 0.0,
            "errors": sum(c.errors for c in chunks),
            "start_mib": start,
            "end_mib": end,
            "peak_mib": peak,
            "growth_pct": (end - start) / start * 100 if start else None,
            "sample_every": a.sample_every,
            "samples": [[round(t, 1), k] for t, k in sampler.samples],
            # Throughput and tail latency over time: a leak often shows as a slowdown first.
            "chunks": [
                {"requests": c.requests, "rps": c.rps, "p50_ms": c.p50_ms, "p99_ms": c.p99_ms}
                for c in chunks
            ],
        }
        report.derive(results)
        return results


def _usage_group(client: redis.Redis, stream: str) -> dict:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no stream yet
        return {}
    return next((g for g in groups if g["name"] == SETTLER_GROUP.encode()), {})


class AckPace(threading.Thread):
    """The settler's own pace: records acknowledged per second from its first batch's
    acknowledgement to its last, watched on the usage stream's group every 10 ms. The wall
    time around it (queueing the task, the worker picking it up, the bench's polling) is not
    the settler's, so `seconds` in the cost is not a rate. About 100 XINFO per second of
    settling (each reads every shard in one round trip): a few hundredths of a command per
    record in the Redis column."""

    def __init__(self, redis_url: str):
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url)
        self.samples: list[tuple[float, int]] = []  # (monotonic time, acknowledged so far)
        self.done = threading.Event()

    def waiting(self) -> int:
        """Records not yet acknowledged, over every shard's stream (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for shard in SHARD_RANGE:
            pipe.xinfo_groups(usage_stream(shard))
        waiting = 0
        for groups in pipe.execute(raise_on_error=False):
            if isinstance(groups, Exception):
                continue  # no stream there yet
            group = next((g for g in groups if g["name"] == SETTLER_GROUP.encode()), {})
            waiting += (group.get("lag") or 0) + group.get("pending", 0)
        return waiting

    def run(self) -> None:
        start = self.waiting()
        acked = 0
        while not self.done.is_set() and acked < start:
            now = start - self.waiting()
            if now != acked:
                acked = now
                self.samples.append((time.monotonic(), acked))
            time.sleep(0.01)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t1, a1), (t2, a2) = self.samples[0], self.samples[-1]
        return (a2 - a1) / (t2 - t1) if t2 > t1 else None


def _usage_recorded(client: redis.Redis) -> int:
    """Records ever added to the usage streams (one per call the gateway served)."""
    added = 0
    for shard in SHARD_RANGE:
        with contextlib.suppress(redis.ResponseError):
            added += client.xinfo_stream(usage_stream(shard))["entries-added"]
    return added


def _usage_drained(client: redis.Redis) -> bool:
    """Every record in every usage stream delivered to the settlers and acknowledged."""
    for shard in SHARD_RANGE:
        stream = usage_stream(shard)
        try:
            last = client.xinfo_stream(stream)["last-generated-id"]
        except redis.ResponseError:
            continue  # no stream: nothing was ever recorded there
        group = _usage_group(client, stream)
        if not (group and not group["pending"] and group["last-delivered-id"] == last):
            return False
    return True


def _raise_interrupt(signum, frame):
    log(f"got {signal.Signals(signum).name}")
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A TERM or HUP must stop the children too, exactly like Ctrl-C (which a shell may have
    # set to ignored for a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    keep = args.keep_workdir
    results: dict | None = None
    try:
        with Procs(workdir) as procs:
            bench = Bench(args, procs, workdir)
            neighbours = ForeignCpu().start()
            try:
                results = bench.soak() if args.soak else bench.run()
            finally:
                other_cores = neighbours.stop()
            results["meta"]["other_cpu_cores"] = other_cores
    except KeyboardInterrupt:
        log("interrupted; every process the bench started was stopped")
        return 130
    except StartError as exc:
        keep = True
        log(str(exc))
        return 1
    finally:
        # Logs named in an error message must still be there to read.
        if keep or (results is not None and _start_failed(results)):
            log(f"configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(report.markdown(results))
    path = args.json or RESULTS / ("soak-latest.json" if args.soak else "latest.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results written to {path}")
    gateway = results.get("systems", {}).get("gateway")  # absent in soak mode
    gateway_down = results.get("soak_error") or (
        "gateway" in args.only and gateway is not None and not gateway["available"]
    )
    if gateway_down:
        return 1  # a gateway that does not start is a broken build, not a slow one
    failed = any(t["status"] == report.FAIL and not t["informational"] for t in results["targets"])
    return 1 if args.strict and failed else 0


def _start_failed(results: dict) -> bool:
    return bool(results.get("soak_error")) or any(
        not s["available"] for s in results["systems"].values()
    )


if __name__ == "__main__":
    sys.exit(main())
