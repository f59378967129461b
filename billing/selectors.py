"""Reads over credits and usage, always scoped by the caller."""

from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from billing.models import USAGE_COUNTS, RefusalHourly, UsageRecord
from billing.periods import next_reset


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
    """When the next reset is due (billing.periods.next_reset)."""
    return next_reset(started_at=account.period_started_at, now=timezone.now(), period=period)


# What usage can be grouped by (one, or two joined with a comma: "day,model"). Every dimension
# but status is in the roll-ups; hours only in the hourly ones, so grouping by hour reads no
# daily rows. Per dimension: its expression over raw records (u), hourly (h) and daily (d)
# roll-ups; ORM_FIELDS: what the raw-records path groups by.
DIMENSIONS = {
    "day": (
        "date_trunc('day', u.created_at, 'UTC')",
        "date_trunc('day', h.period_start, 'UTC')",
        "d.period_start",
    ),
    # daily rows are never read when grouping by hour (usage_summary); typed for the UNION
    "hour": ("date_trunc('hour', u.created_at, 'UTC')", "h.period_start", "d.period_start"),
    "team": ("u.team_id", "h.team_id", "d.team_id"),
    "key": ("u.key_id", "h.key_id", "d.key_id"),
    "model": ("u.model", "h.model", "d.model"),
    "model_group": ("u.model_group", "h.model_group", "d.model_group"),
}
# Not in the roll-ups: read from the raw records (so within USAGE_RAW_RETENTION_DAYS). A call
# with several tags is in each tag's row (the totals count it once); untagged calls have none.
RAW_ONLY = {"status": "u.status", "end_user": "u.end_user", "tag": "t.tag"}
GROUPINGS = (*DIMENSIONS, *RAW_ONLY)
# Grouped by id, named by public id in the answer.
NAMED = {"key": "teams_virtualkey", "team": "teams_team"}
ORM_FIELDS = {
    "team": "team__public_id",
    "key": "key__public_id",
    "model": "model",
    "model_group": "model_group",
    "status": "status",
    "end_user": "end_user",
}


def grouping(value: str) -> tuple[str, ...]:
    """("day",) or ("day", "model") from "day" or "day,model"; ValueError saying why not."""
    dims = tuple(part.strip() for part in value.split(","))
    if not 1 <= len(dims) <= 2:
        raise ValueError("Group by one dimension or two, joined by a comma (day,model).")
    for dim in dims:
        if dim not in GROUPINGS:
            raise ValueError(f"Unknown dimension {dim!r}; use one of: {', '.join(GROUPINGS)}.")
    if len(set(dims)) != len(dims):
        raise ValueError("Name each dimension once.")
    return dims


RAW_SUMS = """count(*) AS requests,
    count(*) FILTER (WHERE u.status <> 'ok') AS errors,
    sum(u.input_tokens) AS input_tokens, sum(u.output_tokens) AS output_tokens,
    sum(u.cache_read_tokens) AS cache_read_tokens, sum(u.cache_write_tokens) AS cache_write_tokens,
    sum(u.reasoning_tokens) AS reasoning_tokens, sum(u.audio_input_tokens) AS audio_input_tokens,
    sum(u.audio_output_tokens) AS audio_output_tokens, sum(u.image_count) AS image_count,
    sum(u.audio_ms) AS audio_ms, sum(u.characters) AS characters,
    sum(u.cost_micros) AS cost_micros, sum(u.price_micros) AS price_micros"""
HOURLY_SUMS = """sum(h.requests), sum(h.errors), sum(h.input_tokens), sum(h.output_tokens),
    sum(h.cache_read_tokens), sum(h.cache_write_tokens), sum(h.reasoning_tokens),
    sum(h.audio_input_tokens), sum(h.audio_output_tokens), sum(h.image_count), sum(h.audio_ms),
    sum(h.characters), sum(h.cost_micros), sum(h.price_micros)"""
