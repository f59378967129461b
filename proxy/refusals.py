"""Refused calls, counted: who was refused what, and why, without a write per refused call.

Every error answer of the gateway passes through one handler (Gateway.__call__), which calls
`Refusals.count`: an in-memory add to (minute, team, key, model asked, reason) and a Prometheus
counter (tollgate_gateway_refusals_total{team,reason}). Team and key are primary keys, taken from
what authentication recognised (proxy/auth.py notes the key in the request's scope); a call
whose key was not recognised (missing or invalid) counts under team 0, key 0. The reason is the
error's `code` (its `type` when it has none). The model is the one asked, cut to MODEL_CHARS.

Once every REFUSALS_FLUSH_SECONDS a background task (started and stopped like the lease
heartbeat, proxy/leases.py) hands the counts to Redis: one FLUSH script per minute bucket with
counts, which adds every (team, key, model, reason) of the minute with HINCRBY, refreshes the
bucket's expiry and lists it for the roll-up (livestate/keys.py: one hash tag, so it runs on one
node of a cluster). A flood of refused calls costs one script per second, not a write per call.

A flush Redis does not take is kept, with its flush id, and sent again at the next tick; the
script marks each flush id as applied, so a flush whose answer was lost (it ran, the connection
broke) is not added twice when retried. What waits is bounded (MAX_PENDING_GROUPS groups): past
that the oldest batches are dropped and logged, never a call broken or memory grown without end.

Workers move closed minutes into Postgres (billing/refusals.py).
"""

import asyncio
import logging
import os
import time
from collections import defaultdict

from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from livestate.keys import (
    REFUSALS_MINUTES,
    REFUSALS_TTL_SECONDS,
    refusals_bucket,
    refusals_flush_mark,
)
from livestate.refusals import FLUSH, field
from proxy import metrics
from proxy.errors import GatewayError

logger = logging.getLogger(__name__)

# Where authentication and parsing leave what the count needs (the ASGI scope is per request).
SCOPE_KEY = "tollgate.key"
SCOPE_MODEL = "tollgate.model"
MODEL_CHARS = 100
# Distinct groups one flush batch holds; past it, a group's model is counted as "" (a caller
# cycling through made-up model names cannot grow the batch without end).
MAX_BATCH_GROUPS = 5_000
# Groups kept in memory in all while Redis does not take them; past it the oldest batch goes.
MAX_PENDING_GROUPS = 100_000
# A flush mark outlives any retry of its batch that could follow a lost answer (the next tick).
MARK_TTL_SECONDS = 600
UNAUTHENTICATED = "unauthenticated"  # the metric's team label when no key was recognised


def asked(scope, request) -> None:
    """Note the model the request asks for (called once the body is parsed)."""
    model = request.get("model") if hasattr(request, "get") else None
    if isinstance(model, str):
        scope[SCOPE_MODEL] = model[:MODEL_CHARS]


def reason_of(exc: GatewayError) -> str:
    return str(exc.code or exc.type or "error")[:64]


class Refusals:
    """This process's refusal counts and their flusher."""

    def __init__(self, redis: Redis, replica=None, every: float | None = None):
        self.redis = redis
        self.replica = replica  # for the metric's team label (public id), read from memory
        self.every = every if every is not None else settings.REFUSALS_FLUSH_SECONDS
        self._flush = redis.register_script(FLUSH)
        # minute -> field -> count, not yet handed to a batch
        self._counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._pending: list[tuple[str, int, dict[str, int]]] = []  # (flush id, minute, counts)
        self._pending_groups = 0
        self._seq = 0
        self._prefix = os.urandom(6).hex()
        self._task: asyncio.Task | None = None
        self._stopped = False
        # One flush at a time: two would both send the oldest batch, then each drop one.
        self._flushing = asyncio.Lock()

    def count(self, scope, exc: GatewayError) -> None:
        """One refused call: memory only, never I/O, never an exception."""
        try:
            key = scope.get(SCOPE_KEY)
            reason = reason_of(exc)
            if key is None:
                team_id = key_id = 0
                label = UNAUTHENTICATED
            else:
                team_id, key_id = key.team, key.id
                snapshot = self.replica.teams.get(team_id) if self.replica else None
                label = snapshot.public_id if snapshot is not None else str(team_id)
            metrics.GATEWAY_REFUSALS.labels(label, reason).inc()
            minute = int(time.time()) // 60
            groups = self._counts[minute]
            name = field(team_id, key_id, reason, scope.get(SCOPE_MODEL) or "")
            if name not in groups and len(groups) >= MAX_BATCH_GROUPS:
                name = field(team_id, key_id, reason, "")
            groups[name] += 1
        except Exception:  # counting must never break an answer
            logger.exception("a refused call could not be counted")

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-refusals-flush")

    async def stop(self) -> None:
        # A flag as well as the cancel, and a bounded wait (see proxy/leases.py Instance.stop);
        # then one last flush of what is counted, so a clean shutdown loses nothing.
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=self.every + 1)
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), timeout=2)
        except (TimeoutError, RedisError, OSError) as exc:
            logger.warning("refusal counts not flushed at shutdown: %s", type(exc).__name__)

    async def _run(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.every)
            try:
                await self.flush()
            except RedisError as exc:
                logger.warning("refusal counts not flushed (kept): %s", type(exc).__name__)
            except Exception:
                logger.exception("refusal counts not flushed (kept)")

    def _batch(self) -> None:
        """Move what is counted into batches, one per minute, each with its flush id."""
        counts, self._counts = self._counts, defaultdict(lambda: defaultdict(int))
        for minute, groups in sorted(counts.items()):
            self._seq += 1
            self._pending.append((f"{self._prefix}:{self._seq}", minute, dict(groups)))
            self._pending_groups += len(groups)
        while self._pending_groups > MAX_PENDING_GROUPS and len(self._pending) > 1:
            _, minute, groups = self._pending.pop(0)
            self._pending_groups -= len(groups)
            logger.error(
                "dropped %d refusal counts of minute %d: Redis has not taken them",
                sum(groups.values()),
                minute,
            )

    async def flush(self) -> int:
        """Send every batch waiting, oldest first; stops at the first Redis error (raised),
        keeping that batch and the rest for the next try. Returns the batches sent."""
        async with self._flushing:
            return await self._send()

    async def _send(self) -> int:
        self._batch()
        sent = 0
        while self._pending:
            flush_id, minute, groups = self._pending[0]
            args = [REFUSALS_TTL_SECONDS, minute, MARK_TTL_SECONDS]
            for name, n in groups.items():
                args += [name, n]
            keys = [refusals_bucket(minute), REFUSALS_MINUTES, refusals_flush_mark(flush_id)]
            await self._flush(keys=keys, args=args)
            self._pending.pop(0)
            self._pending_groups -= len(groups)
            sent += 1
        return sent
