"""The gateway's in-process copy of keys, teams and the catalog, kept fresh from Redis.

Loaded whole at start-up, then updated by following the change stream (livestate.keys.CHANGES)
every GATEWAY_REFRESH_SECONDS. A key or team not yet in memory (minted a moment ago) is fetched
from Redis on first use, so a newly created key works immediately.
"""

import asyncio
import logging
import random
from dataclasses import dataclass, field

import aiohttp
import orjson
from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.redaction import Redactor
from core.secrets import decrypt
from livestate.keys import (
    CATALOG,
    CHANGES,
    HEALTH,
    KEY_SNAPSHOTS,
    TEAM_SNAPSHOTS,
)
from livestate.snapshots import KeySnapshot, TeamSnapshot
from proxy.breaker import Breaker
from proxy.pricing import Rates, rates_of
from proxy.providers import provider
from proxy.providers.openai import OPENAI, Provider

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Route:
    """One model as the gateway calls it."""

    id: str
    name: str
    mode: str
    url_base: str
    upstream_model: str
    auth: str | None  # "Bearer …" header value, decrypted once at load
    # Every provider key of the catalog, not just this route's: shared by all its routes.
    redact: Redactor
    litellm: bool  # a LiteLLM proxy: its error bodies are mapped (proxy/litellm_errors.py)
    forward_key: bool  # call it with the caller's own virtual key instead of `auth`
    timeout: aiohttp.ClientTimeout  # read timeout applies between bytes, so streams may run long
    costs: Rates  # what the provider charges us (micro-USD)
    prices: Rates  # what the team pays in model-price mode (micro-credits)
    max_out: int
    created: int
    kind: str = "openai"  # the upstream's kind
    provider: Provider = OPENAI  # which APIs it speaks, where and how (proxy/providers)
    api_version: str = ""  # Azure's api-version, Anthropic's anthropic-version
    auth_key: str | None = None  # the provider key itself, for providers not using Bearer


@dataclass(slots=True)
class Group:
    id: str
    name: str
    tiers: list[tuple[list[Route], list[int]]]  # priority tiers: (routes, weights)
    model_ids: frozenset[str]
    created: int
    cache_ttl: int | None = None

    def ordered(self) -> list[Route]:
        """Fallback order: by priority; within a priority, a weighted random order."""
        out: list[Route] = []
        for routes, weights in self.tiers:
            if len(routes) == 1:
                out.append(routes[0])
                continue
            pool, w = list(routes), list(weights)
            while pool:
                i = random.choices(range(len(pool)), weights=w)[0]
                out.append(pool.pop(i))
                w.pop(i)
        return out


@dataclass(slots=True)
class Catalog:
    groups_by_name: dict[str, Group] = field(default_factory=dict)
    groups_by_id: dict[str, Group] = field(default_factory=dict)
    routes_by_name: dict[str, Route] = field(default_factory=dict)


def build_catalog(raw: dict) -> Catalog:
    upstreams = raw.get("upstreams", {})
    # Decrypted once per catalog load; disabled upstreams' keys are redacted too.
    secrets = {uid: decrypt(up["api_key_enc"]) for uid, up in upstreams.items()}
    # One matcher per load, used only where text is logged or shown (never per plain call).
    redact = Redactor([*secrets.values(), settings.MASTER_KEY, settings.LITELLM_MASTER_KEY])
    routes: dict[str, Route] = {}
    for mid, m in raw.get("models", {}).items():
        up = upstreams.get(m["upstream"])
        if up is None or not up["enabled"] or not m["enabled"]:
            continue
        secret = secrets[m["upstream"]]
        routes[mid] = Route(
            id=mid,
            name=m["name"],
            mode=m["mode"],
            url_base=up["base_url"],
            upstream_model=m["upstream_model"],
            auth=f"Bearer {secret}" if secret else None,
            redact=redact,
            litellm=up.get("kind") == "litellm",
            forward_key=up.get("key_mode") == "caller",
            timeout=aiohttp.ClientTimeout(
                sock_connect=up["connect_timeout"], sock_read=up["read_timeout"]
            ),
            costs=rates_of(m, "cost"),
            prices=rates_of(m, "price"),
            max_out=m["max_out"],
            created=m.get("created", 0),
            kind=up.get("kind") or "openai",
            provider=provider(up.get("kind") or "openai"),
            api_version=up.get("api_version") or "",
            auth_key=secret or None,
        )
    catalog = Catalog(routes_by_name={r.name: r for r in routes.values()})
    for gid, g in raw.get("groups", {}).items():
        tiers: dict[int, tuple[list[Route], list[int]]] = {}
        for member in g["members"]:
            route = routes.get(member["model"])
            if route is None:
                continue  # disabled model or upstream: skipped, the rest still serve
            bucket = tiers.setdefault(member["priority"], ([], []))
            bucket[0].append(route)
            bucket[1].append(member["weight"])
        group = Group(
            id=gid,
            name=g["name"],
            tiers=[tiers[p] for p in sorted(tiers)],
            model_ids=frozenset(m["model"] for m in g["members"]),
            created=g.get("created", 0),
            cache_ttl=g.get("cache_ttl"),
        )
        catalog.groups_by_name[group.name] = group
        catalog.groups_by_id[gid] = group
    return catalog


