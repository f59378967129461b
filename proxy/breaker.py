"""The gateway's circuit breaker: which models to try last, per gateway process.

A model is open (tried last) when the health probe marks it down, or when this process saw
`threshold` consecutive failed attempts at it (connection errors, timeouts and every upstream
answer that makes the gateway fall back: 5xx, 429, 401/403/404 …). Open models are moved to
the end of a group's fallback order, never removed, so a group whose every model is down
still makes its calls. After `cooldown` seconds the model is half-open: the next request that
routes through it tries it in its normal place, and the cooldown starts again at once, so at
most one request per cooldown is the trial. A success closes the model; a failure leaves it
open.

Probe verdicts act on changes only (up -> down opens, down -> anything closes): between probe
rounds, live traffic is the better witness. All state is in plain dicts touched only from the
event loop, so there are no locks and no I/O; with nothing open, `order` is one truthiness
check and `succeeded` two.
"""

import time
from collections.abc import Sequence
from typing import Protocol, TypeVar


class _Routed(Protocol):
    id: str


R = TypeVar("R", bound=_Routed)


class Breaker:
    __slots__ = ("_failures", "_open_until", "_probed", "cooldown", "threshold")

    def __init__(self, threshold: int = 5, cooldown: float = 30.0):
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures: dict[str, int] = {}  # model id -> consecutive failed attempts
        self._open_until: dict[str, float] = {}  # model id -> monotonic end of its cooldown
        self._probed: dict[str, str] = {}  # model id -> last probe status seen

    def order(self, routes: Sequence[R]) -> Sequence[R]:
        """The routes to try, open ones last (in their original order)."""
        if not self._open_until:
            return routes
        now = time.monotonic()
        ready: list[R] = []
        tripped: list[R] = []
        for route in routes:
            until = self._open_until.get(route.id)
            if until is None:
                ready.append(route)
            elif now >= until:
                self._open_until[route.id] = now + self.cooldown  # this request is the trial
                ready.append(route)
            else:
                tripped.append(route)
        return ready + tripped if tripped else routes

    def succeeded(self, model_id: str) -> None:
        if self._failures or self._open_until:
            self._failures.pop(model_id, None)
            self._open_until.pop(model_id, None)

    def failed(self, model_id: str) -> None:
        count = self._failures.get(model_id, 0) + 1
        self._failures[model_id] = count
        if count >= self.threshold or model_id in self._open_until:
            self._open_until[model_id] = time.monotonic() + self.cooldown

    def probed(self, model_id: str, status: str) -> None:
        """A probe verdict published by the control plane."""
        before = self._probed.get(model_id)
        if status == before:
            return
        self._probed[model_id] = status
        if status == "down":
            self._open_until[model_id] = time.monotonic() + self.cooldown
        elif before == "down":
            self._failures.pop(model_id, None)
            self._open_until.pop(model_id, None)

    def is_open(self, model_id: str) -> bool:
        """Whether the model is tried last right now (for tests and diagnostics)."""
        until = self._open_until.get(model_id)
        return until is not None and time.monotonic() < until
