"""The usage records a gateway keeps for a replay after Redis loses its data: kept until the
settlers have acknowledged them, bounded in time and in bytes, oldest dropped first, and never
walked by the garbage collector."""

import asyncio
import gc
import time
from types import SimpleNamespace

import orjson
import redis.asyncio
from django.conf import settings

from livestate.keys import SETTLER_GROUP, acct_key, shard_of, usage_stream
from proxy.recovery import FRONTIER_MARGIN_S, Recovery

TEAM = SimpleNamespace(account_key=acct_key(7), usage_key=usage_stream(shard_of(7)))


def recovery(client=None, **bounds) -> Recovery:
    return Recovery(client, None, interval=0.2, rebuild_interval=0.5, **bounds)


def test_kept_records_stay_within_the_byte_bound_newest_first():
    kept = recovery(copy_seconds=60, copy_max_bytes=1_000)
    for i in range(5):
        kept.kept(TEAM, bytes([i]) * 300, i)
    assert [c[4] for c in kept.copies] == [2, 3, 4]
    assert kept.copy_bytes == 900


def test_kept_records_older_than_the_window_are_dropped():
    kept = recovery(copy_seconds=0.01)
    kept.kept(TEAM, b"old", 1)
    time.sleep(0.02)
    kept.kept(TEAM, b"new", 2)
    assert [c[4] for c in kept.copies] == [2]
    assert kept.copy_bytes == 3


def test_kept_records_are_exact_copies_not_orjsons_oversized_buffers():
    kept = recovery(copy_seconds=60)
    record = orjson.dumps({"rid": "req_1", "in": 12, "out": 7})
    kept.kept(TEAM, record, 1)
    assert kept.copies[0][3] == record and kept.copies[0][3] is not record


def test_kept_records_are_not_tracked_by_the_garbage_collector():
    kept = recovery(copy_seconds=60)
    for i in range(100):
        kept.kept(TEAM, b"r%d" % i, i)
    gc.collect()
    assert not any(gc.is_tracked(c) for c in kept.copies)


async def _drop_settled_round(redis_url: str) -> tuple[int, int, int]:
    client = redis.asyncio.Redis.from_url(redis_url)
    stream = TEAM.usage_key
    try:
        await client.xgroup_create(stream, SETTLER_GROUP, id="0", mkstream=True)
        kept = recovery(client, copy_seconds=60)

        async def write(i: int) -> None:  # written and kept, as SETTLE and Settlement do
            await client.xadd(stream, {"rec": b"r%d" % i, "charged": i})
            kept.kept(TEAM, b"r%d" % i, i)

        await write(0)
        await write(1)
        await asyncio.sleep(FRONTIER_MARGIN_S + 0.1)
        await write(2)
        unsettled = await kept.drop_settled()  # nothing read by a settler yet
        # a settler takes all three and acknowledges the first two
        read = await client.xreadgroup(SETTLER_GROUP, "s1", {stream: ">"}, count=10)
        ids = [msg_id for msg_id, _ in read[0][1]]
        await client.xack(stream, SETTLER_GROUP, *ids[:2])
        await write(3)  # not delivered yet
        # the frontier is the oldest unacknowledged record: only what is older goes
        partly = await kept.drop_settled()
        left_after_ack = len(kept.copies)
        return unsettled, partly, left_after_ack
    finally:
        await client.aclose()


def test_kept_records_are_dropped_once_the_settlers_acknowledged_them(redis_url):
    # given a group; two records written and kept, a third more than the margin later, then a
    # settler taking all three and acknowledging the first two, and a fourth written
    unsettled, partly, left = asyncio.run(_drop_settled_round(settings.REDIS_URL))
    # then nothing is dropped before a settler acknowledged it, and exactly the two after:
    # the third (delivered, not acknowledged) and the fourth (not delivered) stay
    assert unsettled == 0
    assert partly == 2
    assert left == 2