class Replica:
    """This process's copy of the published keys, teams, catalog and probe verdicts."""

    def __init__(self, redis: Redis, refresh_seconds: float = 0.2, breaker: Breaker | None = None):
        self.redis = redis
        self.refresh_seconds = refresh_seconds
        self.keys: dict[str, KeySnapshot] = {}
        self.teams: dict[int, TeamSnapshot] = {}
        self.catalog = Catalog()
        # Survives catalog rebuilds: keyed by model id, not by Route object.
        self.breaker = breaker or Breaker()
        self._last_id = b"0-0"
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one reader of the change feed at a time

    async def start(self) -> None:
        if self._task is None:
            await self.load_all()
            self._task = asyncio.create_task(self._follow(), name="gateway-replica-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def load_all(self) -> None:
        last = await self.redis.xrevrange(CHANGES, count=1)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(KEY_SNAPSHOTS)
        pipe.hgetall(TEAM_SNAPSHOTS)
        pipe.get(CATALOG)
        pipe.hgetall(HEALTH)
        keys, teams, catalog, health = await pipe.execute()
        self.keys = {h.decode(): KeySnapshot.from_json(v) for h, v in keys.items()}
        self.teams = {int(t): TeamSnapshot.from_json(v) for t, v in teams.items()}
        self.catalog = build_catalog(orjson.loads(catalog)) if catalog else Catalog()
        self._apply_health({m.decode(): v for m, v in health.items()})
        self._last_id = last[0][0] if last else b"0-0"

    async def _follow(self) -> None:
        failing = False
        while True:
            try:
                await asyncio.sleep(self.refresh_seconds)
                await self.apply_changes()
                failing = False
            except asyncio.CancelledError:
                raise
            except RedisError:
                # Redis down: keep serving from memory and try again next tick (said once).
                if not failing:
                    logger.warning("gateway replica refresh failed: Redis unavailable")
                failing = True
            except Exception:
                logger.exception("gateway replica refresh failed")

    async def apply_changes(self) -> None:
        """Catch up with the change feed (also called on a routing miss: read-your-writes)."""
        async with self._lock:
            await self._apply_changes()

    async def _apply_changes(self) -> None:
        result = await self.redis.xread({CHANGES: self._last_id}, count=10_000)
        if not result:
            return
        entries = result[0][1]
        self._last_id = entries[-1][0]
        kinds = {e[1][b"kind"] for e in entries}
        if b"all" in kinds:
            await self.load_all()
            return
        if b"catalog" in kinds:
            raw = await self.redis.get(CATALOG)
            self.catalog = build_catalog(orjson.loads(raw)) if raw else Catalog()
        hashes = {
            h
            for e in entries
            if e[1][b"kind"] == b"key"
            for h in e[1][b"hashes"].decode().split(",")
            if h
        }
        team_ids = {int(e[1][b"id"]) for e in entries if e[1][b"kind"] == b"team"}
        if b"health" in kinds:
            ids = sorted(
                {
                    m
                    for e in entries
                    if e[1][b"kind"] == b"health"
                    for m in e[1][b"id"].decode().split(",")
                }
            )
            found = await self.redis.hmget(HEALTH, ids)
            self._apply_health(dict(zip(ids, found, strict=True)))
        if hashes:
            hashes_list = sorted(hashes)
            for h, raw in zip(
                hashes_list, await self.redis.hmget(KEY_SNAPSHOTS, hashes_list), strict=True
            ):
                if raw is None:
                    self.keys.pop(h, None)
                else:
                    self.keys[h] = KeySnapshot.from_json(raw)
        if team_ids:
            ids = sorted(team_ids)
            for t, raw in zip(
                ids, await self.redis.hmget(TEAM_SNAPSHOTS, [str(i) for i in ids]), strict=True
            ):
                if raw is None:
                    self.teams.pop(t, None)
                else:
                    self.teams[t] = TeamSnapshot.from_json(raw)

    def _apply_health(self, health: dict[str, bytes | None]) -> None:
        for model_id, raw in health.items():
            self.breaker.probed(model_id, orjson.loads(raw)["status"] if raw else "unknown")

    async def key(self, key_hash: str) -> KeySnapshot | None:
        found = self.keys.get(key_hash)
        if found is None:
            raw = await self.redis.hget(KEY_SNAPSHOTS, key_hash)
            if raw is not None:
                found = self.keys[key_hash] = KeySnapshot.from_json(raw)
        return found

    async def team(self, team_id: int) -> TeamSnapshot | None:
        found = self.teams.get(team_id)
        if found is None:
            raw = await self.redis.hget(TEAM_SNAPSHOTS, str(team_id))
            if raw is not None:
                found = self.teams[team_id] = TeamSnapshot.from_json(raw)
        return found
