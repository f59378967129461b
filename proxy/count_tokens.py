"""POST /v1/messages/count_tokens: authenticated and model-checked like a call, never reserved,
rate-limited or charged (Anthropic does not charge it either).

The first route that can answer does: an upstream speaking Messages is asked (its own
count_tokens, falling back to the next route on the errors a call falls back on); an
OpenAI-compatible one is counted locally (proxy/tokens.py's byte estimate: an estimate, said
in the `x-tollgate-token-count: estimate` header, `upstream` when the upstream counted).
"""

import aiohttp
import orjson

from proxy.apis.messages import COUNT_FIELDS, estimate_input
from proxy.replica import Route
from proxy.upstream import FALLBACK_STATUS, Attempt, error_message, exhausted, redact


async def count(
    session: aiohttp.ClientSession, scope, rid: str, request: dict, routes: list[Route]
):
    """(status, body, extra headers) of the count for the first route that answers."""
    failures: list[Attempt] = []
    for route in routes:
        provider = route.provider
        if "count_tokens" not in provider.paths:
            body = orjson.dumps({"input_tokens": estimate_input(request)})
            return 200, body, [(b"x-tollgate-token-count", b"estimate")]
        asked = {k: request[k] for k in COUNT_FIELDS if k in request}
        asked["model"] = route.upstream_model
        try:
            async with session.post(
                provider.url(route, "count_tokens"),
                data=orjson.dumps(asked),
                headers=provider.headers_for(route, rid, scope),
                timeout=route.timeout,
            ) as resp:
                status, raw = resp.status, await resp.read()
        except TimeoutError:
            failures.append(Attempt(route, "timed out", timeout=True))
            continue
        except aiohttp.ClientError as exc:
            failures.append(Attempt(route, f"connection failed ({type(exc).__name__})"))
            continue
        if status == 200:
            try:
                counted = orjson.loads(raw)["input_tokens"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                failures.append(Attempt(route, "answered without input_tokens"))
                continue
            body = orjson.dumps({"input_tokens": counted})
            return 200, body, [(b"x-tollgate-token-count", b"upstream")]
        if status in FALLBACK_STATUS:
            message = f"HTTP {status}: {redact(error_message(raw, status), route)}"
            failures.append(Attempt(route, message))
            continue
        # The caller's own mistake, in Anthropic's shape already (the upstream speaks it).
        return status, redact(raw.decode(errors="replace"), route).encode(), []
    raise exhausted(failures)