DAILY_SUMS = HOURLY_SUMS.replace("h.", "d.")
PENDING_SCOPE = {
    "team_id": "WHERE p.team_id = %(scope)s",
    "organization_id": (
        "JOIN teams_team t ON t.id = p.team_id WHERE t.organization_id = %(scope)s"
    ),
}
# One statement, so one snapshot: a team-hour is either pending (read raw) or rolled up (read
# its rows), never both or neither (see billing/rollups.py). Ranges: partial hours at the edges
# [start, h0) and [h1, end) are raw; whole hours [h0, h1) are hourly rows or raw when pending;
# whole days [d0, d1) inside them are daily rows when none of the team-day's hours is pending.
USAGE_SQL = """
WITH pending AS MATERIALIZED (
    SELECT p.team_id, p.hour FROM billing_usagerolluppending p {pending_scope}
        AND p.hour >= %(h0)s AND p.hour < %(h1)s
),
parts AS (
    SELECT {raw_group}, {raw_sums}
    FROM billing_usagerecord u
    WHERE u.{scope} = %(scope)s
      AND ((u.created_at >= %(start)s AND u.created_at < %(h0)s)
           OR (u.created_at >= %(h1)s AND u.created_at < %(end)s))
    GROUP BY {positions}
  UNION ALL
    SELECT {raw_group}, {raw_sums}
    FROM pending p
    CROSS JOIN LATERAL (  -- an index range scan per pending team-hour
        SELECT * FROM billing_usagerecord r
        WHERE r.team_id = p.team_id
          AND r.created_at >= p.hour AND r.created_at < p.hour + interval '1 hour'
        OFFSET 0  -- a fence: flattened, this becomes a join over the whole table
    ) AS u
    WHERE u.{scope} = %(scope)s
    GROUP BY {positions}
  UNION ALL
    SELECT {hourly_group}, {hourly_sums}
    FROM billing_usagehourly h
    WHERE h.{scope} = %(scope)s AND h.period_start >= %(h0)s AND h.period_start < %(h1)s
      AND NOT EXISTS (
          SELECT 1 FROM pending p WHERE p.team_id = h.team_id AND p.hour = h.period_start)
      AND (h.period_start < %(d0)s OR h.period_start >= %(d1)s OR EXISTS (
          SELECT 1 FROM pending p WHERE p.team_id = h.team_id
            AND p.hour >= date_trunc('day', h.period_start, 'UTC')
            AND p.hour < date_trunc('day', h.period_start, 'UTC') + interval '1 day'))
    GROUP BY {positions}
  UNION ALL
    SELECT {daily_group}, {daily_sums}
    FROM billing_usagedaily d
    WHERE d.{scope} = %(scope)s AND d.period_start >= %(d0)s AND d.period_start < %(d1)s
      AND NOT EXISTS (
          SELECT 1 FROM pending p WHERE p.team_id = d.team_id
            AND p.hour >= d.period_start AND p.hour < d.period_start + interval '1 day')
    GROUP BY {positions}
)
SELECT {outer_group}, sum(requests)::bigint, sum(errors)::bigint,
    coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint,
    coalesce(sum(cache_read_tokens), 0)::bigint, coalesce(sum(cache_write_tokens), 0)::bigint,
    coalesce(sum(reasoning_tokens), 0)::bigint, coalesce(sum(audio_input_tokens), 0)::bigint,
    coalesce(sum(audio_output_tokens), 0)::bigint, coalesce(sum(image_count), 0)::bigint,
    coalesce(sum(audio_ms), 0)::bigint, coalesce(sum(characters), 0)::bigint,
    coalesce(sum(cost_micros), 0)::bigint, coalesce(sum(price_micros), 0)::bigint
FROM parts {outer_join}
GROUP BY {positions}
ORDER BY {positions}
"""
NUMBERS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    *USAGE_COUNTS.values(),
    "cost_micros",
    "price_micros",
)


def _usage_sql(scope_column: str, dims: tuple[str, ...]) -> str:
    def columns(source: int) -> str:
        return ", ".join(f"{DIMENSIONS[dim][source]} AS g{i}" for i, dim in enumerate(dims))

    outer, joins = _outer(dims)
    return USAGE_SQL.format(
        pending_scope=PENDING_SCOPE[scope_column],
        scope=scope_column,
        raw_group=columns(0),
        raw_sums=RAW_SUMS,
        hourly_group=columns(1),
        hourly_sums=HOURLY_SUMS,
        daily_group=columns(2),
        daily_sums=DAILY_SUMS,
        outer_group=outer,
        outer_join=joins,
        positions=", ".join(str(i + 1) for i in range(len(dims))),
    )


RAW_GROUPED_SQL = """
SELECT {outer_group}, sum(requests)::bigint, sum(errors)::bigint,
    coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint,
    coalesce(sum(cache_read_tokens), 0)::bigint, coalesce(sum(cache_write_tokens), 0)::bigint,
    coalesce(sum(reasoning_tokens), 0)::bigint, coalesce(sum(audio_input_tokens), 0)::bigint,
    coalesce(sum(audio_output_tokens), 0)::bigint, coalesce(sum(image_count), 0)::bigint,
    coalesce(sum(audio_ms), 0)::bigint, coalesce(sum(characters), 0)::bigint,
    coalesce(sum(cost_micros), 0)::bigint, coalesce(sum(price_micros), 0)::bigint
FROM (
    SELECT {raw_group}, {raw_sums}
    FROM billing_usagerecord u {tag_join}
    WHERE u.{scope} = %(scope)s AND u.created_at >= %(start)s AND u.created_at < %(end)s
    GROUP BY {positions}
) AS parts {outer_join}
GROUP BY {positions}
ORDER BY {positions}
"""
TAG_JOIN = "LEFT JOIN LATERAL unnest(u.tags) AS t(tag) ON true"


