"""Keys expire at their expiry and rotation grace periods end, recorded and published."""

from datetime import timedelta

import httpx
import orjson
import pytest
from django.utils import timezone

from core.redis import client as redis_client
from livestate.keys import KEY_SNAPSHOTS
from mirrors import gateway as gateway_state
from orgs.models import AuditEvent
from teams.models import VirtualKey
from teams.services import (
    key_create,
    key_grace_periods_end_due,
    key_rotate,
    keys_expire_due,
)
from teams.tasks import expire_keys
from tests.helpers.gateway import until_refused
from tests.helpers.threads import race


def published(key_hash: str) -> dict | None:
    raw = redis_client().hget(KEY_SNAPSHOTS, key_hash)
    return orjson.loads(raw) if raw else None


@pytest.mark.django_db
def test_a_key_past_its_expiry_is_marked_expired_once(tenant_a, django_capture_on_commit_callbacks):
    # given
    expires = timezone.now() + timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=True):
        key, _ = key_create(actor="test", team=tenant_a.team, name="temp", expires_at=expires)
    # when: before, at, and again after the expiry
    before = keys_expire_due(now=expires - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        at_expiry = keys_expire_due(now=expires)
    again = keys_expire_due(now=expires + timedelta(minutes=1))
    # then
    assert (before, at_expiry, again) == (0, 1, 0)
    key.refresh_from_db()
    assert key.status == VirtualKey.Status.EXPIRED
    event = AuditEvent.objects.get(action="key.expire")
    assert event.actor == "system:key_lifecycle"
    assert event.object_id == key.public_id
    assert event.organization_id == tenant_a.org.pk
    assert event.changes == {"status": ["active", "expired"]}
    assert published(key.key_hash)["status"] == "expired"
    # the other key of the team is untouched
    assert VirtualKey.objects.get(pk=tenant_a.key.pk).status == VirtualKey.Status.ACTIVE


@pytest.mark.django_db
def test_a_rotation_grace_period_ends_and_the_old_secret_is_forgotten(
    tenant_a, django_capture_on_commit_callbacks
):
    # given: a rotation with ten minutes of grace
    old_hash = tenant_a.key.key_hash
    with django_capture_on_commit_callbacks(execute=True):
        key, _ = key_rotate(actor="test", key=tenant_a.key, grace_seconds=600)
    assert published(old_hash)["prev_hash"] == old_hash
    grace_end = key.previous_valid_until
    # when
    assert key_grace_periods_end_due(now=grace_end - timedelta(seconds=1)) == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert key_grace_periods_end_due(now=grace_end) == 1
    assert key_grace_periods_end_due(now=grace_end + timedelta(minutes=5)) == 0
    # then
    key.refresh_from_db()
    assert (key.previous_key_hash, key.previous_valid_until) == (None, None)
    assert key.status == VirtualKey.Status.ACTIVE
    event = AuditEvent.objects.get(action="key.grace_end")
    assert event.actor == "system:key_lifecycle"
    assert event.changes["previous_key_hash"] == ["[redacted]", "[redacted]"]
    assert old_hash not in str(event.changes)
    assert published(old_hash) is None
    assert published(key.key_hash)["prev_hash"] is None


@pytest.mark.django_db
def test_a_rotation_without_grace_unpublishes_the_old_secret_at_once(
    tenant_a, django_capture_on_commit_callbacks
):
    old_hash = tenant_a.key.key_hash
    assert published(old_hash) is None  # fixtures ran without after-commit publishing
    gateway_state.publish_key(tenant_a.key.pk)
    assert published(old_hash) is not None
    # when
    with django_capture_on_commit_callbacks(execute=True):
        key, _ = key_rotate(actor="test", key=tenant_a.key, grace_seconds=0)
    # then
    assert published(old_hash) is None
    assert published(key.key_hash)["hash"] == key.key_hash


@pytest.mark.django_db
def test_the_task_runs_both_sweeps(tenant_a):
    # given: an expired key (its expiry set directly: the API refuses one in the past)
    VirtualKey.objects.filter(pk=tenant_a.key.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    rotated, _ = key_rotate(actor="test", key=tenant_a.key, grace_seconds=1)
    VirtualKey.objects.filter(pk=rotated.pk).update(
        previous_valid_until=timezone.now() - timedelta(seconds=1)
    )
    # when
    expire_keys.apply()
    # then
    key = VirtualKey.objects.get(pk=tenant_a.key.pk)
    assert key.status == VirtualKey.Status.EXPIRED
    assert key.previous_key_hash is None


@pytest.mark.django_db(transaction=True)
def test_workers_racing_on_the_same_keys_record_each_change_once(tenant_a):
    # given: five keys past their expiry
    soon = timezone.now() + timedelta(minutes=5)
    for i in range(5):
        key_create(actor="test", team=tenant_a.team, name=f"k{i}", expires_at=soon)

    def worker(_):
        return keys_expire_due(now=soon + timedelta(seconds=1))

    # when
    done = race(worker, 6)
    # then
    assert sum(done) == 5
    assert AuditEvent.objects.filter(action="key.expire").count() == 5
    assert VirtualKey.objects.filter(status=VirtualKey.Status.EXPIRED).count() == 5


def test_the_gateway_refuses_a_secret_rotated_without_grace_at_once(live, gw_team):
    # given: the key works
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    url = f"{live.url}/v1/chat/completions"
    assert httpx.post(url, headers=gw_team.headers(), json=body).status_code == 200
    # when
    _, secret = key_rotate(actor="test", key=gw_team.key, grace_seconds=0)
    # then: within the gateway's refresh interval the old secret is refused, the new one works
    old = until_refused(lambda: httpx.post(url, headers=gw_team.headers(), json=body), within=3)
    assert old.status_code == 401
    new = httpx.post(url, headers={"Authorization": f"Bearer {secret}"}, json=body)
    assert new.status_code == 200
