"""Refused calls: the gateways' per-minute Redis counts (proxy/refusals.py) into RefusalHourly.

A run first claims every closed minute: the CLAIM script (livestate/refusals.py) renames the
minute's bucket to a claimed name no gateway writes to and lists it as claimed, atomically (a
flush that comes late starts a new bucket of the same minute, claimed by a later run). Then it
drains each claimed bucket: in one Postgres transaction it records the claimed name in
RefusalBucketDrained (unique) and adds the bucket's counts to RefusalHourly (an upsert adding
counts); only after the commit is the bucket deleted from Redis.

So a bucket is added exactly once: a worker killed before the commit leaves the claimed bucket
listed and nothing written, and the next run drains it; one killed after the commit and before
the deletion leaves a bucket whose name is recorded, and the next run only deletes it. Two
workers on one bucket meet at the record's unique index: the second waits for the first's
commit, then finds the name recorded and adds nothing (or, if the first rolled back, adds it
itself).
"""

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from billing.models import RefusalBucketDrained
from core.redis import client as redis_client
from livestate.keys import (
    REFUSALS_CLAIMED,
    REFUSALS_MINUTES,
    REFUSALS_TTL_SECONDS,
    refusals_claimed_bucket,
)
from livestate.refusals import CLAIM, parse_field
from teams.models import Team, VirtualKey

logger = logging.getLogger(__name__)

# A minute is closed this long after it ends: every gateway has flushed it (once a second).
GRACE_SECONDS = 10
# Records of drained buckets outlive the buckets themselves (which expire with their counts).
DRAINED_KEPT = timedelta(seconds=REFUSALS_TTL_SECONDS) + timedelta(days=1)

UPSERT = """
INSERT INTO billing_refusalhourly
    (period_start, organization_id, team_id, key_id, model, reason, count)
SELECT * FROM unnest(%(hours)s::timestamptz[], %(orgs)s::bigint[], %(teams)s::bigint[],
    %(keys)s::bigint[], %(models)s::text[], %(reasons)s::text[], %(counts)s::bigint[])
ON CONFLICT ON CONSTRAINT refusal_hourly_unique_group
DO UPDATE SET count = billing_refusalhourly.count + EXCLUDED.count
"""
RECORD = """
INSERT INTO billing_refusalbucketdrained (bucket, drained_at) VALUES (%s, %s)
ON CONFLICT (bucket) DO NOTHING
"""


def refusals_roll_up(*, now: float | None = None, limit: int = 1000) -> int:
    """Claim the closed minutes and drain every claimed bucket; returns the buckets drained."""
    client = redis_client()
    now = time.time() if now is None else now
    claimed = _claim_closed(client, now=now, limit=limit)
    drained = 0
    for name in client.zrange(REFUSALS_CLAIMED, 0, limit - 1):
        drained += _drain(client, name.decode())
    if claimed or drained:
        logger.info("refusals: %d minute(s) claimed, %d bucket(s) drained", claimed, drained)
    RefusalBucketDrained.objects.filter(drained_at__lt=timezone.now() - DRAINED_KEPT).delete()
    return drained


def _claim_closed(client, *, now: float, limit: int) -> int:
    claim = client.register_script(CLAIM)
    before = int(now - GRACE_SECONDS) // 60  # minutes before this one are closed
    claimed = 0
    closed = client.zrangebyscore(REFUSALS_MINUTES, "-inf", f"({before}", start=0, num=limit)
    for raw in closed:
        name = raw.decode()
        minute = int(name.rsplit(":", 1)[1])
        target = refusals_claimed_bucket(minute, secrets.token_hex(8))
        claimed += claim(keys=[name, REFUSALS_MINUTES, REFUSALS_CLAIMED, target], args=[int(now)])
    return claimed


def minute_of_claimed(name: str) -> int:
    return int(name.rsplit(":", 2)[1])


def _drain(client, name: str) -> int:
    """Add one claimed bucket's counts to RefusalHourly once; 1 when this call added them."""
    counts = client.hgetall(name)
    added = 0
    if counts:
        hour = datetime.fromtimestamp(minute_of_claimed(name) * 60, UTC).replace(minute=0)
        with transaction.atomic(durable=True):
            with connection.cursor() as cursor:
                cursor.execute(RECORD, [name, timezone.now()])
                first = cursor.rowcount == 1
            if first:
                _add(hour, counts)
                added = 1
    _forget(client, name)
    return added


def _add(hour: datetime, counts: dict) -> None:
    groups = [(*parse_field(f.decode()), int(n)) for f, n in counts.items()]
    teams = dict(
        Team.objects.filter(pk__in={g[0] for g in groups if g[0]}).values_list(
            "pk", "organization_id"
        )
    )
    keys = set(
        VirtualKey.objects.filter(pk__in={g[1] for g in groups if g[1]}).values_list(
            "pk", flat=True
        )
    )
    merged: dict[tuple, int] = {}
    for team, key, reason, model, n in groups:
        if team and team not in teams:
            continue  # a team deleted since: its refusals go with it
        group = (team or None, key if key in keys else None, model[:200], reason[:64])
        merged[group] = merged.get(group, 0) + n
    if not merged:
        return
    rows = sorted(merged.items(), key=lambda item: repr(item[0]))
    params = {
        "hours": [hour] * len(rows),
        "orgs": [teams.get(g[0]) for g, _ in rows],
        "teams": [g[0] for g, _ in rows],
        "keys": [g[1] for g, _ in rows],
        "models": [g[2] for g, _ in rows],
        "reasons": [g[3] for g, _ in rows],
        "counts": [n for _, n in rows],
    }
    with connection.cursor() as cursor:
        cursor.execute(UPSERT, params)


def _forget(client, name: str) -> None:
    """After the commit: the bucket goes, and its listing (one slot: one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(name)
    pipe.zrem(REFUSALS_CLAIMED, name)
    pipe.execute()
