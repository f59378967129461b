"""Child processes of one bench run, their readiness and their memory (read from /proc)."""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class StartError(RuntimeError):
    """A system did not come up; the message carries the tail of its log."""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child's own process group (workers included), SIGKILL if it lingers."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            try:
                # start_new_session made the child the leader of a group with its own id.
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        # Reap anything left in the group (nginx's worker, uvicorn's children).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


class Procs:
    """Starts children in new sessions and stops every one of them, whatever happens."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.children: list[Child] = []

    def start(
        self, name: str, argv: list[str], *, env: dict | None = None, cwd: Path | None = None
    ) -> Child:
        log = self.logdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        child = Child(name, popen, log)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        while self.children:
            self.stop(self.children[-1])

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis_server(procs: Procs, binary: str, workdir: Path) -> tuple[Child, str]:
    """A throwaway redis-server on a free loopback port, nothing saved: the bench flushes and
    counts commands on a Redis nobody else uses, and Procs stops it with everything else."""
    import redis

    for _ in range(5):  # a free port can be taken by someone else before redis binds it
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"]
        child = procs.start(f"redis-{port}", argv)
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while child.alive() and time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                client.close()
                return child, f"redis://127.0.0.1:{port}/0"
            time.sleep(0.05)
        procs.stop(child)
    raise StartError(f"redis-server did not start. Last lines of {child.log}:\n{child.tail()}")


def wait_http(child: Child, url: str, *, timeout: float, ok=lambda status: status < 500) -> None:
    """Poll url until it answers; raise StartError with the child's log tail otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise StartError(
                f"{child.name} exited with code {child.popen.returncode} before answering "
                f"{url}. Last lines of {child.log}:\n{child.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            last = str(exc)
            time.sleep(0.2)
            continue
        if ok(status):
            return
        last = f"HTTP {status}"
        time.sleep(0.2)
    raise StartError(
        f"{child.name} did not answer {url} within {timeout:.0f} s ({last}). "
        f"Last lines of {child.log}:\n{child.tail()}"
    )


# ---- memory, from /proc (Linux only) ----


def _status_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """pid and all its descendants alive now."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, ()))
    return found


def tree_rss_kib(pid: int) -> int:
    return sum(_status_kib(p, "VmRSS:") for p in tree(pid))


def tree_peak_kib(pid: int) -> int:
    """Sum of each process's own high-water mark: an upper bound of the tree's peak."""
    return sum(_status_kib(p, "VmHWM:") for p in tree(pid))


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by pid and its live descendants."""
    ticks = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, *, below: float = 0.10, window: float = 0.5, timeout: float = 60.0) -> bool:
    """Wait until the tree uses less than `below` of a core over `window` seconds.

    A load generator stops sending at the end of a run, but a slow server still works off the
    requests it had queued; the next run must not start behind that backlog."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        time.sleep(window)
        if tree_cpu_seconds(pid) - before < below * window:
            return True
    return False


@dataclass
class RssSampler:
    """Samples a process tree's resident memory every `every` seconds in a thread."""

    pid: int
    every: float = 2.0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, KiB)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def _sample(self) -> None:
        self.samples.append((time.monotonic() - self._t0, tree_rss_kib(self.pid)))

    def start(self) -> "RssSampler":
        self._t0 = time.monotonic()

        def run() -> None:
            while True:
                self._sample()
                if self._stop.wait(self.every):
                    return

        self._thread = threading.Thread(target=run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


class ForeignCpu:
    """Measures the CPU that processes outside this run use while it runs, in cores.

    The machine may be shared; a busy neighbour takes cores from the systems under test. Redis
    is not counted: the gateway itself keeps it busy."""

    IGNORED = ("redis-server",)

    def __init__(self, every: float = 1.0):
        self.every = every
        self.ticks = 0
        self._seen: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._hz = os.sysconf("SC_CLK_TCK")
        self._boot_ticks = 0  # when sampling began, in ticks since boot

    def _scan(self) -> None:
        ours = set(tree(os.getpid()))
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in ours:
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    name, _, rest = fh.read().rpartition(")")
            except OSError:
                continue
            if any(ignored in name for ignored in self.IGNORED):
                continue
            fields = rest.split()
            used, started = int(fields[11]) + int(fields[12]), int(fields[19])
            pid = int(entry)
            if pid in self._seen:
                self.ticks += max(0, used - self._seen[pid])
            elif self._boot_ticks and started >= self._boot_ticks:
                self.ticks += used  # born during the run: all of its time counts
            self._seen[pid] = used

    def start(self) -> "ForeignCpu":
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        self._scan()  # baseline: times before the run do not count
        self._boot_ticks = int(uptime * self._hz)
        self._t0 = time.monotonic()

        def run() -> None:
            while not self._stop.wait(self.every):
                self._scan()

        self._thread = threading.Thread(target=run, name="foreign-cpu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float:
        """Average cores used by other processes since start()."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._scan()
        elapsed = time.monotonic() - self._t0
        return self.ticks / self._hz / elapsed if elapsed else 0.0
