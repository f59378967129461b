"""Usage roll-ups: the usage API answers the same with or without them, runs never count twice,
and raw records are pruned only once rolled up."""

import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from billing import rollups
from billing.models import (
    CallLog,
    Job,
    UsageDaily,
    UsageHourly,
    UsageRecord,
    UsageRollupPending,
)
from core.money import parse_micros
from teams.services import key_create
from tests.helpers.tenants import Tenant
from tests.helpers.threads import race

NOW = datetime(2026, 3, 10, 14, 25, tzinfo=UTC)


TENANT_KEY = object()


def record(tenant, when, *, key=TENANT_KEY, model="m1", status="ok", price=1_000, **fields):
    return UsageRecord.objects.create(
        request_id=f"req_{uuid.uuid4().hex}",
        organization=tenant.org,
        team=tenant.team,
        key=tenant.key if key is TENANT_KEY else key,
        model=model,
        model_group=fields.pop("model_group", "grp"),
        input_tokens=fields.pop("input_tokens", 10),
        output_tokens=fields.pop("output_tokens", 20),
        cost_micros=fields.pop("cost_micros", 400),
        price_micros=price,
        status=status,
        created_at=when,
        **fields,
    )


def dimension(r, dim: str):
    """A record's value of one grouping dimension, as the usage API shows it."""
    when = r.created_at.astimezone(UTC)
    return {
        "day": lambda: when.date().isoformat(),
        "hour": lambda: when.replace(minute=0, second=0, microsecond=0).isoformat(),
        "team": lambda: r.team.public_id,
        "key": lambda: r.key.public_id if r.key else None,
        "model": lambda: r.model,
        "model_group": lambda: r.model_group,
        "status": lambda: r.status,
        "end_user": lambda: r.end_user,
    }[dim]()


def expected(records, start, end, group_by) -> dict:
    """The usage API's answer, computed in Python from the records made."""
    dims = group_by.split(",")
    rows = defaultdict(lambda: dict.fromkeys(NUMBERS, 0))
    for r in records:
        if not start <= r.created_at < end:
            continue
        # a call is in the row of each of its tags; an untagged one in the row of none
        for tag in (r.tags or [None]) if "tag" in dims else [None]:
            add(rows[tuple(tag if dim == "tag" else dimension(r, dim) for dim in dims)], r)
    return rows


def add(row: dict, r) -> None:
    row["requests"] += 1
    row["errors"] += r.status != "ok"
    row["input_tokens"] += r.input_tokens
    row["output_tokens"] += r.output_tokens
    row["cost"] += r.cost_micros
    row["price"] += r.price_micros


NUMBERS = ("requests", "errors", "input_tokens", "output_tokens", "cost", "price")


def as_numbers(row: dict) -> dict:
    return {
        "requests": row["requests"],
        "errors": row["errors"],
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cost": parse_micros(row["cost"]),
        "price": parse_micros(row["price"]),
    }


