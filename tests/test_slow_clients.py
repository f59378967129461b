"""Slow clients (slowloris): connections that trickle their headers or body a byte at a time
are closed at the read deadlines (saas/server.py) and do not hold up anyone else's calls."""

import asyncio
import time

import httpx
import pytest

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
# Each slow client gives up by itself after this long: the test ends even if the server
# never closed it (the assertion then says so).
CLIENT_GIVES_UP_AFTER = 8.0
# The deadline, plus time for 200 connections' timers to run on a shared 2-core machine.
SLACK = 2.5


@pytest.fixture
def short_deadlines(settings):
    settings.REQUEST_HEADER_TIMEOUT_SECONDS = HEADER_TIMEOUT
    settings.REQUEST_BODY_TIMEOUT_SECONDS = BODY_TIMEOUT


async def trickle(port: int, head: bytes, drip: bytes) -> float | None:
    """Send `head`, then `drip` one byte every 0.2 s; the seconds until the server closed the
    connection, or None if it was still open when the client gave up."""
    # Timed from before the connect: the server's deadline starts when it accepts, and with
    # hundreds of clients on one loop a task may resume well after its connect completed.
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        for byte in drip:
            if time.monotonic() - started > CLIENT_GIVES_UP_AFTER:
                return None
            try:
                if await asyncio.wait_for(reader.read(4096), timeout=0.2) == b"":
                    return time.monotonic() - started
                # an answer (the 408) arrived: the close follows it
                await asyncio.wait_for(reader.read(), timeout=SLACK)
                return time.monotonic() - started
            except TimeoutError:
                pass
            writer.write(bytes([byte]))
            await writer.drain()
        return None
    except (ConnectionError, TimeoutError):
        return time.monotonic() - started
    finally:
        writer.close()


async def normal_calls_while(url: str, slow: list) -> list[float]:
    """Health checks made while the slow clients run: each one's seconds."""
    timings = []
    async with httpx.AsyncClient(timeout=5) as client:
        while not all(task.done() for task in slow) and len(timings) < 20:
            started = time.monotonic()
            r = await client.get(url + "/health/live")
            assert r.status_code == 200
            timings.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
    return timings


def run_slow_clients(live, count: int, head: bytes, drip: bytes):
    async def scenario():
        slow = [asyncio.create_task(trickle(live.port, head, drip)) for _ in range(count)]
        await asyncio.sleep(0.2)  # every slow connection is open
        normal = await normal_calls_while(live.url, slow)
        return await asyncio.gather(*slow), normal

    return asyncio.run(scenario())


def test_200_clients_trickling_headers_are_closed_at_the_deadline_and_block_no_one(
    live, short_deadlines
):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    drip = b"X-Slow: " + b"a" * 200

    closed_after, normal = run_slow_clients(live, 200, head, drip)

    assert None not in closed_after, "a slow connection was still open when it gave up"
    assert max(closed_after) < HEADER_TIMEOUT + SLACK
    assert min(closed_after) >= HEADER_TIMEOUT * 0.9
    assert normal and max(normal) < 1.0


def test_a_client_trickling_its_body_is_closed_at_the_body_deadline(live, short_deadlines):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    )

    closed_after, normal = run_slow_clients(live, 20, head, b"{" + b" " * 200)

    assert None not in closed_after
    assert max(closed_after) < BODY_TIMEOUT + SLACK
    assert min(closed_after) >= BODY_TIMEOUT * 0.9
    assert normal and max(normal) < 1.0


def test_a_connection_that_sends_nothing_gets_a_408_at_the_header_deadline(live, short_deadlines):
    async def silent() -> tuple[bytes, float]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=CLIENT_GIVES_UP_AFTER)
            return answer, time.monotonic() - started
        finally:
            writer.close()

    answer, closed_after = asyncio.run(silent())

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"type": "request_timeout"' in answer
    assert HEADER_TIMEOUT * 0.9 <= closed_after < HEADER_TIMEOUT + SLACK


def test_a_normal_keep_alive_connection_serves_several_requests(live, short_deadlines):
    with httpx.Client(base_url=live.url) as client:
        for _ in range(3):
            assert client.get("/health/live").status_code == 200
            time.sleep(HEADER_TIMEOUT * 0.6)  # longer between requests than half the deadline
