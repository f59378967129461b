"""The gateway with money on the line: concurrency, limits, fallbacks, partial streams,
and settlement that neither loses nor doubles a record."""

import httpx
import orjson
from django.db.models import Sum

from billing import settlement
from billing.models import LedgerEntry, UsageRecord
from core.redis import client as redis_client
from livestate import scripts
from livestate.keys import (
    SETTLER_GROUP,
    SHARD_RANGE,
    acct_key,
    dead_letters,
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
from tests.helpers.gateway import concurrently, redis_account
from tests.helpers.ledger import posted_calls
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 30}


def stream_of(tenant) -> str:
    """The usage stream of the tenant's team's shard."""
    return usage_stream(shard_of(tenant.team.pk))


def all_records() -> list:
    return [m for shard in SHARD_RANGE for m in redis_client().xrange(usage_stream(shard))]


def fire(live, tenant, body=CHAT, n=1) -> list[httpx.Response]:
    return concurrently(live.url, "/v1/chat/completions", tenant.headers(), body, n)


def usage_entries(team):
    return LedgerEntry.objects.filter(account__team=team, kind=LedgerEntry.Kind.USAGE)


def test_hundreds_of_concurrent_calls_never_spend_more_than_the_credits(live, mock_catalog, gw_org):
    # given: credits for a handful of calls (each costs ~60 micro-credits, reserves ~200)
    granted = 1_000
    tenant = GatewayTenant("poor", gw_org, [mock_catalog["groups"]["chat"]], granted)
    # when
    responses = fire(live, tenant, n=300)
    settlement.settle_usage()
    # then
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert 1 <= len(ok) < 300
    assert {r.status_code for r in refused} == {429}
    assert {r.json()["error"]["type"] for r in refused} == {"insufficient_quota"}
    charged = -usage_entries(tenant.team).aggregate(s=Sum("amount_micros"))["s"]
    assert charged <= granted
    tenant.team.account.refresh_from_db()
    assert tenant.team.account.balance_micros == granted - charged >= 0
    # every admitted call was charged in full (nothing was capped) and recorded exactly once
    assert posted_calls(tenant.team) == len(ok)
    prices = {
        r.json()["usage"]["prompt_tokens"] * 1 + r.json()["usage"]["completion_tokens"] * 2
        for r in ok
    }
    assert charged == sum(
        r.json()["usage"]["prompt_tokens"] + 2 * r.json()["usage"]["completion_tokens"] for r in ok
    )
    assert len(prices) == 1
    account = redis_account(tenant.team)
    assert account["resv"] == 0 and account["pend"] == 0
    assert account["bal"] == tenant.team.account.balance_micros


def test_period_budget_in_hard_mode_holds_under_concurrency(live, mock_catalog, gw_org):
    # given: plenty of credits, a monthly budget for a few calls
    budget = 800
    tenant = GatewayTenant(
        "budgeted",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        10_000_000,
        budget_period="monthly",
        budget_limit_micros=budget,
        budget_mode="hard",
    )
    # when
    responses = fire(live, tenant, n=200)
    settlement.settle_usage()
    # then
    refused = [r for r in responses if r.status_code != 200]
    assert refused and {r.json()["error"]["type"] for r in refused} == {"budget_exceeded"}
    tenant.team.account.refresh_from_db()
    assert 0 < tenant.team.account.period_spend_micros <= budget


def test_soft_budget_admits_past_the_limit(live, mock_catalog, gw_org):
    tenant = GatewayTenant(
        "soft",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        10_000_000,
        budget_period="monthly",
        budget_limit_micros=100,
        budget_mode="soft",
    )
    responses = fire(live, tenant, n=20)
    settlement.settle_usage()
    assert {r.status_code for r in responses} == {200}
    tenant.team.account.refresh_from_db()
    assert tenant.team.account.period_spend_micros > 100