def usage(client, path: str, start, end, group_by: str) -> dict:
    response = client.get(
        path, {"start": start.isoformat(), "end": end.isoformat(), "group_by": group_by}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    dims = group_by.split(",")
    rows = {tuple(row[dim] for dim in dims): as_numbers(row) for row in body["rows"]}
    assert len(rows) == len(body["rows"])  # one row per group
    return {"totals": as_numbers(body["totals"]), "rows": rows}


# Every dimension alone, and pairs across the roll-ups' columns, hours and the raw-only status.
GROUPS = (
    "day",
    "hour",
    "team",
    "key",
    "model",
    "model_group",
    "status",
    "day,model",
    "hour,key",
    "model_group,model",
    "team,status",
    "end_user",
    "tag",
    "tag,model",
    "day,end_user",
)


def assert_exact(api, tenant, records, start, end):
    for group_by in GROUPS:
        want = expected(records, start, end, group_by)
        totals = dict.fromkeys(NUMBERS, 0)
        for r in records:  # a call with two tags is in two rows, and once in the totals
            if start <= r.created_at < end:
                add(totals, r)
        for path in (
            f"/api/teams/{tenant.team.public_id}/usage/",
            f"/api/organizations/{tenant.org.public_id}/usage/",
        ):
            got = usage(api, path, start, end, group_by)
            assert got["rows"] == dict(want), (path, group_by)
            assert got["totals"] == totals, (path, group_by)


@pytest.fixture
def history(tenant_a, tenant_b):
    """Three days of calls for two tenants, two keys and two models, some failed."""
    second_key, _ = key_create(actor="test", team=tenant_a.team, name="second")
    made = {"a": [], "b": []}
    start = NOW - timedelta(days=3)
    for i in range(0, 3 * 24 * 4):  # every 15 minutes
        when = start + timedelta(minutes=15 * i, seconds=7)
        made["a"].append(
            record(
                tenant_a,
                when,
                key=second_key if i % 3 == 0 else None if i % 11 == 0 else TENANT_KEY,
                model="m2" if i % 2 else "m1",
                status="error" if i % 7 == 0 else "ok",
                price=1_000 + i,
                cache_hit=i % 5 == 0,
                end_user="" if i % 4 == 0 else f"user-{i % 3}",
                tags=[] if i % 5 == 0 else ["batch"] if i % 2 else ["batch", f"doc-{i % 3}"],
            )
        )
        if i % 4 == 0:
            made["b"].append(record(tenant_b, when, price=7))
    return made


def test_the_usage_api_is_exact_before_during_and_after_roll_ups(api, tenant_a, history):
    # given raw records only
    ranges = [
        (NOW - timedelta(days=3), NOW),
        (NOW - timedelta(days=2, hours=5, minutes=13), NOW - timedelta(hours=1, minutes=1)),
        (datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)),
        (NOW - timedelta(minutes=40), NOW),
    ]
    for start, end in ranges:
        assert_exact(api, tenant_a, history["a"], start, end)

    # when the closed hours are rolled up
    done = rollups.usage_roll_up(now=NOW)

    # then only the open hour (and the one in its grace period) stays raw, and nothing changed
    assert done > 0
    assert {p.hour for p in UsageRollupPending.objects.all()} == {
        datetime(2026, 3, 10, 14, tzinfo=UTC)
    }
    assert UsageHourly.objects.exists() and UsageDaily.objects.exists()
    for start, end in ranges:
        assert_exact(api, tenant_a, history["a"], start, end)

    # when calls arrive late for an hour and a day already rolled up
    late = [
        record(tenant_a, datetime(2026, 3, 8, 9, 30, tzinfo=UTC), model="m3", price=5),
        record(tenant_a, datetime(2026, 3, 9, 23, 59, tzinfo=UTC), status="rejected"),
    ]
    history["a"].extend(late)

    # then they count at once (read raw), and still after the next roll-up
    for start, end in ranges:
        assert_exact(api, tenant_a, history["a"], start, end)
    assert rollups.usage_roll_up(now=NOW) == 2
    for start, end in ranges:
        assert_exact(api, tenant_a, history["a"], start, end)


def test_the_roll_up_rows_sum_the_raw_records_per_group(tenant_a, history):
    rollups.usage_roll_up(now=NOW)
    hour = datetime(2026, 3, 9, 10, tzinfo=UTC)
    rows = UsageHourly.objects.filter(team=tenant_a.team, period_start=hour)
    raw = [r for r in history["a"] if hour <= r.created_at < hour + timedelta(hours=1)]
    assert sum(r.requests for r in rows) == len(raw) == 4
    assert sum(r.cache_hits for r in rows) == sum(r.cache_hit for r in raw)
    assert sum(r.errors for r in rows) == sum(r.status != "ok" for r in raw)
    assert sum(r.price_micros for r in rows) == sum(r.price_micros for r in raw)
    assert {(r.model, r.model_group, r.organization_id) for r in rows} <= {
        ("m1", "grp", tenant_a.org.pk),
        ("m2", "grp", tenant_a.org.pk),
    }
    day = UsageDaily.objects.filter(
        team=tenant_a.team, period_start=datetime(2026, 3, 9, tzinfo=UTC)
    )
    assert sum(d.requests for d in day) == 96


