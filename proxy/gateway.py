"""The OpenAI-compatible gateway: a raw ASGI app, because this is the hot path.

Per request: one in-memory key/team/catalog lookup, one atomic Redis admission (rate limits,
parallelism, credit and budget reservation), the upstream call with fallbacks, and one atomic
Redis settlement that releases the reservation, charges the actual price and appends the
usage record to the usage stream, which workers settle into the Postgres ledger. No ORM,
no Postgres. The settlement runs before the client receives the end of the response, so a
crash after that point cannot lose the record; see livestate/scripts.py for the money
invariant.

One module per stage, each taking the request's `Call`: auth, routing, admission, cache,
upstream (the attempt loop and the unary reply), streaming, settlement, responses; jobs have
their own handler, and recovery what Redis faults leave to do (deferred settlements, the replay
after a data loss, on-demand account rebuilds). A Redis error on a call is a 503, never a 500.
"""

import asyncio
import contextlib
import logging
import os

import aiohttp
from django.conf import settings
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.exceptions import RedisError

from core.redis import RETRY_ATTEMPTS, RETRY_ON, cluster_config, retry_backoff
from livestate.keys import CATALOG
from livestate.scripts import GatewayScripts
from proxy import (
    admission,
    attribution,
    control,
    count_tokens,
    metrics,
    routing,
    streaming,
    upstream,
)
from proxy.apis import ENDPOINTS, errors_for
from proxy.apis.messages import MESSAGES, check_body
from proxy.apis.responses import RESPONSES
from proxy.auth import authenticate, presented_secret
from proxy.breaker import Breaker
from proxy.cache import ResponseCache
from proxy.call import Call
from proxy.errors import GatewayError
from proxy.jobs import JobHandler
from proxy.leases import Instance
from proxy.recovery import Recovery
from proxy.redis_pool import WaitingPool
from proxy.refusals import Refusals, asked
from proxy.replica import Replica
from proxy.responses import ClientGone, read_body, send_error, send_json
from proxy.settlement import Settlement, SettlementUnavailable

logger = logging.getLogger(__name__)


class BoundedCluster(RedisCluster):
    """redis-py's asyncio cluster client fails a command at once (MaxConnectionsError) when a
    node's pool is full; like the BlockingConnectionPool of one Redis, this one makes a burst
    wait for a free connection instead: at most `limit` commands in flight in all."""

    def __init__(self, *args, limit: int, **kwargs):
        super().__init__(*args, max_connections=limit, **kwargs)
        self._in_flight = asyncio.Semaphore(limit)

    async def execute_command(self, *args, **kwargs):
        async with self._in_flight:
            return await super().execute_command(*args, **kwargs)


def redis_client():
    """The gateway's asyncio Redis: one Redis, or a Redis Cluster (core.redis.cluster_config)."""
    cluster = cluster_config(settings.REDIS_URL, settings.REDIS_CLUSTER_NODES)
    if cluster is not None:
        # A call's scripts go to the node of its team's shard.
        return BoundedCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
            username=cluster.username,
            password=cluster.password,
            limit=settings.GATEWAY_REDIS_CONNECTIONS,
            socket_timeout=5,
        )
    # A bounded pool that waits for a free connection: a burst of requests queues for a moment
    # instead of failing with "too many connections" (proxy/redis_pool.py: without a lock).
    pool = WaitingPool.from_url(
        settings.REDIS_URL,
        max_connections=settings.GATEWAY_REDIS_CONNECTIONS,
        timeout=5,
        socket_timeout=5,
        # A PING only on a connection idle this long, never per command; a connection Redis
        # closed (a restart) fails once and the command goes again on a new one.
        health_check_interval=30,
        retry=Retry(retry_backoff(), RETRY_ATTEMPTS),
        retry_on_error=RETRY_ON,
    )
    return Redis(connection_pool=pool)


def state_unavailable(rid: str) -> GatewayError:
    """Redis (admission, settlement, live state) does not answer: retryable, never a 500."""
    return GatewayError(
        503,
        f"The gateway's state store is unavailable; retry in a few seconds (request id {rid}).",
        "service_unavailable",
        "state_unavailable",
        headers=[(b"retry-after", b"2")],
    )


