"""Leases, not records: a gateway killed mid-call frees the team's money and slots within
seconds and charges what the client had received; a live gateway's slow call is never reaped.

The gateways here are real processes (`make run`'s server line) on the test's Redis and
database, killed with SIGKILL; the live test server's own gateway is the one that reaps."""

import time

import httpx
import orjson
import pytest
from django.db.models import Sum

from billing import settlement
from billing.models import LedgerEntry, UsageRecord
from core.redis import client as redis_client
from livestate import leases, scripts
from livestate.keys import (
    SHARD_RANGE,
    acct_key,
    gateway_beats,
    gateway_seats,
    inflight_key,
    job_key,
    key_fields,
    key_rate_key,
    parallel_key,
    shard_of,
    team_rate_key,
    usage_stream,
)
from modelgroups import services as catalog
from proxy.tokens import estimate_text_tokens
from tests.helpers.gateway import redis_account
from tests.helpers.ledger import debit_of
from tests.helpers.servers import ServerProcess
from tests.helpers.tenants import GatewayTenant
from tests.helpers.threads import race
from tests.helpers.waiting import eventually

TTL_S = 10  # GATEWAY_LEASE_TTL_SECONDS' default: what the kill test holds the reaper to


def slow_stream_tenant(mock_catalog, org, *, delay_ms: int, tokens: int) -> GatewayTenant:
    """A team with one call in flight at most, on a model that streams one token per frame
    every `delay_ms`."""
    slow = catalog.model_create(
        actor="test",
        name="mock-trickle",
        upstream=mock_catalog["upstream"],
        upstream_model=f"mock-chunk-delay-{delay_ms}-reply-{tokens}",
        input_price_micros=1_000_000,
        output_price_micros=2_000_000,
        max_output_tokens=4000,
    )
    group = catalog.model_group_create(actor="test", name="trickle", members=[{"model": slow}])
    return GatewayTenant("leased", org, [group], 10_000_000, max_parallel_requests=1)


def stream_body(max_tokens: int) -> dict:
    return {
        "model": "trickle",
        "messages": [{"role": "user", "content": "tell me a long story"}],
        "max_tokens": max_tokens,
        "stream": True,
    }


def lease_of(rid: str) -> dict | None:
    for shard in SHARD_RANGE:
        raw = redis_client().hget(inflight_key(shard), rid)
        if raw:
            return orjson.loads(raw)
    return None


def inflight_of(team) -> str:
    return inflight_key(shard_of(team.pk))


def content_of(frames: bytes) -> bytes:
    """The completion text the client received, from its SSE bytes."""
    text = b""
    for frame in frames.split(b"\n\n"):
        payload = frame.removeprefix(b"data: ")
        if frame.startswith(b"data: {"):
            for choice in orjson.loads(payload).get("choices") or ():
                text += ((choice.get("delta") or {}).get("content") or "").encode()
    return text


