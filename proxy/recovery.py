"""What a gateway process does about Redis faults, so that no answered call goes unrecorded.

- Settlements Redis could not take (down, or it lost the team's account) are deferred here and
  written when it answers again: SETTLE is idempotent per request id (its in-flight guard), so
  a write that did land before its reply was lost records nothing twice.
- Every usage record written is also kept here until the settlers have acknowledged it (its
  stream's consumer group has moved past it: posted to the ledger), read once a second, and at
  most GATEWAY_USAGE_COPY_SECONDS and GATEWAY_USAGE_COPY_MAX_BYTES. Kept as tuples of plain
  values only, so the garbage collector never walks them. Redis carries an epoch token
  (livestate.keys.EPOCH); when it vanishes or changes, Redis lost its data (a flush, a restart
  without its append-only file) and the kept records are appended again (scripts.USAGE_REPLAY:
  the settler posts a request id once, and the charge it adds to `pend` is what the settler's
  acknowledgement releases).
- A team whose account Redis lost is rebuilt from Postgres on demand (control.rebuild_account),
  once at a time per team and at most every GATEWAY_REBUILD_INTERVAL_SECONDS; snapshots and the
  catalog are republished when they vanished.
Each replay is reported as an audit event (`usage.replayed`) with the number of records.
"""

import asyncio
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass

from redis.exceptions import RedisError

from livestate.keys import CATALOG, EPOCH, SETTLER_GROUP
from livestate.scripts import GatewayScripts
from proxy import control

logger = logging.getLogger(__name__)


# How often the settled frontier is read, and the margin kept behind it (clock offset error).
FRONTIER_EVERY_S = 1.0
FRONTIER_MARGIN_S = 0.5


async def settled_frontier(redis, stream: str) -> float | None:
    """Redis time (s) before which every record of `stream` is acknowledged by the settlers
    (and so posted to the ledger); None when no settler has read the stream yet."""
    try:
        groups = await redis.xinfo_groups(stream)
    except RedisError:
        return None  # no stream (or no group) yet
    group = next((g for g in groups if _text(g["name"]) == SETTLER_GROUP), None)
    if group is None:
        return None
    if group["pending"]:
        oldest = (await redis.xpending(stream, SETTLER_GROUP))["min"]
    else:
        oldest = group["last-delivered-id"]  # acknowledged, and everything before it
    return int(_text(oldest).split("-", 1)[0]) / 1000


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class Deferred:
    """A SETTLE not written yet: its named arguments, as Settlement built them."""

    rid: str
    team_id: int
    args: dict


