"""Upstream health probes: the only control-plane code that calls an upstream (httpx).

A probe is cheap: a one-token call for chat and completion models, a one-word embedding for
embedding models, or, for an upstream set to "models", one GET /models shared by all its
models. Each probe has explicit timeouts and the number in flight is bounded, so a hung
upstream holds one slot for at most its timeout and never the round; the round itself has a
deadline. Error text is redacted before it leaves this module: providers echo keys back
("Incorrect API key provided: sk-…").

Azure OpenAI upstreams are called per deployment ({base}/openai/deployments/{model}/…) with
their api-version and an api-key header; their "models" check lists the resource's models
(/openai/models), which name models, not deployments, so it only says the resource answers.

Verdicts: a 2xx answer is up (degraded when slower than `slow_ms`); 5xx, 401, 403, 404, a
timeout, a connection failure or an unreadable answer is down (every call would fail the
same way); 408, 409, 429 and other 4xx are degraded (the upstream is alive but refused or
throttled the probe). A model missing from its upstream's list is degraded, not down: some
proxies list only part of what they serve, and live traffic trips the gateway's breaker
anyway if calls fail.
"""

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import orjson

from core.redaction import REDACTED, redact_tollgate_keys

logger = logging.getLogger(__name__)

UP, DEGRADED, DOWN = "up", "degraded", "down"
AZURE = "azure_openai"  # modelgroups.Upstream.Kind.AZURE_OPENAI (the probe imports no model)
ANTHROPIC = "anthropic"  # modelgroups.Upstream.Kind.ANTHROPIC
CALL, MODELS = "call", "models"
DOWN_STATUS = frozenset({401, 403, 404})
PROMPT = "ping"
ANTHROPIC_VERSION = "2023-06-01"
BEARER_PATTERN = re.compile(r"(?i)\bbearer\s+[\w.~+/-]+=*")  # an RFC 6750 token
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Target:
    """One model to probe, as plain data: the async part touches no ORM."""

    key: int  # the model's pk, to match the result back
    method: str  # CALL or MODELS
    mode: str  # chat, completion, embedding or moderation (the others are listed, not called)
    base_url: str
    upstream_model: str
    api_key: str
    connect_timeout: float
    kind: str = "openai"  # the upstream's kind: azure_openai and anthropic differ in URLs and auth
    api_version: str = ""  # azure_openai's api-version, anthropic's anthropic-version


@dataclass(frozen=True, slots=True)
class Result:
    status: str  # UP, DEGRADED or DOWN
    latency_ms: int | None
    error: str  # redacted; empty when up
    at: datetime  # when the answer (or the failure) came


def redact(text: str, secret: str) -> str:
    """The probed upstream's own key; services.py then removes every other stored secret."""
    if secret:
        text = text.replace(secret, REDACTED)
    text = BEARER_PATTERN.sub(f"Bearer {REDACTED}", text)
    return redact_tollgate_keys(text)


def _call_request(target: Target) -> tuple[str, dict]:
    if target.kind == ANTHROPIC:
        return "/messages", {
            "model": target.upstream_model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 1,
        }
    if target.mode == "embedding":
        return "/embeddings", {"model": target.upstream_model, "input": PROMPT}
    if target.mode == "completion":
        return "/completions", {"model": target.upstream_model, "prompt": PROMPT, "max_tokens": 1}
    if target.mode == "moderation":  # free at OpenAI
        return "/moderations", {"model": target.upstream_model, "input": PROMPT}
    return "/chat/completions", {
        "model": target.upstream_model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 1,
    }


def _error_text(response: httpx.Response) -> str:
    try:
        parsed = orjson.loads(response.content)
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = err.get("message") if isinstance(err, dict) else err
        text = str(message or "")
    except orjson.JSONDecodeError:
        text = response.content[:MAX_ERROR_CHARS].decode(errors="replace")
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"


def _verdict_for(response: httpx.Response) -> str:
    code = response.status_code
    if code >= 500 or code in DOWN_STATUS:
        return DOWN
    return DEGRADED


def _result(status: str, started: float | None, error: str, secret: str) -> Result:
    latency = None if started is None else int((time.monotonic() - started) * 1000)
    return Result(status, latency, redact(error, secret)[:MAX_ERROR_CHARS], datetime.now(UTC))


def _headers(target: Target) -> dict:
    headers = {"User-Agent": "Tollgate-Health/1"}
    if target.kind == ANTHROPIC:
        headers["anthropic-version"] = target.api_version or ANTHROPIC_VERSION
        if target.api_key:
            headers["x-api-key"] = target.api_key
    elif target.api_key:
        if target.kind == AZURE:
            headers["api-key"] = target.api_key
        else:
            headers["Authorization"] = f"Bearer {target.api_key}"
    return headers


def api_base(kind: str, base_url: str) -> str:
    """The URL below which an OpenAI-style path is: Anthropic's base may be given with or
    without its /v1, the others' already end where their paths start."""
    base = base_url.rstrip("/")
    if kind == ANTHROPIC and not base.endswith("/v1"):
        base += "/v1"
    return base


