"""Servers the tests run: the application in uvicorn, a throwaway Redis, a webhook receiver."""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# How often a stdlib server's serve_forever() looks for shutdown(): each stop waits up to this
# long (the default, 0.5 s, was half a second at the end of every test that ran one).
POLL_SECONDS = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The real ASGI application (gateway + mock upstream + Django) in uvicorn on a free port.

    Started once per test session (per xdist worker); each test gets a gateway of its own,
    built and started from that test's settings by start_gateway() on the server's event loop,
    and shut down by stop_gateway(): a test sees the server exactly as if it had been started
    for it, minus the seconds that starting uvicorn costs.
    """

    def __init__(self):
        import uvicorn

        from saas.server import HttpToolsProtocolWithDeadlines

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mock_url = f"{self.url}/mock/v1"
        self.gateway = None
        self._app = None
        self.loop: asyncio.AbstractEventLoop | None = None
        config = uvicorn.Config(
            self._application,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            http=HttpToolsProtocolWithDeadlines,  # as scripts/run.sh and the Dockerfile
            lifespan="on",
            interface="asgi3",
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _application(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if self._app is None:
            raise RuntimeError("a request reached the test server outside of a `live` test")
        return await self._app(scope, receive, send)

    async def _lifespan(self, receive, send):
        # The gateway's own start-up reads Postgres (it republishes an empty Redis), which a
        # test may touch only inside the test: start_gateway() does it there instead.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.loop = asyncio.get_running_loop()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def on_loop(self, coro, timeout: float = 30):
        """Run a coroutine on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start_gateway(self) -> None:
        """A new Gateway, read from the current settings and started as uvicorn's lifespan
        would: fresh Redis and HTTP pools, the change feed followed from now, a new breaker,
        in-memory keys, teams and catalog loaded from (a just-flushed) Redis."""
        from proxy.gateway import Gateway
        from saas.asgi import make_application

        gateway = Gateway()
        self.on_loop(gateway.startup())
        self.gateway = gateway
        self._app = make_application(gateway)

    def stop_gateway(self) -> None:
        gateway, self.gateway, self._app = self.gateway, None, None
        if gateway is not None:
            try:
                self.on_loop(gateway.shutdown())
            except TimeoutError:
                raise AssertionError(
                    "the gateway's shutdown did not finish in 30 s\n" + self.where_stuck()
                ) from None

    def where_stuck(self) -> str:
        """The server thread's stack and its loop's pending tasks, to tell a blocked loop from
        a task that never finishes."""
        import traceback

        frame = sys._current_frames().get(self.thread.ident)
        lines = ["server thread:", *traceback.format_stack(frame)] if frame else []
        for task in asyncio.all_tasks(self.loop):
            lines += [f"task {task.get_name()}:", *map(str, task.get_stack(limit=8))]
        return "\n".join(lines)


def server_command(port: int) -> list[str]:
    """scripts/run.sh's server line, on another port (the same flags, read from the script)."""
    script = (Path(__file__).resolve().parents[2] / "scripts" / "run.sh").read_text()
    line = script.split(".venv/bin/uvicorn ", 1)[1].split("&\n", 1)[0]
    argv = line.replace("\\\n", " ").replace('"$PORT"', str(port)).split()
    return [sys.executable, "-m", "uvicorn", *argv]


