"""The upstream call: one attempt loop, shared by unary and streamed calls, over the routes in
fallback order, and the unary reply.

Fallback happens only before the first byte reaches the client: an attempt that fails to
connect, times out, answers with a FALLBACK_STATUS (or, unary, with unparseable JSON) makes the
call try the next route; any other error answer is the caller's own mistake, passed on
uncharged. Every failed attempt is told to the breaker and kept for the final error.
"""

import time

import aiohttp
import orjson

from core.redaction import redact_tollgate_keys
from proxy import litellm_errors, metrics
from proxy.apis.base import Exchange
from proxy.breaker import Breaker
from proxy.call import Call
from proxy.errors import GatewayError
from proxy.replica import Route
from proxy.responses import send_body, send_json

# Upstream answers that mean "try the next model": overload and server errors, and also our own
# configuration failing (401/403: a bad provider key, 404: a wrong upstream model id), which is
# never the customer's fault and must not reach them as if their key were wrong.
FALLBACK_STATUS = frozenset(
    {401, 403, 404, 408, 409, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529}
)


def redact(text: str, route: Route | None = None) -> str:
    """Upstream messages reach clients: never with a provider key of the catalog (any
    upstream's, not only the route's) or a Tollgate key in them."""
    return (route.redact if route is not None else redact_tollgate_keys)(text)


def error_message(raw: bytes, status: int) -> str:
    try:
        parsed = orjson.loads(raw)
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = err.get("message") if isinstance(err, dict) else None
        return str(message or err)[:500]
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace") or f"HTTP {status}"


class Attempt:
    """Why one upstream attempt failed, for the error after all fallbacks."""

    __slots__ = ("message", "route", "timeout")

    def __init__(self, route: Route, message: str, timeout: bool = False):
        self.route, self.message, self.timeout = route, message, timeout


class Answer:
    """What one route answered: a unary body (and its JSON), or an open 200 stream."""

    __slots__ = ("exchange", "headers", "payload", "raw", "response", "route", "status")

    def __init__(
        self, route: Route, exchange: Exchange, status: int, raw: bytes, headers, response=None
    ):
        self.route, self.exchange, self.status, self.raw = route, exchange, status, raw
        self.headers = headers
        self.response = response  # the aiohttp response of a stream, still to be relayed
        self.payload = None  # the parsed body of a unary answer


def exhausted(failures: list[Attempt]) -> GatewayError:
    last = failures[-1] if failures else None
    tried = ", ".join(f"{a.route.name}: {a.message}" for a in failures) or "no model"
    if last is not None and all(a.timeout for a in failures):
        return GatewayError(
            504,
            f"The upstream did not answer in time ({tried}).",
            "upstream_timeout",
            "upstream_timeout",
        )
    return GatewayError(
        502,
        f"The upstream failed after {len(failures)} attempt(s): {tried}.",
        "upstream_error",
        "upstream_error",
    )


