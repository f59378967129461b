"""Monthly partitions of the raw call records (billing_usagerecord; see migration 0007).

Months: a busy deployment keeps millions of rows a day, but few partitions keep the lookups
that cannot name a month cheap (a request id, a team's key spend, a job's calls probe every
partition's index), and retention (USAGE_RAW_RETENTION_DAYS, 90 by default) is coarse anyway.

Ahead: ensure_ahead (a beat task, and the migration for its month and the next) keeps
MONTHS_AHEAD months beyond the current one. A record outside every month lands in the DEFAULT
partition, never refused; creating a month moves the rows the default holds for it.

Retention: drop_expired drops a month once all of it is older than the cutoff and none of its
rows must stay (the rules of rollups.PRUNE_CALLS: rolled up, the job closed long enough, no
compliance log kept); what it cannot drop yet is left to the row-level prune.
"""

import logging
from datetime import UTC, datetime, timedelta

from django.db import OperationalError, connection, transaction

logger = logging.getLogger(__name__)

PARENT = "billing_usagerecord"
DEFAULT = f"{PARENT}_default"
MONTHS_AHEAD = 2
# DDL takes strong locks on the parent or the default partition; waiting longer than this
# would stall settlement behind it. The next run tries again.
LOCK_TIMEOUT = "5s"


def month_start(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(month: datetime) -> datetime:
    return (month + timedelta(days=32)).replace(day=1)


def partition_name(month: datetime) -> str:
    return f"{PARENT}_p{month:%Y_%m}"


def months() -> list[tuple[str, datetime, datetime]]:
    """The monthly partitions that exist: (name, from, to), oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = %s::regclass AND c.relname <> %s
            """,
            [PARENT, DEFAULT],
        )
        rows = cursor.fetchall()
    found = []
    for name, bound in rows:
        # FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')
        low, high = (part.split("'")[1] for part in bound.split(" TO "))
        found.append((name, datetime.fromisoformat(low), datetime.fromisoformat(high)))
    return sorted(found, key=lambda p: p[1])


def ensure_ahead(*, now: datetime | None = None) -> list[str]:
    """Create this month's partition and MONTHS_AHEAD more if missing; returns those created."""
    month = month_start(now or datetime.now(UTC))
    existing = {name for name, _, _ in months()}
    created = []
    for _ in range(MONTHS_AHEAD + 1):
        name = partition_name(month)
        if name not in existing:
            create_month(month)
            created.append(name)
        month = next_month(month)
    return created


def create_month(month: datetime) -> None:
    """Create the partition of one month, moving into it what the default holds for it.

    Built beside the parent and attached, not CREATE ... PARTITION OF: attaching locks the
    parent only against other DDL (SHARE UPDATE EXCLUSIVE), so settlement goes on."""
    name, low, high = partition_name(month), month, next_month(month)
    bounds = {"low": low, "high": high}
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(
            f'CREATE TABLE "{name}" (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        )
        # Attaching scans the new table for rows out of range unless a constraint says so.
        cursor.execute(
            f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_range" '
            "CHECK (created_at >= %(low)s AND created_at < %(high)s)",
            bounds,
        )
        # Straight into the partitions, not through the parent: the rows stay in the same
        # team-hours, so the roll-ups' pending marks (a trigger on the parent) have nothing new.
        move = (
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= %(low)s "  # noqa: S608 - our own names
            f'AND created_at < %(high)s RETURNING *) INSERT INTO "{name}" SELECT * FROM moved'
        )
        cursor.execute(move, bounds)
        if cursor.rowcount:
            logger.warning("moved %d usage records from %s to %s", cursor.rowcount, DEFAULT, name)
        cursor.execute(
            f'ALTER TABLE {PARENT} ATTACH PARTITION "{name}" '
            "FOR VALUES FROM (%(low)s) TO (%(high)s)",
            bounds,
        )
        cursor.execute(f'ALTER TABLE "{name}" DROP CONSTRAINT "{name}_range"')


# Rows of one partition that must stay (the negation of rollups.PRUNE_CALLS's conditions).
MUST_STAY = """
SELECT EXISTS (
    SELECT 1 FROM "{name}" u
    WHERE EXISTS (
          SELECT 1 FROM billing_usagerolluppending p
          WHERE p.team_id = u.team_id AND p.hour = date_trunc('hour', u.created_at, 'UTC'))
       OR (u.job_id IS NOT NULL AND NOT EXISTS (
          SELECT 1 FROM billing_job j WHERE j.id = u.job_id AND j.closed_at < %(cutoff)s))
       OR EXISTS (SELECT 1 FROM billing_calllog l WHERE l.request_id = u.request_id)
)
"""


def drop_expired(*, cutoff: datetime) -> list[str]:
    """Drop every month wholly older than `cutoff` whose rows may all go; returns those dropped."""
    dropped = []
    for name, _, high in months():
        if high > cutoff:
            break
        try:
            if _drop_if_unneeded(name, cutoff):
                dropped.append(name)
        except OperationalError:  # the lock timed out: readers or DDL held it; next run
            logger.warning("could not drop usage partition %s now", name, exc_info=True)
    return dropped


def _drop_if_unneeded(name: str, cutoff: datetime) -> bool:
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # Locked before the check: a late record for this month cannot slip in between (its
        # insert waits, fails once the table is gone, and its redelivery lands in the default).
        cursor.execute(f'LOCK TABLE "{name}" IN ACCESS EXCLUSIVE MODE')
        cursor.execute(MUST_STAY.format(name=name), {"cutoff": cutoff})
        if cursor.fetchone()[0]:
            logger.info("usage partition %s is past retention but still needed", name)
            return False
        # Deferred foreign-key checks of rows written earlier in this transaction (only ever
        # in a caller's transaction, as in tests) must run before their table goes.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f'DROP TABLE "{name}"')
    return True
