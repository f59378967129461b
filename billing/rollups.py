"""Usage roll-ups (hourly and daily sums) and the pruning of raw call records.

A database trigger marks the team-hour of every inserted or updated UsageRecord as pending
(billing_usagerolluppending), in the writer's own transaction. A roll-up run claims pending
team-hours of closed hours with SKIP LOCKED, recomputes each one whole from the raw records,
recomputes the days they belong to from the hourly rows, and deletes the marks, all in one
transaction. So a roll-up row is exact whenever its team-hour is not pending, in every
snapshot, and running the same hour again writes the same rows: nothing is ever added twice.
The usage API (billing.selectors.usage_summary) reads roll-ups for what is not pending and
raw records for the rest.

Raw records are pruned after USAGE_RAW_RETENTION_DAYS, only from team-hours already rolled up.
"""

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing import partitions
from billing.models import UsageRollupPending

logger = logging.getLogger(__name__)

# A closed hour is rolled up this long after it ends, once the settlement of its last calls
# (seconds behind) has landed; a later arrival only marks it pending again.
GRACE = timedelta(minutes=2)
# Hours this close to the pruning cutoff are never recomputed: their raw records may be gone.
PRUNED_MARGIN = timedelta(days=1)

# Every statement below takes the claimed team-hours (or their team-days) as two arrays.
DELETE_HOURS = """
DELETE FROM billing_usagehourly h
USING unnest(%(teams)s::bigint[], %(hours)s::timestamptz[]) AS c(team_id, hour)
WHERE h.team_id = c.team_id AND h.period_start = c.hour
"""
INSERT_HOURS = """
INSERT INTO billing_usagehourly (
    period_start, organization_id, team_id, key_id, model, model_group, requests, errors,
    cache_hits, input_tokens, output_tokens, cost_micros, price_micros, cache_read_tokens,
    cache_write_tokens, reasoning_tokens, audio_input_tokens, audio_output_tokens, image_count,
    audio_ms, characters)
SELECT c.hour, u.organization_id, u.team_id, u.key_id, u.model, u.model_group,
    count(*),
    count(*) FILTER (WHERE u.status <> 'ok'),
    count(*) FILTER (WHERE u.cache_hit),
    coalesce(sum(u.input_tokens), 0),
    coalesce(sum(u.output_tokens), 0),
    coalesce(sum(u.cost_micros), 0),
    coalesce(sum(u.price_micros), 0),
    coalesce(sum(u.cache_read_tokens), 0),
    coalesce(sum(u.cache_write_tokens), 0),
    coalesce(sum(u.reasoning_tokens), 0),
    coalesce(sum(u.audio_input_tokens), 0),
    coalesce(sum(u.audio_output_tokens), 0),
    coalesce(sum(u.image_count), 0),
    coalesce(sum(u.audio_ms), 0),
    coalesce(sum(u.characters), 0)
FROM unnest(%(teams)s::bigint[], %(hours)s::timestamptz[]) AS c(team_id, hour)
-- LATERAL: one index range scan per team-hour, never a scan of the whole table.
CROSS JOIN LATERAL (
    SELECT * FROM billing_usagerecord r
    WHERE r.team_id = c.team_id
      AND r.created_at >= c.hour AND r.created_at < c.hour + interval '1 hour'
    OFFSET 0  -- a fence: the planner would flatten this into a join over the whole table
) AS u
GROUP BY c.hour, u.organization_id, u.team_id, u.key_id, u.model, u.model_group
"""
DELETE_DAYS = """
DELETE FROM billing_usagedaily d
USING unnest(%(teams)s::bigint[], %(days)s::timestamptz[]) AS c(team_id, day)
WHERE d.team_id = c.team_id AND d.period_start = c.day
"""
INSERT_DAYS = """
INSERT INTO billing_usagedaily (
    period_start, organization_id, team_id, key_id, model, model_group, requests, errors,
    cache_hits, input_tokens, output_tokens, cost_micros, price_micros, cache_read_tokens,
    cache_write_tokens, reasoning_tokens, audio_input_tokens, audio_output_tokens, image_count,
    audio_ms, characters)
SELECT c.day, h.organization_id, h.team_id, h.key_id, h.model, h.model_group,
    sum(h.requests), sum(h.errors), sum(h.cache_hits), sum(h.input_tokens),
    sum(h.output_tokens), sum(h.cost_micros), sum(h.price_micros),
    sum(h.cache_read_tokens), sum(h.cache_write_tokens), sum(h.reasoning_tokens),
    sum(h.audio_input_tokens), sum(h.audio_output_tokens), sum(h.image_count), sum(h.audio_ms),
    sum(h.characters)
FROM unnest(%(teams)s::bigint[], %(days)s::timestamptz[]) AS c(team_id, day)
CROSS JOIN LATERAL (
    SELECT * FROM billing_usagehourly r
    WHERE r.team_id = c.team_id
      AND r.period_start >= c.day AND r.period_start < c.day + interval '1 day'
    OFFSET 0
) AS h
GROUP BY c.day, h.organization_id, h.team_id, h.key_id, h.model, h.model_group
"""
ROLLED_UP = """
SELECT DISTINCT c.team_id, c.hour
FROM unnest(%(teams)s::bigint[], %(hours)s::timestamptz[]) AS c(team_id, hour)
JOIN billing_usagehourly h ON h.team_id = c.team_id AND h.period_start = c.hour
"""
# Two-key advisory locks in this namespace serialize the recomputation of one team-day.
DAY_LOCK_NAMESPACE = 0x7544  # arbitrary; unique within this database


