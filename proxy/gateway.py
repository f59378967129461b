"""The OpenAI-compatible gateway: a raw ASGI app, because this is the hot path.

Per request: one in-memory key/team/catalog lookup, one atomic Redis admission (rate limits,
parallelism, credit and budget reservation), the upstream call with fallbacks, and one atomic
Redis settlement that releases the reservation, charges the actual price and appends the
usage record to the `tg:usage` stream, which workers settle into the Postgres ledger. No ORM,
no Postgres. The settlement runs before the client receives the end of the response, so a
crash after that point cannot lose the record; see proxy/scripts.py for the money invariant.
"""

import asyncio
import hashlib
import logging
import os
import re
import time

import aiohttp
import orjson
from django.conf import settings
from redis.asyncio import BlockingConnectionPool, Redis

from livestate import scripts
from livestate.keys import CATALOG, INFLIGHT, USAGE_STREAM, job_key
from proxy import cache, control, metrics
from proxy import litellm as litellm_upstream
from proxy.breaker import Breaker
from proxy.config import GatewayConfig, Route
from proxy.errors import GatewayError
from proxy.jobs import JobEndpoints, job_id_of
from proxy.pricing import call_cost
from proxy.tokens import estimate_prompt_tokens, estimate_text_tokens, reserve_input_tokens

logger = logging.getLogger(__name__)

# path -> (mode the model must have, path on the upstream)
ENDPOINTS = {
    "/v1/chat/completions": ("chat", "/chat/completions"),
    "/v1/completions": ("completion", "/completions"),
    "/v1/embeddings": ("embedding", "/embeddings"),
}
REQUIRED_FIELD = {"chat": "messages", "completion": "prompt", "embedding": "input"}
# Upstream answers that mean "try the next model": overload and server errors, and also our own
# configuration failing (401/403: a bad provider key, 404: a wrong upstream model id), which is
# never the customer's fault and must not reach them as if their key were wrong.
FALLBACK_STATUS = frozenset(
    {401, 403, 404, 408, 409, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529}
)
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
SECRET_PATTERN = re.compile(r"(sk|tga|tgm)-[A-Za-z0-9_\-]{8,}")


def redact(text: str, route: Route | None = None) -> str:
    """Upstream messages reach clients: never with a provider or Tollgate secret in them."""
    if route is not None and route.secret:
        text = text.replace(route.secret, "[redacted]")
    return SECRET_PATTERN.sub("[redacted]", text)


def _error_message(raw: bytes, status: int) -> str:
    try:
        parsed = orjson.loads(raw)
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = err.get("message") if isinstance(err, dict) else None
        return str(message or err)[:500]
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace") or f"HTTP {status}"


class ClientGone(Exception):
    """The client hung up before we answered."""


class Attempt:
    """Why one upstream attempt failed, for the error after all fallbacks."""

    __slots__ = ("message", "route", "timeout")

    def __init__(self, route: Route, message: str, timeout: bool = False):
        self.route, self.message, self.timeout = route, message, timeout


