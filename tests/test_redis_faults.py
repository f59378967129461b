"""Redis under faults, with calls in flight: killed and restarted with persistence on, emptied by
a FLUSHDB. No answered call goes unbilled or is billed twice, no reservation stays held, no call
gets a 500, and a stream whose usage was not recorded never ends cleanly."""

import contextlib
import threading
import time
from collections import Counter

import httpx
import orjson
import pytest
import redis
from django.db import connection
from django.db.models import Sum

from billing import settlement
from billing.models import LedgerEntry, UsageRecord
from core.redis import client as redis_client
from livestate.keys import acct_key, inflight_key, shard_of, usage_stream
from livestate.scripts import REBUILT_SKEW_MS
from modelgroups import services as catalog
from orgs.models import AuditEvent
from proxy import control
from tests.helpers.gateway import assert_error, redis_account
from tests.helpers.servers import RedisServer
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

CLIENTS = 8


@pytest.fixture
def disk_redis(live, settings):
    """A private redis-server with `appendonly yes` and `appendfsync always`; the gateway (a new
    one, republishing from Postgres) and the settler (core.redis) pointed at it."""
    server = RedisServer(persistent=True).start()
    live.stop_gateway()
    settings.REDIS_URL = server.url
    redis_client.cache_clear()
    live.start_gateway()
    yield server
    live.stop_gateway()
    server.stop()


@pytest.fixture
def slow_team(live, gw_org, disk_redis):
    """A team on a model whose upstream answers after 200 ms, published to disk_redis."""
    up = catalog.upstream_create(
        actor="test", name="mock", kind="mock", base_url=live.mock_url, api_key="sk-mock-12345678"
    )
    model = catalog.model_create(
        actor="test",
        name="slow",
        upstream=up,
        upstream_model="mock-slow-200",
        input_price_micros=1_000_000,
        output_price_micros=2_000_000,
        max_output_tokens=40,
    )
    group = catalog.model_group_create(actor="test", name="slow", members=[{"model": model}])
    tenant = GatewayTenant("faults", gw_org, [group], credits_micros=100_000_000)
    # The gateway serves the team once its snapshots have come through the change feed.
    eventually(lambda: call(live, tenant, stream=False).status_code == 200, timeout=5)
    return tenant


class Outcome:
    """One call as its client saw it."""

    def __init__(self, stream: bool, response: httpx.Response, text: str):
        self.stream, self.status = stream, response.status_code
        self.rid = response.headers.get("x-request-id")
        self.headers, self.text = response.headers, text

    @property
    def answered(self) -> bool:
        """The client got the whole answer: a 200, and for a stream its [DONE]."""
        return self.status == 200 and (not self.stream or self.text.endswith("data: [DONE]\n\n"))


def call(live, tenant, *, stream: bool, client=None) -> httpx.Response:
    body = {
        "model": "slow",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 20,
        "stream": stream,
    }
    post = (client or httpx).post
    return post(f"{live.url}/v1/chat/completions", json=body, headers=tenant.headers(), timeout=30)


def load(live, tenant, stop: threading.Event) -> tuple[list, list[threading.Thread]]:
    """CLIENTS threads calling back to back (every other call streamed) and a settler draining
    the usage stream every 0.3 s, until `stop`."""
    outcomes: list = []

    def settler():
        try:
            while not stop.wait(0.3):
                with contextlib.suppress(redis.RedisError):  # Redis down: the next round
                    settlement.settle_usage()
        finally:
            connection.close()

    def client_loop(n: int):
        with httpx.Client() as client:
            i = n
            while not stop.is_set():
                stream = i % 2 == 0
                i += 1
                try:
                    r = call(live, tenant, stream=stream, client=client)
                    outcomes.append(Outcome(stream, r, r.text))
                except httpx.TransportError as exc:  # never expected: the gateway answers
                    outcomes.append(exc)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    threads.append(threading.Thread(target=settler))
    for t in threads:
        t.start()
    return outcomes, threads


