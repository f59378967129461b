"""Each call's counts of separately priced usage (the gateway record's optional "cr", "cw",
"rs", "ai", "ao", "img", "ams", "chr" keys) reach its usage record, the ledger entry that
charged it, the roll-ups, the usage and calls APIs and the panel's export; a record without
them still settles, with zeros."""

import csv
import io
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.urls import reverse

from billing import partitions, rollups, settlement
from billing.models import USAGE_COUNTS, LedgerEntry, UsageDaily, UsageHourly, UsageRecord
from core.redis import client as redis_client
from livestate.keys import shard_of, usage_stream
from tests.helpers.api import MASTER, client_with
from tests.helpers.panel import logged_in, make_user
from tests.helpers.tenants import GatewayTenant

# Two calls of one hour, as the gateway writes them: an image call and a reasoning call with
# cached and audio tokens (their "in" and "out" include every kind).
FIRST = {"in": 1200, "out": 300, "cr": 1000, "cw": 100, "rs": 250, "ai": 50, "ao": 40, "img": 2}
SECOND = {"in": 20, "out": 0, "cr": 4, "ams": 61_500, "chr": 1_234}
COLUMNS = {
    "cr": "cache_read_tokens",
    "cw": "cache_write_tokens",
    "rs": "reasoning_tokens",
    "ai": "audio_input_tokens",
    "ao": "audio_output_tokens",
    "img": "image_count",
    "ams": "audio_ms",
    "chr": "characters",
}
SUMS = {
    "input_tokens": 1220,
    "output_tokens": 300,
    "cache_read_tokens": 1004,
    "cache_write_tokens": 100,
    "reasoning_tokens": 250,
    "audio_input_tokens": 50,
    "audio_output_tokens": 40,
    "image_count": 2,
    "audio_ms": 61_500,
    "characters": 1_234,
}


@pytest.fixture
def team(gw_org):
    return GatewayTenant("counted team", gw_org, [], 100_000_000)


def hand_off(tenant, counts: dict, *, ts: float, charged: int = 700) -> str:
    """One answered call in the team's usage stream, as the gateway writes it."""
    rid = f"req_{uuid.uuid4().hex[:24]}"
    record = {
        "rid": rid,
        "ts": ts,
        "org": tenant.team.organization_id,
        "team": tenant.team.pk,
        "key": tenant.key.pk,
        "model": "m",
        "group": "g",
        "cost": charged // 2,
        "price": charged,
        "status": "ok",
        "lat": 5,
        "est": False,
        **counts,
    }
    stream = usage_stream(shard_of(tenant.team.pk))
    redis_client().xadd(stream, {"rec": orjson.dumps(record), "charged": charged})
    return rid


def test_the_counts_of_each_kind_reach_the_record_the_ledger_and_the_usage_api(team):
    # given: two calls three hours ago, settled in one batch
    when = time.time() - 3 * 3600
    first = hand_off(team, FIRST, ts=when)
    second = hand_off(team, SECOND, ts=when + 1)
    assert settlement.settle_usage() == 2
    # then: each record has its own counts
    for rid, counts in ((first, FIRST), (second, SECOND)):
        record = UsageRecord.objects.get(request_id=rid)
        assert (record.input_tokens, record.output_tokens) == (counts["in"], counts["out"])
        for key, column in COLUMNS.items():
            assert getattr(record, column) == counts.get(key, 0), column
    # and the one entry that charged them says what it charged for
    (entry,) = LedgerEntry.objects.filter(account__team=team.team, kind=LedgerEntry.Kind.USAGE)
    assert entry.metadata["calls"] == 2
    assert {k: v for k, v in entry.metadata.items() if k in SUMS} == SUMS

    # and the usage API answers the sums, from the raw records and then from the roll-ups
    api = client_with(MASTER)
    path = f"/api/teams/{team.team.public_id}/usage/"
    start = datetime.fromtimestamp(when, tz=UTC) - timedelta(days=2)
    query = {"start": start.isoformat(), "group_by": "model"}
    raw = api.get(path, query).json()
    rollups.usage_roll_up()
    assert UsageHourly.objects.filter(team=team.team).count() == 1
    rolled = api.get(path, query).json()
    for body in (raw, rolled):
        assert {k: body["totals"][k] for k in SUMS} == SUMS
        assert {k: body["rows"][0][k] for k in SUMS} == SUMS
    hourly = UsageHourly.objects.get(team=team.team)
    daily = UsageDaily.objects.get(team=team.team)
    for column in USAGE_COUNTS.values():
        assert getattr(hourly, column) == getattr(daily, column) == SUMS[column], column

    # and the calls API returns each call's counts
    calls = api.get(f"/api/teams/{team.team.public_id}/calls/").json()["results"]
    by_id = {c["request_id"]: c for c in calls}
    for rid, counts in ((first, FIRST), (second, SECOND)):
        for key, column in COLUMNS.items():
            assert by_id[rid][column] == counts.get(key, 0), column
    detail = api.get(f"/api/calls/{first}/").json()
    assert (detail["image_count"], detail["reasoning_tokens"]) == (2, 250)


def test_a_record_without_the_counts_settles_with_zeros(team):
    # when: a call of a gateway that writes none of the new keys
    rid = hand_off(team, {"in": 10, "out": 20}, ts=time.time())
    assert settlement.settle_usage() == 1
    # then
    record = UsageRecord.objects.get(request_id=rid)
    assert (record.input_tokens, record.output_tokens, record.price_micros) == (10, 20, 700)
    assert all(getattr(record, column) == 0 for column in USAGE_COUNTS.values())
    (entry,) = LedgerEntry.objects.filter(account__team=team.team, kind=LedgerEntry.Kind.USAGE)
    assert -entry.amount_micros == 700
    # only the counts above 0 are named
    assert entry.metadata["input_tokens"] == 10 and entry.metadata["output_tokens"] == 20
    assert not set(entry.metadata) & set(USAGE_COUNTS.values())


def test_the_usage_export_has_a_column_for_each_count(team):
    rid = hand_off(team, FIRST, ts=time.time())
    settlement.settle_usage()
    client = logged_in(make_user("exporter", "admin"))
    export = client.get(reverse("panel:usage"), {"team": team.team.public_id, "format": "csv"})
    assert export.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    (row,) = rows
    assert row["request_id"] == rid
    for key, column in COLUMNS.items():
        assert row[column] == str(FIRST.get(key, 0)), column


def test_a_record_moved_into_a_new_month_keeps_each_count(tenant_a):
    # given: a far-future call (the default partition), each count distinct
    counts = {column: i + 1 for i, column in enumerate(USAGE_COUNTS.values())}
    record = UsageRecord.objects.create(
        request_id="req_future",
        organization=tenant_a.org,
        team=tenant_a.team,
        model="m",
        created_at=datetime(2031, 7, 4, tzinfo=UTC),
        **counts,
    )
    # when: its month is created (rows are moved with SELECT *: columns must line up)
    partitions.ensure_ahead(now=datetime(2031, 7, 1, tzinfo=UTC))
    # then
    moved = UsageRecord.objects.get(pk=record.pk)
    assert {column: getattr(moved, column) for column in counts} == counts