def stream_until_progress(url: str, tenant: GatewayTenant, body: dict):
    """Open a stream and read it until its lease records progress; (response, client, bytes
    read so far, request id). The caller closes the client."""
    client = httpx.Client(timeout=30)
    request = client.build_request(
        "POST", f"{url}/v1/chat/completions", headers=tenant.headers(), json=body
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    received = b""
    chunks = response.iter_raw()
    deadline = time.monotonic() + 20
    while not ((lease := lease_of(rid)) and lease.get("prog", {}).get("out")):
        received += next(chunks)
        assert time.monotonic() < deadline, "no progress was recorded in the lease"
    return response, client, chunks, received, rid


def drain(chunks) -> bytes:
    """What reaches the client after its gateway died: whatever was already on the wire."""
    rest = b""
    try:
        for chunk in chunks:
            rest += chunk
    except httpx.HTTPError:
        pass
    return rest


def released(team, tenant) -> bool:
    client = redis_client()
    return (
        redis_account(team).get("resv", 0) == 0
        and client.zcard(parallel_key(team.pk)) == 0
        and client.hlen(inflight_of(team)) == 0
    )


def test_a_gateway_killed_mid_stream_frees_the_slot_and_charges_what_was_streamed_once(
    live, mock_catalog, gw_org, redis_url
):
    # given: a team with one parallel slot, streaming slowly through a gateway process of its own
    tenant = slow_stream_tenant(mock_catalog, gw_org, delay_ms=100, tokens=2000)
    team = tenant.team
    gateway = ServerProcess(redis_url).start()
    try:
        _, client, chunks, received, rid = stream_until_progress(
            gateway.url, tenant, stream_body(3000)
        )
        reserve = lease_of(rid)["reserve"]
        # when: the gateway is killed mid-stream
        gateway.kill()
        killed = time.monotonic()
        progress = lease_of(rid)["prog"]  # the last progress it wrote
        received += drain(chunks)
        client.close()
    finally:
        gateway.kill()
        gateway.output()

    # then: within 15 s the reservation and the parallel slot are released (by the live
    # gateway's sweep), and the team's next call is admitted
    eventually(
        lambda: released(team, tenant), timeout=15, since=killed, what="the dead gateway's release"
    )
    # (not before its lease expired: the last heartbeat came at most one interval before the kill)
    assert time.monotonic() - killed > TTL_S - 2.5
    after = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=tenant.headers(),
        json={**stream_body(5), "stream": False},
        timeout=30,
    )
    assert after.status_code == 200, after.text
    # and after settlement the interrupted call is charged once, for what was streamed
    settlement.settle_usage()
    record = UsageRecord.objects.get(request_id=rid)
    assert record.status == UsageRecord.Status.INTERRUPTED
    assert record.output_tokens == progress["out"] > 0
    assert record.output_tokens <= estimate_text_tokens(len(content_of(received)))
    assert record.input_tokens == progress["in"] > 0
    assert 0 < record.price_micros == progress["price"] <= reserve
    entries = LedgerEntry.objects.filter(account__team=team, kind=LedgerEntry.Kind.USAGE)
    assert entries.filter(calls__request_id=rid).get() == debit_of(rid)
    assert -entries.aggregate(s=Sum("amount_micros"))["s"] >= record.price_micros
    assert redis_account(team)["pend"] == 0


@pytest.fixture
def long_leases(settings):
    """Leases that only a restart can end within the test: a TTL far above its duration."""
    settings.GATEWAY_LEASE_TTL_SECONDS = 120.0


def test_a_gateway_restarted_on_its_seat_releases_its_earlier_calls_at_once(
    long_leases, live, mock_catalog, gw_org, redis_url
):
    # given: a gateway on a fixed seat, streaming, killed; nobody reaps its call on the TTL
    tenant = slow_stream_tenant(mock_catalog, gw_org, delay_ms=100, tokens=2000)
    env = {"GATEWAY_INSTANCE": "gateway-test-seat", "GATEWAY_LEASE_TTL_SECONDS": "120"}
    first = ServerProcess(redis_url, **env).start()
    try:
        _, client, chunks, _, rid = stream_until_progress(first.url, tenant, stream_body(3000))
        old_instance = lease_of(rid)["inst"]
        first.kill()
        drain(chunks)
        client.close()
    finally:
        first.kill()
        first.output()
    time.sleep(1)
    assert lease_of(rid) is not None
    # when: the same seat starts again (a new incarnation)
    second = ServerProcess(redis_url, **env)
    try:
        second.start()
        serving = time.monotonic()
        # then: by the time it serves, the earlier incarnation's call is released
        eventually(
            lambda: released(tenant.team, tenant), timeout=1, since=serving, what="the release"
        )
        seat_holder = redis_client().hget(gateway_seats(0), "gateway-test-seat").decode()
        assert seat_holder != old_instance and seat_holder.startswith("gateway-test-seat#")
    finally:
        second.stop()
    settlement.settle_usage()
    record = UsageRecord.objects.get(request_id=rid)
    assert record.status == UsageRecord.Status.INTERRUPTED and record.price_micros > 0


