"""Revoked and expired keys answer their precise 401 for a grace, then leave the live state
everywhere: Redis (both snapshot hashes, the key account) and every gateway's memory."""

from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from billing import reconcile, settlement
from core.redis import client as redis_client
from livestate.keys import KEY_SNAPSHOTS, SHARD_RANGE, acct_key, key_fields, retired_keys_key
from mirrors import gateway as gateway_state
from orgs.models import AuditEvent
from teams.models import VirtualKey
from teams.services import (
    key_create,
    key_revoke,
    key_rotate,
    key_update,
    keys_expire_due,
    keys_retire_due,
)
from tests.helpers.gateway import assert_error, until_refused
from tests.helpers.threads import race
from tests.helpers.waiting import eventually

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def call(live, secret: str) -> httpx.Response:
    return httpx.post(
        f"{live.url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def grace() -> timedelta:
    return timedelta(seconds=settings.GATEWAY_RETIRED_KEY_GRACE_SECONDS)


def in_redis(key_hash: str) -> bool:
    return redis_client().hexists(KEY_SNAPSHOTS, key_hash)


def has_key_account(key) -> bool:
    fields = redis_client().hmget(acct_key(key.team_id), key_fields(key.pk))
    return any(value is not None for value in fields)


def test_a_revoked_key_past_its_grace_is_gone_everywhere_and_stays_gone(live, gw_team):
    # given: a key rotated with grace (two hashes), used and settled, then revoked; and an
    # active key of the same team
    other, other_secret = key_create(actor="test", team=gw_team.team, name="other")
    key, new_secret = key_rotate(actor="test", key=gw_team.key, grace_seconds=3600)
    old_hash, new_hash = key.previous_key_hash, key.key_hash
    assert call(live, new_secret).status_code == 200
    settlement.settle_usage()
    key_revoke(actor="test", key=key)
    key.refresh_from_db()
    assert has_key_account(key)
    # when: within the grace
    assert keys_retire_due(now=key.revoked_at + grace() - timedelta(seconds=1)) == 0
    # then: clients are still told why (once the revoke has reached the gateway)
    until_refused(lambda: call(live, new_secret), within=3)
    assert_error(call(live, new_secret), 401, "invalid_request_error", "key_revoked")
    assert call(live, gw_team.secret).status_code == 401  # its old secret stopped at the revoke
    settlement.settle_usage()  # what was answered before the revoke reached the gateway
    # when: the grace is over (and a second round finds nothing more to do)
    assert keys_retire_due(now=key.revoked_at + grace()) == 1
    assert keys_retire_due(now=key.revoked_at + grace() + timedelta(minutes=1)) == 0
    # then: gone from Redis and from the live gateway's memory; it answers as unknown
    assert not in_redis(old_hash) and not in_redis(new_hash)
    assert not has_key_account(key)
    replica = live.gateway.replica
    eventually(lambda: old_hash not in replica.keys and new_hash not in replica.keys)
    assert_error(call(live, new_secret), 401, "invalid_request_error", "invalid_api_key")
    assert_error(call(live, gw_team.secret), 401, "invalid_request_error", "invalid_api_key")
    key.refresh_from_db()
    assert key.retired_at is not None
    event = AuditEvent.objects.get(action="key.retire")
    assert (event.actor, event.object_id) == ("system:key_lifecycle", key.public_id)
    # the active key is untouched
    assert call(live, other_secret).status_code == 200
    assert in_redis(other.key_hash) and has_key_account(other)
    # when: the full republish, then a Redis flush and the reconcile's rebuild
    gateway_state.publish_all()
    assert not in_redis(old_hash) and not in_redis(new_hash) and not has_key_account(key)
    redis_client().flushdb()
    reconcile.reconcile_gateway_state()
    # then: still gone, and the active key is back
    assert not in_redis(old_hash) and not in_redis(new_hash) and not has_key_account(key)
    assert in_redis(other.key_hash) and has_key_account(other)
    eventually(lambda: call(live, other_secret).status_code == 200)
    assert_error(call(live, new_secret), 401, "invalid_request_error", "invalid_api_key")


def test_an_unsettled_charge_keeps_the_key_account_until_settled(live, gw_team):
    # given: a call charged in Redis but not yet settled into Postgres, then a revoke
    assert call(live, gw_team.secret).status_code == 200
    key = key_revoke(actor="test", key=gw_team.key)
    key.refresh_from_db()
    # when: the grace is over
    assert keys_retire_due(now=key.revoked_at + grace()) == 1
    # then: the snapshot is gone, the key account waits for the settlement
    assert not in_redis(key.key_hash)
    assert has_key_account(key)
    assert keys_retire_due(now=key.revoked_at + grace()) == 0
    assert has_key_account(key)
    # when: the charge is settled, and the next round runs
    settlement.settle_usage()
    keys_retire_due(now=key.revoked_at + grace())
    # then
    assert not has_key_account(key)
    assert sum(redis_client().zcard(retired_keys_key(s)) for s in SHARD_RANGE) == 0


def test_the_full_republish_drops_a_key_account_its_retirement_could_not_reach(live, gw_team):
    # given: a key retired while its after-commit unpublish was lost (Redis down, say)
    key = key_revoke(actor="test", key=gw_team.key)
    VirtualKey.objects.filter(pk=key.pk).update(retired_at=timezone.now())
    spent, resv = key_fields(key.pk)
    redis_client().hset(acct_key(key.team_id), mapping={spent: 52, resv: 0})
    # when
    gateway_state.publish_all()
    # then
    assert not in_redis(key.key_hash) and not has_key_account(key)


@pytest.mark.django_db
def test_an_expired_key_retires_a_grace_after_its_expiry(
    tenant_a, django_capture_on_commit_callbacks
):
    # given: an expired key, published
    expires = timezone.now() + timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=True):
        key, _ = key_create(actor="test", team=tenant_a.team, name="temp", expires_at=expires)
        keys_expire_due(now=expires)
    assert in_redis(key.key_hash)
    # when / then: not before the grace ends
    with django_capture_on_commit_callbacks(execute=True):
        assert keys_retire_due(now=expires + grace() - timedelta(seconds=1)) == 0
    assert in_redis(key.key_hash)
    with django_capture_on_commit_callbacks(execute=True):
        assert keys_retire_due(now=expires + grace()) == 1
    assert not in_redis(key.key_hash)
    # when: the retired key is changed afterwards, it is not published again
    key.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        key_update(actor="test", key=key, data={"name": "renamed"})
    assert not in_redis(key.key_hash)
    # then: the team's active key is untouched
    assert VirtualKey.objects.get(pk=tenant_a.key.pk).retired_at is None


@pytest.mark.django_db(transaction=True)
def test_workers_racing_retire_each_key_once(tenant_a):
    # given: five revoked keys past the grace
    for i in range(5):
        key, _ = key_create(actor="test", team=tenant_a.team, name=f"k{i}")
        key_revoke(actor="test", key=key)
    later = timezone.now() + grace() + timedelta(seconds=1)

    # when
    done = race(lambda _: keys_retire_due(now=later), 6)
    # then
    assert sum(done) == 5
    assert AuditEvent.objects.filter(action="key.retire").count() == 5
    assert VirtualKey.objects.filter(retired_at__isnull=False).count() == 5
    assert VirtualKey.objects.get(pk=tenant_a.key.pk).retired_at is None
