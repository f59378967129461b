"""Raw call records partitioned by month: each record lands in its month's partition (or the
default one, never refused), months are created ahead, and retention drops whole months."""

import uuid
from datetime import UTC, datetime, timedelta

from django.db import connection

from billing import partitions, rollups
from billing.models import Job, UsageDaily, UsageHourly, UsageRecord

NOW = datetime(2027, 2, 20, 12, tzinfo=UTC)
BOUNDARY = datetime(2027, 3, 1, tzinfo=UTC)


def record(tenant, when, **fields) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=f"req_{uuid.uuid4().hex}",
        organization=tenant.org,
        team=tenant.team,
        key=tenant.key,
        model="m1",
        price_micros=fields.pop("price", 1_000),
        created_at=when,
        **fields,
    )


def partition_of(rec: UsageRecord) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM billing_usagerecord WHERE id = %s", [rec.pk]
        )
        return cursor.fetchone()[0]


def month_names() -> list[str]:
    return [name for name, _, _ in partitions.months()]


def test_records_on_both_sides_of_a_month_boundary_land_in_their_months(tenant_a):
    # given: the months around NOW, created ahead
    created = partitions.ensure_ahead(now=NOW)
    assert created == [
        "billing_usagerecord_p2027_02",
        "billing_usagerecord_p2027_03",
        "billing_usagerecord_p2027_04",
    ]
    assert partitions.ensure_ahead(now=NOW) == []  # idempotent
    # when: calls just before and at the boundary
    last = record(tenant_a, BOUNDARY - timedelta(microseconds=1))
    first = record(tenant_a, BOUNDARY)
    # then
    assert partition_of(last) == "billing_usagerecord_p2027_02"
    assert partition_of(first) == "billing_usagerecord_p2027_03"
    # and when the month turns, the next one exists before any call needs it
    assert "billing_usagerecord_p2027_05" in partitions.ensure_ahead(now=BOUNDARY)
    assert set(month_names()) >= {f"billing_usagerecord_p2027_{m:02}" for m in (2, 3, 4, 5)}


def test_a_record_outside_every_month_is_kept_and_moves_when_its_month_is_created(tenant_a):
    # given: no partition for far-past or far-future months
    partitions.ensure_ahead(now=NOW)
    early = record(tenant_a, datetime(2001, 1, 15, tzinfo=UTC))
    late = record(tenant_a, datetime(2031, 7, 4, tzinfo=UTC), price=7)
    assert partition_of(early) == partition_of(late) == "billing_usagerecord_default"
    # when: July 2031's month is created (ahead, when that time comes)
    partitions.ensure_ahead(now=datetime(2031, 7, 1, tzinfo=UTC))
    # then: the record moved into it, unchanged, and the other stays in the default
    assert partition_of(late) == "billing_usagerecord_p2031_07"
    assert partition_of(early) == "billing_usagerecord_default"
    moved = UsageRecord.objects.get(pk=late.pk)
    assert (moved.request_id, moved.price_micros, moved.created_at) == (
        late.request_id,
        7,
        late.created_at,
    )
    assert UsageRecord.objects.count() == 2


def test_the_same_call_cannot_be_recorded_twice_in_its_month(tenant_a):
    partitions.ensure_ahead(now=NOW)
    rec = record(tenant_a, NOW)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO billing_usagerecord (request_id, organization_id, team_id, model,"
            " model_group, input_tokens, output_tokens, cost_micros, price_micros, status,"
            " cache_hit, created_at) VALUES (%s, %s, %s, 'm1', '', 0, 0, 0, 5, 'ok', false, %s)"
            " ON CONFLICT (request_id, created_at) DO NOTHING RETURNING id",
            [rec.request_id, tenant_a.org.pk, tenant_a.team.pk, rec.created_at],
        )
        assert cursor.fetchall() == []
    assert UsageRecord.objects.filter(request_id=rec.request_id).count() == 1


