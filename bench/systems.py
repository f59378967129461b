"""The systems under test, each started on a free loopback port and checked before any load.

direct   the fake upstream itself: the floor every other number is compared with
gateway  Tollgate's ASGI app under uvicorn (--workers, uvloop, httptools), its own database
settler  a Celery worker (one process) settling the gateway's usage stream into that database
litellm  LiteLLM's proxy (1 worker, no database) in its own venv, routing to the same upstream
"""

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import upstream
from bench.install import LITELLM_VERSION, REPO, Tools
from bench.load import Target, one_request
from bench.procs import Child, Procs, StartError, free_port, wait_http

PROMPT = "Say hello in five words."
UPSTREAM_AUTH = "Bearer sk-bench-upstream"


def chat_body(model: str, *, stream: bool = False) -> bytes:
    body: dict = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 16,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body, separators=(",", ":")).encode()


def _target(url: str, auth: str, model: str, *, stream: bool = False) -> Target:
    headers = {"Content-Type": "application/json", "Authorization": auth}
    return Target(url, headers, chat_body(model, stream=stream))


@dataclass
class System:
    name: str
    label: str
    chat: Target | None = None
    stream: Target | None = None
    child: Child | None = None  # the process tree whose memory is reported
    error: str = ""  # why it could not be measured at all
    stream_error: str = ""  # why streaming could not be measured
    info: dict = field(default_factory=dict)


@dataclass
class Upstream:
    child: Child
    base_url: str  # scheme://host:port, no path
    kind: str  # "nginx" or "python"


def start_upstream(procs: Procs, tools: Tools, workdir: Path, *, prefer_python: bool) -> Upstream:
    port = free_port()
    if tools.nginx and not prefer_python:
        child = procs.start("upstream-nginx", upstream.nginx_argv(tools.nginx, workdir, port))
        kind = "nginx"
    else:
        argv = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
        child = procs.start("upstream-python", argv, cwd=REPO)
        kind = "python"
    base = f"http://127.0.0.1:{port}"
    # Both upstreams answer GET / with 404, and only once they accept connections.
    wait_http(child, f"{base}/", timeout=20, ok=lambda status: status == 404)
    return Upstream(child, base, kind)


def direct(up: Upstream) -> System:
    return System(
        name="direct",
        label=f"upstream direct ({up.kind})",
        chat=_target(up.base_url + upstream.CHAT_PATH, UPSTREAM_AUTH, "bench-chat"),
        stream=_target(
            up.base_url + upstream.STREAM_PATH, UPSTREAM_AUTH, "bench-stream", stream=True
        ),
        child=up.child,
    )


def _check(system: System) -> System:
    """One chat and one streaming call, so load is never measured against error pages."""
    try:
        status, body = one_request(system.chat)
    except OSError as exc:
        system.error = f"chat request failed: {exc}"
        return system
    if status != 200 or b'"choices"' not in body:
        system.error = f"chat request answered HTTP {status}: {body[:300].decode(errors='replace')}"
        return system
    try:
        status, body = one_request(system.stream)
    except OSError as exc:
        system.stream_error = f"stream request failed: {exc}"
        return system
    if status != 200 or b"data:" not in body:
        snippet = body[:300].decode(errors="replace")
        system.stream_error = f"stream request answered HTTP {status}: {snippet}"
    return system


# ---- Tollgate ----


@dataclass
class GatewayOptions:
    app: str
    health: str
    database_url: str
    redis_url: str
    env: dict[str, str]
    workers: int = 1
    server: str = "uvicorn"


def _gateway_env(opts: GatewayOptions) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": opts.database_url,
        "REDIS_URL": opts.redis_url,
        "CELERY_BROKER_URL": opts.redis_url,
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        # production settings refuse an open /metrics; the bench never scrapes it
        "METRICS_TOKEN": os.environ.get("METRICS_TOKEN") or "bench-metrics-token",
        **opts.env,
    }