def _raw_grouped_sql(scope_column: str, dims: tuple[str, ...]) -> str:
    expressions = {**{dim: exprs[0] for dim, exprs in DIMENSIONS.items()}, **RAW_ONLY}
    raw = ", ".join(f"{expressions[dim]} AS g{i}" for i, dim in enumerate(dims))
    outer, joins = _outer(dims)
    return RAW_GROUPED_SQL.format(
        outer_group=outer,
        raw_group=raw,
        raw_sums=RAW_SUMS,
        tag_join=TAG_JOIN if "tag" in dims else "",
        scope=scope_column,
        outer_join=joins,
        positions=", ".join(str(i + 1) for i in range(len(dims))),
    )


def _outer(dims: tuple[str, ...]) -> tuple[str, str]:
    """The outer query's group columns (ids named by public id) and the joins that name them."""
    outer, joins = [], []
    for i, dim in enumerate(dims):
        table = NAMED.get(dim)
        if table is None:
            outer.append(f"parts.g{i}")
        else:
            outer.append(f"n{i}.public_id")
            joins.append(f"LEFT JOIN {table} n{i} ON n{i}.id = parts.g{i}")
    return ", ".join(outer), " ".join(joins)


def _shown(dim: str, value):
    """A grouped value as the answer shows it: days and hours as ISO 8601 (UTC)."""
    if dim == "day":
        return value.date().isoformat()
    if dim == "hour":
        return value.astimezone(UTC).isoformat()
    return value


