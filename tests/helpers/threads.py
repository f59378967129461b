"""Real threads racing on real Postgres, for the tests of concurrency claims."""

import threading
from concurrent.futures import ThreadPoolExecutor

from django.db import connection


def on_own_connection(fn):
    """fn run on its own database connection, as a separate request or worker would: Django
    opens one per thread, and this closes it when fn returns, so none outlives the test."""

    def run(*args):
        try:
            return fn(*args)
        finally:
            connection.close()

    return run


def race(fn, n: int, *, timeout: float = 120) -> list:
    """fn(0) … fn(n - 1) on n threads released together by a barrier, so that they really
    overlap, each on its own connection; their results in order. A thread's exception is
    raised here, and so is a TimeoutError when they are not all done within `timeout` s."""
    barrier = threading.Barrier(n)

    @on_own_connection
    def start(i):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(start, range(n), timeout=timeout))
