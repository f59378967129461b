"""Tollgate on a real Redis Cluster (three masters on loopback ports), and the key discipline that
makes it possible: every key a script touches is one it declares, all of one call's keys in one
slot (the team's shard), and a call costs at most 20 Redis commands with every limit set."""

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import orjson
import pytest
import redis
from django.conf import settings
from django.db.models import Sum
from redis.cluster import key_slot

from billing import reconcile, refusals, settlement
from billing.models import LedgerEntry, RefusalHourly, UsageRecord
from core.redis import ClusterConfig, cluster_config
from core.redis import client as redis_client
from livestate import leases, scripts
from livestate import refusals as refusal_scripts
from livestate.keys import (
    PREFIX,
    SHARD_RANGE,
    acct_key,
    inflight_key,
    key_fields,
    shard_of,
    usage_stream,
)
from teams.services import key_create, key_revoke, keys_retire_due
from tests.helpers.gateway import concurrently, redis_account, redis_key_account
from tests.helpers.ledger import posted_calls
from tests.helpers.servers import RedisClusterServer
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 30}
# Every limit a team and a key can have, none of them reached by a handful of calls.
EVERY_TEAM_LIMIT = {
    "rpm_limit": 10_000,
    "tpm_limit": 10_000_000,
    "max_parallel_requests": 1_000,
    "budget_period": "monthly",
    "budget_limit_micros": 10_000_000,
    "budget_mode": "hard",
}
EVERY_KEY_LIMIT = {"rpm_limit": 10_000, "tpm_limit": 10_000_000, "budget_limit_micros": 10_000_000}

pytestmark = pytest.mark.skipif(
    not RedisClusterServer.available(), reason="needs redis-server and redis-cli"
)


@pytest.fixture(scope="session")
def redis_cluster():
    cluster = RedisClusterServer().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def on_cluster(settings, redis_cluster):
    """The control plane (and any gateway started after) pointed at the cluster; Celery's
    broker stays the session's plain Redis."""
    settings.REDIS_URL = redis_cluster.url
    redis_client.cache_clear()
    redis_client().flushdb()  # every master
    yield redis_client()
    redis_client.cache_clear()


@pytest.fixture
def cluster_live(on_cluster, live):
    return live


def fire(live, tenant, n=1, headers=None) -> list[httpx.Response]:
    return concurrently(
        live.url, "/v1/chat/completions", {**tenant.headers(), **(headers or {})}, CHAT, n
    )


def usage_entries(team):
    return LedgerEntry.objects.filter(account__team=team, kind=LedgerEntry.Kind.USAGE)


def limited_tenant(name, org, group, credits=10_000_000) -> GatewayTenant:
    tenant = GatewayTenant(name, org, [group], credits, **EVERY_TEAM_LIMIT)
    tenant.key, tenant.secret = key_create(
        actor="test", team=tenant.team, name=f"{name} limited", **EVERY_KEY_LIMIT
    )
    return tenant


def test_the_cluster_admits_settles_and_reconciles_a_call_with_every_limit(
    cluster_live, mock_catalog, gw_org
):
    # given
    tenant = limited_tenant("clustered", gw_org, mock_catalog["groups"]["chat"])
    # when
    response = fire(cluster_live, tenant)[0]
    # then: admitted, charged in Redis, settled into the ledger by the settler
    assert response.status_code == 200, response.text
    assert redis_account(tenant.team)["pend"] > 0
    assert settlement.settle_usage() == 1
    tenant.team.account.refresh_from_db()
    account = redis_account(tenant.team)
    assert (account["pend"], account["resv"]) == (0, 0)
    assert account["bal"] == tenant.team.account.balance_micros < 10_000_000
    assert redis_key_account(tenant.key)["spent"] == 10_000_000 - account["bal"]
    # when: the live state drifts, then the reconcile runs
    client = redis_client()
    client.hset(acct_key(tenant.team.pk), mapping={"resv": 999, key_fields(tenant.key.pk)[1]: 5})
    repairs = reconcile.reconcile_gateway_state()
    # then
    assert {(r.kind, r.field, r.before, r.after) for r in repairs} == {
        ("team", "resv", 999, 0),
        ("key", "resv", 5, 0),
    }
    # when: the cluster loses everything
    client.flushdb()
    # then: the next call finds no account (ADMIT: not_ready), the gateway rebuilds it from
    # Postgres on demand (not at the next reconcile), and the call is served, charged against
    # the settled balance
    served = fire(cluster_live, tenant)[0]
    assert served.status_code == 200, served.text
    tenant.team.account.refresh_from_db()
    assert redis_account(tenant.team)["bal"] == tenant.team.account.balance_micros
    assert redis_account(tenant.team)["pend"] > 0


