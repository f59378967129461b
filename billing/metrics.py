"""Counters of settled usage and the call-to-ledger lag, kept in Redis by the settler.

The settler runs in worker processes and /metrics in the web process, so the numbers meet in
Redis: after each batch commits, one pipeline adds the batch's calls per (team, model) and its
lag histogram. Only calls inserted by this batch count (a redelivered record that had already
posted is skipped), so a duplicate never counts twice; a worker killed between its commit and
the pipeline loses that batch's counts (counters may fall short, never run over).

Labels: team pk (shown as its public id) and the model that served the call (a catalog name,
or "" when none answered). The series count is teams x models actually used.
"""

import time
from collections import defaultdict

from livestate.keys import METRICS_SETTLE_LAG as LAG
from livestate.keys import METRICS_USAGE as USAGE

COUNTERS = (
    "requests",
    "errors",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cost_micros",
    "price_micros",
)
LAG_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300, 600)


def record_settled(client, calls: list[dict], settled_at: float | None = None) -> None:
    """Count calls (settlement records, as in the gateway's stream) committed just now."""
    if not calls:
        return
    settled_at = time.time() if settled_at is None else settled_at
    sums: dict[str, int] = defaultdict(int)
    buckets: dict[str, int] = defaultdict(int)
    lag_total = 0.0
    for r in calls:
        prefix = f"{r['team']}|"
        model = r["model"]
        sums[f"{prefix}requests|{model}"] += 1
        sums[f"{prefix}errors|{model}"] += r["status"] != "ok"
        sums[f"{prefix}cache_hits|{model}"] += bool(r.get("cache"))
        sums[f"{prefix}input_tokens|{model}"] += r["in"]
        sums[f"{prefix}output_tokens|{model}"] += r["out"]
        sums[f"{prefix}cost_micros|{model}"] += r["cost"]
        sums[f"{prefix}price_micros|{model}"] += r["charged"]
        lag = max(settled_at - r["ts"], 0.0)
        lag_total += lag
        buckets[_bucket(lag)] += 1
    pipe = client.pipeline(transaction=False)
    for field, value in sums.items():
        if value:
            pipe.hincrby(USAGE, field, value)
    for bucket, n in buckets.items():
        pipe.hincrby(LAG, bucket, n)
    pipe.hincrbyfloat(LAG, "sum", lag_total)
    pipe.execute()


def _bucket(lag: float) -> str:
    for bound in LAG_BUCKETS:
        if lag <= bound:
            return str(bound)
    return "+Inf"


def usage_counters(client) -> dict[tuple[int, str], dict[str, int]]:
    """(team pk, model) -> counter -> value."""
    out: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for field, value in client.hgetall(USAGE).items():
        team, counter, model = field.decode().split("|", 2)
        out[(int(team), model)][counter] = int(value)
    return out


def settlement_lag(client) -> tuple[list[tuple[str, int]], float]:
    """Cumulative buckets [(upper bound, count)] (the last, +Inf, is the count) and the sum."""
    raw = {k.decode(): v for k, v in client.hgetall(LAG).items()}
    cumulative, running = [], 0
    for bound in [*map(str, LAG_BUCKETS), "+Inf"]:
        running += int(raw.get(bound, 0))
        cumulative.append((bound, running))
    return cumulative, float(raw.get("sum", 0))
