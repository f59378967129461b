"""Leases, not records: an in-flight call is held by a live gateway instance, not by its age.

Each gateway process is an *instance*: a stable seat (GATEWAY_INSTANCE, or host:pid) and a
random incarnation token minted at start, spelled `seat#token`. It heartbeats into
GATEWAY_BEATS every couple of seconds (Redis's own clock, so no two hosts' clocks are compared)
and claims its seat in GATEWAY_SEATS when it starts. Every in-flight record (INFLIGHT,
written by ADMIT as the gateway built it) names its instance: the record is the call's lease.

A lease is dead when its instance's heartbeat is older than the lease TTL (killed, OOM, node
lost) or when its seat is held by another incarnation (the same seat started again): REAP then
releases the reservation and the parallel slot, charges what the client had already received
(the progress the gateway wrote into the lease while it streamed, capped at the reservation
there and at what the account allows here, exactly like SETTLE's room_for) and appends a usage
record with status "interrupted". Whether the instance is dead is checked again inside the
script, atomically with the release, so a live instance's call is never reaped.

Exactly once: REAP acts only if the lease is still there and unchanged since the sweep read
it, and deletes it; SETTLE releases the reservation only when its own HDEL of the same field
succeeds. So a reservation is released once whichever runs first, and a second REAP does
nothing. (A call SETTLE finishes after its lease was reaped, from an instance stalled past the
TTL, is still recorded: the ledger posts a request id once, the first record in the stream.)

Every key a script touches is in its KEYS; the scripts build no names. On a Redis Cluster a
script reaches only its own slot, so an instance beats into every shard's GATEWAY_BEATS and
GATEWAY_SEATS (livestate/keys.py), and REAP checks liveness in the shard of the call it reaps.
"""

import time

import orjson
import redis

from livestate.keys import (
    LEASE_REAPER_LOCK,
    SHARD_RANGE,
    acct_key,
    gateway_beats,
    gateway_seats,
    inflight_key,
    key_fields,
    parallel_key,
    shard_of,
    usage_stream,
)
from livestate.scripts import _CREDIT_HELPERS  # release_and_charge: SETTLE's caps

SEPARATOR = "#"
# Instances not heard from for this long are forgotten (their seat too, if still theirs). A
# lease of a forgotten instance is dead like any other.
FORGET_AFTER_MS = 60 * 60 * 1000
STATUS = "interrupted"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# An instance's heartbeat; with claim=1 (at start) it also takes its seat.
# KEYS: 1 beats zset, 2 seats hash.  ARGV: 1 instance id, 2 seat, 3 claim (1/0)
# Returns {the seat's holder before this call ('' = none), now_ms}. A holder that is not this
# instance on a plain heartbeat means another process started with the same seat.
HEARTBEAT = (
    _NOW
    + """
local holder = redis.call('HGET', KEYS[2], ARGV[2]) or ''
if ARGV[3] == '1' or holder == '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[1]) end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {holder, now}
"""
)

# Record a streaming call's progress in its lease: only while the lease is held (never after
# SETTLE or REAP removed it, so a late write cannot bring a finished call back).
# KEYS: 1 inflight hash.  ARGV: 1 request id, 2 the lease with its progress (JSON)
PROGRESS = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Release one dead lease: reservation, parallel slot, and the charge for what was streamed.
# KEYS: 1 inflight hash, 2 beats zset, 3 seats hash (all three of the call's shard),
#       4 account hash, 5 parallel zset, 6 usage stream
# ARGV: 1 request id, 2 the lease as the sweep read it, 3 lease TTL (ms), 4 instance id,
#       5 seat, 6 reserve, 7 price of the progress, 8 overdraft, 9 team budget,
#       10 budget hard (1/0), 11 key budget, 12 usage record (JSON), 13 admitted at (ms),
#       14 the key's spent field, 15 its reserved field
# Returns the amount charged (>= 0), -1 (settled, reaped or changed since it was read: nothing
# done) or -2 (its instance is alive: nothing done).
REAP = (
    _CREDIT_HELPERS
    + _NOW
    + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
-- An instance never heard of (its beat forgotten, or Redis emptied since it last beat) counts
-- from the call's admission: a live one beats again well within the TTL.
local beat = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[4]) or ARGV[13])
local holder = redis.call('HGET', KEYS[3], ARGV[5])
if beat >= now - tonumber(ARGV[3]) and (not holder or holder == ARGV[4]) then return -2 end
redis.call('HDEL', KEYS[1], ARGV[1])
local charge = release_and_charge(KEYS[4], ARGV[14], ARGV[15], tonumber(ARGV[6]),
  tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10] == '1', tonumber(ARGV[11]))
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('XADD', KEYS[6], '*', 'rec', ARGV[12], 'charged', charge)
return charge
"""
)

# Forget instances silent for ARGV[1] ms, and their seats while still theirs.
# KEYS: 1 beats zset, 2 seats hash.  Returns how many were forgotten.
FORGET = (
    _NOW
    + """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