def test_requests_per_minute_hold_exactly_under_concurrency(live, mock_catalog, gw_org):
    # given
    tenant = GatewayTenant("limited", gw_org, [mock_catalog["groups"]["chat"]], 10_000_000)
    # A key minted with its limit: a limit changed afterwards reaches the gateway within its
    # poll interval, which a burst fired at once could beat.
    from teams.services import key_create

    _, secret = key_create(actor="test", team=tenant.team, name="limited", rpm_limit=10)
    # when
    responses = concurrently(
        live.url, "/v1/chat/completions", {"Authorization": f"Bearer {secret}"}, CHAT, 30
    )
    # then
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) == 10 and len(limited) == 20
    sample = limited[0]
    assert sample.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(sample.headers["retry-after"]) >= 1
    assert sample.headers["x-ratelimit-limit-requests"] == "10"
    assert sample.headers["x-ratelimit-remaining-requests"] == "0"


def test_team_tokens_per_minute_refuses_calls_whose_estimate_does_not_fit(
    live, mock_catalog, gw_org
):
    # given: a TPM limit that fits roughly two worst-case estimates (input + max_tokens)
    tenant = GatewayTenant(
        "tpm", gw_org, [mock_catalog["groups"]["chat"]], 10_000_000, tpm_limit=150
    )
    # when
    first = fire(live, tenant, n=1)[0]
    burst = fire(live, tenant, n=10)
    # then
    assert first.status_code == 200
    limited = [r for r in burst if r.status_code == 429]
    assert limited and len(limited) < 10
    for r in limited:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert r.headers["x-ratelimit-limit-tokens"] == "150"
        assert int(r.headers["x-ratelimit-remaining-tokens"]) < 150


def test_max_parallel_requests_refuses_the_excess(live, mock_catalog, gw_org):
    # given: a slow model and room for two calls in flight
    slow = catalog.model_create(
        actor="test",
        name="mock-slow",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-slow-400",
    )
    group = catalog.model_group_create(actor="test", name="slow", members=[{"model": slow}])
    tenant = GatewayTenant("parallel", gw_org, [group], 10_000_000, max_parallel_requests=2)
    # when
    responses = fire(live, tenant, body={**CHAT, "model": "slow"}, n=6)
    # then
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "too_many_parallel_requests"
    # and the slots are released afterwards
    assert fire(live, tenant, body={**CHAT, "model": "slow"}, n=1)[0].status_code == 200


def test_a_failing_first_model_falls_back_and_is_charged_at_the_fallback(live, gw_team):
    # when
    response = fire(live, gw_team, body={**CHAT, "model": "flaky"})[0]
    settlement.settle_usage()
    # then
    assert response.status_code == 200
    assert response.json()["model"] == "mock-b"
    assert response.headers["x-tollgate-model"] == "mock-b"
    record = UsageRecord.objects.get(request_id=response.headers["x-request-id"])
    assert record.model == "mock-b" and record.model_group == "flaky"
    assert posted_calls(gw_team.team) == 1


def test_streams_fall_back_before_the_first_byte(live, gw_team):
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        headers=gw_team.headers(),
        json={**CHAT, "model": "flaky", "stream": True},
    ) as r:
        text = r.read().decode()
    assert r.status_code == 200
    assert '"model":"mock-b"' in text and text.rstrip().endswith("data: [DONE]")


def test_when_every_model_fails_the_call_is_a_502_and_free(live, gw_team):
    balance_before = redis_account(gw_team.team)["bal"]
    # when
    response = fire(live, gw_team, body={**CHAT, "model": "broken"})[0]
    settlement.settle_usage()
    # then
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_error"
    assert "mock-bad: HTTP 500" in error["message"] and "HTTP 503" in error["message"]
    assert posted_calls(gw_team.team) == 0
    record = UsageRecord.objects.get(request_id=response.headers["x-request-id"])
    assert record.status == "error" and record.price_micros == 0
    account = redis_account(gw_team.team)
    assert account["resv"] == 0 and account["bal"] == balance_before