@pytest.fixture
def short_leases(settings):
    settings.GATEWAY_HEARTBEAT_SECONDS = 0.5
    settings.GATEWAY_LEASE_TTL_SECONDS = 2.0


def test_a_slow_but_live_stream_outlasting_the_lease_ttl_is_never_reaped(
    short_leases, live, mock_catalog, gw_org
):
    # given: a stream that runs about three lease TTLs on a live gateway (heartbeating)
    tenant = slow_stream_tenant(mock_catalog, gw_org, delay_ms=100, tokens=80)
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        headers=tenant.headers(),
        json=stream_body(100),
        timeout=30,
    ) as response:
        rid = response.headers["x-request-id"]
        body, counts = b"", set()
        for chunk in response.iter_raw():
            body += chunk
            lease = lease_of(rid)
            if lease is not None and "prog" in lease:
                counts.add(lease["prog"]["out"])
            # when: the workers' sweep runs too, while the lease is older than its TTL
            if time.monotonic() - started > 2.5:
                assert settlement.reap_leases() in (0, None)
                assert lease_of(rid) is not None or b"[DONE]" in body
    # then: it ran past the TTL, ended normally and settled once, as an ordinary call
    took = time.monotonic() - started
    assert took > 3 * 2.0
    # (its progress was recorded while it ran, about once a second, not for each of its frames)
    assert 3 <= len(counts) <= took / 1.0 + 1
    assert body.endswith(b"data: [DONE]\n\n")
    settlement.settle_usage()
    record = UsageRecord.objects.get(request_id=rid)
    assert record.status == UsageRecord.Status.OK
    assert record.output_tokens == 80
    assert record.price_micros > 0 and debit_of(rid).kind == LedgerEntry.Kind.USAGE
    assert redis_account(tenant.team)["resv"] == 0


# The scripts, on the real Redis ------------------------------------------------------------


def admit(team, key, rid: str, lease: dict, *, reserve: int) -> None:
    """A call admitted by the real ADMIT script, holding `lease`."""
    verdict = redis_client().eval(
        scripts.ADMIT,
        6,
        acct_key(team.pk),
        parallel_key(team.pk),
        inflight_of(team),
        key_rate_key(team.pk, key.pk),
        team_rate_key(team.pk),
        job_key(team.pk, ""),
        int(time.time() * 1000),
        rid,
        10,  # estimated tokens
        reserve,
        orjson.dumps(lease),
        "",  # no job
        -1,  # the key's rpm, tpm and budget: none
        -1,
        -1,
        *key_fields(key.pk),
        -1,  # the team's rpm and tpm: none
        -1,
        100,  # parallel slots
        0,  # overdraft
        -1,  # budget: none
        "1",
        team.pk,
    )
    assert verdict[0] == b"ok"


def dead_lease(tenant, rid: str, *, reserve: int, price: int, instance: str = "gone#1") -> None:
    """An admitted call with progress, whose instance last beat long ago."""
    team, key = tenant.team, tenant.key
    base = {
        "team": team.pk,
        "org": team.organization_id,
        "key": key.pk,
        "reserve": reserve,
        "ts": int(time.time() * 1000),
        "inst": instance,
    }
    lease = leases.with_progress(
        base,
        in_tokens=7,
        out_tokens=11,
        price=price,
        cost=3,
        model="mock-a",
        group="chat",
        job=None,
        caps=(0, -1, False, -1),
    )
    admit(team, key, rid, orjson.loads(lease), reserve=reserve)
    for shard in SHARD_RANGE:
        redis_client().zadd(gateway_beats(shard), {instance: 1_000})