def test_rolling_up_the_same_hours_again_gives_the_same_rows(tenant_a, history):
    # given everything rolled up
    rollups.usage_roll_up(now=NOW)
    before = snapshot()

    # when every team-hour is marked pending again and rolled up again
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_usagerecord SET model = model")
    assert UsageRollupPending.objects.count() > 70
    rollups.usage_roll_up(now=NOW)

    # then the roll-up holds the same sums
    assert snapshot() == before


def snapshot() -> dict:
    fields = ("requests", "errors", "cache_hits", "input_tokens", "output_tokens")
    money = ("cost_micros", "price_micros")
    return {
        model.__name__: sorted(
            model.objects.values_list(
                "period_start", "team_id", "key_id", "model", "model_group", *fields, *money
            ),
            key=str,
        )
        for model in (UsageHourly, UsageDaily)
    }


def test_two_workers_rolling_up_at_once_never_count_twice(transactional_db, catalog_objects):
    # given many pending team-hours in one day, for one team
    tenant = Tenant("race", catalog_objects["group"])
    day = datetime(2026, 3, 9, tzinfo=UTC)
    made = [record(tenant, day + timedelta(minutes=7 * i)) for i in range(200)]

    # when four workers roll up at once, in small batches
    # (a worker's exception fails the test here)
    race(lambda _: rollups.usage_roll_up(now=NOW, batch_size=3), 4)

    # then every call counts once, in the hours and in the day
    assert not UsageRollupPending.objects.filter(hour__lt=NOW - timedelta(hours=2)).exists()
    assert sum(UsageHourly.objects.values_list("requests", flat=True)) == len(made)
    assert UsageDaily.objects.get(period_start=day).requests == len(made)


def test_a_call_committed_while_its_hour_is_being_rolled_up_is_not_lost(
    transactional_db, catalog_objects
):
    # given a rolled-up hour claimed by a worker that is computing it
    tenant = Tenant("late", catalog_objects["group"])
    hour = datetime(2026, 3, 9, 10, tzinfo=UTC)
    record(tenant, hour + timedelta(minutes=1))
    claimed, release = threading.Event(), threading.Event()
    real_recompute = rollups._recompute

    def slow_recompute(team_hours):
        real_recompute(team_hours)
        claimed.set()
        release.wait(10)

    inserted = threading.Event()

    def settler():
        claimed.wait(10)
        # Blocks on the claimed pending row until the roll-up commits, then marks it again.
        with transaction.atomic():
            record(tenant, hour + timedelta(minutes=30))
        inserted.set()
        connection.close()

    def roll_up():
        rollups.usage_roll_up(now=NOW)
        connection.close()

    rollups._recompute = slow_recompute
    try:
        threads = [threading.Thread(target=roll_up), threading.Thread(target=settler)]
        for t in threads:
            t.start()
        assert claimed.wait(10)
        time.sleep(0.5)
        assert not inserted.is_set()  # the settler waits for the claim
        release.set()
        for t in threads:
            t.join(20)
    finally:
        rollups._recompute = real_recompute

    # then the hour is pending again, so the API reads its raw records, and the next run counts it
    assert UsageRollupPending.objects.filter(team=tenant.team, hour=hour).exists()
    rollups.usage_roll_up(now=NOW)
    assert UsageHourly.objects.get(team=tenant.team, period_start=hour).requests == 2


