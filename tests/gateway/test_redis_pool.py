"""The gateway's Redis pool (proxy/redis_pool.py), against the tests' real Redis: connections are
reused, a burst past the bound waits its turn instead of failing, a wait past the timeout is a
ConnectionError (the gateway's 503), and a waiter cancelled after its wake passes it on."""

import asyncio

import pytest
from django.conf import settings
from redis.asyncio import Redis
from redis.exceptions import ConnectionError

from proxy.redis_pool import WaitingPool


def run(coro):
    return asyncio.run(coro)


async def _client(max_connections: int, timeout: float = 5.0) -> tuple[Redis, WaitingPool]:
    pool = WaitingPool.from_url(
        settings.REDIS_URL, max_connections=max_connections, timeout=timeout
    )
    return Redis(connection_pool=pool), pool


def test_a_burst_past_the_bound_waits_and_reuses_the_few_connections(redis_url):
    async def burst():
        client, pool = await _client(max_connections=3)
        try:
            # 50 commands at once, each holding its connection for a moment
            replies = await asyncio.gather(*(client.execute_command("ECHO", i) for i in range(50)))
            slow = await asyncio.gather(*(client.blpop(["no-such-list"], 0.05) for _ in range(9)))
            created = len(pool._available_connections) + len(pool._in_use_connections)
            return replies, slow, created, len(pool._in_use_connections)
        finally:
            await client.aclose()
            await pool.disconnect()

    replies, slow, created, in_use = run(burst())
    assert replies == [str(i).encode() for i in range(50)]
    assert slow == [None] * 9
    assert created == 3  # never more than the bound
    assert in_use == 0  # every one came back


def test_a_wait_past_the_timeout_is_a_connection_error(redis_url):
    async def starved():
        client, pool = await _client(max_connections=1, timeout=0.2)
        try:
            holder = asyncio.ensure_future(client.blpop(["no-such-list"], 1))
            await asyncio.sleep(0.05)
            with pytest.raises(ConnectionError, match="No connection available"):
                await client.ping()
            await holder
            return await client.ping()  # served again once the connection is back
        finally:
            await client.aclose()
            await pool.disconnect()

    assert run(starved()) is True


def test_a_waiter_cancelled_after_its_wake_passes_the_turn_on(redis_url):
    async def handoff():
        client, pool = await _client(max_connections=1, timeout=2)
        try:
            connection = await pool.get_connection()
            first = asyncio.ensure_future(pool.get_connection())
            second = asyncio.ensure_future(pool.get_connection())
            await asyncio.sleep(0.01)  # both waiting
            await pool.release(connection)  # wakes `first`...
            first.cancel()  # ...which is cancelled before it resumes
            got = await asyncio.wait_for(second, 1)  # `second` gets the connection at once
            await pool.release(got)
            return got is connection and first.cancelled()
        finally:
            await client.aclose()
            await pool.disconnect()

    assert run(handoff()) is True