def test_hundreds_of_concurrent_calls_on_the_cluster_never_spend_more_than_the_credits(
    cluster_live, mock_catalog, gw_org
):
    # given: credits for a handful of calls (each costs ~60 micro-credits, reserves ~200)
    granted = 1_000
    tenant = GatewayTenant("poor", gw_org, [mock_catalog["groups"]["chat"]], granted)
    # when
    responses = fire(cluster_live, tenant, n=300)
    settlement.settle_usage()
    # then
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert 1 <= len(ok) < 300
    assert {r.json()["error"]["type"] for r in refused} == {"insufficient_quota"}
    charged = -usage_entries(tenant.team).aggregate(s=Sum("amount_micros"))["s"]
    assert charged == sum(
        r.json()["usage"]["prompt_tokens"] + 2 * r.json()["usage"]["completion_tokens"] for r in ok
    )
    assert charged <= granted
    tenant.team.account.refresh_from_db()
    assert tenant.team.account.balance_micros == granted - charged >= 0
    assert posted_calls(tenant.team) == len(ok)  # each call once
    account = redis_account(tenant.team)
    assert (account["resv"], account["pend"]) == (0, 0)
    assert account["bal"] == tenant.team.account.balance_micros


def test_the_settler_drains_every_shard_on_every_node(cluster_live, mock_catalog, gw_org):
    # given: teams whose shards live on each of the three masters, a few calls each
    client = redis_client()
    by_node, tenants = {}, []
    for i in range(12):
        tenant = GatewayTenant(f"t{i}", gw_org, [mock_catalog["groups"]["chat"]], 1_000_000)
        node = client.get_node_from_key(acct_key(tenant.team.pk)).name
        by_node.setdefault(node, []).append(tenant)
        tenants.append(tenant)
        if len(by_node) == 3 and len(tenants) >= 4:
            break
    assert len(by_node) == 3
    for tenant in tenants:
        assert {r.status_code for r in fire(cluster_live, tenant, n=3)} == {200}
    assert settlement.backlog(client).waiting == 3 * len(tenants)
    # when
    settled = settlement.settle_usage()
    # then: every record posted once, nothing left waiting on any shard
    assert settled == 3 * len(tenants)
    for tenant in tenants:
        assert posted_calls(tenant.team) == 3
        assert redis_account(tenant.team)["pend"] == 0
    assert settlement.backlog(client).waiting == 0
    assert {shard_of(t.team.pk) for t in tenants} <= set(SHARD_RANGE)


def test_refused_calls_are_counted_and_rolled_up_on_the_cluster(cluster_live, mock_catalog, gw_org):
    # given: a team without credits
    broke = GatewayTenant("broke", gw_org, [mock_catalog["groups"]["chat"]], 0)
    # when: it is refused, and so is a call without a key; the gateway flushes; the roll-up runs
    assert {r.status_code for r in fire(cluster_live, broke, n=20)} == {429}
    assert httpx.post(f"{cluster_live.url}/v1/chat/completions", json=CHAT).status_code == 401
    cluster_live.on_loop(cluster_live.gateway.refusals.flush())
    refusals.refusals_roll_up(now=time.time() + 120)
    # then
    rows = {(r.team_id, r.reason): r.count for r in RefusalHourly.objects.all()}
    assert rows == {(broke.team.pk, "insufficient_quota"): 20, (None, "missing_api_key"): 1}