def _run_step(what: str, argv: list[str], env: dict, timeout: float) -> str:
    try:
        done = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise StartError(f"{what} timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-25:])
        raise StartError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def prepare_tenant(opts: GatewayOptions, upstream_base: str) -> dict:
    """Create the bench database if missing, migrate it, and (re)build the bench tenant."""
    env = _gateway_env(opts)
    py = sys.executable
    _run_step("creating the bench database", [py, "scripts/ensure_services.py"], env, 60)
    _run_step("migrating the bench database", [py, "manage.py", "migrate", "--noinput"], env, 300)
    out = _run_step(
        "setting up the bench tenant",
        [
            py,
            "-m",
            "bench.tenant",
            "--upstream",
            upstream_base,
            "--key-file",
            str(REPO / ".bench" / "gateway-key"),
            "--flush-redis",
        ],
        env,
        120,
    )
    return json.loads(out.strip().splitlines()[-1])


def _granian_argv(opts: GatewayOptions, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"),
        *("--port", str(port), "--workers", str(opts.workers), "--loop", "uvloop"),
        *("--log-level", "warning", "--no-ws", opts.app),
    ]


def start_gateway(procs: Procs, opts: GatewayOptions, tenant: dict) -> System:
    port = free_port()
    argv = (
        _granian_argv(opts, port)
        if opts.server == "granian"
        else [
            sys.executable,
            "-m",
            "uvicorn",
            opts.app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(opts.workers),
            "--loop",
            "uvloop",
            "--http",
            # what make run and the image run: httptools with header and body read deadlines
            "saas.server:HttpToolsProtocolWithDeadlines",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    )
    child = procs.start("gateway", argv, env=_gateway_env(opts), cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    wait_http(child, base + opts.health, timeout=60, ok=lambda status: status == 200)
    auth = f"Bearer {tenant['key']}"
    system = System(
        name="gateway",
        label="Tollgate gateway"
        + (f" ({opts.workers} processes)" if opts.workers > 1 else "")
        + (f" on {opts.server}" if opts.server != "uvicorn" else ""),
        chat=_target(f"{base}/v1/chat/completions", auth, tenant["chat_model"]),
        stream=_target(f"{base}/v1/chat/completions", auth, tenant["stream_model"], stream=True),
        child=child,
        info={"app": opts.app, "port": port, "workers": opts.workers, "server": opts.server},
    )
    return _check(system)


def start_settler(procs: Procs, opts: GatewayOptions, *, beat_dir: Path | None = None) -> Child:
    """A real Celery worker, one process (solo pool), on the bench's database and Redis. Without
    `beat_dir` no beat: the bench sends settle_usage itself (settle_now), so the worker is idle
    until then. With it, the worker runs the beat schedule too (settle_usage every second, the
    lease sweep, reconcile...), as deployed: the soak's gateway then runs beside its settler."""
    argv = [sys.executable, "-m", "celery", "-A", "saas", "worker", "--pool", "solo"]
    argv += ["--loglevel", "WARNING", "--without-heartbeat", "--without-mingle"]
    argv += ["--without-gossip"]
    if beat_dir is not None:
        argv += ["--beat", "--schedule", str(beat_dir / "celerybeat-schedule")]
    return procs.start("settler", argv, env=_gateway_env(opts), cwd=REPO)


def settle_now(opts: GatewayOptions) -> None:
    """Queue one settle_usage task (each drains up to 20 batches of 1,000 records)."""
    argv = [sys.executable, "-m", "celery", "-A", "saas", "call", "billing.tasks.settle_usage"]
    _run_step("queueing settle_usage", argv, _gateway_env(opts), 60)


# ---- LiteLLM ----


def litellm_config(upstream_base: str, master_key: str) -> str:
    models = "".join(
        f"""  - model_name: {name}
    litellm_params:
      model: openai/{name}
      api_base: {upstream_base}{base}
      api_key: sk-bench-upstream
    model_info:
      input_cost_per_token: 0.00000015
      output_cost_per_token: 0.0000006
"""
        for name, base in (("bench-chat", "/v1"), ("bench-stream", "/stream/v1"))
    )
    return f"""model_list:
{models}general_settings:
  master_key: {master_key}
litellm_settings:
  telemetry: false
"""


def start_litellm(procs: Procs, binary: Path, upstream_base: str, workdir: Path) -> System:
    port = free_port()
    # LiteLLM insists on an sk- master key and refuses its documented example, sk-1234.
    master_key = "sk-bench-" + secrets.token_hex(12)
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream_base, master_key))
    # A clean environment: no DATABASE_URL or REDIS_URL of ours may leak into it.
    env = {
        "PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "TMPDIR": str(workdir),
        # No internet here: use the price map shipped in the package.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # In its default DEV mode LiteLLM loads the nearest .env up from its own files, which
        # is ours (DATABASE_URL and all) since its venv lives in the repo.
        "LITELLM_MODE": "PRODUCTION",
        "LITELLM_LOG": "ERROR",
    }
    argv = [
        str(binary),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    child = procs.start("litellm", argv, env=env, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    wait_http(child, base + "/health/liveliness", timeout=180, ok=lambda status: status == 200)
    auth = f"Bearer {master_key}"
    system = System(
        name="litellm",
        label=f"LiteLLM {LITELLM_VERSION}",
        chat=_target(f"{base}/v1/chat/completions", auth, "bench-chat"),
        stream=_target(f"{base}/v1/chat/completions", auth, "bench-stream", stream=True),
        child=child,
        info={"version": LITELLM_VERSION, "port": port},
    )
    return _check(system)
