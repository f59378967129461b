"""The usage API over many call records, before and after the roll-ups.

`python -m bench.usage_api [--records 1000000]` with DATABASE_URL naming a scratch database
(created and migrated if missing; its usage tables are emptied first). Seeds one organization
with 5 teams, 4 keys each and 4 models over the last 30 days with INSERT ... SELECT
generate_series, then times GET /api/{teams,organizations}/{id}/usage/ for each grouping:
first with nothing rolled up (every team-hour pending: raw records, as before roll-ups existed),
then after billing.rollups.usage_roll_up. Prints a markdown table (median of --repeat runs).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta

TEAMS, KEYS_PER_TEAM, MODELS = 5, 4, ("gpt-a", "gpt-b", "claude-c", "llama-d")

SEED = """
INSERT INTO billing_usagerecord (
    request_id, organization_id, team_id, key_id, model, model_group, input_tokens,
    output_tokens, cost_micros, price_micros, status, latency_ms, cache_hit, created_at)
SELECT 'req_bench_' || i, %(org)s, (%(teams)s::bigint[])[1 + i %% %(n_teams)s],
    (%(keys)s::bigint[])[1 + (i %% %(n_teams)s) * %(kpt)s + (i / 7) %% %(kpt)s],
    (%(models)s::text[])[1 + (i / 3) %% 4], 'group',
    100 + i %% 900, 20 + i %% 300, 1000 + i %% 5000, 1250 + i %% 6000,
    CASE WHEN i %% 50 = 0 THEN 'error' ELSE 'ok' END, 300, i %% 10 = 0,
    now() - (i::float / %(n)s) * interval '30 days'
FROM generate_series(1, %(n)s) AS i
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.usage_api", description=__doc__)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    if "DATABASE_URL" not in os.environ:
        sys.exit("set DATABASE_URL to a scratch database")
    for step in (["scripts/ensure_services.py"], ["manage.py", "migrate", "-v", "0"]):
        subprocess.run([sys.executable, *step], check=True)

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIClient

    from billing import rollups
    from orgs.services import organization_create
    from teams.services import key_create, team_create

    settings.ALLOWED_HOSTS = ["*"]
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE billing_usagerecord, billing_usagehourly, billing_usagedaily, "
            "billing_usagerolluppending"
        )
    org, _ = organization_create(actor="bench", name=f"Usage bench {time.time_ns()}")
    teams, keys = [], []
    for t in range(TEAMS):
        team = team_create(actor="bench", organization=org, name=f"team {t}")
        teams.append(team)
        keys += [key_create(actor="bench", team=team, name=f"k{k}")[0] for k in range(KPT)]
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            SEED,
            {
                "org": org.pk,
                "teams": [t.pk for t in teams],
                "keys": [k.pk for k in keys],
                "models": list(MODELS),
                "n": args.records,
                "n_teams": TEAMS,
                "kpt": KPT,
            },
        )
        cursor.execute("ANALYZE billing_usagerecord")
    print(f"seeded {args.records} records in {time.perf_counter() - started:.1f} s")

    api = APIClient()
    api.credentials(HTTP_X_ADMIN_KEY=settings.MASTER_KEY)
    paths = {
        "team": f"/api/teams/{teams[0].public_id}/usage/",
        "organization": f"/api/organizations/{org.public_id}/usage/",
    }

    # One fixed window, so both measurements (minutes apart) cover the same records.
    end = timezone.now() + timedelta(minutes=1)
    window = {"start": (end - timedelta(days=30)).isoformat(), "end": end.isoformat()}

    def measure() -> dict:
        out = {}
        for scope, path in paths.items():
            for group_by in ("day", "model", "key"):
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    response = api.get(path, {**window, "group_by": group_by})
                    times.append(time.perf_counter() - t0)
                    assert response.status_code == 200, response.content
                out[(scope, group_by)] = (statistics.median(times), response.json()["totals"])
        return out

    from billing.models import UsageRecord

    def legacy(scope: dict, group_by: str) -> float:
        """main's ORM query over raw records (before this change), timed alone."""
        from django.db.models import Count, Q, Sum
        from django.db.models.functions import TruncDay

        qs = UsageRecord.objects.filter(created_at__gte=end - timedelta(days=30), **scope)
        sums = {
            "requests": Count("id"),
            "errors": Count("id", filter=~Q(status="ok")),
            "input_tokens": Sum("input_tokens", default=0),
            "output_tokens": Sum("output_tokens", default=0),
            "cost_micros": Sum("cost_micros", default=0),
            "price_micros": Sum("price_micros", default=0),
        }
        column = {"day": "day", "model": "model", "key": "key__public_id"}[group_by]
        grouped = (
            qs.annotate(day=TruncDay("created_at")).values("day")
            if group_by == "day"
            else qs.values(column)
        )
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            list(grouped.annotate(**sums).order_by(column))
            qs.aggregate(**sums)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    scopes = {"team": {"team": teams[0]}, "organization": {"organization": org}}
    main_s = {
        (scope, g): legacy(q, g) for scope, q in scopes.items() for g in ("day", "model", "key")
    }
    before = measure()
    started = time.perf_counter()
    rolled = rollups.usage_roll_up(batch_size=1000, max_batches=100_000)
    roll_up_s = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_usagehourly")
        cursor.execute("ANALYZE billing_usagedaily")
        cursor.execute("ANALYZE billing_usagerolluppending")
    after = measure()
    print(f"rolled up {rolled} team-hours in {roll_up_s:.1f} s\n")
    print(
        "| scope | group_by | main's raw queries (ms) | API, nothing rolled up (ms) "
        "| API with roll-ups (ms) | same totals |"
    )
    print("|---|---|---|---|---|---|")
    for key, (raw_s, raw_totals) in before.items():
        rolled_s, rolled_totals = after[key]
        same = raw_totals == rolled_totals
        print(
            f"| {key[0]} | {key[1]} | {main_s[key] * 1000:.0f} | {raw_s * 1000:.0f} "
            f"| {rolled_s * 1000:.1f} | {same} |"
        )


KPT = KEYS_PER_TEAM

if __name__ == "__main__":
    main()