def test_jobs_reaping_and_key_retirement_work_on_the_cluster(cluster_live, mock_catalog, gw_org):
    tenant = GatewayTenant(
        "jobs", gw_org, [mock_catalog["groups"]["chat"]], 10_000_000, pricing_mode="per_job",
        job_price_micros=500_000,
    )  # fmt: skip
    # a job: opened (its price reserved), a call in it, completed (charged once)
    job = httpx.post(
        f"{cluster_live.url}/v1/jobs", json={"type": "t"}, headers=tenant.headers(), timeout=30
    ).json()
    assert fire(cluster_live, tenant, headers={"x-job-id": job["id"]})[0].status_code == 200
    done = httpx.post(
        f"{cluster_live.url}/v1/jobs/{job['id']}/complete", headers=tenant.headers(), timeout=30
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"
    # a call whose gateway died: reaped once
    client = redis_client()
    client.hset(
        inflight_key(shard_of(tenant.team.pk)),
        "req_dead",
        orjson.dumps(
            {"team": tenant.team.pk, "org": gw_org.pk, "key": tenant.key.pk, "reserve": 0, "ts": 1}
        ),
    )
    assert settlement.reap_abandoned() == 1
    settlement.settle_usage()
    tenant.team.account.refresh_from_db()
    assert tenant.team.account.balance_micros == 10_000_000 - 500_000
    assert UsageRecord.objects.filter(request_id="req_dead", status="error").exists()
    # a retired key's account fields go once nothing is unsettled for it
    key = key_revoke(actor="test", key=tenant.key)
    key.refresh_from_db()
    from datetime import timedelta

    from django.conf import settings

    keys_retire_due(
        now=key.revoked_at + timedelta(seconds=settings.GATEWAY_RETIRED_KEY_GRACE_SECONDS)
    )
    assert redis_key_account(key) == {}
    assert redis_account(tenant.team)["resv"] == 0


# --- the key discipline, checked on the session's own (plain) redis-server ---------------------

_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b'"': b'"'}


def _unescape(token: bytes) -> bytes:
    def one(m):
        c = m.group(1)
        if c.startswith(b"x"):
            return bytes([int(c[1:], 16)])
        return _ESCAPES.get(c, c)

    return re.sub(rb"\\(x[0-9a-fA-F]{2}|.)", one, token)