def settle_all(live) -> None:
    """Run the settler until the gateway holds nothing back and the stream is drained."""
    recovery = live.gateway.recovery

    state = {}

    def drained():
        settlement.settle_usage()
        state.update(deferred=len(recovery.deferred), backlog=settlement.backlog(redis_client()))
        return not recovery.deferred and state["backlog"].waiting == 0

    try:
        eventually(drained, timeout=20, interval=0.2, what="settlement of every record")
    except AssertionError:
        raise AssertionError(f"not everything settled within 20 s: {state}") from None


def assert_billed_once(tenant, outcomes, *, in_full: bool = True) -> None:
    """Every call the client got a full answer for is recorded once and, `in_full`, charged
    by a usage entry that names it."""
    answered = {o.rid for o in outcomes if o.answered}
    assert answered, "no call was answered"
    rows = UsageRecord.objects.filter(team=tenant.team)
    times = Counter(rows.values_list("request_id", flat=True))
    assert [rid for rid in answered if times[rid] != 1] == [], "answered calls not recorded once"
    records = {r.request_id: r for r in rows}
    assert all(records[rid].status == "ok" for rid in answered)
    if in_full:
        unpriced = [rid for rid in answered if records[rid].price_micros <= 0]
        assert unpriced == [], f"{len(unpriced)} answered calls were charged nothing"
        assert all(records[rid].ledger_entry_id for rid in answered)
    # the ledger is the records' prices, exactly
    entries = LedgerEntry.objects.filter(account__team=tenant.team, kind=LedgerEntry.Kind.USAGE)
    charged = rows.aggregate(s=Sum("price_micros"))["s"]
    assert -entries.aggregate(s=Sum("amount_micros"))["s"] == charged


def assert_refusals_are_retryable(outcomes) -> None:
    assert all(isinstance(o, Outcome) for o in outcomes), [
        o for o in outcomes if not isinstance(o, Outcome)
    ]
    assert {o.status for o in outcomes} <= {200, 503}, sorted({o.status for o in outcomes})
    for o in outcomes:
        if o.status == 503:
            assert o.headers["content-type"] == "application/json"
            assert o.headers["retry-after"]
            error = httpx.Response(503, content=o.text).json()["error"]
            assert error["code"] in ("state_unavailable", "account_not_ready"), error


def assert_nothing_held(tenant) -> None:
    account = redis_account(tenant.team)
    assert account.get("resv", 0) == 0, account
    assert redis_client().hlen(inflight_key(shard_of(tenant.team.pk))) == 0


@pytest.mark.parametrize("retry_seconds", [5.0, 1.0], ids=["retries-outlast", "retries-give-up"])
def test_redis_killed_and_restarted_under_load_loses_no_answered_call(
    live, disk_redis, slow_team, settings, retry_seconds
):
    # given: 8 clients calling through a 200 ms upstream; settlements retried for 5 s (longer
    # than the outage: held answers complete after it), or for 1 s (shorter: they give up)
    settings.GATEWAY_SETTLE_RETRY_SECONDS = retry_seconds
    stop = threading.Event()
    outcomes, threads = load(live, slow_team, stop)
    time.sleep(1.5)
    # when: Redis is killed (-9) and started again 3 s later, with calls in flight
    disk_redis.kill()
    down = time.monotonic()
    during = [call(live, slow_team, stream=stream) for stream in (False, True)]
    ready = httpx.get(f"{live.url}/health/ready", timeout=10)
    time.sleep(max(0.0, 3 - (time.monotonic() - down)))
    disk_redis.restart()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(30)
    settle_all(live)
    # then: outage calls were retryable 503s, never 500s
    assert_refusals_are_retryable(outcomes)
    for r in during:  # calls made while Redis was down
        assert_error(r, 503, "service_unavailable", "state_unavailable")
        assert r.headers["retry-after"]
    assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False
    # every answered call is billed exactly once, and nothing stays reserved
    assert_billed_once(slow_team, outcomes)
    assert_nothing_held(slow_team)
    # a stream that got a 200 either ended with [DONE] (recorded) or with an error event, and
    # then its record, kept by the gateway, was written when Redis came back: it is billed
    cut = [o for o in outcomes if o.stream and o.status == 200 and not o.answered]
    for o in cut:
        last = o.text.rstrip("\n").rsplit("\n\n", 1)[-1]
        assert last.startswith('data: {"error"'), o.text[-300:]
        assert "state_unavailable" in last
        assert UsageRecord.objects.get(request_id=o.rid).price_micros > 0
    if retry_seconds < 3:
        assert cut, "no stream's settlement gave up: the test did not reach that path"
    # and the calls still served after the restart
    assert call(live, slow_team, stream=False).status_code == 200