def settle(tenant, rid: str, *, reserve: int, price: int) -> int:
    """The gateway's SETTLE for the call, as proxy/settlement.py runs it."""
    team, key = tenant.team, tenant.key
    record = {
        "rid": rid,
        "ts": time.time(),
        "org": team.organization_id,
        "team": team.pk,
        "key": key.pk,
        "model": "mock-a",
        "group": "chat",
        "in": 7,
        "out": 30,
        "cost": 5,
        "price": price,
        "status": "ok",
        "lat": 5,
        "est": False,
    }
    now_ms = int(time.time() * 1000)
    return redis_client().eval(
        scripts.SETTLE,
        7,
        acct_key(team.pk),
        parallel_key(team.pk),
        inflight_of(team),
        usage_stream(shard_of(team.pk)),
        key_rate_key(team.pk, key.pk),
        team_rate_key(team.pk),
        job_key(team.pk, ""),
        now_ms,
        rid,
        reserve,
        price,
        0,  # token correction
        orjson.dumps(record),
        "0",  # not in a job
        "0",  # not failed
        7,
        30,
        5,
        now_ms,  # admitted
        -1,  # the key's rpm, tpm and budget: none
        -1,
        -1,
        *key_fields(key.pk),
        -1,  # the team's rpm, tpm and parallel: none
        -1,
        -1,
        0,  # overdraft
        -1,  # budget: none
        "1",
        team.pk,
    )


def ttl_ms() -> int:
    """The unit tests' lease TTL, 1 s, on a Redis up for longer (so silence counts)."""
    eventually(lambda: int(redis_client().info("server")["uptime_in_seconds"]) >= 1, timeout=3)
    return 1000


def test_silence_ends_a_lease_only_on_a_redis_up_for_longer_than_the_ttl():
    # An instance last heard of at 0 ms; now is a minute later; the TTL is 10 s.
    beats, seats, minute = [(b"host:1#a", 0)], {b"host:1": b"host:1#a"}, 60_000

    def dead(redis_up_s, instance="host:1#a", admitted_ms=0):
        return leases.Instances(beats, seats, minute, 10_000, redis_up_s).dead(
            instance, admitted_ms
        )

    assert dead(redis_up_s=3600)
    # a Redis restarted 5 s ago heard no one while it was down: its silence proves nothing
    assert not dead(redis_up_s=5)
    # an instance never heard of counts from its call's admission
    assert not dead(3600, "host:2#b", admitted_ms=minute - 1_000)
    assert dead(3600, "host:2#b", admitted_ms=minute - 11_000)
    # a seat taken over by another incarnation ends the earlier one's leases at once
    taken = leases.Instances([(b"host:1#a", minute)], {b"host:1": b"host:1#new"}, minute, 10_000, 5)
    assert taken.dead("host:1#a", minute)


def test_reaping_a_dead_lease_twice_releases_and_charges_it_once(live, gw_team):
    # given: a call held by an instance that stopped beating, with 40 streamed so far
    team = gw_team.team
    before = redis_account(team)
    dead_lease(gw_team, "req_dead_twice", reserve=500, price=40)
    assert redis_account(team)["resv"] == before.get("resv", 0) + 500
    # when: two sweeps, one after the other
    client = redis_client()
    assert leases.sweep(client, ttl_ms=ttl_ms()) == 1
    assert leases.sweep(client, ttl_ms=ttl_ms()) == 0
    # then: released once, the streamed part charged once
    account = redis_account(team)
    assert account["resv"] == before.get("resv", 0)
    assert account["pend"] == before.get("pend", 0) + 40
    assert client.zcard(parallel_key(team.pk)) == 0 and client.hlen(inflight_of(team)) == 0
    settlement.settle_usage()
    record = UsageRecord.objects.get(request_id="req_dead_twice")
    assert (record.status, record.price_micros, record.input_tokens, record.output_tokens) == (
        "interrupted",
        40,
        7,
        11,
    )
    assert debit_of("req_dead_twice").calls.get() == record  # the one call, debited 40 once
    assert redis_account(team)["pend"] == 0


