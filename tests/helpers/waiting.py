"""Waiting for effects that are eventual by design (the change feed, writes after a response)."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T],
    *,
    timeout: float = 5.0,
    interval: float = 0.05,
    since: float | None = None,
    what: str = "the expected effect",
) -> T:
    """Call `check` until it returns something truthy, and return that.

    A falsy result means "not yet"; anything `check` raises (a failed assertion too) fails at
    once. The deadline is `timeout` seconds after `since` (a time.monotonic() reading taken
    before the cause; default: now), so it can state a claim ("within one second of the
    change"), not only bound a wait.
    """
    deadline = (time.monotonic() if since is None else since) + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)