class Monitor:
    """Every command the Redis runs, as (from a script, argv), in order, from MONITOR."""

    def __init__(self, client):
        self.connection = client.connection_pool.make_connection()
        self.connection.connect()
        self.connection.send_command("MONITOR")
        assert self.connection.read_response() == b"OK"
        self.lines: list[tuple[bool, list[bytes]]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop:
            try:
                line = self.connection.read_response(timeout=0.1, disconnect_on_error=False)
            except redis.TimeoutError:
                continue  # nothing ran for a moment
            if line is None or not isinstance(line, bytes):
                continue
            head, _, rest = line.partition(b"] ")
            argv = [_unescape(t) for t in _TOKEN.findall(rest)]
            self.lines.append((head.endswith(b"lua"), argv))

    def stop(self) -> list[tuple[bool, list[bytes]]]:
        self._stop = True
        self._thread.join(2)
        self.connection.disconnect()
        return self.lines


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _sha(script: bytes) -> str:
    return hashlib.sha1(script, usedforsecurity=False).hexdigest()  # Redis's script id


def _script_runs(lines) -> list[tuple[bytes, list[bytes], list[list[bytes]]]]:
    """(sha of the script, declared KEYS, inner commands) for each EVAL/EVALSHA."""
    runs = []
    for from_script, argv in lines:
        if not argv:
            continue
        name = argv[0].upper()
        if not from_script and name in (b"EVAL", b"EVALSHA"):
            sha = argv[1] if name == b"EVALSHA" else _sha(argv[1]).encode()
            numkeys = int(argv[2])
            runs.append((sha, argv[3 : 3 + numkeys], []))
        elif from_script and runs:
            runs[-1][2].append(argv)
    return runs


def test_every_script_touches_only_the_keys_it_declares_all_in_one_slot(live, mock_catalog, gw_org):
    # given: Redis watched while every script runs: calls with every limit, a job, a reaped
    # call, reconciles, a rebuild after a flush, a key retired, settlements
    client = redis_client()
    monitor = Monitor(client)
    tenant = limited_tenant("watched", gw_org, mock_catalog["groups"]["chat"])
    per_job = GatewayTenant(
        "watched jobs", gw_org, [mock_catalog["groups"]["chat"]], 10_000_000,
        pricing_mode="per_job", job_price_micros=500_000,
    )  # fmt: skip
    assert {r.status_code for r in fire(live, tenant, n=5)} == {200}
    job = httpx.post(
        f"{live.url}/v1/jobs", json={"type": "t"}, headers=per_job.headers(), timeout=30
    ).json()
    assert fire(live, per_job, headers={"x-job-id": job["id"]})[0].status_code == 200
    httpx.post(f"{live.url}/v1/jobs/{job['id']}/complete", headers=per_job.headers(), timeout=30)
    httpx.post(f"{live.url}/v1/jobs", json={"type": "t"}, headers=per_job.headers(), timeout=30)
    settlement.expire_jobs(older_than_s=0)
    client.hset(
        inflight_key(shard_of(tenant.team.pk)),
        "req_dead",
        orjson.dumps(
            {"team": tenant.team.pk, "org": gw_org.pk, "key": tenant.key.pk, "reserve": 7, "ts": 1}
        ),
    )
    settlement.reap_abandoned()
    lease = orjson.dumps(
        {"team": tenant.team.pk, "org": gw_org.pk, "key": tenant.key.pk, "reserve": 0, "ts": 1,
         "inst": "gone#1"}
    )  # fmt: skip
    client.hset(inflight_key(shard_of(tenant.team.pk)), "req_lease_dead", lease)
    keys, args = leases.progress_call("req_lease_dead", lease, tenant.team.pk)
    client.register_script(leases.PROGRESS)(keys=keys, args=args)
    leases.heartbeat(client, "watched-seat#1", claim=True)
    leases.sweep(client, ttl_ms=1)
    reconcile.reconcile_gateway_state()
    replayed = {
        "rid": "req_replayed_watch", "ts": time.time(), "org": gw_org.pk, "team": tenant.team.pk,
        "key": tenant.key.pk, "model": "", "group": "", "in": 0, "out": 0, "cost": 0,
        "price": 0, "status": "ok", "lat": 0, "est": True,
    }  # fmt: skip
    client.register_script(scripts.USAGE_REPLAY)(
        keys=[acct_key(tenant.team.pk), usage_stream(shard_of(tenant.team.pk))],
        args=[orjson.dumps(replayed), 0],
    )
    settlement.settle_usage()
    key = key_revoke(actor="test", key=tenant.key)
    from datetime import timedelta

    from django.conf import settings

    key.refresh_from_db()
    keys_retire_due(
        now=key.revoked_at + timedelta(seconds=settings.GATEWAY_RETIRED_KEY_GRACE_SECONDS)
    )
    # refused calls: a gateway's flush of their counts, a worker's claim of the closed minute
    assert httpx.post(f"{live.url}/v1/chat/completions", json=CHAT).status_code == 401
    live.on_loop(live.gateway.refusals.flush())
    refusals.refusals_roll_up(now=time.time() + 120)
    client.flushdb()
    reconcile.reconcile_gateway_state()
    client.echo("watched-until-here")
    eventually(lambda: any(argv[:1] == [b"ECHO"] for _, argv in monitor.lines), what="the end")
    lines = monitor.stop()
    # then
    every = {**scripts.ALL, **leases.ALL, **refusal_scripts.ALL}
    names = {_sha(s.encode()).encode(): n for n, s in every.items()}
    runs = _script_runs(lines)
    seen = Counter(names.get(sha, sha) for sha, _, _ in runs)
    assert set(seen) == set(every), seen
    for sha, declared, inner in runs:
        assert len({key_slot(k) for k in declared}) == 1, (names.get(sha), declared)
        for argv in inner:
            if argv[0].upper() == b"TIME":  # the scripts' one command without keys
                continue
            touched = {_bytes(k) for k in client.command_getkeys(*argv)}
            undeclared = touched - set(declared)
            assert not undeclared, (names.get(sha), argv[0], undeclared)


# A Lua key argument is KEYS[...] or a name a helper was given (from KEYS); never a literal or a
# concatenation. Field names may be built (`'k' .. key .. ':s'`), so only key positions count.
_CALL = re.compile(r"redis\.call\(\s*'(\w+)'\s*,\s*([^,)]+)")
_KEY_FIRST = {
    "HMGET", "HSET", "HDEL", "HINCRBY", "HGET", "HGETALL", "HEXISTS", "EXISTS", "ZCARD",
    "ZREMRANGEBYSCORE", "ZADD", "ZREM", "ZRANGE", "XADD", "XACK", "XLEN", "XRANGE",
    "XPENDING", "PEXPIRE", "DEL", "ZSCORE", "ZRANGEBYSCORE", "SET", "EXPIRE", "RENAME",
}  # fmt: skip
_FROM_KEYS = re.compile(r"^(KEYS\[[^\]]+\]|hash|acct|stream|zset|t\.acct|account\[k\])$")


def test_the_scripts_name_keys_only_through_keys():
    for name, source in {**scripts.ALL, **leases.ALL, **refusal_scripts.ALL}.items():
        for command, first in _CALL.findall(source):
            assert command.upper() in _KEY_FIRST | {"XINFO"}, (name, command)
            if command.upper() == "XINFO":
                continue
            assert _FROM_KEYS.match(first.strip()), (name, command, first)
        assert PREFIX not in source and "__" not in source, name


def test_a_call_with_every_limit_costs_at_most_20_redis_commands(live, mock_catalog, gw_org):
    # given: a team and a key with every limit set, warmed up (scripts loaded)
    tenant = limited_tenant("counted", gw_org, mock_catalog["groups"]["chat"])
    assert fire(live, tenant)[0].status_code == 200
    # the gateway's lease heartbeat and sweep run on a timer (every shard, every 2 s), not per
    # call: stopped while counting, like the change feed's poll left out below
    live.on_loop(live.gateway.instance.stop())
    client = redis_client()
    client.config_resetstat()
    # when
    calls = 40
    for _ in range(calls):
        assert fire(live, tenant)[0].status_code == 200
    stats = client.info("commandstats")
    # then: counted by Redis itself; the change-feed poll (XREAD, on a timer, not per call)
    # and this test's own INFO/CONFIG are left out
    per_command = {
        name.removeprefix("cmdstat_"): stat["calls"]
        for name, stat in stats.items()
        if name not in ("cmdstat_xread", "cmdstat_info", "cmdstat_config")
    }
    assert sum(per_command.values()) <= 20 * calls, per_command
    assert per_command["evalsha"] == 2 * calls


# --- pointing Tollgate at a cluster ------------------------------------------------------------


def test_a_cluster_url_names_its_nodes_and_credentials():
    assert cluster_config("redis://127.0.0.1:6379/0") is None
    assert cluster_config("redis+cluster://a:7000,b:7001") == ClusterConfig(
        [("a", 7000), ("b", 7001)], None, None
    )
    assert cluster_config("redis+cluster://u:p%40ss@a:7000/0") == ClusterConfig(
        [("a", 7000)], "u", "p@ss"
    )
    assert cluster_config("redis://:secret@x:6379/0", "a:7000, b:7001") == ClusterConfig(
        [("a", 7000), ("b", 7001)], None, "secret"
    )


def _settings_with(**env) -> subprocess.CompletedProcess:
    script = "from saas import settings as s; print(s.CELERY_BROKER_URL, s.CACHES['default'])"
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-c", script],
        env={"PATH": os.environ.get("PATH", ""), "ENV_FILE": os.devnull, "DEBUG": "true", **env},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_cluster_needs_a_plain_redis_for_celery_and_keeps_django_off_it():
    # Celery's kombu has no cluster transport: without CELERY_BROKER_URL, no start
    refused = _settings_with(REDIS_URL="redis+cluster://127.0.0.1:7000")
    assert refused.returncode != 0 and "CELERY_BROKER_URL" in refused.stderr
    refused = _settings_with(REDIS_CLUSTER_NODES="127.0.0.1:7000")
    assert refused.returncode != 0 and "CELERY_BROKER_URL" in refused.stderr
    # with one, the broker is that Redis and Django's cache each process's memory
    started = _settings_with(
        REDIS_URL="redis+cluster://127.0.0.1:7000", CELERY_BROKER_URL="redis://127.0.0.1:6380/0"
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("redis://127.0.0.1:6380/0 ")
    assert "LocMemCache" in started.stdout