def _url(target: Target, path: str) -> str:
    """An OpenAI path below the base URL; on Azure, below the model's deployment (the model
    list is the resource's), with the api-version."""
    base = api_base(target.kind, target.base_url)
    if target.kind != AZURE:
        return base + path
    version = "?api-version=" + quote(target.api_version, safe="")
    if path == "/models":
        return base + "/openai/models" + version
    deployment = quote(target.upstream_model, safe="")
    return f"{base}/openai/deployments/{deployment}{path}{version}"


async def _send(client: httpx.AsyncClient, target: Target, timeout: float, method: str, path, body):
    """One request within `timeout` seconds in all (httpx's own timeouts are per operation,
    so a server that trickles bytes would otherwise hold the slot longer)."""
    async with asyncio.timeout(timeout):
        return await client.request(
            method,
            _url(target, path),
            json=body,
            headers=_headers(target),
            timeout=httpx.Timeout(timeout, connect=min(target.connect_timeout, timeout)),
        )


async def _probe_call(client, target: Target, timeout: float, slow_ms: int) -> Result:
    path, body = _call_request(target)
    started = time.monotonic()
    secret = target.api_key
    try:
        response = await _send(client, target, timeout, "POST", path, body)
    except TimeoutError:
        return _result(DOWN, started, f"timed out after {timeout:g}s", secret)
    except httpx.HTTPError as exc:
        return _result(DOWN, started, f"connection failed ({type(exc).__name__})", secret)
    if not response.is_success:
        return _result(_verdict_for(response), started, _error_text(response), secret)
    try:
        orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return _result(DOWN, started, "answered with invalid JSON", secret)
    return _timed(_result(UP, started, "", secret), slow_ms)


def _timed(result: Result, slow_ms: int) -> Result:
    if result.status == UP and result.latency_ms is not None and result.latency_ms > slow_ms:
        error = f"slow: answered in {result.latency_ms} ms (over {slow_ms} ms)"
        return Result(DEGRADED, result.latency_ms, error, result.at)
    return result


async def _fetch_list(client, target: Target, timeout: float) -> tuple[Result, set[str] | None]:
    """GET /models once for an upstream: (its verdict, the model ids it lists)."""
    started = time.monotonic()
    secret = target.api_key
    try:
        response = await _send(client, target, timeout, "GET", "/models", None)
    except TimeoutError:
        return _result(DOWN, started, f"timed out after {timeout:g}s", secret), None
    except httpx.HTTPError as exc:
        return _result(DOWN, started, f"connection failed ({type(exc).__name__})", secret), None
    if not response.is_success:
        return _result(_verdict_for(response), started, _error_text(response), secret), None
    try:
        data = orjson.loads(response.content).get("data")
        ids = {str(m["id"]) for m in data if isinstance(m, dict) and "id" in m}
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return _result(DEGRADED, started, "the model list is not valid JSON", secret), None
    return _result(UP, started, "", secret), ids


def _listed(found: tuple[Result, set[str] | None], target: Target, slow_ms: int) -> Result:
    result, ids = found
    # Azure lists the resource's models, not its deployments (what upstream_model names).
    if ids is not None and target.kind != AZURE and target.upstream_model not in ids:
        error = f"{target.upstream_model!r} is not in the upstream's model list"
        return Result(DEGRADED, result.latency_ms, error, result.at)
    return _timed(result, slow_ms)


async def run(
    targets: list[Target], *, concurrency: int, timeout: float, slow_ms: int, deadline: float
) -> dict[int, Result]:
    """Probe the targets, at most `concurrency` at a time, each within `timeout` seconds.
    Probes still waiting for a slot at `deadline` are dropped (no verdict, not "down")."""
    slots = asyncio.Semaphore(concurrency)
    results: dict[int, Result] = {}
    lists: dict[tuple, asyncio.Future] = {}

    async def bounded(coro):
        async with slots:
            return await coro

    async def one(client, target: Target):
        try:
            if target.method == MODELS:
                shared = (target.base_url, target.api_key, target.connect_timeout)
                if shared not in lists:
                    lists[shared] = asyncio.ensure_future(
                        bounded(_fetch_list(client, target, timeout))
                    )
                # Shielded: one waiter cancelled at the deadline must not cancel the others'.
                found = await asyncio.shield(lists[shared])
                results[target.key] = _listed(found, target, slow_ms)
            else:
                results[target.key] = await bounded(_probe_call(client, target, timeout, slow_ms))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("health probe of model %s failed unexpectedly", target.key)

    async with httpx.AsyncClient(follow_redirects=False) as client:
        tasks = [asyncio.ensure_future(one(client, t)) for t in targets]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=deadline)
            for task in (*pending, *lists.values()):
                task.cancel()
            await asyncio.gather(*tasks, *lists.values(), return_exceptions=True)
    return results
