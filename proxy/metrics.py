"""In-process gateway metrics: the time a request spends in the gateway itself.

Overhead = the request's wall time minus the time spent waiting on upstreams (every attempt,
fallbacks included; for a stream, from the request to the upstream until the relay ends, so
per-chunk work of a stream counts as upstream time). One Histogram.observe per request: no I/O.
Refused calls are counted here too (GATEWAY_REFUSALS). Each process has its own metrics;
/metrics is served by the same process as the gateway (saas.asgi), so a scrape sees the
gateway it talks to.
"""

from contextvars import ContextVar
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

GATEWAY_OVERHEAD = Histogram(
    "tollgate_gateway_overhead_seconds",
    "Time a /v1 request spends in the gateway, excluding waits on upstreams.",
    buckets=(
        0.0001,
        0.00025,
        0.0005,
        0.00075,
        0.001,
        0.0015,
        0.002,
        0.003,
        0.005,
        0.0075,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
    ),
    registry=REGISTRY,
)


# Calls the gateway answered with an error (proxy/refusals.py counts them, one inc per call).
# team: the team's public id (its pk when the team is not in memory, "unauthenticated" when no
# key was recognised); reason: the error's code.
GATEWAY_REFUSALS = Counter(
    "tollgate_gateway_refusals",
    "Calls the gateway refused (answered with an error), by team and reason.",
    labelnames=["team", "reason"],
    registry=REGISTRY,
)


class RequestClock:
    __slots__ = ("started", "upstream")

    def __init__(self):
        self.started = perf_counter()
        self.upstream = 0.0


# The request's clock, visible to the code (and tasks) that handle it.
_clock: ContextVar[RequestClock | None] = ContextVar("tollgate_request_clock", default=None)


def request_started() -> RequestClock:
    clock = RequestClock()
    _clock.set(clock)
    return clock


def request_finished(clock: RequestClock) -> None:
    GATEWAY_OVERHEAD.observe(max(perf_counter() - clock.started - clock.upstream, 0.0))


def upstream_wait_ended(since: float) -> None:
    """Count the time from `since` (a perf_counter reading) as waiting on an upstream."""
    clock = _clock.get()
    if clock is not None:
        clock.upstream += perf_counter() - since