def test_a_flushed_redis_fails_closed_serves_within_seconds_and_replays_what_it_lost(
    live, disk_redis, slow_team
):
    # given: load, and answered calls the settler has not drained yet
    stop = threading.Event()
    outcomes, threads = load(live, slow_team, stop)
    time.sleep(1.5)
    # when: Redis loses everything
    flushed = time.monotonic()
    redis_client().flushdb()
    # then: every team serves again within 5 s of the flush
    eventually(
        lambda: call(live, slow_team, stream=False).status_code == 200,
        timeout=5,
        since=flushed,
        what="serving again after the flush",
    )
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join(30)
    settle_all(live)
    # then: refusals were retryable, every answered call is billed once, nothing held
    assert_refusals_are_retryable(outcomes)
    assert_billed_once(slow_team, outcomes)
    assert_nothing_held(slow_team)
    # no overspend: the settled balance is what was granted minus exactly what was charged
    account = slow_team.team.account
    account.refresh_from_db()
    charged = UsageRecord.objects.filter(team=slow_team.team).aggregate(s=Sum("price_micros"))["s"]
    assert account.balance_micros == 100_000_000 - charged
    assert redis_account(slow_team.team)["bal"] == account.balance_micros
    assert redis_account(slow_team.team).get("pend", 0) == 0
    # the replay was reported with its count
    recovery = live.gateway.recovery
    assert recovery.replayed > 0
    event = AuditEvent.objects.get(action="usage.replayed", object_id=recovery.instance)
    assert event.changes["replayed_records"] == [None, recovery.replayed]


def settle_args(live, tenant, rid: str, admitted_ms: int, price: int = 50) -> dict:
    replica = live.gateway.replica
    live.on_loop(replica.apply_changes())  # the tenant's key and team, published a moment ago
    key = next(k for k in replica.keys.values() if k.id == tenant.key.pk)
    return {
        "key": key,
        "team": replica.teams[tenant.team.pk],
        "rid": rid,
        "now_ms": admitted_ms + 10,
        "reserve": 100,
        "price": price,
        "token_correction": 0,
        "record": orjson.dumps({"rid": rid, "team": tenant.team.pk, "key": tenant.key.pk}),
        "job_id": None,
        "failed": False,
        "in_tokens": 1,
        "out_tokens": 1,
        "cost": 0,
        "admitted_ms": admitted_ms,
    }


def admit(live, args: dict) -> None:
    refused = live.on_loop(
        live.gateway.scripts.admit(
            key=args["key"],
            team=args["team"],
            rid=args["rid"],
            now_ms=args["admitted_ms"],
            est_tokens=10,
            reserve=args["reserve"],
            inflight=orjson.dumps(
                {"team": args["team"].id, "org": 0, "key": args["key"].id, "reserve": 100}
            ),
            job_id=None,
        )
    )
    assert refused is None


