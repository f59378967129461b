"""Load generation and probes: wrk when installed, else a Python generator; a TTFB probe.

Every measurement sends the same POST (body, Content-Type, Authorization) over keep-alive
connections to one loopback address; latency is from writing the request to the last byte of
the response. Non-2xx answers and socket errors (connect, read, write, timeout) are errors.

`python -m bench.load --target-file T --concurrency C --duration D [--limit N]` runs the
Python generator in its own process (it needs a core of its own, as wrk does) and prints JSON;
unlike wrk it can also stop after N requests.
"""

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httptools


@dataclass
class Target:
    """One POST endpoint with the exact request to send."""

    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def path(self) -> str:
        return urlsplit(self.url).path or "/"

    def raw(self) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        lines += [f"Content-Length: {len(self.body)}", "", ""]
        return "\r\n".join(lines).encode() + self.body

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "headers": self.headers, "body": self.body.decode()})

    @classmethod
    def from_json(cls, text: str) -> "Target":
        d = json.loads(text)
        return cls(d["url"], d["headers"], d["body"].encode())


@dataclass
class LoadResult:
    tool: str
    concurrency: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors

    def to_dict(self) -> dict:
        return {**asdict(self), "errors": self.errors}


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# ---- wrk ----

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50":%.3f,"p90":%.3f,"p99":%.3f,"mean":%.3f,"max":%.3f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


# wrk runs for a time, not a count: after `limit` responses this stops its (single) thread,
# then interrupts wrk's main thread, which sleeps out -d, so that it reports at once. The kill
# runs in the background because system() ignores SIGINT in wrk while it waits.
_WRK_LIMIT = """
local responses = 0
function response()
  responses = responses + 1
  if responses == {limit} then
    wrk.thread:stop()
    os.execute("(sleep 0.05; kill -INT $PPID) &")
  end
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(target: Target, limit: int | None = None) -> str:
    body = target.body.decode()
    assert "]==]" not in body
    headers = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in target.headers.items()
    )
    script = _WRK_SCRIPT.format(body=body, headers=headers)
    return script + (_WRK_LIMIT.format(limit=int(limit)) if limit else "")


def run_wrk(
    wrk: str,
    target: Target,
    *,
    concurrency: int,
    duration: float,
    workdir: Path,
    limit: int | None = None,
    timeout_s: float = 10.0,
) -> LoadResult:
    """wrk for `duration` seconds (whole seconds), or until `limit` responses if sooner."""
    script = workdir / f"wrk-{concurrency}.lua"
    script.write_text(wrk_script(target, limit))
    # One thread, as in the reference measurements: it drives ~100k req/s from one core and
    # leaves the other to the system under test.
    cmd = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:.0f}s",
        "-s",
        str(script),
        target.url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_s + 60)
    match = re.search(r"^BENCH_RESULT (\{.*\})$", done.stdout, re.M)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    r = json.loads(match.group(1))
    seconds = r["duration_us"] / 1e6
    return LoadResult(
        tool="wrk",
        concurrency=concurrency,
        seconds=seconds,
        requests=r["requests"],
        rps=r["requests"] / seconds if seconds else 0.0,
        p50_ms=r["p50"] / 1000,
        p90_ms=r["p90"] / 1000,
        p99_ms=r["p99"] / 1000,
        mean_ms=r["mean"] / 1000,
        max_ms=r["max"] / 1000,
        non2xx=r["status"],
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
    )


# ---- Python load generator ----


class _Reply:
    """httptools callbacks for one response."""

    def __init__(self):
        self.first_body_ns = 0
        self.body: list[bytes] = []
        self.done = False

    def on_body(self, data: bytes) -> None:
        if not self.first_body_ns:
            self.first_body_ns = time.perf_counter_ns()
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.done = True


class _Generator:
    """Keeps `concurrency` keep-alive connections busy until the deadline or the limit."""

    def __init__(self, target: Target, stop_at: float, limit: int | None, timeout: float):
        self.target, self.raw = target, target.raw()
        self.stop_at, self.limit, self.timeout = stop_at, limit, timeout
        self.latencies_ns: list[int] = []
        self.non2xx = self.socket_errors = self.started = 0
        self.open: set[_Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.finished = asyncio.get_running_loop().create_future()

    def more(self) -> bool:
        return time.monotonic() < self.stop_at and not (self.limit and self.started >= self.limit)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        while self.more():
            try:
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(self), self.target.host, self.target.port
                    ),
                    self.timeout,
                )
                return
            except (OSError, TimeoutError):
                self.socket_errors += 1
                await asyncio.sleep(0.05)
        self.maybe_finish()

    def reconnect(self) -> None:
        task = asyncio.ensure_future(self.connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def maybe_finish(self) -> None:
        if not self.open and not self.tasks and not self.more() and not self.finished.done():
            self.finished.set_result(None)

    async def watchdog(self) -> None:
        """Abort connections whose request has waited longer than the timeout."""
        while not self.finished.done():
            await asyncio.sleep(0.5)
            now = time.perf_counter_ns()
            for conn in list(self.open):
                if conn.t0 and now - conn.t0 > self.timeout * 1e9:
                    conn.transport.abort()
            self.maybe_finish()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: write, parse the response, write the next."""

    def __init__(self, gen: _Generator):
        self.gen = gen
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.t0 = 0  # when the outstanding request was written; 0 when none is
        self.done = False  # closed by us: no more requests to send

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.gen.open.add(self)
        self._send()

    def _send(self) -> None:
        if not self.gen.more():
            self.done = True
            self.transport.close()
            return
        self.gen.started += 1
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.gen.raw)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.abort()

    def on_message_complete(self) -> None:
        gen = self.gen
        gen.latencies_ns.append(time.perf_counter_ns() - self.t0)
        self.t0 = 0
        if not 200 <= self.parser.get_status_code() < 300:
            gen.non2xx += 1
        if self.parser.should_keep_alive():
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        gen = self.gen
        gen.open.discard(self)
        if self.t0:  # a request was outstanding: it failed
            gen.socket_errors += 1
        if not self.done:
            gen.reconnect()
        gen.maybe_finish()


