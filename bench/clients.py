"""CPU per upstream call of candidate HTTP clients, side by side: what the gateway's upstream
call would cost with each (issue 11, "a leaner upstream client").

    python -m bench.clients [--calls N] [--concurrency C] [--json PATH]

Each client sends the same POST (the gateway's headers and a chat body) to the bench's upstream
(bench/upstream.py: nginx when installed, else its raw asyncio server) over keep-alive
HTTP/1.1, C at a time, on uvloop as the gateway runs, unary and streamed. The figure is this
process's user + system CPU divided by the calls (the upstream runs in another process), so a
busy machine stretches the run but barely changes it. Each client runs twice, interleaved, and
the lower figure is kept.

`raw` is a minimal asyncio + httptools keep-alive client written here only to show the floor a
client of our own could reach; it is not the gateway's code.
"""

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.procs import Procs, free_port, wait_http
from bench.upstream import CHAT_PATH, STREAM_PATH, nginx_argv

BODY = orjson.dumps(
    {"model": "bench-chat", "messages": [{"role": "user", "content": "Say hello to the bench."}]}
)
HEADERS = {
    "Content-Type": "application/json",
    "X-Request-Id": "req_0123456789abcdef0123",
    "Authorization": "Bearer sk-bench-upstream-key",
}


class AiohttpClient:
    """aiohttp's ClientSession configured as proxy/gateway.py does."""

    name = "aiohttp"

    async def open(self):
        import aiohttp

        self.timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def unary(self, url: str) -> int:
        async with self.session.post(url, data=BODY, headers=HEADERS, timeout=self.timeout) as r:
            return len(await r.read())

    async def stream(self, url: str) -> int:
        n = 0
        async with self.session.post(url, data=BODY, headers=HEADERS, timeout=self.timeout) as r:
            async for line in r.content:
                n += len(line)
        return n

    async def close(self):
        await self.session.close()


class HttpxClient:
    name = "httpx"

    async def open(self):
        import httpx

        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self.client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60, connect=10))

    async def unary(self, url: str) -> int:
        r = await self.client.post(url, content=BODY, headers=HEADERS)
        return len(r.content)

    async def stream(self, url: str) -> int:
        n = 0
        async with self.client.stream("POST", url, content=BODY, headers=HEADERS) as r:
            async for line in r.aiter_lines():
                n += len(line)
        return n

    async def close(self):
        await self.client.aclose()


class _RawConnection(asyncio.Protocol):
    """One keep-alive connection: httptools parses the response, body pieces go to a queue."""

    def __init__(self):
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport = None
        self.pieces: asyncio.Queue | None = None
        self.status = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.pieces.put_nowait(body)

    def on_message_complete(self) -> None:
        self.pieces.put_nowait(None)

    def connection_lost(self, exc) -> None:
        if self.pieces is not None:
            self.pieces.put_nowait(None)