def test_a_settlement_sent_twice_records_once_and_releases_once(live, gw_team):
    # given: an admitted call (reserving 100), admitted more than REBUILT_SKEW_MS after its
    # account was built (at the gateway's start on this empty Redis)
    built = redis_account(gw_team.team)["rebuilt"]
    time.sleep(max(0.0, (built + REBUILT_SKEW_MS) / 1000 - time.time() + 0.05))
    args = settle_args(live, gw_team, "req_twice", int(time.time() * 1000))
    admit(live, args)
    stream = usage_stream(shard_of(gw_team.team.pk))
    before = redis_client().xlen(stream)
    # when: its SETTLE runs twice (a retry after a reply lost to a dropped connection)
    first = live.on_loop(live.gateway.scripts.settle(**args))
    second = live.on_loop(live.gateway.scripts.settle(**args))
    # then: charged and recorded once, the reservation released once
    assert (first, second) == (50, -1)
    assert redis_client().xlen(stream) == before + 1
    account = redis_account(gw_team.team)
    assert (account["resv"], account["pend"]) == (0, 50)


def test_a_call_admitted_before_redis_lost_its_data_is_still_recorded(live, gw_team):
    # given: an admitted call, then Redis emptied (its in-flight entry gone with the rest)
    args = settle_args(live, gw_team, "req_across", int(time.time() * 1000))
    admit(live, args)
    redis_client().flushdb()
    # then: with no account, SETTLE writes nothing and says so (the gateway keeps the record)
    assert live.on_loop(live.gateway.scripts.settle(**args)) == -2
    # when: the account is rebuilt from Postgres
    assert control.rebuild_account(gw_team.team.pk)
    # then: the call is recorded and charged, not taken for one already settled
    assert live.on_loop(live.gateway.scripts.settle(**args)) == 50
    assert redis_client().xlen(usage_stream(shard_of(gw_team.team.pk))) == 1


def test_a_rebuilt_account_counts_unsettled_usage_as_pending(live, gw_team):
    # given: two charged records no settler has posted, and another team's, then the account lost
    client = redis_client()
    team, key = gw_team.team.pk, gw_team.key.pk
    for charged, owner in ((30, team), (12, team), (99, team + 1000)):
        record = {"rid": f"req_{charged}", "ts": time.time(), "org": gw_team.team.organization_id}
        record |= {"team": owner, "key": key, "model": "m", "group": "m", "in": 1, "out": 1}
        record |= {"cost": 0, "price": charged, "status": "ok", "lat": 1, "est": False}
        stream = usage_stream(shard_of(owner))  # the other team's is likely another shard's
        client.xadd(stream, {"rec": orjson.dumps(record), "charged": charged})
    client.delete(acct_key(team))
    # when
    assert control.rebuild_account(team)
    # then: admission counts them as spent until the settler posts them (and releases `pend`)
    assert redis_account(gw_team.team)["pend"] == 42
    settlement.settle_usage()
    assert redis_account(gw_team.team)["pend"] == 0


def test_a_flush_while_credits_run_out_spends_no_more_than_was_granted(
    live, disk_redis, slow_team, gw_org
):
    # given: a team granted about 80 calls' worth, under load, its usage partly settled
    granted = 4_000
    poor = GatewayTenant("poor", gw_org, [slow_team.team.model_groups.get()], granted)
    eventually(lambda: call(live, poor, stream=False).status_code == 200, timeout=5)
    stop = threading.Event()
    outcomes, threads = load(live, poor, stop)
    time.sleep(1)
    # when: Redis loses everything while the credits are still being spent
    redis_client().flushdb()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(30)
    settle_all(live)
    # then: the rebuilt account counted what was charged but not settled, so the team was
    # refused once its credits were spent, and was charged no more than it was granted
    assert {o.status for o in outcomes} <= {200, 429, 503}
    refused = [o for o in outcomes if o.status == 429]
    assert refused and all("insufficient_quota" in o.text for o in refused)
    # (a call in flight at the flush lost its reservation with it: it is charged what the
    # rebuilt account still allows, possibly less than its price, never more than was granted)
    assert_billed_once(poor, outcomes, in_full=False)
    charged = UsageRecord.objects.filter(team=poor.team).aggregate(s=Sum("price_micros"))["s"]
    poor.team.account.refresh_from_db()
    assert charged <= granted
    assert poor.team.account.balance_micros == granted - charged >= 0
    assert_nothing_held(poor)
