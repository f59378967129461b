"""Refused calls as data: counted by the gateway in memory, flushed to Redis once a second
without a write per call, rolled up into RefusalHourly exactly once, and shown by the usage
API (`refused`) and /metrics (tollgate_gateway_refusals_total)."""

import asyncio
import time
from collections import Counter

import httpx
import pytest
from django.db.models import Sum
from django.test import Client
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from billing import refusals, settlement
from billing.models import RefusalBucketDrained, RefusalHourly, UsageRecord
from core.redis import client as redis_client
from livestate.keys import (
    REFUSALS_CLAIMED,
    REFUSALS_MINUTES,
    REFUSALS_TTL_SECONDS,
    SHARD_RANGE,
    refusals_bucket,
    refusals_flush_mark,
    usage_stream,
)
from livestate.refusals import FLUSH, field, parse_field
from proxy import refusals as gateway_refusals
from proxy.errors import GatewayError
from teams.services import key_create, key_revoke, team_set_status
from tests.helpers.api import MASTER, client_with
from tests.helpers.gateway import concurrently, until_refused
from tests.helpers.tenants import GatewayTenant
from tests.helpers.threads import race

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 30}


def post(live, headers: dict | None, body: dict = CHAT) -> httpx.Response:
    return httpx.post(f"{live.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def flush(live) -> None:
    """What the gateway counted, into Redis now (it also does so once a second)."""
    live.on_loop(live.gateway.refusals.flush())


def in_redis() -> Counter:
    """(team, key, reason, model) -> count, over every bucket the roll-up has not taken."""
    client = redis_client()
    counts = Counter()
    names = client.zrange(REFUSALS_MINUTES, 0, -1) + client.zrange(REFUSALS_CLAIMED, 0, -1)
    for name in names:
        for raw, n in client.hgetall(name).items():
            counts[parse_field(raw.decode())] += int(n)
    return counts


def rolled_up() -> Counter:
    counts = Counter()
    for row in RefusalHourly.objects.all():
        counts[(row.team_id or 0, row.key_id or 0, row.reason, row.model)] += row.count
    return counts


def roll_up_now() -> int:
    """Every minute counted so far is closed two minutes from now."""
    return refusals.refusals_roll_up(now=time.time() + 120)


def test_every_kind_of_refusal_is_counted_by_team_key_model_and_reason(
    live, mock_catalog, gw_team, gw_org, settings
):
    # given: a tenant refused every way a call can be, and one call that goes through
    team, key = gw_team.team.pk, gw_team.key.pk
    broke = GatewayTenant("broke", gw_org, [mock_catalog["groups"]["chat"]], credits_micros=0)
    capped = GatewayTenant(
        "capped", gw_org, [mock_catalog["groups"]["chat"]], 100_000_000,
        budget_period="monthly", budget_limit_micros=1, budget_mode="hard",
    )  # fmt: skip
    limited, limited_secret = key_create(
        actor="test", team=gw_team.team, name="one a minute", rpm_limit=1
    )
    paused = GatewayTenant("paused", gw_org, [mock_catalog["groups"]["chat"]], 100_000_000)
    assert post(live, gw_team.headers()).status_code == 200
    # when
    answers = {
        "missing_api_key": post(live, None),
        "invalid_api_key": post(live, {"Authorization": "Bearer sk-not-a-key"}),
        "model_not_found": post(live, gw_team.headers(), {**CHAT, "model": "gpt-nonexistent"}),
        "model_not_allowed": post(live, gw_team.headers(), {**CHAT, "model": "other"}),
        "missing_required_parameter": post(live, gw_team.headers(), {**CHAT, "messages": []}),
        "upstream_error": post(live, gw_team.headers(), {**CHAT, "model": "broken"}),
        "insufficient_quota": post(live, broke.headers()),
        "budget_exceeded": post(live, capped.headers()),
    }
    limited_headers = {"Authorization": f"Bearer {limited_secret}"}
    assert post(live, limited_headers).status_code == 200
    answers["rate_limit_exceeded"] = post(live, limited_headers)
    team_set_status(actor="test", team=paused.team, status="paused")
    answers["team_paused"] = until_refused(lambda: post(live, paused.headers()))
    key_revoke(actor="test", key=gw_team.key)
    answers["key_revoked"] = until_refused(lambda: post(live, gw_team.headers()))
    flush(live)
    # then: each refused as expected, and counted once under who asked, for what, and why
    for reason, answer in answers.items():
        assert answer.json()["error"]["code"] == reason, (reason, answer.text)
    counted = in_redis()
    assert counted == {
        (0, 0, "missing_api_key", ""): 1,
        (0, 0, "invalid_api_key", ""): 1,
        (team, key, "model_not_found", "gpt-nonexistent"): 1,
        (team, key, "model_not_allowed", "other"): 1,
        (team, key, "missing_required_parameter", "chat"): 1,
        (team, key, "upstream_error", "broken"): 1,
        (broke.team.pk, broke.key.pk, "insufficient_quota", "chat"): 1,
        (capped.team.pk, capped.key.pk, "budget_exceeded", "chat"): 1,
        (team, limited.pk, "rate_limit_exceeded", "chat"): 1,
        (paused.team.pk, paused.key.pk, "team_paused", ""): 1,
        (team, key, "key_revoked", ""): 1,
    }
    # and: the roll-up moves them into Postgres, the team's and the org's
    assert roll_up_now() >= 1
    assert rolled_up() == counted
    assert in_redis() == {}
    row = RefusalHourly.objects.get(reason="budget_exceeded")
    assert (row.organization_id, row.team_id, row.key_id) == (
        gw_org.pk,
        capped.team.pk,
        capped.key.pk,
    )
    assert RefusalHourly.objects.get(reason="missing_api_key").team_id is None
    # and: the usage API counts them beside the calls, by model and in the totals
    settlement.settle_usage()
    api = client_with(MASTER)
    body = api.get(f"/api/teams/{gw_team.team.public_id}/usage/", {"group_by": "model"}).json()
    assert body["totals"]["refused"] == 6
    # refusals are not requests: those are the settled calls (the upstream error among them)
    assert body["totals"]["requests"] == UsageRecord.objects.filter(team=gw_team.team).count()
    by_model = {row["model"]: row["refused"] for row in body["rows"]}
    assert by_model["gpt-nonexistent"] == by_model["other"] == by_model["broken"] == 1
    assert by_model["chat"] == 2  # the empty body, the rate limit
    assert by_model[""] == 1  # the revoked key, refused before its body was read
    org = api.get(f"/api/organizations/{gw_org.public_id}/usage/", {"group_by": "team"}).json()
    assert org["totals"]["refused"] == 9
    per_team = {row["team"]: row["refused"] for row in org["rows"]}
    assert per_team[broke.team.public_id] == per_team[capped.team.public_id] == 1
    by_status = api.get(f"/api/teams/{gw_team.team.public_id}/usage/", {"group_by": "status"})
    assert by_status.json()["totals"]["refused"] == 6
    assert {row["refused"] for row in by_status.json()["rows"]} == {None}
    # and: /metrics shows the counter by team (public id) and reason
    settings.DEBUG = True
    settings.METRICS_TOKEN = ""
    text = Client().get("/metrics").content.decode()
    assert (
        f'tollgate_gateway_refusals_total{{reason="budget_exceeded",team="{capped.team.public_id}"}}'
        in text
    ), text
    assert (
        'tollgate_gateway_refusals_total{reason="missing_api_key",team="unauthenticated"}' in text
    )


def test_a_thousand_refused_calls_write_no_row_and_a_few_redis_commands(live, gw_team):
    # given: the gateway's timers that talk to Redis stopped (lease heartbeats; the refusal
    # flusher itself, so that the one flush below is the only one), its scripts loaded
    flush(live)
    live.on_loop(live.gateway.instance.stop())
    live.on_loop(live.gateway.refusals.stop())
    client = redis_client()
    client.config_resetstat()
    # when: 500 calls without a key, 500 with a body the gateway refuses, then one flush
    unauthenticated = concurrently(live.url, "/v1/chat/completions", {}, CHAT, 500)
    empty = {**CHAT, "messages": []}
    bad = concurrently(live.url, "/v1/chat/completions", gw_team.headers(), empty, 500)
    flush(live)
    stats = client.info("commandstats")
    # then: every one refused and counted, none of them a row or a stream entry
    assert {r.status_code for r in unauthenticated} == {401}
    assert {r.status_code for r in bad} == {400}
    counts = in_redis()
    assert counts[(0, 0, "missing_api_key", "")] == 500
    assert counts[(gw_team.team.pk, gw_team.key.pk, "missing_required_parameter", "chat")] == 500
    assert UsageRecord.objects.count() == 0
    assert all(client.xlen(usage_stream(shard)) == 0 for shard in SHARD_RANGE)
    per_command = {
        name.removeprefix("cmdstat_"): stat["calls"]
        for name, stat in stats.items()
        # the change feed's poll and the recovery's epoch check (GET) run on timers, not per
        # call; this test's own INFO and CONFIG
        if name not in ("cmdstat_xread", "cmdstat_get", "cmdstat_info", "cmdstat_config|resetstat")
    }
    # one FLUSH script per minute bucket (two if the calls straddled a minute's end), and in
    # it one HINCRBY per group (two groups), the mark, the expiry and the listing; beside them
    # a few commands the burst costs once (the key's first lookups) and a timer's last round
    # (a heartbeat finishing as it stops): a handful, where a write per call would be 1,000
    assert per_command["hincrby"] <= 2 * 2, per_command
    assert per_command["evalsha"] <= 4, per_command
    assert sum(per_command.values()) <= 30, per_command


def flush_sync(minute: int, flush_id: str, counts: dict) -> int:
    """A gateway's flush of one minute, as proxy/refusals.py sends it."""
    args = [REFUSALS_TTL_SECONDS, minute, 600]
    for name, n in counts.items():
        args += [name, n]
    keys = [refusals_bucket(minute), REFUSALS_MINUTES, refusals_flush_mark(flush_id)]
    return redis_client().register_script(FLUSH)(keys=keys, args=args)


@pytest.fixture
def counted(gw_team):
    """Refusals of two minutes of the last hour in Redis: 7 + 5 of one group, 3 of another."""
    minute = int(time.time()) // 60 - 3
    team, key = gw_team.team.pk, gw_team.key.pk
    flush_sync(minute, "g1:1", {field(team, key, "budget_exceeded", "chat"): 7})
    flush_sync(minute + 1, "g1:2", {field(team, key, "budget_exceeded", "chat"): 5})
    flush_sync(minute + 1, "g2:1", {field(0, 0, "invalid_api_key", ""): 3})
    return {(team, key, "budget_exceeded", "chat"): 12, (0, 0, "invalid_api_key", ""): 3}


def test_a_retried_flush_is_added_once(counted, gw_team):
    # when: a flush whose answer was lost is sent again (same flush id)
    minute = int(time.time()) // 60 - 3
    assert flush_sync(minute, "g1:1", {field(0, 0, "invalid_api_key", ""): 100}) == 0
    # then
    assert in_redis() == counted


def test_the_roll_up_moves_each_bucket_once(counted):
    assert roll_up_now() == 2
    assert roll_up_now() == 0
    assert rolled_up() == counted
    assert RefusalHourly.objects.aggregate(n=Sum("count"))["n"] == 15
    assert in_redis() == {}
    assert RefusalBucketDrained.objects.count() == 2


@pytest.mark.parametrize("dies_in", ["_drain", "_add", "_forget"])
def test_a_worker_killed_between_the_steps_leaves_nothing_lost_or_doubled(
    counted, monkeypatch, dies_in
):
    # given: a worker that dies after claiming (_drain), inside its transaction (_add, after
    # the upsert ran), or after the commit and before the bucket's deletion (_forget)
    real = getattr(refusals, dies_in)

    def dies(*args, **kwargs):
        if dies_in != "_drain":
            real(*args, **kwargs)
        raise SystemExit("killed")

    monkeypatch.setattr(refusals, dies_in, dies)
    with pytest.raises(SystemExit):
        roll_up_now()
    left = in_redis()
    # when: the next run
    monkeypatch.setattr(refusals, dies_in, real)
    roll_up_now()
    # then: every count once in Postgres, nothing left in Redis
    assert left  # the killed run left its claimed buckets behind
    assert rolled_up() == counted
    assert in_redis() == {}
    assert redis_client().zcard(REFUSALS_CLAIMED) == 0


def test_two_workers_draining_the_same_buckets_add_them_once(counted):
    # given: the buckets claimed, then two workers draining every claimed bucket at once
    client = redis_client()
    refusals._claim_closed(client, now=time.time() + 120, limit=100)
    claimed = [name.decode() for name in client.zrange(REFUSALS_CLAIMED, 0, -1)]
    assert len(claimed) == 2
    # when
    added = race(lambda i: sum(refusals._drain(redis_client(), name) for name in claimed), 2)
    # then
    assert sum(added) == 2
    assert rolled_up() == counted


def test_a_flush_after_the_claim_starts_a_new_bucket_rolled_up_later(counted, gw_team):
    # given: the minutes claimed and drained
    roll_up_now()
    # when: a gateway flushes late into one of them
    minute = int(time.time()) // 60 - 3
    team, key = gw_team.team.pk, gw_team.key.pk
    flush_sync(minute, "late:1", {field(team, key, "budget_exceeded", "chat"): 2})
    roll_up_now()
    # then: added to the same hour's row
    assert rolled_up()[(team, key, "budget_exceeded", "chat")] == 14


class Scope(dict):
    """A request's ASGI scope after authentication noted its key."""

    def __init__(self, team: int, key: int, model: str = "chat"):
        snapshot = type("Key", (), {"team": team, "id": key})()
        super().__init__(
            {gateway_refusals.SCOPE_KEY: snapshot, gateway_refusals.SCOPE_MODEL: model}
        )


REFUSED = GatewayError(429, "No credits.", "insufficient_quota", "insufficient_quota")


def test_a_flush_redis_does_not_take_is_kept_and_sent_once_later(settings):
    async def scenario():
        down = AsyncRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        counter = gateway_refusals.Refusals(down, every=1)
        for _ in range(3):
            counter.count(Scope(7, 70), REFUSED)
        with pytest.raises((RedisError, OSError)):
            await counter.flush()
        counter.count(Scope(7, 70), REFUSED)  # counted while Redis is away
        up = AsyncRedis.from_url(settings.REDIS_URL)
        counter._flush = up.register_script(FLUSH)  # Redis back
        sent = await counter.flush()
        again = await counter.flush()
        await up.aclose()
        await down.aclose()
        return sent, again

    sent, again = asyncio.run(scenario())
    assert (sent, again) == (2, 0)  # the batch kept, then the one counted after it
    assert in_redis() == {(7, 70, "insufficient_quota", "chat"): 4}


def test_what_waits_for_redis_is_bounded_oldest_dropped_first(settings, monkeypatch):
    monkeypatch.setattr(gateway_refusals, "MAX_PENDING_GROUPS", 2)

    async def scenario():
        down = AsyncRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        counter = gateway_refusals.Refusals(down, every=1)
        counter.count(Scope(1, 10), REFUSED)
        with pytest.raises((RedisError, OSError)):
            await counter.flush()
        counter.count(Scope(2, 20), REFUSED)
        counter.count(Scope(3, 30), REFUSED)
        with pytest.raises((RedisError, OSError)):
            await counter.flush()
        up = AsyncRedis.from_url(settings.REDIS_URL)
        counter._flush = up.register_script(FLUSH)
        await counter.flush()
        await up.aclose()
        await down.aclose()

    asyncio.run(scenario())
    assert in_redis() == {
        (2, 20, "insufficient_quota", "chat"): 1,
        (3, 30, "insufficient_quota", "chat"): 1,
    }


def test_a_caller_cycling_through_model_names_cannot_grow_a_batch(settings, monkeypatch):
    monkeypatch.setattr(gateway_refusals, "MAX_BATCH_GROUPS", 3)

    async def scenario():
        up = AsyncRedis.from_url(settings.REDIS_URL)
        counter = gateway_refusals.Refusals(up, every=1)
        for i in range(10):
            counter.count(Scope(5, 50, f"made-up-{i}"), REFUSED)
        await counter.flush()
        await up.aclose()

    asyncio.run(scenario())
    counts = in_redis()
    assert sum(counts.values()) == 10
    assert len(counts) == 4 and counts[(5, 50, "insufficient_quota", "")] == 7