class Upstream:
    """The gateway's HTTP session to every upstream, with this process's breaker."""

    __slots__ = ("breaker", "session")

    def __init__(self, session: aiohttp.ClientSession, breaker: Breaker):
        self.session, self.breaker = session, breaker

    async def first_answer(self, call: Call, settle) -> Answer | None:
        """The first route's usable answer; None when an upstream refused the caller (already
        answered and settled). Raises the final error when every route failed."""
        failures: list[Attempt] = []
        for route in call.routes:
            waited = time.perf_counter()
            try:
                answer = await self._attempt(route, call, call.api.exchange(route))
                if answer.status >= 400:
                    # The route speaks the API another way after all (Exchange.instead).
                    other = answer.exchange.instead(route, answer.status, answer.raw)
                    if other is not None:
                        answer = await self._attempt(route, call, other)
            except TimeoutError:
                self._failed(failures, Attempt(route, "timed out", timeout=True))
                continue
            except aiohttp.ClientError as exc:
                self._failed(failures, Attempt(route, f"connection failed ({type(exc).__name__})"))
                continue
            finally:
                metrics.upstream_wait_ended(waited)
            if answer.response is None if call.stream else answer.status >= 400:
                if await self._refused(call, settle, answer, failures):
                    return None
                continue
            if not call.stream:
                try:
                    answer.payload = answer.exchange.decode(answer.raw)
                except ValueError:
                    self._failed(failures, Attempt(route, "answered with invalid JSON"))
                    continue
            self.breaker.succeeded(route.id)
            return answer
        error = exhausted(failures)
        error.headers.extend(call.rate_headers)
        await settle.finish(None, None, "error", failed=True, response=error.body())
        raise error

    async def _attempt(self, route: Route, call: Call, exchange: Exchange) -> Answer:
        provider = route.provider
        headers = provider.headers(route, call)
        content_type = exchange.content_type(call)
        if content_type is not None:  # a body that is not JSON (a multipart upload)
            headers["Content-Type"] = content_type
        request = self.session.post(
            provider.url(route, exchange.upstream),
            data=exchange.body(call, route),
            headers=headers,
            timeout=route.timeout,
        )
        if not call.stream:
            async with request as resp:
                return Answer(route, exchange, resp.status, await resp.read(), resp.headers)
        resp = await request
        if resp.status == 200:
            return Answer(route, exchange, 200, b"", resp.headers, resp)
        raw = await resp.read()
        resp.release()
        return Answer(route, exchange, resp.status, raw, resp.headers)

    async def _refused(self, call: Call, settle, answer: Answer, failures: list) -> bool:
        """An upstream error answer: a reason to try the next model (recorded in failures,
        returns False), or the caller's own mistake, passed on uncharged (returns True)."""
        route, status, raw = answer.route, answer.status, answer.raw
        if route.litellm:
            verdict = litellm_errors.classify(
                status, raw, answer.headers or {}, caller_key=route.forward_key
            )
            if isinstance(verdict, GatewayError):
                body = call.api.error_body(verdict, call.rid)
                await settle.finish(route, None, "rejected", response=body)
                # LiteLLM's own rate limit refused it: our headroom would contradict the 429.
                headers = verdict.headers
                if verdict.status != 429:
                    headers = [*headers, *call.rate_headers]
                await send_json(call.send, verdict.status, body, call.rid, headers)
                return True
            if verdict is not None:
                failures.append(Attempt(route, redact(verdict, route)))
                return False
        if status in FALLBACK_STATUS:
            message = f"HTTP {status}: {redact(error_message(raw, status), route)}"
            self._failed(failures, Attempt(route, message))
            return False
        self.breaker.succeeded(route.id)  # it answered: the upstream is up
        body = answer.exchange.error(status, redact(raw.decode(errors="replace"), route).encode())
        await settle.finish(route, None, "rejected", response=body)
        await send_json(call.send, status, body, call.rid, [*call.rate_headers])
        return True

    def _failed(self, failures: list, attempt: Attempt) -> None:
        """An attempt that makes the call fall back: kept for the error, told to the breaker."""
        failures.append(attempt)
        self.breaker.failed(attempt.route.id)


async def reply(call: Call, answer: Answer, settle, cache) -> None:
    """A unary answer in the client's shape with the public model name: settled, then sent,
    then cached."""
    route, exchange = answer.route, answer.exchange
    body, usage, estimate_output = exchange.unary(call, route, answer.payload)
    try:
        await settle.finish_reported(route, usage, estimate_output, response=body)
    except GatewayError:
        settle.waive()  # the caller gets a 503 instead of the answer: nothing to charge
        raise
    await exchange.remember(call, route, answer.payload)
    headers = [(b"x-tollgate-model", route.name.encode()), *call.rate_headers]
    lookup = call.lookup
    if lookup is not None:
        headers.append((b"x-cache", b"miss"))
    content = exchange.answer_headers(call)
    if content is None:
        await send_json(call.send, 200, body, call.rid, headers)
    else:  # an answer that is not JSON (a transcript as text, srt or vtt)
        await send_body(call.send, 200, body, call.rid, content, headers)
    if lookup is not None and lookup.may_write and isinstance(answer.payload, dict):
        used = settle.usage
        entry = {"body": body.decode(), "model": route.name, "in": used.input, "out": used.output}
        await cache.put(lookup, lookup.unary_key, entry)