def _utc_day(hour: datetime) -> datetime:
    return hour.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def usage_roll_up(*, now: datetime | None = None, batch_size: int = 500, max_batches: int = 40):
    """Roll up pending team-hours of closed hours; returns how many team-hours were done."""
    now = now or timezone.now()
    newest = now - GRACE - timedelta(hours=1)
    oldest = now - timedelta(days=settings.USAGE_RAW_RETENTION_DAYS) + PRUNED_MARGIN
    done = 0
    for _ in range(max_batches):
        claimed = _roll_up_batch(newest=newest, oldest=oldest, batch_size=batch_size)
        done += claimed
        if claimed < batch_size:
            break
    return done


def _roll_up_batch(*, newest: datetime, oldest: datetime, batch_size: int) -> int:
    with transaction.atomic(durable=True):
        # Another worker's claims are skipped, not waited for: two runs never share a team-hour.
        claimed = list(
            UsageRollupPending.objects.filter(hour__lte=newest)
            .order_by("hour", "team_id")
            .select_for_update(skip_locked=True)
            .values_list("pk", "team_id", "hour")[:batch_size]
        )
        if not claimed:
            return 0
        team_hours = [(team, hour) for _, team, hour in claimed]
        skipped = _pruned_already(team_hours, oldest)
        if skipped:
            # A call arrived for an hour rolled up long ago, whose raw records may be pruned:
            # recomputing would replace the full sums with what is left. Keep the roll-up.
            logger.error(
                "usage arrived for %d rolled-up team-hour(s) older than the raw retention; "
                "kept as rolled up: %s",
                len(skipped),
                sorted(skipped)[:10],
            )
        _recompute([th for th in team_hours if th not in skipped])
        UsageRollupPending.objects.filter(pk__in=[pk for pk, _, _ in claimed]).delete()
    return len(claimed)


def _pruned_already(team_hours: list[tuple[int, datetime]], oldest: datetime) -> set:
    """The team-hours near or past the pruning cutoff that were rolled up before (an hour
    never rolled up was never pruned either: pruning skips pending team-hours)."""
    old = [(team, hour) for team, hour in team_hours if hour < oldest]
    if not old:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(ROLLED_UP, {"teams": [t for t, _ in old], "hours": [h for _, h in old]})
        return {(team, hour) for team, hour in cursor.fetchall()}


def _recompute(team_hours: list[tuple[int, datetime]]) -> None:
    if not team_hours:
        return
    team_days = sorted({(team, _utc_day(hour)) for team, hour in team_hours})
    hours = {"teams": [t for t, _ in team_hours], "hours": [h for _, h in team_hours]}
    days = {"teams": [t for t, _ in team_days], "days": [d for _, d in team_days]}
    # Two workers may hold different hours of one team-day; each must recompute the day after
    # the other's hours are committed, or the last one to commit would drop the other's hour.
    # Locks are taken in ascending key order, so waiting cannot deadlock.
    lock_keys = sorted(
        {(team * 100_003 + day.toordinal()) % 2_147_483_647 for team, day in team_days}
    )
    with connection.cursor() as cursor:
        for key in lock_keys:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [DAY_LOCK_NAMESPACE, key])
        cursor.execute(DELETE_HOURS, hours)
        cursor.execute(INSERT_HOURS, hours)
        cursor.execute(DELETE_DAYS, days)
        cursor.execute(INSERT_DAYS, days)


PRUNE_CALLS = """
DELETE FROM billing_usagerecord WHERE id IN (
    SELECT u.id FROM billing_usagerecord u
    WHERE u.created_at < %(cutoff)s
      -- Only what the roll-ups hold already.
      AND NOT EXISTS (
          SELECT 1 FROM billing_usagerolluppending p
          WHERE p.team_id = u.team_id AND p.hour = date_trunc('hour', u.created_at, 'UTC'))
      -- A job's calls go with the job, once it is closed and old enough itself.
      AND (u.job_id IS NULL OR EXISTS (
          SELECT 1 FROM billing_job j WHERE j.id = u.job_id AND j.closed_at < %(cutoff)s))
      -- A call whose compliance log is still kept stays readable with it.
      AND NOT EXISTS (SELECT 1 FROM billing_calllog l WHERE l.request_id = u.request_id)
    ORDER BY u.created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""
PRUNE_JOBS = """
DELETE FROM billing_job WHERE id IN (
    SELECT j.id FROM billing_job j
    WHERE j.closed_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM billing_usagerecord u WHERE u.job_id = j.id)
    ORDER BY j.closed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""


def usage_raw_prune(
    *, now: datetime | None = None, batch_size: int = 5000, max_batches: int = 200
) -> int:
    """Drop raw call records (and closed jobs) past USAGE_RAW_RETENTION_DAYS: whole monthly
    partitions where they may all go, then row by row in batches for the rest (the default
    partition's strays, and rows a job or a compliance log still keeps)."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.USAGE_RAW_RETENTION_DAYS)
    for name in partitions.drop_expired(cutoff=cutoff):
        logger.info("dropped usage partition %s (past %s)", name, cutoff)
    pruned = 0
    for statement in (PRUNE_CALLS, PRUNE_JOBS):
        for _ in range(max_batches):
            # One short transaction per batch: no long locks, and progress survives a kill.
            with transaction.atomic(durable=True), connection.cursor() as cursor:
                cursor.execute(statement, {"cutoff": cutoff, "limit": batch_size})
                deleted = cursor.rowcount
            pruned += deleted if statement is PRUNE_CALLS else 0
            if deleted < batch_size:
                break
    return pruned