async def _generate(
    target: Target, concurrency: int, duration: float, limit: int | None, timeout: float
) -> LoadResult:
    t0 = time.monotonic()
    gen = _Generator(target, t0 + duration, limit, timeout)
    await asyncio.gather(*(gen.connect() for _ in range(concurrency)))
    watchdog = asyncio.ensure_future(gen.watchdog())
    await gen.finished
    watchdog.cancel()
    seconds = time.monotonic() - t0
    lat = sorted(x / 1e6 for x in gen.latencies_ns)
    return LoadResult(
        tool="python",
        concurrency=concurrency,
        seconds=seconds,
        requests=len(lat),
        rps=len(lat) / seconds if seconds else 0.0,
        p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90),
        p99_ms=percentile(lat, 99),
        mean_ms=sum(lat) / len(lat) if lat else 0.0,
        max_ms=lat[-1] if lat else 0.0,
        non2xx=gen.non2xx,
        socket_errors=gen.socket_errors,
    )


def run_python(
    target: Target,
    *,
    concurrency: int,
    duration: float,
    workdir: Path,
    limit: int | None = None,
    timeout_s: float = 10.0,
) -> LoadResult:
    spec = workdir / "python-load-target.json"
    spec.write_text(target.to_json())
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        "--target-file",
        str(spec),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--timeout",
        str(timeout_s),
    ]
    if limit:
        cmd += ["--limit", str(limit)]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=duration + timeout_s + 60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"python load generator failed: {done.stderr[-2000:]}")
    return LoadResult(**{k: v for k, v in json.loads(done.stdout).items() if k != "errors"})


# ---- sequential probes (in-process, blocking: the least client overhead per request) ----


class Probe:
    """One keep-alive connection; send a request, time the first body byte and the end."""

    def __init__(self, target: Target, timeout: float = 30.0):
        self.target = target
        self.raw = target.raw()
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.target.host, self.target.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def request(self) -> tuple[int, float, float, bytes]:
        """(status, ms to the first body byte, ms to the end, body)."""
        if self.sock is None:
            self.sock = self._connect()
        reply = _Reply()
        parser = httptools.HttpResponseParser(reply)
        t0 = time.perf_counter_ns()
        try:
            self.sock.sendall(self.raw)
            while not reply.done:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionResetError("closed by server")
                parser.feed_data(data)
        except Exception:
            self.close()
            raise
        end = time.perf_counter_ns()
        if not parser.should_keep_alive():
            self.close()
        first = reply.first_body_ns or end
        return parser.get_status_code(), (first - t0) / 1e6, (end - t0) / 1e6, b"".join(reply.body)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def one_request(target: Target, timeout: float = 30.0) -> tuple[int, bytes]:
    probe = Probe(target, timeout)
    try:
        status, _, _, body = probe.request()
    finally:
        probe.close()
    return status, body


@dataclass
class TtfbResult:
    requests: int
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    ttfb_mean_ms: float
    total_p50_ms: float
    errors: int


def ttfb_probe(target: Target, *, requests: int, warmup: int = 20) -> TtfbResult:
    """Sequential requests on one connection; time to the first body byte of each."""
    probe = Probe(target)
    ttfb, total, errors = [], [], 0
    try:
        for i in range(warmup + requests):
            try:
                status, first_ms, end_ms, _ = probe.request()
            except (OSError, httptools.HttpParserError):
                errors += i >= warmup
                continue
            if i < warmup:
                continue
            if 200 <= status < 300:
                ttfb.append(first_ms)
                total.append(end_ms)
            else:
                errors += 1
    finally:
        probe.close()
    ttfb.sort()
    total.sort()
    return TtfbResult(
        requests=requests,
        ttfb_p50_ms=percentile(ttfb, 50),
        ttfb_p99_ms=percentile(ttfb, 99),
        ttfb_mean_ms=sum(ttfb) / len(ttfb) if ttfb else 0.0,
        total_p50_ms=percentile(total, 50),
        errors=errors,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--target-file", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    target = Target.from_json(args.target_file.read_text())
    coro = _generate(target, args.concurrency, args.duration, args.limit, args.timeout)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