class RawClient:
    name = "raw"

    async def open(self):
        self.idle: list[_RawConnection] = []
        self.host, self.port = "", 0

    async def _conn(self, url: str) -> _RawConnection:
        if self.idle:
            return self.idle.pop()
        hostport = url.split("//", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_RawConnection, host, int(port))
        return conn

    def _request(self, url: str) -> bytes:
        path = "/" + url.split("//", 1)[1].split("/", 1)[1]
        head = [f"POST {path} HTTP/1.1", "Host: upstream", f"Content-Length: {len(BODY)}"]
        head += [f"{k}: {v}" for k, v in HEADERS.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + BODY

    async def _exchange(self, url: str, each) -> int:
        conn = await self._conn(url)
        conn.pieces = asyncio.Queue()
        conn.transport.write(self._request(url))
        n = 0
        while (piece := await asyncio.wait_for(conn.pieces.get(), 60)) is not None:
            n += each(piece)
        if conn.transport.is_closing():
            conn.transport.close()
        else:
            self.idle.append(conn)
        return n

    async def unary(self, url: str) -> int:
        return await self._exchange(url, len)

    async def stream(self, url: str) -> int:
        return await self._exchange(url, lambda piece: sum(map(len, piece.split(b"\n"))))

    async def close(self):
        for conn in self.idle:
            conn.transport.close()


class AiosonicClient:
    name = "aiosonic"

    async def open(self):
        import aiosonic

        self.client = aiosonic.HTTPClient()

    async def unary(self, url: str) -> int:
        r = await self.client.post(url, data=BODY, headers=HEADERS)
        return len(await r.content())

    async def stream(self, url: str) -> int:
        r = await self.client.post(url, data=BODY, headers=HEADERS)
        n = 0
        async for chunk in r.read_chunks():
            n += len(chunk)
        return n

    async def close(self):
        await self.client.aclose()


class RnetClient:
    """rnet: Python bindings to a Rust HTTP client (hyper/tokio)."""

    name = "rnet"

    async def open(self):
        import rnet

        self.client = rnet.Client()

    async def unary(self, url: str) -> int:
        r = await self.client.post(url, body=BODY, headers=HEADERS)
        return len(await r.bytes())

    async def stream(self, url: str) -> int:
        r = await self.client.post(url, body=BODY, headers=HEADERS)
        n = 0
        async with r.stream() as chunks:
            async for chunk in chunks:
                n += len(chunk)
        return n

    async def close(self):
        pass


CLIENTS = {c.name: c for c in (AiohttpClient, HttpxClient, RawClient, AiosonicClient, RnetClient)}


async def _run(client, url: str, calls: int, concurrency: int, streamed: bool) -> float:
    """CPU µs per call of `calls` calls, `concurrency` at a time, after a warm-up."""
    call = client.stream if streamed else client.unary
    await asyncio.gather(*(call(url) for _ in range(concurrency * 4)))  # warm the pool
    left = calls

    async def worker():
        nonlocal left
        while left > 0:
            left -= 1
            if await call(url) <= 0:
                raise RuntimeError(f"{client.name}: empty answer")

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / calls * 1e6


async def measure(base: str, names, calls: int, concurrency: int) -> dict:
    results: dict = {}
    for _round in range(2):
        for name in names:
            client = CLIENTS[name]()
            await client.open()
            try:
                for streamed, path in ((False, CHAT_PATH), (True, STREAM_PATH)):
                    key = "stream" if streamed else "unary"
                    row = results.setdefault(name, {})
                    try:
                        us = await _run(client, base + path, calls, concurrency, streamed)
                    except Exception as exc:  # a client that breaks under load is a finding too
                        row[key] = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
                        continue
                    best = row.get(key)
                    row[key] = us if not isinstance(best, float) else min(best, us)
            finally:
                await client.close()
    return results


def _cell(value) -> str:
    return f"{value:.1f}" if isinstance(value, float) else "failed"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import uvloop

    with tempfile.TemporaryDirectory(prefix="bench-clients-") as tmp, Procs(Path(tmp)) as procs:
        port = free_port()
        nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin")
        if nginx:
            child = procs.start("upstream", nginx_argv(nginx, Path(tmp), port))
        else:
            child = procs.start(
                "upstream", [sys.executable, "-m", "bench.upstream", "--port", str(port)]
            )
        base = f"http://127.0.0.1:{port}"
        wait_http(child, base + "/", timeout=20, ok=lambda status: True)
        names = [n for n in args.clients.split(",") if n]
        results = uvloop.run(measure(base, names, args.calls, args.concurrency))
    upstream = "nginx" if nginx else "bench.upstream (asyncio)"
    print(f"client CPU µs per upstream call, c={args.concurrency}, {args.calls} calls, {upstream}")
    print(f"{'client':<10}{'unary':>10}{'stream':>10}{'unary vs aiohttp':>20}")
    ref = results.get("aiohttp", {}).get("unary")
    for name, r in results.items():
        unary, stream = r["unary"], r["stream"]
        ratio = f"{unary / ref:.2f}x" if isinstance(unary, float) and ref else "-"
        print(f"{name:<10}{_cell(unary):>10}{_cell(stream):>10}{ratio:>20}")
        for value in (unary, stream):
            if not isinstance(value, float):
                print(f"  {name}: {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
