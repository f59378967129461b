"""Reconciling the gateway's Redis state with the ledger: drift repaired and audited, and a
flushed Redis rebuilt (failing closed until then)."""

import httpx
import orjson
import pytest

from billing import reconcile, settlement
from billing.models import UsageRecord
from core.redis import client as redis_client
from livestate.keys import (
    SETTLER_GROUP,
    acct_key,
    dead_letters,
    inflight_key,
    key_fields,
    shard_of,
    usage_stream,
)
from orgs.models import AuditEvent
from teams.services import key_create
from tests.helpers.gateway import redis_account, redis_key_account
from tests.helpers.tenants import GatewayTenant

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 30}
CALL_PRICE = 4 * 1 + 24 * 2  # micro-credits (see test_gateway_jobs)


def call(live, secret, headers=None) -> httpx.Response:
    return httpx.post(
        f"{live.url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {secret}", **(headers or {})},
        timeout=30,
    )


def key_account(key) -> dict:
    return redis_key_account(key)


def repairs_audited(team) -> list[dict]:
    return list(
        AuditEvent.objects.filter(
            action="gateway_state.repair", actor="system:reconcile"
        ).values_list("changes", flat=True)
    )


@pytest.fixture
def tenant(mock_catalog, gw_org):
    return GatewayTenant("reconciled", gw_org, [mock_catalog["groups"]["chat"]], 1_000_000)


def test_a_flushed_redis_is_rebuilt_on_the_next_call_with_key_budgets_intact(live, tenant):
    # given: a key whose budget admits a third call but not a fourth (each call reserves
    # about 100 micro-credits, its worst case, before it is charged 52) has made two, settled
    budget_key, secret = key_create(
        actor="test", team=tenant.team, name="budgeted", budget_limit_micros=2 * CALL_PRICE + 150
    )
    assert [call(live, secret).status_code for _ in range(2)] == [200, 200]
    settlement.settle_usage()
    # when: Redis loses everything, and the next call finds no account (ADMIT: not_ready)
    redis_client().flushdb()
    # then: the gateway rebuilds the team's account from Postgres on demand, not at the next
    # minute's reconcile: the settled balance and the key's spend are back, enforcement exact
    assert call(live, secret).status_code == 200
    tenant.team.account.refresh_from_db()
    assert redis_account(tenant.team)["bal"] == tenant.team.account.balance_micros
    assert key_account(budget_key)["spent"] == 3 * CALL_PRICE
    over = call(live, secret)
    assert over.status_code == 429 and over.json()["error"]["code"] == "budget_exceeded"
    assert call(live, tenant.secret).status_code == 200  # the team's other key is unaffected


def test_drift_is_repaired_and_audited_with_the_amounts(live, tenant):
    # given: a settled call, then the Redis copy tampered with
    assert call(live, tenant.secret).status_code == 200
    settlement.settle_usage()
    tenant.team.account.refresh_from_db()
    true_balance = tenant.team.account.balance_micros
    client = redis_client()
    acct = acct_key(tenant.team.pk)
    client.hset(acct, mapping={"bal": true_balance + 500, "pend": 77, "resv": 1234})
    client.hset(acct, key_fields(tenant.key.pk)[1], 99)
    # when
    repairs = reconcile.reconcile_gateway_state()
    # then
    assert {(r.kind, r.field, r.before, r.after) for r in repairs} == {
        ("team", "bal", true_balance + 500, true_balance),
        ("team", "pend", 77, 0),
        ("team", "resv", 1234, 0),
        ("key", "resv", 99, 0),
    }
    # (`ver` and `rebuilt`, when the account was built, are bookkeeping, not amounts)
    assert redis_account(tenant.team) | {"ver": 0, "rebuilt": 0} == {
        "bal": true_balance,
        "pspend": tenant.team.account.period_spend_micros,
        "pend": 0,
        "resv": 0,
        "ver": 0,
        "rebuilt": 0,
    }
    audited = repairs_audited(tenant.team)
    assert {"bal_micros": [true_balance + 500, true_balance]} in audited
    assert {"resv_micros": [99, 0]} in audited
    # and a second pass finds nothing to repair
    assert reconcile.reconcile_gateway_state() == []


def test_unsettled_usage_in_flight_calls_open_jobs_and_dead_letters_are_kept(
    live, mock_catalog, gw_org
):
    # given: two calls charged but not yet settled,
    # a call in flight and a dead-lettered record
    tenant = GatewayTenant(
        "busy",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        10_000_000,
        pricing_mode="cost_markup",
        credits_per_usd_micros=2_000_000,
    )
    assert call(live, tenant.secret).status_code == 200
    assert call(live, tenant.secret).status_code == 200
    charged = redis_account(tenant.team)["pend"]
    assert charged > 0
    client = redis_client()
    shard = shard_of(tenant.team.pk)
    client.hset(
        inflight_key(shard),
        "req_inflight",
        orjson.dumps({"team": tenant.team.pk, "key": tenant.key.pk, "reserve": 4_000, "ts": 1}),
    )
    client.xadd(
        dead_letters(shard),
        {"rec": orjson.dumps({"rid": "req_dead", "team": tenant.team.pk}), "charged": 300},
    )
    client.hset(acct_key(tenant.team.pk), mapping={"pend": 0, "resv": 0})
    # when
    reconcile.reconcile_gateway_state()
    # then
    assert redis_account(tenant.team)["pend"] == charged + 300
    assert redis_account(tenant.team)["resv"] == 4_000
    assert key_account(tenant.key)["resv"] == 4_000
    # and settling afterwards releases exactly what it charged
    client.hdel(inflight_key(shard), "req_inflight")
    settlement.settle_usage()
    reconcile.reconcile_gateway_state()
    assert redis_account(tenant.team)["pend"] == 300  # the dead letter, until someone resolves it
    assert UsageRecord.objects.filter(team=tenant.team).count() == 2


def test_open_flat_priced_jobs_keep_their_reservation(live, mock_catalog, gw_org):
    tenant = GatewayTenant(
        "flat",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        10_000_000,
        pricing_mode="per_job",
        job_price_micros=700_000,
    )
    opened = httpx.post(
        f"{live.url}/v1/jobs", json={"type": "t"}, headers=tenant.headers(), timeout=30
    )
    assert opened.status_code == 201
    redis_client().hset(acct_key(tenant.team.pk), "resv", 0)
    reconcile.reconcile_gateway_state()
    assert redis_account(tenant.team)["resv"] == 700_000
    assert key_account(tenant.key)["resv"] == 700_000


def test_a_missing_settler_group_counts_the_whole_stream_as_unsettled(live, tenant):
    assert call(live, tenant.secret).status_code == 200
    charged = redis_account(tenant.team)["pend"]
    client = redis_client()
    client.xgroup_destroy(usage_stream(shard_of(tenant.team.pk)), SETTLER_GROUP)
    client.hset(acct_key(tenant.team.pk), "pend", 0)
    reconcile.reconcile_gateway_state()
    assert redis_account(tenant.team)["pend"] == charged