for _, inst in ipairs(gone) do
  redis.call('ZREM', KEYS[1], inst)
  local seat = string.match(inst, '^(.*)#[^#]*$')
  if seat and redis.call('HGET', KEYS[2], seat) == inst then redis.call('HDEL', KEYS[2], seat) end
end
return #gone
"""
)


def instance_id(seat: str, token: str) -> str:
    return f"{seat}{SEPARATOR}{token}"


def seat_of(instance: str) -> str:
    return instance.rpartition(SEPARATOR)[0]


def heartbeat_calls(instance: str, *, claim: bool = False) -> list[tuple[list, list]]:
    """HEARTBEAT's (KEYS, ARGV), once per shard (shard 0's answer says who held the seat)."""
    args = [instance, seat_of(instance), "1" if claim else "0"]
    return [([gateway_beats(s), gateway_seats(s)], args) for s in SHARD_RANGE]


def heartbeat(client, instance: str, *, claim: bool = False) -> str:
    """Beat (and with claim, take the seat) in every shard with a synchronous client; returns
    who held the seat before ('' = nobody)."""
    script = client.register_script(HEARTBEAT)
    replies = [
        script(keys=keys, args=args) for keys, args in heartbeat_calls(instance, claim=claim)
    ]
    return _text(replies[0][0])


def progress_call(rid: str, lease: bytes, team_id: int) -> tuple[list, list]:
    """PROGRESS's (KEYS, ARGV)."""
    return [inflight_key(shard_of(team_id))], [rid, lease]


def forget_calls() -> list[tuple[list, list]]:
    return [([gateway_beats(s), gateway_seats(s)], [FORGET_AFTER_MS]) for s in SHARD_RANGE]


def with_progress(
    lease: dict,
    *,
    in_tokens: int,
    out_tokens: int,
    price: int,
    cost: int,
    model: str,
    group: str,
    job: str | None,
    caps: tuple[int, int, bool, int],
) -> bytes:
    """The lease as PROGRESS stores it: what the client has received so far, priced (price
    already capped at the reservation), and the account caps (overdraft, team budget, hard,
    key budget) the reaper charges it under."""
    prog = {
        "in": in_tokens,
        "out": out_tokens,
        "price": price,
        "cost": cost,
        "model": model,
        "group": group,
    }
    if job:
        prog["job"] = job
    overdraft, budget, hard, key_budget = caps
    return orjson.dumps({**lease, "prog": prog, "caps": [overdraft, budget, int(hard), key_budget]})


class Instances:
    """Which instances are dead at `now_ms` (Redis's clock), from one read of beats and seats;
    REAP checks again atomically, so a stale view can only delay a release, never wrongly do one."""

    __slots__ = ("beats", "now_ms", "seats", "silence_counts", "ttl_ms")

    def __init__(self, beats: list, seats: dict, now_ms: int, ttl_ms: int, redis_up_s: int):
        self.beats = {_text(i): float(score) for i, score in beats}
        self.seats = {_text(s): _text(i) for s, i in seats.items()}
        self.now_ms, self.ttl_ms = now_ms, ttl_ms
        # A Redis (re)started less than a TTL ago heard nobody while it was down: silence then
        # proves nothing, and only a seat taken over ends a lease until every instance could
        # beat again.
        self.silence_counts = redis_up_s * 1000 >= ttl_ms

    @classmethod
    def of(cls, replies: list, ttl_ms: int) -> "Instances":
        """From the replies read_instances() gathers."""
        (seconds, micros), beats, seats, info = replies[:4]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return cls(beats, seats, now_ms, ttl_ms, int(info.get("uptime_in_seconds", 0)))

    def dead(self, instance: str, admitted_ms: int) -> bool:
        holder = self.seats.get(seat_of(instance))
        if holder is not None and holder != instance:
            return True  # its seat started again under another incarnation
        beat = self.beats.get(instance, admitted_ms)  # never heard of: see REAP
        return self.silence_counts and beat < self.now_ms - self.ttl_ms