class Gateway(JobEndpoints):
    def __init__(self):
        self.redis: Redis | None = None
        self.session: aiohttp.ClientSession | None = None
        self.config: GatewayConfig | None = None
        self.max_body = settings.GATEWAY_MAX_BODY_BYTES
        self._started = asyncio.Lock()

    async def startup(self) -> None:
        async with self._started:
            if self.config is not None:
                return
            # A bounded pool that waits for a free connection: a burst of requests queues for
            # a moment instead of failing with "too many connections".
            pool = BlockingConnectionPool.from_url(
                settings.REDIS_URL,
                max_connections=settings.GATEWAY_REDIS_CONNECTIONS,
                timeout=5,
                socket_timeout=5,
                health_check_interval=30,
            )
            self.redis = Redis(connection_pool=pool)
            self.admit = self.redis.register_script(scripts.ADMIT)
            self.settle = self.redis.register_script(scripts.SETTLE)
            self.job_open_script = self.redis.register_script(scripts.JOB_OPEN)
            self.job_close_script = self.redis.register_script(scripts.JOB_CLOSE)
            if not await self.redis.exists(CATALOG):
                # Empty Redis (first start, or flushed): rebuild it from Postgres once.
                await asyncio.to_thread(control.publish_all)
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            self.session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
            breaker = Breaker(
                settings.GATEWAY_BREAKER_FAILURES, settings.GATEWAY_BREAKER_COOLDOWN_SECONDS
            )
            config = GatewayConfig(self.redis, settings.GATEWAY_REFRESH_SECONDS, breaker)
            await config.start()
            self.config = config

    async def shutdown(self) -> None:
        if self.config is not None:
            await self.config.stop()
        if self.session is not None:
            await self.session.close()
        if self.redis is not None:
            await self.redis.aclose()
        self.config = self.session = self.redis = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if self.config is None:
            await self.startup()
        clock = metrics.request_started()
        rid = "req_" + os.urandom(12).hex()
        try:
            await self._handle(scope, receive, send, rid)
        except GatewayError as exc:
            await self._send_error(send, exc, rid)
        except ClientGone:
            return
        except Exception:
            logger.exception("gateway error on %s (%s)", scope.get("path"), rid)
            await self._send_error(
                send,
                GatewayError(
                    500,
                    f"Internal error in the gateway; quote request id {rid} to support.",
                    "server_error",
                ),
                rid,
            )
        finally:
            metrics.request_finished(clock)

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _send_json(send, status: int, body: bytes, rid: str, extra: list | None = None):
        headers = [*JSON_HEADERS, (b"x-request-id", rid.encode())]
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_error(self, send, exc: GatewayError, rid: str):
        await self._send_json(send, exc.status, exc.body(), rid, exc.headers)

    # --- request handling ---------------------------------------------------------------

    async def _handle(self, scope, receive, send, rid: str):
        path, method = scope["path"], scope["method"]
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise GatewayError(
                    405, f"Use GET for {path}.", "invalid_request_error", "method_not_allowed"
                )
            key, team = await self._authenticate(scope)
            return await self._models(send, rid, key, team, path[len("/v1/models/") :])
        if path == "/v1/jobs" or path.startswith("/v1/jobs/"):
            key, team = await self._authenticate(scope)
            return await self._jobs(scope, receive, send, rid, key, team, path[len("/v1/jobs/") :])
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            raise GatewayError(
                404, f"Unknown endpoint {method} {path}.", "invalid_request_error", "unknown_url"
            )
        if method != "POST":
            raise GatewayError(
                405, f"Use POST for {path}.", "invalid_request_error", "method_not_allowed"
            )
        key, team = await self._authenticate(scope)
        body = await self._read_body(receive)
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise GatewayError(
                400, "The request body is not valid JSON.", "invalid_request_error", "invalid_json"
            ) from None
        if not isinstance(request, dict):
            raise GatewayError(
                400,
                "The request body must be a JSON object.",
                "invalid_request_error",
                "invalid_json",
            )
        mode = endpoint[0]
        try:
            routes, group = self._resolve(request, key, team, mode)
        except GatewayError as exc:
            if exc.status not in (403, 404):
                raise
            # Maybe a group or grant created a moment ago: catch up once, then decide.
            await self.config.apply_changes()
            key, team = await self._authenticate(scope)
            routes, group = self._resolve(request, key, team, mode)
        required = REQUIRED_FIELD[mode]
        if request.get(required) in (None, "", []):
            raise GatewayError(
                400,
                f"'{required}' is required.",
                "invalid_request_error",
                "missing_required_parameter",
                required,
            )
        if mode == "chat" and not isinstance(request["messages"], list):
            raise GatewayError(
                400,
                "'messages' must be an array of message objects.",
                "invalid_request_error",
                "invalid_type",
                "messages",
            )
        await self._proxy(
            scope, receive, send, rid, key, team, request, body, routes, group, mode, path
        )

    async def _authenticate(self, scope) -> tuple[dict, dict]:
        secret = _presented_secret(scope)
        if not secret:
            raise GatewayError(
                401,
                "Send your API key as 'Authorization: Bearer sk-…'.",
                "invalid_request_error",
                "missing_api_key",
            )
        digest = hashlib.sha256(secret).hexdigest()
        key = await self.config.key(digest)
        invalid = GatewayError(
            401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )
        if key is None:
            raise invalid
        now = time.time()
        # Dict lookup by hash, then an explicit check of which hash matched: the secret itself
        # is never compared, so there is no timing signal about it.
        in_grace = digest == key["prev_hash"] and key["prev_until"] and now < key["prev_until"]
        if digest != key["hash"] and not in_grace:
            raise GatewayError(
                401,
                "This API key was rotated and its grace period is over; use the new key.",
                "invalid_request_error",
                "key_rotated",
            )
        if key["status"] == "revoked":
            raise GatewayError(
                401, "This API key was revoked.", "invalid_request_error", "key_revoked"
            )
        if key["status"] == "expired" or (key["expires"] and now >= key["expires"]):
            raise GatewayError(
                401, "This API key has expired.", "invalid_request_error", "key_expired"
            )
        team = await self.config.team(key["team"])
        if team is None:
            raise invalid
        if team["status"] == "suspended":
            raise GatewayError(
                403,
                "This team is suspended; contact your provider.",
                "team_suspended",
                "team_suspended",
            )
        if team["status"] == "paused":
            raise GatewayError(
                403,
                "This team is paused; resume it to send requests.",
                "team_paused",
                "team_paused",
            )
        return key, team

    async def _read_body(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise GatewayError(
                    413,
                    f"The request body is larger than {self.max_body} bytes.",
                    "invalid_request_error",
                    "request_too_large",
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _allowed_groups(self, key: dict, team: dict) -> frozenset:
        return key["_groups"] & team["_groups"] if key["_groups"] else team["_groups"]

    def _resolve(self, request: dict, key: dict, team: dict, mode: str):
        """The routes to try in order, and the model group named (None for a model)."""
        name = request.get("model")
        if not isinstance(name, str) or not name:
            raise GatewayError(
                400,
                "You must provide a model parameter.",
                "invalid_request_error",
                "missing_required_parameter",
                "model",
            )
        catalog = self.config.catalog
        allowed = self._allowed_groups(key, team)
        group = catalog.groups_by_name.get(name)
        if group is not None:
            if group.id not in allowed:
                raise self._not_allowed(name, allowed)
            routes = group.ordered()
        else:
            group = None
            route = catalog.routes_by_name.get(name)
            if route is None:
                raise GatewayError(
                    404,
                    f"The model '{name}' does not exist.",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                )
            groups = catalog.groups_by_id
            if not any(g in groups and route.id in groups[g].model_ids for g in allowed):
                raise self._not_allowed(name, allowed)
            routes = [route]
        routes = [r for r in routes if r.mode == mode]
        if not routes:
            raise GatewayError(
                400,
                f"'{name}' has no {mode} model enabled; check the endpoint you called.",
                "invalid_request_error",
                "model_mode_mismatch",
                "model",
            )
        if len(routes) > 1:
            routes = self.config.breaker.order(routes)  # models marked down go last
        return routes, group

    @staticmethod
    def _not_allowed(name: str, allowed: frozenset) -> GatewayError:
        # The size of the allowed list, never its contents: no probing of the catalog.
        return GatewayError(
            403,
            f"This key may not use '{name}'; it has access to "
            f"{len(allowed)} model group(s). See GET /v1/models.",
            "permission_error",
            "model_not_allowed",
            "model",
        )

    async def _models(self, send, rid: str, key: dict, team: dict, model_id: str):
        if not self._allowed_groups(key, team) <= self.config.catalog.groups_by_id.keys():
            await self.config.apply_changes()  # a group created a moment ago
        catalog = self.config.catalog
        items: dict[str, dict] = {}
        for gid in sorted(self._allowed_groups(key, team)):
            group = catalog.groups_by_id.get(gid)
            if group is None:
                continue
            items[group.name] = {
                "id": group.name,
                "object": "model",
                "created": group.created,
                "owned_by": "tollgate",
            }
            for routes, _ in group.tiers:
                for r in routes:
                    items.setdefault(
                        r.name,
                        {
                            "id": r.name,
                            "object": "model",
                            "created": r.created,
                            "owned_by": "tollgate",
                        },
                    )
        if model_id:
            if model_id not in items:
                raise GatewayError(
                    404,
                    f"The model '{model_id}' does not exist.",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                )
            return await self._send_json(send, 200, orjson.dumps(items[model_id]), rid)
        body = orjson.dumps({"object": "list", "data": list(items.values())})
        await self._send_json(send, 200, body, rid)

    # --- admission, forwarding, settlement ------------------------------------------------

    async def _proxy(
        self, scope, receive, send, rid, key, team, request, body, routes, group, mode, path
    ):
        upstream_path = ENDPOINTS[path][1]
        stream = bool(request.get("stream")) and mode != "embedding"
        pricing = team["_pricing"]
        job_id = job_id_of(scope, request)
        if not job_id and pricing.per_job:
            raise GatewayError(
                400,
                "This team is priced per job: open one with POST /v1/jobs and send its id in "
                "the 'x-job-id' header.",
                "invalid_request_error",
                "job_required",
            )
        if job_id is not None and not job_id:
            job_id = None
        ttl = team["cache_ttl"]
        if ttl is None and group is not None:
            ttl = group.cache_ttl
        hit = lookup = None
        if ttl:
            may_read, may_write = cache.request_directives(scope)
            lookup = CacheLookup(team["id"], path, request, ttl, may_write)
            if may_read:
                hit = await self._cache_get(lookup, stream, mode)
        if hit is not None:
            route, entry = hit
            est_tokens = entry["in"] + entry["out"]
            reserve = pricing.price(route, entry["in"], entry["out"]) * team["cache_hit_pct"] // 100
        else:
            est_in = reserve_input_tokens(len(body))
            if mode == "embedding":
                out_cap = 0
            else:
                asked = request.get("max_completion_tokens") or request.get("max_tokens")
                out_cap = (
                    asked
                    if isinstance(asked, int) and asked > 0
                    else max(r.max_out for r in routes)
                )
            # Worst case over the routes the call may fall back to.
            reserve = max(pricing.price(r, est_in, out_cap, round_up=True) for r in routes)
            est_tokens = est_in + out_cap
        started = time.time()
        now_ms = int(started * 1000)
        inflight = orjson.dumps(
            {
                "team": team["id"],
                "org": team["org"],
                "key": key["id"],
                "reserve": reserve,
                "ts": now_ms,
            }
        )
        verdict = await self.admit(
            keys=[
                team["_acct"],
                key["_kacct"],
                team["_par_key"],
                INFLIGHT,
                key["_rpm_key"],
                key["_tpm_key"],
                team["_rpm_key"],
                team["_tpm_key"],
                job_key(job_id or ""),
            ],
            args=[
                now_ms,
                rid,
                est_tokens,
                reserve,
                key["_rpm"],
                key["_tpm"],
                team["_rpm"],
                team["_tpm"],
                team["_par"],
                team["overdraft"],
                team["_budget"],
                team["_hard"],
                key["_budget"],
                inflight,
                job_id or "",
                team["id"],
            ],
        )
        if verdict[0] != b"ok":
            raise self._refusal(verdict, job_id)
        ctx = Settlement(self, rid, key, team, reserve, est_tokens, request, started, job_id, body)
        if any(r.forward_key for r in routes):
            # A LiteLLM upstream that knows the caller's key (litellm_sync): forward it.
            ctx.caller_auth = "Bearer " + _presented_secret(scope).decode()
        try:
            if hit is not None:
                ctx.hit_price = reserve
                await self._serve_cached(receive, send, ctx, request, hit, stream, mode)
            elif stream:
                await self._stream(
                    scope, receive, send, ctx, request, routes, upstream_path, lookup
                )
            else:
                await self._unary(send, ctx, request, routes, upstream_path, lookup)
        finally:
            if not ctx.done:
                # Cancelled or crashed mid-flight: release the reservation, record nothing billed.
                await asyncio.shield(ctx.finish(None, 0, 0, "error", estimated=False))

    # --- response cache ------------------------------------------------------------------

    async def _cache_get(self, lookup: "CacheLookup", stream: bool, mode: str):
        """(route, entry) for a usable cached answer, or None."""
        if stream:
            raw_stream, raw_unary = await self.redis.mget(lookup.stream_key, lookup.unary_key)
            raw = raw_stream or raw_unary
        else:
            raw = await self.redis.get(lookup.unary_key)
        if raw is None:
            return None
        entry = orjson.loads(raw)
        route = self.config.catalog.routes_by_name.get(entry["model"])
        if route is None or route.mode != mode:
            return None  # the model that answered is gone or changed: ask again
        return route, entry

    async def _cache_put(self, lookup: "CacheLookup", key: str, entry: dict) -> None:
        raw = orjson.dumps(entry)
        if len(raw) <= settings.GATEWAY_CACHE_MAX_BYTES:
            try:
                await self.redis.set(key, raw, ex=lookup.ttl)
            except Exception:
                logger.exception("could not store a cache entry")  # the answer was served

    async def _serve_cached(self, receive, send, ctx, request, hit, stream, mode):
        route, entry = hit
        headers = [(b"x-tollgate-model", route.name.encode()), (b"x-cache", b"hit")]
        if not stream:
            body = entry["body"].encode()
            await ctx.finish(route, entry["in"], entry["out"], "ok", estimated=False, response=body)
            return await self._send_json(send, 200, body, ctx.rid, headers)
        options = request.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        if "frames" in entry:
            frames = [f.encode() for f in entry["frames"]]
            template = entry.get("template") or {}
        else:
            payload = orjson.loads(entry["body"])
            frames = cache.frames_from_unary(payload, chat=mode == "chat")
            template = {
                "id": payload.get("id", ""),
                "created": payload.get("created"),
                "model": payload.get("model", ""),
                "object": "chat.completion.chunk" if mode == "chat" else "text_completion",
            }
        usage = entry["usage"] if "frames" in entry else payload.get("usage")
        if wants_usage and usage:
            frames.append(cache.usage_frame(template, usage))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, (b"x-request-id", ctx.rid.encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})
        await ctx.finish(
            route, entry["in"], entry["out"], "ok", estimated=False, response=b"".join(frames)
        )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    @staticmethod
    def _refusal(verdict, job_id: str | None = None) -> GatewayError:
        status = verdict[0].decode()
        detail = verdict[1].decode() if isinstance(verdict[1], bytes) else str(verdict[1])
        retry, limit, remaining = int(verdict[2]), int(verdict[3]), int(verdict[4])
        if status == "job_not_found":
            return GatewayError(
                404,
                f"No open job {str(job_id)[:64]!r} for this team. Open one with POST /v1/jobs.",
                "invalid_request_error",
                "job_not_found",
            )
        if status == "job_closed":
            return GatewayError(
                409,
                f"Job {job_id} is already {detail}; open a new job for more calls.",
                "invalid_request_error",
                "job_closed",
            )
        if status == "rate_limited":
            unit = "tokens" if detail.endswith("tpm") else "requests"
            scope = "key" if detail.startswith("key") else "team"
            return GatewayError(
                429,
                f"Rate limit reached for this {scope}: {limit} {unit} per minute. "
                f"Retry in {retry}s.",
                "rate_limit_error",
                "rate_limit_exceeded",
                headers=[
                    (b"retry-after", str(retry).encode()),
                    (f"x-ratelimit-limit-{unit}".encode(), str(limit).encode()),
                    (f"x-ratelimit-remaining-{unit}".encode(), str(remaining).encode()),
                    (f"x-ratelimit-reset-{unit}".encode(), f"{retry}s".encode()),
                ],
            )
        if status == "parallel_limited":
            return GatewayError(
                429,
                f"Too many requests in flight for this team (limit "
                f"{limit}); wait for one to finish.",
                "rate_limit_error",
                "too_many_parallel_requests",
                headers=[(b"retry-after", b"1")],
            )
        if status == "insufficient_quota":
            return GatewayError(
                429,
                "You exceeded your current quota: the team's credits do "
                "not cover this request. Add credits to continue.",
                "insufficient_quota",
                "insufficient_quota",
            )
        if status == "budget_exceeded":
            what = "key's" if detail == "key_budget" else "team's period"
            return GatewayError(
                429,
                f"This request would exceed the {what} budget.",
                "budget_exceeded",
                "budget_exceeded",
            )
        return GatewayError(
            503,
            "Account state is being rebuilt; retry in a few seconds.",
            "service_unavailable",
            "account_not_ready",
            headers=[(b"retry-after", b"2")],
        )

    def _upstream_request(self, route: Route, request: dict, upstream_path: str, ctx):
        request["model"] = route.upstream_model
        headers = {"Content-Type": "application/json", "X-Request-Id": ctx.rid}
        auth = ctx.caller_auth if route.forward_key else route.auth
        if auth:
            headers["Authorization"] = auth
        if route.litellm:
            # LiteLLM keeps it as the spend log's litellm_call_id: reconciliation can tell
            # calls made through us from calls made to LiteLLM directly.
            headers["x-litellm-call-id"] = ctx.rid
        return self.session.post(
            route.url_base + upstream_path,
            data=orjson.dumps(request),
            headers=headers,
            timeout=route.timeout,
        )

    async def _upstream_refused(
        self, send, ctx, route, status: int, raw: bytes, failures: list, headers=None
    ) -> bool:
        """An upstream error answer: a reason to try the next model (recorded in failures,
        returns False), or the caller's own mistake, passed on uncharged (returns True)."""
        if route.litellm:
            verdict = litellm_upstream.classify(
                status, raw, headers or {}, caller_key=route.forward_key
            )
            if isinstance(verdict, GatewayError):
                await ctx.finish(route, 0, 0, "rejected", estimated=False, response=verdict.body())
                await self._send_error(send, verdict, ctx.rid)
                return True
            if verdict is not None:
                failures.append(Attempt(route, redact(verdict, route)))
                return False
        if status in FALLBACK_STATUS:
            message = f"HTTP {status}: {redact(_error_message(raw, status), route)}"
            self._failed(failures, Attempt(route, message))
            return False
        self.config.breaker.succeeded(route.id)  # it answered: the upstream is up
        body = redact(raw.decode(errors="replace"), route).encode()
        await ctx.finish(route, 0, 0, "rejected", estimated=False, response=body)
        await self._send_json(send, status, body, ctx.rid)
        return True

    def _failed(self, failures: list, attempt: Attempt) -> None:
        """An attempt that makes the call fall back: kept for the error, told to the breaker."""
        failures.append(attempt)
        self.config.breaker.failed(attempt.route.id)

    async def _unary(self, send, ctx, request, routes, upstream_path, lookup):
        failures: list[Attempt] = []
        for route in routes:
            waited = time.perf_counter()
            try:
                async with self._upstream_request(route, request, upstream_path, ctx) as resp:
                    raw = await resp.read()
                    status, resp_headers = resp.status, resp.headers
            except TimeoutError:
                self._failed(failures, Attempt(route, "timed out", timeout=True))
                continue
            except aiohttp.ClientError as exc:
                self._failed(failures, Attempt(route, f"connection failed ({type(exc).__name__})"))
                continue
            finally:
                metrics.upstream_wait_ended(waited)
            if status >= 400:
                if await self._upstream_refused(
                    send, ctx, route, status, raw, failures, resp_headers
                ):
                    return
                continue
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self._failed(failures, Attempt(route, "answered with invalid JSON"))
                continue
            self.config.breaker.succeeded(route.id)
            usage = payload.get("usage") if isinstance(payload, dict) else None
            if isinstance(usage, dict) and "prompt_tokens" in usage:
                in_t = int(usage.get("prompt_tokens") or 0)
                out_t = int(usage.get("completion_tokens") or 0)
                estimated = False
            else:
                in_t = estimate_prompt_tokens(request)
                out_t = _estimate_output(payload)
                estimated = True
            if isinstance(payload, dict) and "model" in payload:
                payload["model"] = route.name
            body = orjson.dumps(payload)
            await ctx.finish(route, in_t, out_t, "ok", estimated=estimated, response=body)
            headers = [(b"x-tollgate-model", route.name.encode())]
            if lookup is not None:
                headers.append((b"x-cache", b"miss"))
            await self._send_json(send, 200, body, ctx.rid, headers)
            if lookup is not None and lookup.may_write and isinstance(payload, dict):
                entry = {"body": body.decode(), "model": route.name, "in": in_t, "out": out_t}
                await self._cache_put(lookup, lookup.unary_key, entry)
            return
        error = _exhausted(failures)
        await ctx.finish(None, 0, 0, "error", estimated=False, failed=True, response=error.body())
        raise error

    async def _stream(self, scope, receive, send, ctx, request, routes, upstream_path, lookup):
        options = request.get("stream_options")
        client_wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        # Always ask for usage; the extra chunk is removed below when the client did not ask.
        request["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        failures: list[Attempt] = []
        for route in routes:
            waited = time.perf_counter()
            try:
                resp = await self._upstream_request(route, request, upstream_path, ctx)
            except TimeoutError:
                self._failed(failures, Attempt(route, "timed out", timeout=True))
                continue
            except aiohttp.ClientError as exc:
                self._failed(failures, Attempt(route, f"connection failed ({type(exc).__name__})"))
                continue
            finally:
                metrics.upstream_wait_ended(waited)
            if resp.status != 200:
                raw = await resp.read()
                resp.release()
                if await self._upstream_refused(
                    send, ctx, route, resp.status, raw, failures, resp.headers
                ):
                    return
                continue
            self.config.breaker.succeeded(route.id)
            return await self._relay(
                receive, send, ctx, request, route, resp, client_wants_usage, lookup
            )
        error = _exhausted(failures)
        await ctx.finish(None, 0, 0, "error", estimated=False, failed=True, response=error.body())
        raise error

    async def _relay(self, receive, send, ctx, request, route, resp, client_wants_usage, lookup):
        """Pass the stream through chunk by chunk, restoring the public model name.

        The pump runs as its own task so a client that hangs up stops it at once (closing an
        aiohttp response does not wake a pending read); what was generated until then is
        charged."""
        relay = StreamRelay(send, ctx, request, route, client_wants_usage, lookup)
        relay_started = time.perf_counter()
        pump = asyncio.ensure_future(relay.pump(resp))
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                if not task.done():
                    task.cancel()
            await asyncio.gather(pump, gone, return_exceptions=True)
            resp.release()
            metrics.upstream_wait_ended(relay_started)
        client_gone = gone.done() and not gone.cancelled()
        if relay.failed:
            self.config.breaker.failed(route.id)  # the upstream broke off mid-stream
        if not ctx.done:
            # No [DONE] (client gone, upstream cut, or a server that omits it): charge what
            # was generated up to this point.
            await ctx.finish_stream(
                route,
                request,
                relay.usage,
                relay.out_bytes,
                status="error" if relay.failed else "ok",
                failed=relay.failed,
                response=relay.captured(),
            )
        if not client_gone:
            await relay.close()
            if relay.done and not relay.failed and relay.cacheable:
                await self._cache_put(lookup, lookup.stream_key, relay.cache_entry())


class StreamRelay:
    """The state of one relayed stream: what was sent, generated and reported."""

    def __init__(self, send, ctx, request, route, client_wants_usage, lookup=None):
        self.send, self.ctx, self.request, self.route = send, ctx, request, route
        self.public = route.name
        self.client_wants_usage = client_wants_usage
        self.lookup = lookup
        self.usage = None
        self.out_bytes = 0
        self.started = False
        self.failed = False
        self.done = False  # [DONE] seen
        self.template: dict | None = None  # the first chunk's id, created…: for a replay
        # What was sent, kept only when it is logged or cached, and only up to a bound.
        self.capture: list[bytes] | None = [] if (lookup or ctx.log) else None
        self.capture_room = max(settings.GATEWAY_CACHE_MAX_BYTES, settings.GATEWAY_LOG_MAX_BYTES)
        self.cacheable = lookup is not None and lookup.may_write

    def captured(self) -> bytes | None:
        return b"".join(self.capture) if self.capture is not None else None

    def cache_entry(self) -> dict:
        frames = self.capture or []
        if self.client_wants_usage:
            frames = cache.strip_usage(frames)
        in_t, out_t = self.ctx.tokens
        return {
            "frames": [f.decode() for f in frames],
            "template": self.template or {},
            "usage": self.usage,
            "model": self.public,
            "in": in_t,
            "out": out_t,
        }

    async def pump(self, resp) -> None:
        buffer = b""
        try:
            async for data in resp.content.iter_any():
                buffer += data
                frames = []
                while (cut := buffer.find(b"\n\n")) >= 0:
                    frame, buffer = buffer[:cut], buffer[cut + 2 :]
                    if frame.startswith(b"data:") and frame[5:].strip() == b"[DONE]":
                        # Content already in hand goes out first; only the end of the stream
                        # waits for the settlement (so a crash after it loses nothing).
                        await self._flush(frames)
                        frames = []
                        self.done = True
                        await self.ctx.finish_stream(
                            self.route,
                            self.request,
                            self.usage,
                            self.out_bytes,
                            response=self.captured(),
                        )
                        frames.append(b"data: [DONE]\n\n")
                        continue
                    out = self._frame(frame)
                    if out:
                        frames.append(out)
                await self._flush(frames)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failed = True
            logger.warning("upstream stream broke for %s: %s", self.ctx.rid, type(exc).__name__)

    async def _flush(self, frames: list[bytes]) -> None:
        if frames:
            if self.capture is not None and self.capture_room >= 0:
                self.capture.extend(frames)
                self.capture_room -= sum(len(f) for f in frames)
                if self.capture_room < 0:
                    self.cacheable = False  # too big to cache; a log keeps its first part
            await self._start()
            await self.send(
                {"type": "http.response.body", "body": b"".join(frames), "more_body": True}
            )

    def _frame(self, frame: bytes) -> bytes | None:
        if not frame.startswith(b"data:"):
            return frame + b"\n\n"
        payload = frame[5:].strip()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return frame + b"\n\n"
        if not isinstance(chunk, dict):
            return frame + b"\n\n"
        if "model" in chunk:
            chunk["model"] = self.public
        if self.template is None:
            self.template = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            self.out_bytes += len(delta.get("content") or "") + len(choice.get("text") or "")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
            if not self.client_wants_usage:
                del chunk["usage"]
                if not any(
                    (c.get("delta") or {}).get("content") or c.get("finish_reason")
                    for c in chunk.get("choices") or ()
                ):
                    return None  # the usage-only chunk the client did not ask for
        elif "usage" in chunk and not self.client_wants_usage:
            del chunk["usage"]  # the `usage: null` placeholders that come with include_usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def _start(self) -> None:
        if not self.started:
            self.started = True
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        *SSE_HEADERS,
                        (b"x-request-id", self.ctx.rid.encode()),
                        (b"x-tollgate-model", self.public.encode()),
                        *([(b"x-cache", b"miss")] if self.lookup is not None else []),
                    ],
                }
            )

    async def close(self) -> None:
        await self._start()
        if self.failed:
            error = GatewayError(
                502, "The upstream stream broke off.", "upstream_error", "upstream_stream_error"
            )
            await self.send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + error.body() + b"\n\ndata: [DONE]\n\n",
                    "more_body": True,
                }
            )
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