class ServerProcess:
    """The application as `make run` serves it, in a process of its own, on this test's
    database and Redis (and the test's settings for keys and secrets, plus `env`)."""

    def __init__(self, redis_url: str, **env: str):
        from django.conf import settings

        database = settings.DATABASES["default"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ENV_FILE": os.devnull,
            "DEBUG": "true",
            "DATABASE_URL": (
                f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
                f"{database['NAME']}"
            ),
            "REDIS_URL": redis_url,
            "MASTER_KEY": settings.MASTER_KEY,
            "SECRETS_ENCRYPTION_KEYS": ",".join(settings.SECRETS_ENCRYPTION_KEYS),
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 30) -> "ServerProcess":
        import httpx

        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            server_command(self.port),
            cwd=Path(__file__).resolve().parents[2],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.kill()
                raise RuntimeError(f"the server did not start: {self.output()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no shutdown, no settlement, nothing flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> str:
        """Ctrl-C, as make run's user would; returns the server's log."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.output()

    def output(self) -> str:
        if self.process is None:
            return ""
        try:
            return self.process.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.communicate(timeout=10)[0]


class RedisServer:
    """A throwaway redis-server on a free loopback port: nothing saved, gone when stopped.
    With persistent=True it keeps an append-only file fsynced before every reply (as
    production should), so kill() and restart() on the same port bring its data back."""

    def __init__(self, persistent: bool = False):
        self.binary = shutil.which("redis-server")
        self.process: subprocess.Popen | None = None
        self.dir = tempfile.TemporaryDirectory(prefix="tollgate-test-redis-")
        self.url = ""
        self.port = 0
        self.persistence = {"appendonly": "yes", "appendfsync": "always"} if persistent else {}

    @classmethod
    def available(cls) -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> "RedisServer":
        import redis

        for _ in range(5):  # a free port can be taken by someone else before we bind it
            port = self.port or free_port()
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "save": "",
                "appendonly": "no",
                "daemonize": "no",
                "dir": self.dir.name,
                "loglevel": "warning",
                **self.persistence,
            }
            argv = [self.binary]
            for name, value in options.items():
                argv += [f"--{name}", value]
            self.process = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(self.url, socket_timeout=1)
            deadline = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(redis.ConnectionError):  # also while loading the AOF
                    client.ping()
                    client.close()
                    self.port = port
                    return self
                time.sleep(0.02)
            self.stop()
        raise RuntimeError("could not start a redis-server for the tests")

    def kill(self) -> None:
        """kill -9: no shutdown, no last write; what it acknowledged is on disk or nowhere."""
        self.process.kill()
        self.process.wait(5)
        self.process = None

    def restart(self) -> "RedisServer":
        """Start again on the same port and directory (reading its append-only file)."""
        return self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


class Receiver:
    """A webhook receiver: a real HTTP server on localhost that answers with scripted status
    codes (200 once the script runs out) and records every request it gets."""

    def __init__(self):
        self.statuses: list[int] = []
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append((headers, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/tollgate"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class RedisClusterServer:
    """A throwaway Redis Cluster of three masters (no replicas) on free loopback ports, made by
    `redis-cli --cluster create`: nothing saved, gone when stopped."""

    MASTERS = 3

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="tollgate-test-cluster-")
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []

    @classmethod
    def available(cls) -> bool:
        return all(shutil.which(b) for b in ("redis-server", "redis-cli"))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> "RedisClusterServer":
        import redis

        for i in range(self.MASTERS):
            port = free_port()
            node_dir = f"{self.dir.name}/{i}"
            os.makedirs(node_dir)
            argv = [
                shutil.which("redis-server"),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                # The bus port defaults to port + 10000, past 65535 for a high free port.
                "--cluster-port", str(free_port()),
                "--cluster-config-file", f"{node_dir}/nodes.conf",
                "--cluster-node-timeout", "5000",
                "--save", "",
                "--appendonly", "no",
                "--dir", node_dir,
                "--loglevel", "warning",
            ]  # fmt: skip
            self.processes.append(
                subprocess.Popen(  # noqa: S603 - our own argv, no shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            self.ports.append(port)
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p, socket_timeout=1).ping())
        create = [shutil.which("redis-cli"), "--cluster", "create"]
        create += [f"127.0.0.1:{p}" for p in self.ports]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(  # noqa: S603 - our own argv, no shell
            create,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )

        def ready() -> bool:
            for port in self.ports:
                info = redis.Redis(port=port, socket_timeout=1).cluster("info")
                if info.get("cluster_state") != "ok":
                    return False
            return True

        self._wait(ready)
        return self

    def _wait(self, probe, timeout: float = 20) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if probe() is not False:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the test Redis Cluster did not come up")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes = []
