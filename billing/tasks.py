from celery import shared_task

from billing import partitions, reconcile, refusals, resets, rollups, settlement


def _periodic(*, soft: int, hard: int):
    """Billing's beat-driven tasks: acknowledged late, so each may run twice and every one is
    idempotent; no result kept; the soft limit (seconds) lets a run stop before the hard one."""
    return shared_task(ignore_result=True, acks_late=True, soft_time_limit=soft, time_limit=hard)


@_periodic(soft=50, hard=60)
def settle_usage():
    """Settle the gateway's usage stream into the ledger (idempotent; safe to overlap)."""
    return settlement.settle_usage()


@_periodic(soft=10, hard=15)
def reap_leases():
    """Release the calls of gateway instances that died (or restarted) mid-call, charging what
    the client had received; idempotent (each lease is released once, atomically)."""
    return settlement.reap_leases()


@_periodic(soft=50, hard=60)
def reap_abandoned():
    """Release reservations of calls whose gateway process died mid-call."""
    return settlement.reap_abandoned()


@_periodic(soft=50, hard=60)
def expire_jobs():
    """Close jobs left open past their time-to-live (idempotent: only open jobs close)."""
    return settlement.expire_jobs()


@_periodic(soft=540, hard=600)
def purge_call_logs():
    """Delete compliance logs past their team's retention period, in batches."""
    return settlement.purge_call_logs()


@_periodic(soft=50, hard=60)
def reset_budget_periods():
    """Start the budget period of every team whose calendar boundary has passed (exactly once
    per period: rows are claimed with SKIP LOCKED; see billing.resets)."""
    return resets.budget_periods_reset_due()


@_periodic(soft=100, hard=120)
def reconcile_gateway_state():
    """Repair the gateway's Redis account state from the ledger (and rebuild it after a flush)."""
    return len(reconcile.reconcile_gateway_state())


@_periodic(soft=240, hard=300)
def roll_up_usage():
    """Roll pending team-hours of closed hours into the hourly and daily aggregates (claimed
    with SKIP LOCKED and recomputed whole, so overlapping runs never count twice)."""
    return rollups.usage_roll_up()


@_periodic(soft=540, hard=600)
def prune_usage():
    """Drop raw call records past USAGE_RAW_RETENTION_DAYS: whole monthly partitions, then
    what is left row by row, in batches."""
    return rollups.usage_raw_prune()


@_periodic(soft=100, hard=120)
def ensure_usage_partitions():
    """Create the raw call records' partitions for this month and the next ones (idempotent)."""
    return len(partitions.ensure_ahead())


@_periodic(soft=50, hard=60)
def roll_up_refusals():
    """Move the gateways' closed minutes of refused-call counts from Redis into RefusalHourly
    (each bucket claimed, recorded as drained with its counts in one transaction, deleted after
    the commit: overlapping or repeated runs never add a bucket twice; see billing.refusals)."""
    return refusals.refusals_roll_up()
