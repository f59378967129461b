"""The usage records a gateway keeps for a replay after Redis loses its data: bounded in time and
in bytes, oldest dropped first."""

import time

from proxy.recovery import Recovery


def recovery(**bounds) -> Recovery:
    return Recovery(None, None, interval=0.2, rebuild_interval=0.5, **bounds)


def test_kept_records_stay_within_the_byte_bound_newest_first():
    kept = recovery(copy_seconds=60, copy_max_bytes=1_000)
    for i in range(5):
        kept.kept("acct", bytes([i]) * 300, i)
    assert [c[3] for c in kept.copies] == [2, 3, 4]
    assert kept.copy_bytes == 900


def test_kept_records_older_than_the_window_are_dropped():
    kept = recovery(copy_seconds=0.01)
    kept.kept("acct", b"old", 1)
    time.sleep(0.02)
    kept.kept("acct", b"new", 2)
    assert [c[3] for c in kept.copies] == [2]
    assert kept.copy_bytes == 3