def test_timeouts_fall_back_and_a_timeout_everywhere_is_a_504(live, mock_catalog, gw_org):
    # given: an upstream that gives up after 0.3 s, in front of a model that needs 3 s
    impatient = catalog.upstream_create(
        actor="test",
        name="impatient",
        kind="mock",
        base_url=live.mock_url,
        read_timeout_seconds=0.3,
    )
    sleepy = catalog.model_create(
        actor="test", name="mock-sleepy", upstream=impatient, upstream_model="mock-slow-3000"
    )
    with_fallback = catalog.model_group_create(
        actor="test",
        name="sleepy-then-b",
        members=[{"model": sleepy}, {"model": mock_catalog["models"]["b"]}],
    )
    alone = catalog.model_group_create(actor="test", name="sleepy", members=[{"model": sleepy}])
    tenant = GatewayTenant("timeouts", gw_org, [with_fallback, alone], 10_000_000)
    # when
    served = fire(live, tenant, body={**CHAT, "model": "sleepy-then-b"})[0]
    timed_out = fire(live, tenant, body={**CHAT, "model": "sleepy"})[0]
    # then
    assert served.status_code == 200 and served.json()["model"] == "mock-b"
    assert timed_out.status_code == 504
    assert timed_out.json()["error"]["type"] == "upstream_timeout"


def test_a_client_that_leaves_mid_stream_pays_for_what_was_generated(live, mock_catalog, gw_org):
    # given: a long, slow stream
    model = catalog.model_create(
        actor="test",
        name="mock-long",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-chunk-delay-20-reply-400",
        input_price_micros=1_000_000,
        output_price_micros=2_000_000,
    )
    group = catalog.model_group_create(actor="test", name="long", members=[{"model": model}])
    tenant = GatewayTenant("leaver", gw_org, [group], 10_000_000)
    # when: read a few chunks, then hang up
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        headers=tenant.headers(),
        json={
            "model": "long",
            "stream": True,
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "tell me a story"}],
        },
    ) as r:
        rid = r.headers["x-request-id"]
        for seen, _ in enumerate(r.iter_raw(), start=1):
            if seen >= 5:
                break
    record = _wait_for_record(rid)
    # then: charged for the output so far, well short of the full reply
    assert 0 < record["out"] < 400
    assert record["price"] > 0
    account = redis_account(tenant.team)
    assert account["resv"] == 0


def _wait_for_record(rid: str, timeout: float = 5.0) -> dict:
    def record() -> dict | None:
        for _, fields in all_records():
            rec = orjson.loads(fields[b"rec"])
            if rec["rid"] == rid:
                return rec
        return None

    return eventually(record, timeout=timeout, what=f"a usage record for {rid}")


def test_the_usage_record_exists_before_the_client_has_the_response(live, gw_team):
    # The settlement (reservation release + usage record) is written before the response is
    # sent, so a gateway crash after the client got its answer cannot lose the record.
    response = fire(live, gw_team)[0]
    rid = response.headers["x-request-id"]
    ids = [orjson.loads(f[b"rec"])["rid"] for _, f in all_records()]
    assert rid in ids
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        headers=gw_team.headers(),
        json={**CHAT, "stream": True},
    ) as r:
        r.read()
        stream_rid = r.headers["x-request-id"]
    ids = [orjson.loads(f[b"rec"])["rid"] for _, f in all_records()]
    assert stream_rid in ids


def test_a_record_delivered_twice_posts_once(live, gw_team):
    # given: one call, its record read by a settler
    fire(live, gw_team)
    client = redis_client()
    settlement.ensure_group(client)
    messages = client.xreadgroup(SETTLER_GROUP, "w1", {stream_of(gw_team): ">"})[0][1]
    # when: the same messages are settled twice (a redelivery)
    settlement.settle_messages(client, messages)
    settlement.settle_messages(client, messages)
    # then
    assert posted_calls(gw_team.team) == 1
    assert UsageRecord.objects.filter(team=gw_team.team).count() == 1
    account = redis_account(gw_team.team)
    assert account["pend"] == 0  # released once, not twice
    gw_team.team.account.refresh_from_db()
    assert account["bal"] == gw_team.team.account.balance_micros


def test_records_taken_by_a_crashed_settler_are_claimed_and_posted(live, gw_team, monkeypatch):
    # given: a settler read two records and died before committing anything
    fire(live, gw_team, n=2)
    client = redis_client()
    settlement.ensure_group(client)
    taken = client.xreadgroup(SETTLER_GROUP, "dead-worker", {stream_of(gw_team): ">"})[0][1]
    assert len(taken) == 2
    # when: another settler runs after the idle timeout
    monkeypatch.setattr(settlement, "CLAIM_IDLE_MS", 0)
    settled = settlement.settle_usage()
    # then
    assert settled == 2
    assert posted_calls(gw_team.team) == 2
    assert client.xpending(stream_of(gw_team), SETTLER_GROUP)["pending"] == 0


