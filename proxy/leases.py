"""This gateway process as a lease holder: its instance id, heartbeat, progress writes, sweeps.

See livestate/leases.py for the model. Here: the process claims its seat at start and at once
sweeps (so the calls of its own earlier incarnation, killed, are released well under the TTL);
then, every GATEWAY_HEARTBEAT_SECONDS, it heartbeats and, if it wins the short sweep lock,
reaps the leases of dead instances. A stream records its progress in its lease at most every
GATEWAY_LEASE_PROGRESS_SECONDS (never per frame), beside the stream rather than in its way.
None of this is on a call's critical path; a failed heartbeat or progress write is logged and
retried at the next tick (the TTL is several heartbeats long).
"""

import asyncio
import logging
import os
import secrets
import socket
import time

from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from livestate import leases
from livestate.keys import SHARD_RANGE, inflight_key
from proxy import pricing
from proxy.call import Call
from proxy.replica import Route
from proxy.tokens import estimate_prompt_tokens
from proxy.usage import Usage

logger = logging.getLogger(__name__)


def default_seat() -> str:
    return settings.GATEWAY_INSTANCE or f"{socket.gethostname()}:{os.getpid()}"


class Instance:
    """This process in Redis: `seat#token`, heartbeating and sweeping dead leases."""

    def __init__(self, redis: Redis, seat: str | None = None):
        self.redis = redis
        self.id = leases.instance_id(seat or default_seat(), secrets.token_hex(8))
        self.every = settings.GATEWAY_HEARTBEAT_SECONDS
        self.ttl_ms = int(settings.GATEWAY_LEASE_TTL_SECONDS * 1000)
        self.progress_every = settings.GATEWAY_LEASE_PROGRESS_SECONDS
        self._heartbeat = redis.register_script(leases.HEARTBEAT)
        self._progress = redis.register_script(leases.PROGRESS)
        self._reap = redis.register_script(leases.REAP)
        self._forget = redis.register_script(leases.FORGET)
        self._task: asyncio.Task | None = None
        self._stopped = False

    async def _beat(self, *, claim: bool = False) -> str:
        """Beat in every shard; who held the seat before (shard 0's answer)."""
        holders = [
            (await self._heartbeat(keys=keys, args=args))[0].decode()
            for keys, args in leases.heartbeat_calls(self.id, claim=claim)
        ]
        return holders[0]

    async def start(self) -> None:
        previous = await self._beat(claim=True)
        if previous and previous != self.id:
            logger.info("gateway seat %s taken over from %s", leases.seat_of(self.id), previous)
        # Not waiting for the lock: an earlier incarnation's calls are released now.
        await self.sweep()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # The flag also ends a loop whose cancellation was swallowed on its way through the
        # Redis client (then the loop only logs an error and goes on), and the wait is bounded:
        # a test's gateway under load once stayed in this loop for 30 s past its shutdown, the
        # same as the recovery's watcher (proxy/recovery.py) did before it got its flag.
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=self.every + 1)
            self._task = None

    async def _run(self) -> None:
        name, owner, px = leases.lock_call(self.id, self.every)
        while not self._stopped:
            await asyncio.sleep(self.every)
            try:
                holder = await self._beat()
                if holder and holder != self.id:
                    logger.error(
                        "gateway seat %s is held by %s: two processes share one "
                        "GATEWAY_INSTANCE, and this one's calls will be reaped",
                        leases.seat_of(self.id),
                        holder,
                    )
                if await self.redis.set(name, owner, nx=True, px=px):
                    await self.sweep()
            except RedisError as exc:
                logger.warning("lease heartbeat or sweep failed: %s", type(exc).__name__)
            except Exception:
                logger.exception("lease heartbeat or sweep failed")

    async def sweep(self) -> int:
        """Reap every dead lease (livestate.leases.sweep, with this process's async client)."""
        reaped = 0
        for shard in SHARD_RANGE:
            instances = await leases.read_instances_async(self.redis, shard, self.ttl_ms)
            async for rid, raw in self.redis.hscan_iter(inflight_key(shard), count=1000):
                call = leases.reap_call(rid, raw, instances)
                if call is not None and await self._reap(keys=call[0], args=call[1]) >= 0:
                    reaped += 1
        for keys, args in leases.forget_calls():
            await self._forget(keys=keys, args=args)
        if reaped:
            logger.warning("released %d calls of dead gateway instances", reaped)
        return reaped

    def lease(self, call: Call, inflight: dict, reserve: int) -> "Lease":
        return Lease(self, call, inflight, reserve)

    async def write_progress(self, rid: str, lease: bytes, team_id: int) -> None:
        keys, args = leases.progress_call(rid, lease, team_id)
        try:
            await self._progress(keys=keys, args=args)
        except RedisError as exc:
            # Best effort: the next write (or the settlement) has the newer count anyway.
            logger.warning("progress of %s not recorded: %s", rid, type(exc).__name__)


class Lease:
    """One streaming call's lease: records what the client has received, priced, at most once
    per GATEWAY_LEASE_PROGRESS_SECONDS, for the reaper to charge if this process dies."""

    __slots__ = ("call", "in_tokens", "inflight", "instance", "next_at", "reserve", "writing")

    def __init__(self, instance: Instance, call: Call, inflight: dict, reserve: int):
        self.instance, self.call, self.inflight, self.reserve = instance, call, inflight, reserve
        self.next_at = time.monotonic() + instance.progress_every
        self.in_tokens: int | None = None
        self.writing: asyncio.Future | None = None

    def progress(self, route: Route, out_tokens: int, asked: str) -> None:
        """Record `out_tokens` streamed so far on `route`, if the last write is old enough.
        The write runs beside the stream, never holding up a frame; one at a time, so an
        older count can never land after a newer one (PROGRESS never outlives the lease)."""
        now = time.monotonic()
        if now < self.next_at or (self.writing is not None and not self.writing.done()):
            return
        self.next_at = now + self.instance.progress_every
        call, team = self.call, self.call.team
        if self.in_tokens is None:
            self.in_tokens = estimate_prompt_tokens(call.request)
        in_t = self.in_tokens
        used = Usage(in_t, out_tokens)
        price = min(pricing.price(team.pricing, route, used), self.reserve)
        lease = leases.with_progress(
            self.inflight,
            in_tokens=in_t,
            out_tokens=out_tokens,
            price=price,
            cost=pricing.call_cost(route, used),
            model=route.name,
            group=asked,
            job=call.job_id,
            caps=(team.overdraft, team.budget_limit, team.hard, call.key.budget_limit),
        )
        self.writing = asyncio.ensure_future(self.instance.write_progress(call.rid, lease, team.id))
