from celery import shared_task

from billing import reconcile, resets, rollups, settlement


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=50, time_limit=60)
def settle_usage():
    """Settle the gateway's usage stream into the ledger (idempotent; safe to overlap)."""
    return settlement.settle_usage()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=50, time_limit=60)
def reap_abandoned():
    """Release reservations of calls whose gateway process died mid-call."""
    return settlement.reap_abandoned()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=50, time_limit=60)
def expire_jobs():
    """Close jobs left open past their time-to-live (idempotent: only open jobs close)."""
    return settlement.expire_jobs()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=540, time_limit=600)
def purge_call_logs():
    """Delete compliance logs past their team's retention period, in batches."""
    return settlement.purge_call_logs()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=50, time_limit=60)
def reset_budget_periods():
    """Start the budget period of every team whose calendar boundary has passed (exactly once
    per period: rows are claimed with SKIP LOCKED; see billing.resets)."""
    return resets.budget_periods_reset_due()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=100, time_limit=120)
def reconcile_gateway_state():
    """Repair the gateway's Redis account state from the ledger (and rebuild it after a flush)."""
    return len(reconcile.reconcile_gateway_state())


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=240, time_limit=300)
def roll_up_usage():
    """Roll pending team-hours of closed hours into the hourly and daily aggregates (claimed
    with SKIP LOCKED and recomputed whole, so overlapping runs never count twice)."""
    return rollups.usage_roll_up()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=540, time_limit=600)
def prune_usage():
    """Delete raw call records past USAGE_RAW_RETENTION_DAYS, in batches."""
    return rollups.usage_raw_prune()