def test_pruning_keeps_what_is_not_rolled_up_open_jobs_and_logged_calls(api, tenant_a, settings):
    settings.USAGE_RAW_RETENTION_DAYS = 30
    old = NOW - timedelta(days=40)
    closed_job = Job.objects.create(
        organization=tenant_a.org,
        team=tenant_a.team,
        job_type="t",
        status=Job.Status.COMPLETED,
        created_at=old,
        closed_at=old + timedelta(minutes=5),
    )
    recent_job = Job.objects.create(
        organization=tenant_a.org,
        team=tenant_a.team,
        job_type="t",
        status=Job.Status.COMPLETED,
        created_at=old,
        closed_at=NOW - timedelta(days=1),
    )
    plain = record(tenant_a, old)
    in_closed_job = record(tenant_a, old, job=closed_job)
    in_recent_job = record(tenant_a, old, job=recent_job)
    logged = record(tenant_a, old)
    CallLog.objects.create(
        request_id=logged.request_id,
        team=tenant_a.team,
        request_body="{}",
        response_body="{}",
        created_at=old,
        expires_at=NOW + timedelta(days=30),
    )
    fresh = record(tenant_a, NOW - timedelta(days=2))
    not_rolled_up = record(tenant_a, old - timedelta(days=1))
    rollups.usage_roll_up(now=NOW)
    record(tenant_a, old - timedelta(days=1), price=3)  # marks its team-hour pending again
    whole = (old - timedelta(days=2), NOW - timedelta(hours=1))
    before = usage(api, f"/api/teams/{tenant_a.team.public_id}/usage/", *whole, "day")

    # when
    pruned = rollups.usage_raw_prune(now=NOW, batch_size=1)

    # then
    assert pruned == 2
    left = set(UsageRecord.objects.values_list("pk", flat=True))
    assert plain.pk not in left and in_closed_job.pk not in left
    assert {in_recent_job.pk, logged.pk, fresh.pk, not_rolled_up.pk} <= left
    assert not Job.objects.filter(pk=closed_job.pk).exists()
    assert Job.objects.filter(pk=recent_job.pk).exists()
    # Roll-ups are kept, so whole hours still answer the same.
    assert usage(api, f"/api/teams/{tenant_a.team.public_id}/usage/", *whole, "day") == before


def test_a_late_call_for_an_hour_past_retention_keeps_the_roll_up(tenant_a, settings):
    settings.USAGE_RAW_RETENTION_DAYS = 30
    hour = datetime(2026, 2, 1, 10, tzinfo=UTC)
    for _ in range(3):
        record(tenant_a, hour)
    rollups.usage_roll_up(now=NOW)
    rollups.usage_raw_prune(now=NOW)
    assert not UsageRecord.objects.exists()

    # when a call for that hour arrives now
    record(tenant_a, hour, price=1)
    rollups.usage_roll_up(now=NOW)

    # then the roll-up is not replaced by what is left of the hour
    assert UsageHourly.objects.get(period_start=hour).requests == 3
    assert not UsageRollupPending.objects.exists()


def test_an_hour_never_rolled_up_is_rolled_up_however_old(tenant_a, settings):
    settings.USAGE_RAW_RETENTION_DAYS = 30
    hour = datetime(2026, 1, 1, 10, tzinfo=UTC)
    record(tenant_a, hour)
    rollups.usage_roll_up(now=NOW)
    assert UsageHourly.objects.get(period_start=hour).requests == 1


def test_a_team_whose_raw_usage_was_pruned_still_cannot_be_deleted(api, tenant_a, settings):
    settings.USAGE_RAW_RETENTION_DAYS = 30
    record(tenant_a, NOW - timedelta(days=60), price=0)
    rollups.usage_roll_up(now=NOW)
    rollups.usage_raw_prune(now=NOW)
    assert not UsageRecord.objects.exists()

    response = api.delete(f"/api/teams/{tenant_a.team.public_id}/")

    assert response.status_code == 409
    assert UsageDaily.objects.filter(team=tenant_a.team).exists()