def _bounds(start: datetime, end: datetime) -> dict:
    """Whole hours [h0, h1) and whole days [d0, d1) inside [start, end), all UTC."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    try:
        h0 = _ceil(start, hour=True)
        h1 = end.replace(minute=0, second=0, microsecond=0)
        d0 = _ceil(h0, hour=False)
        d1 = h1.replace(hour=0)
    except OverflowError:  # the first or last hour of the calendar: read raw records
        return {"start": start, "end": end, "h0": end, "h1": end, "d0": end, "d1": end}
    if h0 >= h1:
        h0 = h1 = end
    if d0 >= d1:
        d0 = d1 = h1
    return {"start": start, "end": end, "h0": h0, "h1": h1, "d0": d0, "d1": d1}


def _ceil(moment: datetime, *, hour: bool) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    if not hour:
        floor = floor.replace(hour=0)
    if floor == moment:
        return moment
    return floor + (timedelta(hours=1) if hour else timedelta(days=1))


# Refused calls (RefusalHourly, billing/refusals.py) have these dimensions and filters only;
# grouped by another (model_group, status) a row's `refused` is None, and filtered by another
# (status) the totals' `refused` is None too. Their resolution is the hour: an hour is counted
# when it overlaps [start, end). They arrive within a minute or so of the refusal (the gateway
# flushes once a second, the roll-up runs every 30 s on closed minutes); nothing is read from
# Redis here.
REFUSAL_DIMENSIONS = {
    "day": "_day",
    "hour": "period_start",
    "team": "team__public_id",
    "key": "key__public_id",
    "model": "model",
}
REFUSAL_FILTERS = {"team", "organization", "key", "model"}


def _refused(*, scope: dict, start, end, dims: tuple[str, ...]):
    """(total, {dimension values: count} or None) of calls refused in [start, end)."""
    if not scope.keys() <= REFUSAL_FILTERS:
        return None, None
    start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    qs = RefusalHourly.objects.filter(period_start__gte=start, period_start__lt=end, **scope)
    total = qs.aggregate(n=Sum("count", default=0))["n"]
    if not all(dim in REFUSAL_DIMENSIONS for dim in dims):
        return total, None
    fields = [REFUSAL_DIMENSIONS[dim] for dim in dims]
    grouped = qs.annotate(_day=TruncDay("period_start", tzinfo=UTC)).values(*fields)
    per_group = {}
    for row in grouped.annotate(n=Sum("count")).order_by():
        values = tuple(_shown(dim, row[field]) for dim, field in zip(dims, fields, strict=True))
        per_group[values] = per_group.get(values, 0) + row["n"]
    return total, per_group


def _with_refused(result: dict, *, scope: dict, start, end, dims: tuple[str, ...]) -> dict:
    """The summary with `refused` in its totals and rows; a group with refusals and no
    settled call becomes a row of its own (every other number 0)."""
    total, per_group = _refused(scope=scope, start=start, end=end, dims=dims)
    result["totals"]["refused"] = total
    rows = result["rows"]
    if per_group is None:
        for row in rows:
            row["refused"] = None
        return result
    for row in rows:
        row["refused"] = per_group.pop(tuple(row[dim] for dim in dims), 0)
    if per_group:
        zeros = dict.fromkeys(NUMBERS, 0)
        for values, n in per_group.items():
            rows.append({**dict(zip(dims, values, strict=True)), **zeros, "refused": n})
        rows.sort(key=lambda row: tuple((row[dim] is None, row[dim] or "") for dim in dims))
    return result


def usage_summary(*, scope: dict, start, end, group_by) -> dict:
    """Totals and rows for usage in [start, end), with the calls refused (`refused`, see
    REFUSAL_DIMENSIONS), grouped by one or two dimensions; see _usage_summary."""
    dims = grouping(group_by) if isinstance(group_by, str) else tuple(group_by)
    result = _usage_summary(scope=scope, start=start, end=end, group_by=dims)
    return _with_refused(result, scope=scope, start=start, end=end, dims=dims)


def _usage_summary(*, scope: dict, start, end, group_by) -> dict:
    """Totals and rows for usage in [start, end), grouped by one or two dimensions (GROUPINGS;
    `group_by` as "day,model" or a tuple): exact, from the roll-ups plus the raw records of
    whatever is not rolled up yet.

    `scope` is {"team": team} or {"organization": org}; any other filter set (the panel's
    usage explorer: none, or key, model, status…) is answered from the raw records, and so is
    a grouping by a dimension the roll-ups lack (RAW_ONLY: status, end user, tag)."""
    dims = grouping(group_by) if isinstance(group_by, str) else tuple(group_by)
    if len(scope) != 1 or not scope.keys() <= {"team", "organization"}:
        return _usage_summary_raw(scope=scope, start=start, end=end, dims=dims)
    ((name, owner),) = scope.items()
    scope_column = {"team": "team_id", "organization": "organization_id"}[name]
    params = {"scope": owner.pk, **_bounds(start, end)}
    if any(dim in RAW_ONLY for dim in dims):
        sql = _raw_grouped_sql(scope_column, dims)
        params.update(start=start, end=end)
    else:
        sql = _usage_sql(scope_column, dims)
        if "hour" in dims:  # daily rows have no hours: whole days come from the hourly rows
            params["d0"] = params["d1"] = params["h1"]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    rows = []
    totals = dict.fromkeys(NUMBERS, 0)
    for fetched_row in fetched:
        values, numbers = fetched_row[: len(dims)], fetched_row[len(dims) :]
        row = dict(zip(NUMBERS, numbers, strict=True))
        for field in NUMBERS:
            totals[field] += row[field]
        shown = {dim: _shown(dim, value) for dim, value in zip(dims, values, strict=True)}
        rows.append({**shown, **row})
    if "tag" in dims:  # a call with two tags is in two rows: the totals count it once
        totals = usage_summary(scope=scope, start=start, end=end, group_by="model")["totals"]
    return {"totals": totals, "rows": rows}


def _usage_summary_raw(*, scope: dict, start, end, dims: tuple[str, ...]) -> dict:
    qs = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end, **scope)
    aggregates = {
        "requests": Count("id"),
        "errors": Count("id", filter=~Q(status=UsageRecord.Status.OK)),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        **{column: Sum(column, default=0) for column in USAGE_COUNTS.values()},
        "cost_micros": Sum("cost_micros", default=0),
        "price_micros": Sum("price_micros", default=0),
    }
    truncs = {"day": TruncDay, "hour": TruncHour}
    annotations = {
        f"_{dim}": truncs[dim]("created_at", tzinfo=UTC) for dim in dims if dim in truncs
    }
    fields = [f"_{dim}" if dim in truncs else ORM_FIELDS[dim] for dim in dims]
    grouped = qs.annotate(**annotations).values(*fields)
    rows = []
    for row in grouped.annotate(**aggregates).order_by(*fields):
        shown = {dim: _shown(dim, row.pop(field)) for dim, field in zip(dims, fields, strict=True)}
        rows.append({**shown, **row})
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
