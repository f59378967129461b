"""Reads behind the panel's pages. Credits and usage numbers come from billing.selectors; this
module adds the cross-tenant views only the panel needs (dashboard, lists)."""

import logging
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDay, TruncMinute

from billing import selectors as billing
from billing import settlement
from billing.models import UsageRecord
from core.redis import client as redis_client
from teams.models import Team

logger = logging.getLogger(__name__)

PAGE_SIZE = 50


@dataclass(frozen=True)
class Page:
    rows: list
    next_cursor: str | None  # the last row's id: the next page starts below it
    is_first: bool


def keyset_page(queryset, cursor: str | None, size: int = PAGE_SIZE) -> Page:
    """Newest first, `size` rows below the cursor. Costs the same on page 1 and page 2,000
    (an index range scan on the primary key, no OFFSET and no COUNT), so lists stay fast at
    100,000 rows and more."""
    queryset = queryset.order_by("-pk")
    if cursor and cursor.isdigit() and len(cursor) < 19:
        queryset = queryset.filter(pk__lt=int(cursor))
        is_first = False
    else:
        is_first = True
    rows = list(queryset[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return Page(rows, str(rows[-1].pk) if more else None, is_first)


def usage_numbers(queryset) -> dict:
    """The dashboard's figures for a set of usage records."""
    return queryset.aggregate(
        requests=Count("id"),
        errors=Count("id", filter=Q(status=UsageRecord.Status.ERROR)),
        cost_micros=Sum("cost_micros", default=0),
        price_micros=Sum("price_micros", default=0),
    )


def dashboard(*, now) -> dict:
    """Spend and price today and this month, traffic, leaders and teams near their budget."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    this_month = UsageRecord.objects.filter(created_at__gte=month)
    last_hour = UsageRecord.objects.filter(created_at__gte=now - timedelta(hours=1))
    hour_numbers = usage_numbers(last_hour)
    per_minute = {
        row["minute"]: row["n"]
        for row in last_hour.annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("id"))
    }
    minute0 = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    minutes = [minute0 + timedelta(minutes=i) for i in range(60)]
    daily_start = day - timedelta(days=29)
    daily = {
        row["day"]: row
        for row in UsageRecord.objects.filter(created_at__gte=daily_start)
        .annotate(day=TruncDay("created_at"))
        .values("day")
        .annotate(price_micros=Sum("price_micros"), cost_micros=Sum("cost_micros"))
    }
    days = [daily_start + timedelta(days=i) for i in range(30)]
    top_teams = list(
        this_month.values("team_id")
        .annotate(price_micros=Sum("price_micros"), requests=Count("id"))
        .order_by("-price_micros")[:5]
    )
    teams = Team.objects.select_related("organization").in_bulk([r["team_id"] for r in top_teams])
    for row in top_teams:
        row["team"] = teams[row["team_id"]]
    top_models = list(
        this_month.values("model")
        .annotate(price_micros=Sum("price_micros"), requests=Count("id"))
        .order_by("-price_micros")[:5]
    )
    return {
        "today": usage_numbers(this_month.filter(created_at__gte=day)),
        "month": usage_numbers(this_month),
        "last_hour": hour_numbers,
        "requests_per_minute": round(hour_numbers["requests"] / 60, 1),
        "per_minute": [(m, per_minute.get(m, 0)) for m in minutes],
        "daily": [
            (
                d,
                (daily.get(d) or {}).get("price_micros") or 0,
                (daily.get(d) or {}).get("cost_micros") or 0,
            )
            for d in days
        ],
        "top_teams": top_teams,
        "top_models": top_models,
        "budget_watch": budget_watch(),
        "settlement": settlement_health(now=now),
    }


def settlement_health(*, now) -> dict | None:
    """Calls the gateway has handed off that Postgres has not settled yet, and records parked
    as dead letters (billing.settlement.backlog). None: Redis is unreachable."""
    try:
        backlog = settlement.backlog(redis_client(), now=now.timestamp())
    except redis.RedisError:
        logger.warning("dashboard: Redis unreachable for settlement health", exc_info=True)
        return None
    return {
        "waiting": backlog.waiting,
        "oldest_seconds": backlog.oldest_unsettled_seconds if backlog.waiting else None,
        "dead_letters": backlog.dead_letters,
    }


def budget_watch(limit: int = 10) -> list[dict]:
    """Teams in the warning or exceeded state of their period budget, fullest first.

    The database ranks teams with a budget by spend / limit; billing's credits_summary then
    decides each one's state, so the panel and the API never disagree about it."""
    candidates = (
        Team.objects.filter(budget_limit_micros__gt=0, account__period_spend_micros__gt=0)
        .exclude(budget_period=Team.BudgetPeriod.NONE)
        .select_related("account", "organization")
        .annotate(fill=F("account__period_spend_micros") * 1.0 / F("budget_limit_micros"))
        .order_by("-fill")[: limit * 3]
    )
    watch = []
    for team in candidates:
        summary = billing.credits_summary(team=team)
        if summary["budget_state"] in ("warning", "exceeded"):
            watch.append({**summary, "team": team})
    return watch[:limit]


def team_usage(*, team, now, days: int = 30) -> dict:
    """A team's usage by day and by model over the last `days` days, for its chart."""
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    scope = {"team": team}
    by_model = billing.usage_summary(scope=scope, start=start, end=now, group_by="model")
    cells = (
        UsageRecord.objects.filter(team=team, created_at__gte=start, created_at__lt=now)
        .annotate(day=TruncDay("created_at"))
        .values("day", "model")
        .annotate(price_micros=Sum("price_micros"))
    )
    grid: dict = {}
    for cell in cells:
        grid.setdefault(cell["model"], {})[cell["day"].date()] = cell["price_micros"]
    return {
        "start": start,
        "days": [(start + timedelta(days=i)).date() for i in range(days)],
        "by_model": by_model,
        "grid": grid,
    }


def job_totals_for(jobs: list) -> list:
    """Attach billing's per-job totals (calls, tokens, cost, price) to a page of jobs.

    One aggregate over just these jobs, after the keyset page is cut: the cost of a page does
    not grow with the team's number of jobs or calls."""
    from billing.models import Job

    totals = {
        row["pk"]: row
        for row in Job.objects.filter(pk__in=[job.pk for job in jobs])
        .values("pk")
        .annotate(**billing.JOB_TOTALS)
    }
    for job in jobs:
        for name, value in totals[job.pk].items():
            if name != "pk":
                setattr(job, name, value)
        job.totals = billing.job_totals(job)
    return jobs
