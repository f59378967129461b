"""One definition of the settlement backlog (billing.settlement.backlog), shared by /metrics and
the dashboard: pending + undelivered records, the oldest one's age, and dead letters, summed
over every shard's stream."""

from billing import settlement
from core.redis import client as redis_client
from livestate.keys import SETTLER_GROUP, dead_letters, usage_stream

USAGE_STREAM, DEAD_LETTERS = usage_stream(0), dead_letters(0)
OTHER_SHARD = usage_stream(1)


def add_record(client, ms: int, stream: str = USAGE_STREAM) -> bytes:
    return client.xadd(stream, {"rec": b"{}", "charged": b"0"}, id=f"{ms}-0")


def test_an_empty_redis_has_no_backlog():
    assert settlement.backlog(redis_client(), now=100.0) == settlement.Backlog(
        length=0, pending=0, undelivered=0, oldest_unsettled_seconds=None, dead_letters=0
    )


def test_before_any_settler_ran_every_record_is_undelivered():
    # given
    client = redis_client()
    add_record(client, 10_000)
    add_record(client, 20_000, OTHER_SHARD)
    # when
    backlog = settlement.backlog(client, now=25.0)
    # then
    assert (backlog.length, backlog.pending, backlog.undelivered, backlog.waiting) == (2, 0, 2, 2)
    assert backlog.oldest_unsettled_seconds == 15.0


def test_a_record_taken_and_not_acknowledged_is_pending_and_the_oldest():
    # given: a settler took the first record (not acknowledged), one more is not taken yet
    client = redis_client()
    add_record(client, 10_000)
    settlement.ensure_group(client)
    client.xreadgroup(SETTLER_GROUP, "worker", {USAGE_STREAM: ">"}, count=1)
    add_record(client, 30_000)
    client.xadd(DEAD_LETTERS, {"error": b"bad"})
    # when
    backlog = settlement.backlog(client, now=40.0)
    # then
    assert (backlog.pending, backlog.undelivered, backlog.waiting) == (1, 1, 2)
    assert backlog.oldest_unsettled_seconds == 30.0
    assert backlog.dead_letters == 1


def test_an_acknowledged_record_no_longer_waits():
    # given
    client = redis_client()
    msg_id = add_record(client, 10_000)
    settlement.ensure_group(client)
    client.xreadgroup(SETTLER_GROUP, "worker", {USAGE_STREAM: ">"}, count=1)
    client.xack(USAGE_STREAM, SETTLER_GROUP, msg_id)
    # when
    backlog = settlement.backlog(client, now=40.0)
    # then
    assert (backlog.waiting, backlog.oldest_unsettled_seconds) == (0, None)