class Recovery:
    def __init__(
        self,
        redis,
        scripts: GatewayScripts,
        *,
        interval: float,
        copy_seconds: float,
        rebuild_interval: float,
        copy_max_bytes: int = 64 * 1024 * 1024,
    ):
        self.redis, self.scripts = redis, scripts
        self.interval, self.copy_seconds = interval, copy_seconds
        self.copy_max_bytes = copy_max_bytes
        self.copy_bytes = 0  # the records' size in `copies`
        self.rebuild_interval = rebuild_interval
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        # (time written (s, this host's clock), account key, usage stream, record, charged),
        # oldest first: atomic values only, so CPython untracks the tuples (a full collection
        # walking 100k of them was a 10 ms pause, seen as the bench's p99).
        self.copies: deque[tuple[float, str, str, bytes, int]] = deque()
        self._frontier_at = 0.0  # monotonic time the settled frontier was last read
        self.deferred: dict[str, Deferred] = {}
        self.epoch: bytes | None = None
        self.replayed = 0  # records appended again after a loss, since start (for tests, logs)
        self._rebuilds: dict[int, asyncio.Task] = {}
        self._rebuilt_at: dict[int, float] = {}
        self._publishing: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self._down = False
        self._stopped = False

    async def start(self) -> None:
        self.epoch = await self._claim_epoch()
        self._task = asyncio.create_task(self._watch(), name="gateway-recovery")

    async def stop(self) -> None:
        self._stopped = True  # also ends a loop whose cancellation a client swallowed
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2)  # never hold up the shutdown
            self._task = None
        if self.deferred:
            logger.error(
                "gateway stopping with %d usage records Redis never took: %s",
                len(self.deferred),
                ", ".join(sorted(self.deferred)),
            )

    # -- called by Settlement ------------------------------------------------------------------

    def kept(self, team, record: bytes, charged: int) -> None:
        """Keep a written record until it is settled, for copy_seconds at most and within
        copy_max_bytes (logged bodies can make records large: past the bound the oldest go
        first, and the loss window shrinks)."""
        now = time.time()
        copies = self.copies
        # A copy of the bytes, not orjson's object: orjson writes into a buffer of several KiB
        # and shrinks the bytes object in place, so each one it returns holds ~8 KiB of memory
        # (30,000 kept ones: 234 MiB of RSS; their exact copies: 7 MiB).
        record = bytes(memoryview(record))
        copies.append((now, team.account_key, team.usage_key, record, charged))
        self.copy_bytes += len(record)
        horizon = now - self.copy_seconds
        while copies and (copies[0][0] < horizon or self.copy_bytes > self.copy_max_bytes):
            self.copy_bytes -= len(copies.popleft()[3])

    async def drop_settled(self) -> int:
        """Forget the kept records the settlers have acknowledged: older than their stream's
        settled frontier (the oldest record delivered and not acknowledged, else the last one
        delivered). Stream ids are Redis's clock, the copies this host's: the offset is read
        in the same round, with FRONTIER_MARGIN_S to spare. Returns how many were dropped."""
        copies = self.copies
        if not copies:
            return 0
        streams = {c[2] for c in copies}
        before = time.time()
        reply = await self.redis.time()
        if isinstance(reply, dict):  # a cluster client may ask every node: any will do
            reply = next(iter(reply.values()))
        seconds, micros = reply
        offset = seconds + micros / 1e6 - (before + time.time()) / 2
        frontier = {}
        for stream in streams:
            frontier[stream] = await settled_frontier(self.redis, stream)
        dropped = 0
        while copies:
            written, _, stream, record, _ = copies[0]
            settled = frontier.get(stream)
            if settled is None or written + offset + FRONTIER_MARGIN_S >= settled:
                break
            copies.popleft()
            self.copy_bytes -= len(record)
            dropped += 1
        return dropped

    def defer(self, entry: Deferred) -> None:
        self.deferred[entry.rid] = entry

    async def rebuild(self, team_id: int, wait: float = 2.0) -> None:
        """Rebuild the team's account from Postgres (single-flight, rate-limited); wait for it
        up to `wait` seconds. Failures are logged: admission stays closed for the team."""
        task = self._rebuilds.get(team_id)
        if task is None or task.done():
            last = self._rebuilt_at.get(team_id, 0.0)
            if time.monotonic() - last < self.rebuild_interval:
                return
            self._rebuilt_at[team_id] = time.monotonic()
            task = self._rebuilds[team_id] = asyncio.create_task(self._rebuild(team_id))
        await asyncio.wait({task}, timeout=wait)

    async def _rebuild(self, team_id: int) -> None:
        try:
            if not await self.redis.exists(CATALOG):
                await self._publish_all()
            await asyncio.to_thread(control.rebuild_account, team_id)
            logger.warning("rebuilt the account of team %s on demand", team_id)
        except Exception:
            logger.exception("could not rebuild the account of team %s", team_id)
        finally:
            self._rebuilds.pop(team_id, None)

    async def _publish_all(self) -> None:
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.create_task(asyncio.to_thread(control.publish_all))
        await asyncio.shield(self._publishing)

    # -- the watch loop ------------------------------------------------------------------------

    async def _claim_epoch(self) -> bytes | None:
        await self.redis.set(EPOCH, os.urandom(8).hex(), nx=True)
        return await self.redis.get(EPOCH)

    async def _watch(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
                if self._down:
                    logger.warning("Redis answers again")
                self._down = False
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                if not self._down:
                    logger.warning("Redis unavailable (%s); calls get 503", type(exc).__name__)
                self._down = True
            except Exception:
                logger.exception("gateway recovery check failed")

    async def check(self) -> None:
        """One round: detect a data loss (and replay), write what was deferred, and once a
        second forget what the settlers have acknowledged."""
        if await self.redis.get(EPOCH) != self.epoch and not self._stopped:
            await self._after_loss()
        if self.deferred:
            await self._write_deferred()
        if time.monotonic() - self._frontier_at >= FRONTIER_EVERY_S:
            self._frontier_at = time.monotonic()
            await self.drop_settled()

    async def _after_loss(self) -> None:
        epoch = await self._claim_epoch()
        logger.error("Redis lost its data (epoch %s, now %s): replaying usage", self.epoch, epoch)
        if not await self.redis.exists(CATALOG):
            await self._publish_all()
        replayed = 0
        for _, account_key, usage_key, record, charged in list(self.copies):
            await self.scripts.replay(
                account_key=account_key, usage_key=usage_key, record=record, charged=charged
            )
            replayed += 1
        self.epoch = epoch  # only once every kept record is in again: a failure replays all
        self.replayed += replayed
        written = await self._write_deferred() if self.deferred else 0
        logger.error("replayed %d kept usage records after Redis lost its data", replayed)
        await asyncio.to_thread(
            control.report_replayed, replayed=replayed, deferred=written, instance=self.instance
        )

    async def _write_deferred(self) -> int:
        written = 0
        for entry in list(self.deferred.values()):
            charged = await self.scripts.settle(**entry.args)
            if charged == -2:  # the account is gone with Redis's data: rebuild it, then write
                await self.rebuild(entry.team_id)
                charged = await self.scripts.settle(**entry.args)
                if charged == -2:
                    continue
            del self.deferred[entry.rid]
            written += 1
            if charged >= 0:
                self.kept(entry.args["team"], entry.args["record"], charged)
                logger.warning("wrote the deferred usage record of %s", entry.rid)
        return written