def reap_call(
    rid: bytes | str, raw: bytes, instances: Instances, now: float | None = None
) -> tuple[list, list] | None:
    """REAP's (KEYS, ARGV) for one in-flight record, or None when it is not to be reaped: a
    live instance's lease, or a record without an instance (the age-based reaper's)."""
    lease = orjson.loads(raw)
    instance = lease.get("inst")
    if not instance or not instances.dead(instance, int(lease.get("ts", 0))):
        return None
    rid = _text(rid)
    now = time.time() if now is None else now
    prog = lease.get("prog") or {}
    overdraft, budget, hard, key_budget = lease.get("caps") or (0, -1, 0, -1)
    team, key = lease["team"], lease["key"]
    record = {
        "rid": rid,
        "ts": now,
        "org": lease.get("org"),
        "team": team,
        "key": key,
        "model": prog.get("model", ""),
        "group": prog.get("group", ""),
        "in": prog.get("in", 0),
        "out": prog.get("out", 0),
        "cost": prog.get("cost", 0),
        "price": prog.get("price", 0),
        "status": STATUS,
        "lat": max(0, int(now * 1000) - int(lease.get("ts", 0))),
        "est": True,
        "abandoned": True,
    }
    if prog.get("job"):
        record["job"] = prog["job"]
    shard = shard_of(team)
    keys = [
        inflight_key(shard),
        gateway_beats(shard),
        gateway_seats(shard),
        acct_key(team),
        parallel_key(team),
        usage_stream(shard),
    ]
    args = [
        rid,
        raw,
        instances.ttl_ms,
        instance,
        seat_of(instance),
        int(lease.get("reserve", 0)),
        min(int(prog.get("price", 0)), int(lease.get("reserve", 0))),
        overdraft,
        budget,
        "1" if hard else "0",
        key_budget,
        orjson.dumps(record),
        int(lease.get("ts", 0)),
        *key_fields(key),
    ]
    return keys, args


def read_instances(client, shard: int, ttl_ms: int) -> "Instances":
    """What a sweep of `shard` reads first (its node's clock and uptime, the shard's beats and
    seats), with a synchronous client."""
    beats, seats = gateway_beats(shard), gateway_seats(shard)
    if isinstance(client, redis.RedisCluster):
        node = client.get_node_from_key(beats)
        replies = [
            client.time(target_nodes=node),
            client.zrange(beats, 0, -1, withscores=True),
            client.hgetall(seats),
            client.info("server", target_nodes=node),
        ]
        return Instances.of(replies, ttl_ms)
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrange(beats, 0, -1, withscores=True)
    pipe.hgetall(seats)
    pipe.info("server")
    return Instances.of(pipe.execute(), ttl_ms)


async def read_instances_async(client, shard: int, ttl_ms: int) -> "Instances":
    """read_instances with an asyncio client (the gateway's)."""
    from redis.asyncio.cluster import RedisCluster

    beats, seats = gateway_beats(shard), gateway_seats(shard)
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(beats)
        replies = [
            await client.time(target_nodes=node),
            await client.zrange(beats, 0, -1, withscores=True),
            await client.hgetall(seats),
            await client.info("server", target_nodes=node),
        ]
        return Instances.of(replies, ttl_ms)
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrange(beats, 0, -1, withscores=True)
    pipe.hgetall(seats)
    pipe.info("server")
    return Instances.of(await pipe.execute(), ttl_ms)


def lock_call(owner: str, every_s: float) -> tuple[str, str, int]:
    """(name, value, px) of the sweep's lock for processes that sweep every `every_s` seconds:
    one sweeps at a time, and the lock expires on its own just before the next one is due."""
    return LEASE_REAPER_LOCK, owner, max(500, int(every_s * 1000) - 100)


def sweep(client, *, ttl_ms: int) -> int:
    """Reap every dead lease with a synchronous client (the Celery task); returns how many.
    The gateway runs the same steps with its async client (proxy/leases.py)."""
    reap = client.register_script(REAP)
    forget = client.register_script(FORGET)
    reaped = 0
    for shard in SHARD_RANGE:
        instances = read_instances(client, shard, ttl_ms)
        for rid, raw in client.hscan_iter(inflight_key(shard), count=1000):
            call = reap_call(rid, raw, instances)
            if call is not None and reap(keys=call[0], args=call[1]) >= 0:
                reaped += 1
    for keys, args in forget_calls():
        forget(keys=keys, args=args)
    return reaped


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Every script, by name: the cluster test checks each one's key discipline.
ALL = {"HEARTBEAT": HEARTBEAT, "PROGRESS": PROGRESS, "LEASE_REAP": REAP, "FORGET": FORGET}