def test_a_call_upstream_rejects_as_invalid_is_passed_on_and_not_charged(live, gw_team):
    # given: a request the provider refuses (the mock answers 400 for a negative max_tokens)
    response = fire(live, gw_team, body={**CHAT, "max_tokens": -5})[0]
    settlement.settle_usage()
    # then: the provider's 400 reaches the caller, nothing is charged, nothing stays reserved
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert posted_calls(gw_team.team) == 0
    assert redis_account(gw_team.team).get("resv", 0) == 0


def test_settled_records_are_trimmed_but_unacknowledged_ones_stay(live, gw_team):
    client = redis_client()
    fire(live, gw_team, n=3)
    settlement.ensure_group(client)
    # a settler takes one record and dies; the other two are settled by a healthy one
    client.xreadgroup(SETTLER_GROUP, "dead-worker", {stream_of(gw_team): ">"}, count=1)
    settlement.settle_usage()
    # then: the stream keeps the unacknowledged record (and nothing older), and nothing is lost
    remaining = client.xrange(stream_of(gw_team))
    pending = client.xpending(stream_of(gw_team), SETTLER_GROUP)
    assert pending["pending"] == 1
    assert remaining[0][0] == pending["min"]
    assert posted_calls(gw_team.team) == 2


def test_a_reservation_left_by_a_dead_gateway_is_released_once(live, gw_team):
    # given: a call admitted by the real admission script, whose gateway then died
    client = redis_client()
    fire(live, gw_team)  # the account is live in Redis
    team, key = gw_team.team.pk, gw_team.key.pk
    inflight = orjson.dumps(
        {
            "team": team,
            "org": gw_team.team.organization_id,
            "key": key,
            "reserve": 5_000,
            "ts": 1_000,
        }
    )
    verdict = client.eval(
        scripts.ADMIT,
        6,
        acct_key(team),
        parallel_key(team),
        inflight_key(shard_of(team)),
        key_rate_key(team, key),
        team_rate_key(team),
        job_key(team, ""),
        1_000,  # now
        "req_dead",
        10,  # estimated tokens
        5_000,  # reserve
        inflight,
        "",  # no job
        -1,  # the key's rpm, tpm and budget: none
        -1,
        -1,
        *key_fields(key),
        -1,  # the team's rpm, tpm and parallel: none
        -1,
        -1,
        0,  # overdraft
        -1,  # budget: none
        "1",
        team,
    )
    assert verdict[0] == b"ok"
    assert redis_account(gw_team.team)["resv"] == 5_000
    # when: the reaper runs twice
    assert settlement.reap_abandoned() == 1
    assert settlement.reap_abandoned() == 0
    settlement.settle_usage()
    # then: released once, recorded as an error call, nothing charged
    assert redis_account(gw_team.team)["resv"] == 0
    assert client.hlen(inflight_key(shard_of(team))) == 0
    record = UsageRecord.objects.get(request_id="req_dead")
    assert record.status == "error" and record.price_micros == 0


def test_a_malformed_record_goes_to_dead_letters_without_blocking_the_others(live, gw_team):
    # given: one good call and one record no database would take
    client = redis_client()
    fire(live, gw_team)
    bad = orjson.dumps(
        {
            "rid": "req_bad",
            "ts": 1.0,
            "org": gw_team.team.organization_id,
            "team": gw_team.team.pk,
            "key": gw_team.key.pk,
            "model": "x" * 500,
            "group": "",
            "in": 1,
            "out": 1,
            "cost": 0,
            "price": 0,
            "status": "ok",
            "lat": 1,
            "est": False,
        }
    )
    client.xadd(stream_of(gw_team), {"rec": bad, "charged": 0})
    fire(live, gw_team)
    # when
    settlement.settle_usage()
    # then: both good calls settled, the bad one parked with its error, nothing pending
    assert posted_calls(gw_team.team) == 2
    dead = client.xrange(dead_letters(shard_of(gw_team.team.pk)))
    assert len(dead) == 1 and b"error" in dead[0][1]
    assert client.xpending(stream_of(gw_team), SETTLER_GROUP)["pending"] == 0
