"""Reads over credits and usage, always scoped by the caller."""

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from billing.models import UsageRecord
from billing.periods import next_period_start, period_start


def credits_summary(*, team) -> dict:
    account = team.account
    limit = team.budget_limit_micros
    spend = account.period_spend_micros
    if limit is None or team.budget_period == "none":
        state = "no_budget"
    elif spend >= limit:
        state = "exceeded"
    elif team.alert_thresholds and spend * 100 >= min(team.alert_thresholds) * limit:
        state = "warning"
    else:
        state = "ok"
    return {
        "team": team.public_id,
        "balance_micros": account.balance_micros,
        "overdraft_limit_micros": account.overdraft_limit_micros,
        "available_micros": account.balance_micros + account.overdraft_limit_micros,
        "budget_period": team.budget_period,
        "budget_mode": team.budget_mode,
        "budget_limit_micros": limit,
        "period_spend_micros": spend,
        "budget_remaining_micros": None if limit is None else max(limit - spend, 0),
        "budget_state": state,
        "period_started_at": account.period_started_at,
        "next_reset_at": next_reset_at(account=account, period=team.budget_period),
    }


def next_reset_at(*, account, period: str):
    """When the next reset is due: the boundary after the period the account is in. In the
    past (the boundary just crossed) while that reset is pending, for seconds at most."""
    if account.period_started_at is None:
        return period_start(timezone.now(), period)  # the first period is about to start
    return next_period_start(account.period_started_at, period)


GROUPINGS = {"day": "day", "model": "model", "key": "key__public_id"}


def usage_summary(*, scope: dict, start, end, group_by: str) -> dict:
    """Totals and rows for usage in [start, end), grouped by day, model or key."""
    qs = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end, **scope)
    aggregates = {
        "requests": Count("id"),
        # Failed calls, ours or the upstream's, and requests the upstream refused.
        "errors": Count("id", filter=~Q(status=UsageRecord.Status.OK)),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        "cost_micros": Sum("cost_micros", default=0),
        "price_micros": Sum("price_micros", default=0),
    }
    column = GROUPINGS[group_by]
    if group_by == "day":
        qs_grouped = qs.annotate(day=TruncDay("created_at")).values("day")
    else:
        qs_grouped = qs.values(column)
    rows = []
    for row in qs_grouped.annotate(**aggregates).order_by(column):
        value = row.pop(column)
        rows.append({group_by: value.date().isoformat() if group_by == "day" else value, **row})
    return {"totals": qs.aggregate(**aggregates), "rows": rows}


# Per-job aggregates over its calls, as annotations (one query for a page of jobs).
JOB_TOTALS = {
    "n_calls": Count("calls"),
    "n_failed": Count("calls", filter=Q(calls__status=UsageRecord.Status.ERROR)),
    "in_tokens": Sum("calls__input_tokens", default=0),
    "out_tokens": Sum("calls__output_tokens", default=0),
    "calls_cost": Sum("calls__cost_micros", default=0),
    "calls_price": Sum("calls__price_micros", default=0),
}


def job_totals(job) -> dict:
    """A job's calls, tokens, cost and price (its calls' prices plus its own flat charge).
    Reads the JOB_TOTALS annotations when present, else aggregates."""
    if not hasattr(job, "n_calls"):
        values = type(job).objects.filter(pk=job.pk).aggregate(**JOB_TOTALS)
        for name, value in values.items():
            setattr(job, name, value)
    return {
        "calls": job.n_calls,
        "failed_calls": job.n_failed,
        "input_tokens": job.in_tokens,
        "output_tokens": job.out_tokens,
        "cost_micros": job.calls_cost,
        "price_micros": job.calls_price + job.charged_micros,
    }