def _presented_secret(scope) -> bytes | None:
    """The caller's API key, from `Authorization: Bearer` or `x-api-key`."""
    secret = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value[:7].lower() == b"bearer ":
                # Bearer wins over x-api-key; another scheme must not hide it.
                return value[7:].strip()
        elif name == b"x-api-key":
            secret = value.strip()
    return secret


async def _wait_disconnect(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _estimate_output(payload) -> int:
    if not isinstance(payload, dict):
        return 0
    total = 0
    for choice in payload.get("choices") or ():
        message = choice.get("message") or {}
        total += len((message.get("content") or "").encode()) + len(
            (choice.get("text") or "").encode()
        )
    return estimate_text_tokens(total)


def _exhausted(failures: list[Attempt]) -> GatewayError:
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


class CacheLookup:
    """Where this request's answer is (or will be) cached, and whether it may be stored."""

    __slots__ = ("may_write", "stream_key", "ttl", "unary_key")

    def __init__(self, team_id: int, path: str, request: dict, ttl: int, may_write: bool):
        self.unary_key, self.stream_key = cache.cache_keys(team_id, path, request)
        self.ttl, self.may_write = ttl, may_write


class Settlement:
    """Finishes one admitted call exactly once: price, release, record."""

    __slots__ = (
        "asked",
        "body",
        "caller_auth",
        "done",
        "est_tokens",
        "gateway",
        "hit_price",
        "job",
        "key",
        "log",
        "request",
        "reserve",
        "rid",
        "started",
        "team",
        "tokens",
    )

    def __init__(self, gateway, rid, key, team, reserve, est_tokens, request, started, job, body):
        self.gateway, self.rid, self.key, self.team = gateway, rid, key, team
        self.reserve, self.est_tokens, self.request = reserve, est_tokens, request
        self.started, self.job, self.body = started, job, body
        self.asked = request.get("model", "")  # before the upstream id is substituted
        self.log = bool(team.get("log"))
        self.hit_price: int | None = None  # set when the answer comes from the cache
        self.caller_auth: str | None = None  # forwarded to upstreams with key_mode caller
        self.tokens = (0, 0)
        self.done = False

    async def finish_stream(
        self, route, request, usage, out_bytes, status="ok", failed=False, response=None
    ):
        if self.done:
            return
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            in_t = int(usage.get("prompt_tokens") or 0)
            out_t = int(usage.get("completion_tokens") or 0)
            estimated = False
        else:
            in_t = estimate_prompt_tokens(request)
            out_t = estimate_text_tokens(out_bytes)
            estimated = True
        await self.finish(
            route, in_t, out_t, status, estimated=estimated, failed=failed, response=response
        )

    async def finish(
        self,
        route,
        in_t: int,
        out_t: int,
        status: str,
        *,
        estimated: bool,
        failed: bool = False,
        response: bytes | None = None,
    ):
        if self.done:
            return
        self.done = True
        self.tokens = (in_t, out_t)
        price = cost = 0
        if route is not None:
            if self.hit_price is not None:
                price = self.hit_price  # no provider call, so no cost
            else:
                price = self.team["_pricing"].price(route, in_t, out_t)
                cost = call_cost(route, in_t, out_t)
        now = time.time()
        team, key = self.team, self.key
        rec = {
            "rid": self.rid,
            "ts": now,
            "org": team["org"],
            "team": team["id"],
            "key": key["id"],
            "model": route.name if route else "",
            "group": self.asked,
            "in": in_t,
            "out": out_t,
            "cost": cost,
            "price": price,
            "status": status,
            "lat": int((now - self.started) * 1000),
            "est": estimated,
        }
        if self.job:
            rec["job"] = self.job
        if self.hit_price is not None:
            rec["cache"] = True
        if self.log:
            rec["req"], rec["resp"], rec["cut"] = _logged_bodies(self.body, response, route, team)
            rec["keep_days"] = team.get("log_days") or 30
        await self.gateway.settle(
            keys=[
                team["_acct"],
                key["_kacct"],
                team["_par_key"],
                INFLIGHT,
                USAGE_STREAM,
                key["_tpm_key"],
                team["_tpm_key"],
                job_key(self.job or ""),
            ],
            args=[
                int(now * 1000),
                self.rid,
                self.reserve,
                price,
                in_t + out_t - self.est_tokens,
                team["overdraft"],
                team["_budget"],
                team["_hard"],
                key["_budget"],
                orjson.dumps(rec),
                "1" if self.job else "0",
                "1" if failed else "0",
                in_t,
                out_t,
                cost,
            ],
        )


def _logged_bodies(request_body: bytes, response: bytes | None, route, team):
    """Request and response text for compliance logging: secrets and the team's patterns
    redacted, each cut at GATEWAY_LOG_MAX_BYTES."""
    cap = settings.GATEWAY_LOG_MAX_BYTES
    cut = False
    texts = []
    for raw in (request_body, response or b""):
        if len(raw) > cap:
            raw, cut = raw[:cap], True
        text = redact(raw.decode(errors="replace"), route)
        if team["_redact"] is not None:
            text = team["_redact"].sub("[redacted]", text)
        texts.append(text)
    return texts[0], texts[1], cut


gateway = Gateway()
