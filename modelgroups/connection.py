"""Connection test for an upstream: `GET {base_url}/models` with its stored key (an Azure
OpenAI resource: `GET {base_url}/openai/models?api-version=…` with an `api-key` header; an
Anthropic upstream: `GET {base}/v1/models` with `x-api-key` and `anthropic-version`).

The control plane's only direct call to a provider (the gateway, in proxy/, makes the traffic
calls). Never called inside a database transaction; the key never appears in the result."""

import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from core.secrets import decrypt
from modelgroups.models import Upstream, stored_secrets_redactor
from modelgroups.probe import ANTHROPIC_VERSION, api_base

# A person is waiting on the answer: never longer than this, whatever the upstream allows.
MAX_SECONDS = 10.0
SHOWN_MODELS = 8


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status: int | None  # the HTTP status; None when no answer came
    latency_ms: int
    message: str  # the models it serves, or what went wrong, in words
    retryable: bool  # a timeout, a refused connection, 429 or 5xx: worth trying again


def upstream_probe(*, upstream: Upstream) -> ProbeResult:
    """Ask the upstream which models it serves, as the gateway would authenticate."""
    api_key = decrypt(upstream.api_key_encrypted)
    timeout = httpx.Timeout(
        min(upstream.read_timeout_seconds, MAX_SECONDS),
        connect=min(upstream.connect_timeout_seconds, MAX_SECONDS),
    )
    url = api_base(upstream.kind, upstream.base_url) + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if upstream.kind == Upstream.Kind.ANTHROPIC:
        version = upstream.resolved_api_version or ANTHROPIC_VERSION
        headers = {"anthropic-version": version, **({"x-api-key": api_key} if api_key else {})}
    elif upstream.kind == Upstream.Kind.AZURE_OPENAI:
        if not upstream.api_version:
            return ProbeResult(False, None, 0, "Set the upstream's API version first.", False)
        version = quote(upstream.api_version, safe="")
        url = f"{upstream.base_url.rstrip('/')}/openai/models?api-version={version}"
        headers = {"api-key": api_key} if api_key else {}
    # Built before the call: no database work while the person waits on the upstream.
    redact = stored_secrets_redactor(api_key)
    started = time.monotonic()

    def result(ok, status, message, retryable):
        elapsed = int((time.monotonic() - started) * 1000)
        return ProbeResult(ok, status, elapsed, redact(message), retryable)

    try:
        response = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.TimeoutException:
        return result(False, None, f"No answer within {timeout.read or MAX_SECONDS:g} s.", True)
    except httpx.HTTPError as exc:
        return result(False, None, f"Could not connect: {exc}", True)
    if response.status_code != 200:
        return result(
            False,
            response.status_code,
            f"HTTP {response.status_code}: {_error_text(response)}",
            response.status_code == 429 or response.status_code >= 500,
        )
    try:
        ids = [m["id"] for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return result(False, 200, "It answered, but not with an OpenAI-style model list.", False)
    shown = ", ".join(ids[:SHOWN_MODELS]) + (", …" if len(ids) > SHOWN_MODELS else "")
    return result(True, 200, f"Connected: {len(ids)} model(s) served ({shown}).", False)


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    except (ValueError, AttributeError):
        pass
    return response.text[:300] or response.reason_phrase