def test_retention_drops_old_months_whole_and_keeps_the_rest(tenant_a, settings):
    # given: three months of calls, all rolled up, and 90 days of retention
    settings.USAGE_RAW_RETENTION_DAYS = 90
    for month in (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)):
        partitions.create_month(month)
    partitions.ensure_ahead(now=NOW)
    october = [record(tenant_a, datetime(2026, 10, d, 9, tzinfo=UTC)) for d in (1, 31)]
    november = [record(tenant_a, datetime(2026, 11, d, 9, tzinfo=UTC)) for d in (1, 30)]
    current = [record(tenant_a, NOW - timedelta(days=1)) for _ in range(2)]
    stray = record(tenant_a, datetime(2026, 8, 3, 9, tzinfo=UTC))  # the default partition's
    rollups.usage_roll_up(now=NOW)
    requests_before = sum(UsageDaily.objects.values_list("requests", flat=True))
    # a November call of a job still open keeps its month (the row rules of the prune)
    job = Job.objects.create(
        organization=tenant_a.org,
        team=tenant_a.team,
        job_type="t",
        created_at=november[0].created_at,
    )
    UsageRecord.objects.filter(pk=november[1].pk).update(job=job)
    rollups.usage_roll_up(now=NOW)

    # when: the cutoff (NOW - 90 days = 2026-11-22) is past all of October, not all of November
    rollups.usage_raw_prune(now=NOW)

    # then: October's partition is gone whole; November's (not wholly past) stays, as does now
    names = month_names()
    assert "billing_usagerecord_p2026_10" not in names
    assert {"billing_usagerecord_p2026_11", "billing_usagerecord_p2027_02"} <= set(names)
    left = set(UsageRecord.objects.values_list("pk", flat=True))
    assert not {r.pk for r in october} & left
    assert {r.pk for r in current} <= left and november[1].pk in left
    assert stray.pk not in left  # pruned row by row from the default partition
    # the roll-ups keep what was dropped
    assert sum(UsageDaily.objects.values_list("requests", flat=True)) == requests_before
    assert UsageHourly.objects.filter(period_start__month=10).exists()

    # when: months later, November is wholly past the cutoff too, but its job is still open
    later = datetime(2027, 3, 15, tzinfo=UTC)
    rollups.usage_raw_prune(now=later)
    # then: the month stays for that call (the other November call went row by row)
    assert "billing_usagerecord_p2026_11" in month_names()
    assert set(UsageRecord.objects.filter(created_at__month=11).values_list("pk", flat=True)) == {
        november[1].pk
    }
    # and once the job is closed long enough, the month goes whole
    Job.objects.filter(pk=job.pk).update(
        status="completed", closed_at=datetime(2026, 12, 1, tzinfo=UTC)
    )
    rollups.usage_raw_prune(now=later)
    assert "billing_usagerecord_p2026_11" not in month_names()
    assert {r.pk for r in current} <= set(UsageRecord.objects.values_list("pk", flat=True))


def _batch(tenant, n: int, when: datetime) -> list[list]:
    from billing.settlement import INSERT_USAGE_RECORDS

    columns = [
        [f"req_{uuid.uuid4().hex}" for _ in range(n)],
        *([value] * n for value in (tenant.org.pk, tenant.team.pk, None, "m1", "", 1, 1, 1, 1)),
        *([value] * n for value in ("ok", 1, False, None, None, when)),
        *([0] * n for _ in range(8)),  # the counts of each kind (cache reads, ..., characters)
        [""] * n,  # the end user
        [""] * n,  # the tags, joined
    ]
    assert INSERT_USAGE_RECORDS.count("%s") == len(columns)
    return columns


def test_a_batch_probes_the_month_by_index_not_by_reading_it_whole(tenant_a):
    # given: a month already holding 20,000 calls, its statistics up to date
    from billing.settlement import INSERT_USAGE_RECORDS

    when = datetime.now(tz=UTC)
    partitions.ensure_ahead(now=when)
    with connection.cursor() as cursor:
        cursor.execute(INSERT_USAGE_RECORDS, _batch(tenant_a, 20_000, when))
        cursor.execute("ANALYZE billing_usagerecord")
        # when: the next batch of 1,000 is planned and run (rolled back)
        cursor.execute("SAVEPOINT probe")
        cursor.execute(
            "EXPLAIN (ANALYZE, TIMING OFF) " + INSERT_USAGE_RECORDS, _batch(tenant_a, 1000, when)
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("ROLLBACK TO SAVEPOINT probe")
    # then: one index lookup per record, never the month's 20,000 rows read into a hash
    # (a NOT EXISTS became a hash anti join over the whole month: settlement slowed with it)
    assert "Hash Anti Join" not in plan, plan
    month = partitions.partition_name(partitions.month_start(when))
    assert f"Index Only Scan using {month}_request_id_created_at_key" in plan, plan
    assert f"Seq Scan on {month}" not in plan, plan