def test_the_reaper_charges_what_was_streamed_only_up_to_what_the_account_allows(
    live, mock_catalog, gw_org
):
    # given: a team with 300 of credit, 200 of it charged by a call not settled yet, and a dead
    # call reserving 100 whose progress is priced at its reservation
    tenant = GatewayTenant("tight", gw_org, [mock_catalog["groups"]["chat"]], 300)
    eventually(lambda: redis_account(tenant.team).get("bal") == 300, what="the account")
    redis_client().hincrby(acct_key(tenant.team.pk), "pend", 200)
    dead_lease(tenant, "req_capped", reserve=100, price=100)
    redis_client().hincrby(acct_key(tenant.team.pk), "pend", 50)  # and one more since
    # when
    assert leases.sweep(redis_client(), ttl_ms=ttl_ms()) == 1
    # then: capped like SETTLE, at what the account still allows (300 - 250)
    account = redis_account(tenant.team)
    assert (account["resv"], account["pend"]) == (0, 250 + 50)


def test_a_live_instance_keeps_its_leases_however_old_and_a_new_incarnation_ends_them(
    live, gw_team
):
    # given: a call an hour old, held by an instance that is heartbeating
    client = redis_client()
    instance = leases.instance_id("seat-x", "one")
    leases.heartbeat(client, instance, claim=True)
    dead_lease(gw_team, "req_old_but_live", reserve=100, price=10, instance=instance)
    leases.heartbeat(client, instance)  # beating again
    inflight = inflight_of(gw_team.team)
    lease = orjson.loads(client.hget(inflight, "req_old_but_live"))
    client.hset(inflight, "req_old_but_live", orjson.dumps({**lease, "ts": 1_000}))
    # when: both reapers look at it
    assert leases.sweep(client, ttl_ms=ttl_ms()) == 0
    assert settlement.reap_abandoned() == 0  # the age-based backstop leaves leases alone
    # then: it is still held
    assert client.hexists(inflight, "req_old_but_live")
    # when: its seat starts again under a new incarnation
    leases.heartbeat(client, leases.instance_id("seat-x", "two"), claim=True)
    # then: the earlier incarnation's call is released at once, whatever its heartbeat says
    assert leases.sweep(client, ttl_ms=ttl_ms()) == 1
    assert not client.hexists(inflight, "req_old_but_live")


def test_a_call_settled_and_reaped_at_the_same_time_is_released_and_charged_once(live, gw_team):
    # given: calls whose instance died, each then settled and reaped concurrently
    team = gw_team.team
    before = redis_account(team)
    rids = [f"req_race_{i}" for i in range(20)]
    for rid in rids:
        dead_lease(gw_team, rid, reserve=500, price=40)
    client = redis_client()

    def one(i):
        rid = rids[i // 2]
        if i % 2:
            return settle(gw_team, rid, reserve=500, price=90)
        return leases.sweep(client, ttl_ms=ttl_ms())

    # when
    race(one, len(rids) * 2)
    settlement.settle_usage()
    # then: every reservation released exactly once, each call posted once
    account = redis_account(team)
    assert account["resv"] == before.get("resv", 0)
    assert account["pend"] == 0
    assert client.hlen(inflight_of(team)) == 0 and client.zcard(parallel_key(team.pk)) == 0
    for rid in rids:
        record = UsageRecord.objects.get(request_id=rid)
        # whichever came first: the reaper's charge for the streamed part, or the settlement's
        assert (record.status, record.price_micros) in (("interrupted", 40), ("ok", 90))
        assert record in debit_of(rid).calls.all()
    # and the balance is exactly the grant minus the entries
    entries = LedgerEntry.objects.filter(account__team=team)
    team.account.refresh_from_db()
    assert team.account.balance_micros == entries.aggregate(s=Sum("amount_micros"))["s"]