class Gateway:
    def __init__(self):
        self.redis: Redis | None = None
        self.session: aiohttp.ClientSession | None = None
        self.replica: Replica | None = None
        self.instance: Instance | None = None
        self.refusals: Refusals | None = None
        self.max_body = settings.GATEWAY_MAX_BODY_BYTES
        self._started = asyncio.Lock()

    async def startup(self) -> None:
        async with self._started:
            if self.replica is not None:
                return
            self.redis = redis_client()
            self.scripts = GatewayScripts(self.redis)
            self.recovery = Recovery(
                self.redis,
                self.scripts,
                interval=settings.GATEWAY_REFRESH_SECONDS,
                copy_seconds=settings.GATEWAY_USAGE_COPY_SECONDS,
                copy_max_bytes=settings.GATEWAY_USAGE_COPY_MAX_BYTES,
                rebuild_interval=settings.GATEWAY_REBUILD_INTERVAL_SECONDS,
            )
            if not await self.redis.exists(CATALOG):
                # Empty Redis (first start, or flushed): rebuild it from Postgres once.
                await asyncio.to_thread(control.publish_all)
            # Heartbeating, and reaping dead instances' leases, from before the first call.
            self.instance = Instance(self.redis)
            await self.instance.start()
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            self.session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
            breaker = Breaker(
                settings.GATEWAY_BREAKER_FAILURES, settings.GATEWAY_BREAKER_COOLDOWN_SECONDS
            )
            replica = Replica(self.redis, settings.GATEWAY_REFRESH_SECONDS, breaker)
            await replica.start()
            await self.recovery.start()
            self.refusals = Refusals(self.redis, replica)
            await self.refusals.start()
            self.upstream = upstream.Upstream(self.session, breaker)
            self.cache = ResponseCache(self.redis, replica)
            self.jobs = JobHandler(self.redis, self.scripts, self.max_body)
            for api in set(ENDPOINTS.values()):
                api.startup(self.redis, replica)
            self.replica = replica

    async def shutdown(self) -> None:
        if self.instance is not None:
            await self.instance.stop()
            self.instance = None
        if self.replica is not None:
            await self.replica.stop()
            await self.recovery.stop()
        if self.refusals is not None:
            await self.refusals.stop()  # its last flush, before Redis closes
            self.refusals = None
        if self.session is not None:
            await self.session.close()
        if self.redis is not None:
            await self.redis.aclose()
        self.replica = self.session = self.redis = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if self.replica is None:
            await self.startup()
        clock = metrics.request_started()
        rid = "req_" + os.urandom(12).hex()
        try:
            await self._handle(scope, receive, send, rid)
        except GatewayError as exc:
            if self.refusals is not None:
                self.refusals.count(scope, exc)  # memory only; flushed once a second
            await send_error(send, exc, rid, errors_for(scope["path"]).error_body(exc, rid))
        except ClientGone:
            return
        except RedisError as exc:
            logger.warning("Redis unavailable on %s (%s): %s", scope.get("path"), rid, exc)
            error = state_unavailable(rid)
            if self.refusals is not None:
                self.refusals.count(scope, error)
            try:
                await send_error(send, error, rid, errors_for(scope["path"]).error_body(error, rid))
            except Exception:  # the response had started: nothing more can be said
                logger.warning("Redis failed mid-response on %s (%s)", scope.get("path"), rid)
        except Exception:
            logger.exception("gateway error on %s (%s)", scope.get("path"), rid)
            error = GatewayError(
                500,
                f"Internal error in the gateway; quote request id {rid} to support.",
                "server_error",
            )
            await send_error(send, error, rid, errors_for(scope["path"]).error_body(error, rid))
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

    async def _handle(self, scope, receive, send, rid: str):
        """The route table: models, jobs, then the three completion endpoints."""
        path, method = scope["path"], scope["method"]
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise routing.method_not_allowed("GET", path)
            key, team = await authenticate(self.replica, scope)
            body = await routing.models_body(self.replica, key, team, path[len("/v1/models/") :])
            return await send_json(send, 200, body, rid)
        if path == "/v1/jobs" or path.startswith("/v1/jobs/"):
            key, team = await authenticate(self.replica, scope)
            rest = path[len("/v1/jobs/") :]
            return await self.jobs.handle(scope, receive, send, rid, key, team, rest)
        if path == "/v1/messages/count_tokens":
            return await self._count_tokens(scope, receive, send, rid)
        if path.startswith("/v1/responses/"):
            # A stored response: forwarded to the upstream that made it, not metered.
            key, team = await authenticate(self.replica, scope)
            rest = path[len("/v1/responses/") :]
            return await RESPONSES.stored(self.session, scope, send, rid, team, rest)
        api = routing.endpoint(path, method)
        key, team = await authenticate(self.replica, scope)
        body = await read_body(receive, api.max_body or self.max_body)
        request = api.parse(scope, body)
        asked(scope, request)
        try:
            routes, group = routing.resolve(self.replica, request, key, team, api)
        except GatewayError as exc:
            if exc.status not in (403, 404):
                raise
            # Maybe a group or grant created a moment ago: catch up once, then decide.
            await self.replica.apply_changes()
            key, team = await authenticate(self.replica, scope)
            routes, group = routing.resolve(self.replica, request, key, team, api)
        api.check(request)
        end_user, tags = attribution.end_user(request), attribution.tags(scope, request)
        call = Call(
            rid=rid,
            scope=scope,
            receive=receive,
            send=send,
            key=key,
            team=team,
            request=request,
            body=body,
            api=api,
            path=path,
            routes=routes,
            group=group,
        )
        call.end_user, call.tags = end_user, tags
        await api.prepare(call)
        await self.complete(call)

    async def _count_tokens(self, scope, receive, send, rid: str):
        """Anthropic's token count: checked like a Messages call, never admitted or charged."""
        if scope["method"] != "POST":
            raise routing.method_not_allowed("POST", scope["path"])
        key, team = await authenticate(self.replica, scope)
        request = MESSAGES.parse(scope, await read_body(receive, self.max_body))
        asked(scope, request)
        try:
            routes, _ = routing.resolve(self.replica, request, key, team, MESSAGES)
        except GatewayError as exc:
            if exc.status not in (403, 404):
                raise
            await self.replica.apply_changes()  # a group or grant created a moment ago
            key, team = await authenticate(self.replica, scope)
            routes, _ = routing.resolve(self.replica, request, key, team, MESSAGES)
        check_body(request, counting=True)
        status, body, headers = await count_tokens.count(self.session, scope, rid, request, routes)
        return await send_json(send, status, body, rid, headers)

    async def complete(self, call: Call) -> None:
        """One completion: admit, answer from the cache or the upstreams, settle once."""
        admission.require_job(call)
        hit = await self.cache.lookup(call)
        reserve, est_tokens = admission.reservation(call, hit)
        settle = Settlement(self.scripts, call, reserve, est_tokens, self.recovery)
        try:
            await admission.admit(
                self.scripts, call, reserve, est_tokens, self.instance, self.recovery
            )
        except RedisError:
            await settle.abandon()
            raise
        if any(r.forward_key for r in call.routes):
            # A LiteLLM upstream that knows the caller's key (litellm_sync): forward it.
            call.caller_auth = "Bearer " + presented_secret(call.scope).decode()
        try:
            if hit is not None:
                return await self.cache.serve(call, hit, settle)
            answer = await self.upstream.first_answer(call, settle)
            if answer is None:
                return  # an upstream refused the caller's request; they have its answer
            if call.stream:
                await streaming.relay(call, answer, settle, self.cache, self.upstream.breaker)
            else:
                await upstream.reply(call, answer, settle, self.cache)
        finally:
            if not settle.finished:
                # Cancelled or crashed mid-flight: release the reservation, record nothing billed
                # (one try: what Redis does not take now is kept and written later).
                with contextlib.suppress(SettlementUnavailable):  # logged, kept by the recovery
                    await asyncio.shield(settle.finish(None, None, "error", retry_seconds=0))


gateway = Gateway()
