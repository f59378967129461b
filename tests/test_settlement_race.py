"""Settlement at scale: two settlers racing on one busy team's records, redeliveries included,
post every call exactly once and keep the balance exact, without deadlocking."""

import random
import uuid

import orjson
import pytest
from django.db.models import Sum

from billing import settlement
from billing.models import CreditAccount, LedgerEntry, UsageRecord
from core.redis import client as redis_client
from livestate.keys import SETTLER_GROUP, dead_letters, shard_of, usage_stream
from tests.helpers.tenants import GatewayTenant
from tests.helpers.threads import race

OPENING = 100_000_000


@pytest.fixture
def hot(gw_org):
    return GatewayTenant("hot team", gw_org, [], OPENING)


def stream_of(tenant) -> str:
    """The usage stream of the team's shard, where the gateway writes its records."""
    return usage_stream(shard_of(tenant.team.pk))


def hand_off(tenant, n: int) -> dict[str, int]:
    """n answered calls of the team, in the usage stream as the gateway writes them; returns
    what each was charged by request id."""
    charged = {}
    pipe = redis_client().pipeline(transaction=False)
    now = 1_800_000_000.0
    for i in range(n):
        rid = f"req_{uuid.uuid4().hex[:24]}"
        charged[rid] = random.randint(0, 900)  # some calls are free (cache hits, errors)
        record = {
            "rid": rid,
            "ts": now + i / 1000,
            "org": tenant.team.organization_id,
            "team": tenant.team.pk,
            "key": tenant.key.pk,
            "model": "m",
            "group": "g",
            "in": 10,
            "out": 20,
            "cost": charged[rid] // 2,
            "price": charged[rid],
            "status": "ok" if charged[rid] else "error",
            "lat": 5,
            "est": False,
        }
        pipe.xadd(stream_of(tenant), {"rec": orjson.dumps(record), "charged": charged[rid]})
    pipe.execute()
    return charged


def assert_posted_once_and_exact(tenant, charged: dict[str, int]) -> None:
    records = UsageRecord.objects.filter(team=tenant.team)
    assert sorted(records.values_list("request_id", flat=True)) == sorted(charged)
    for rid, price in records.values_list("request_id", "price_micros"):
        assert price == charged[rid]
    # every charged call is in exactly one usage entry, which debits exactly its calls
    usage = LedgerEntry.objects.filter(account__team=tenant.team, kind="usage")
    for entry in usage:
        assert -entry.amount_micros == entry.calls.aggregate(s=Sum("price_micros"))["s"]
        assert entry.metadata["calls"] == entry.calls.count()
    assert not records.filter(price_micros__gt=0, ledger_entry__isnull=True).exists()
    assert not records.filter(price_micros=0, ledger_entry__isnull=False).exists()
    account = CreditAccount.objects.get(team=tenant.team)
    entries = LedgerEntry.objects.filter(account=account).aggregate(s=Sum("amount_micros"))["s"]
    assert account.balance_micros == entries == OPENING - sum(charged.values())
    client = redis_client()
    assert client.xpending(stream_of(tenant), SETTLER_GROUP)["pending"] == 0
    assert client.xlen(dead_letters(shard_of(tenant.team.pk))) == 0


def test_two_settlers_on_the_same_records_post_each_call_once(hot):
    # given: 600 calls, delivered to one settler, then redelivered to another at once
    charged = hand_off(hot, 600)
    client = redis_client()
    settlement.ensure_group(client)
    messages = client.xreadgroup(SETTLER_GROUP, "w1", {stream_of(hot): ">"}, count=1000)[0][1]
    # when: both settle the very same messages concurrently, on their own connections
    settled = race(lambda i: settlement.settle_messages(redis_client(), messages), 2)
    # then
    assert settled == [600, 600]
    assert_posted_once_and_exact(hot, charged)


def test_two_settlers_draining_one_busy_team_with_redeliveries_post_once_and_exact(
    hot, monkeypatch
):
    # given: 4,000 calls of one team; a settler took 500 of them and died without committing
    charged = hand_off(hot, 4_000)
    client = redis_client()
    settlement.ensure_group(client)
    client.xreadgroup(SETTLER_GROUP, "dead-worker", {stream_of(hot): ">"}, count=500)
    # and records pending for anyone are claimed at once: the two settlers claim the dead
    # one's and each other's in-flight records too, so the same records are settled twice
    monkeypatch.setattr(settlement, "CLAIM_IDLE_MS", 0)

    def drain(_):
        batches = 0
        while True:
            group = next(
                g
                for g in client.xinfo_groups(stream_of(hot))
                if g["name"] == SETTLER_GROUP.encode()
            )
            if not group["pending"] and not group["lag"]:
                return batches
            settlement.settle_usage(batch_size=250, max_batches=2)
            batches += 1

    # when: two settlers drain the stream together (a deadlock or a failed batch raises here)
    race(drain, 2, timeout=240)

    # then
    assert_posted_once_and_exact(hot, charged)
    assert LedgerEntry.objects.filter(account__team=hot.team, kind="usage").count() > 1
