"""Keys hashed at rest and shown once; provider secrets encrypted; none in answers or logs."""

import logging

import pytest
from django.core.management import call_command
from django.db import connection

from core.secrets import decrypt, hash_secret
from modelgroups.models import Upstream
from orgs.models import AdminKey, AuditEvent
from teams.models import VirtualKey

PROVIDER_SECRET = "sk-live-provider-0123456789abcdef"


def _all_rows_text() -> str:
    """Every row of every table of ours, as text: where a leaked secret would show up."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            if table.split("_")[0] in {"orgs", "teams", "modelgroups", "billing"}:
                cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - our own table names
                chunks.append(repr(cursor.fetchall()))
    return "\n".join(chunks)


@pytest.mark.django_db
def test_a_virtual_key_secret_is_shown_once_and_stored_only_as_a_hash(api, tenant_a, caplog):
    caplog.set_level(logging.DEBUG)
    # when
    created = api.post(f"/api/teams/{tenant_a.team.public_id}/keys/", {"name": "ci"}, format="json")
    # then
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("sk-") and len(secret) >= 40
    key = VirtualKey.objects.get(public_id=created.json()["id"])
    assert key.key_hash == hash_secret(secret)
    assert secret not in _all_rows_text()
    listed = api.get(f"/api/teams/{tenant_a.team.public_id}/keys/")
    fetched = api.get(f"/api/keys/{key.public_id}/")
    for response in (listed, fetched):
        assert secret not in response.content.decode()
        assert "secret" not in response.content.decode()
    assert secret not in caplog.text


@pytest.mark.django_db
def test_rotation_returns_a_new_secret_once_and_keeps_the_old_one_for_the_grace(api, tenant_a):
    old_hash = tenant_a.key.key_hash
    rotated = api.post(
        f"/api/keys/{tenant_a.key.public_id}/rotate/", {"grace_period_seconds": 600}, format="json"
    )
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    key = VirtualKey.objects.get(pk=tenant_a.key.pk)
    assert key.key_hash == hash_secret(new_secret) != old_hash
    assert key.previous_key_hash == old_hash
    assert key.previous_valid_until is not None
    assert new_secret not in _all_rows_text()


@pytest.mark.django_db
def test_admin_key_secrets_are_hashed_and_shown_once(api):
    created = api.post("/api/admin-keys/", {"name": "terraform"}, format="json")
    secret = created.json()["secret"]
    assert AdminKey.objects.get(public_id=created.json()["id"]).key_hash == hash_secret(secret)
    assert secret not in _all_rows_text()
    assert secret not in api.get("/api/admin-keys/").content.decode()


@pytest.mark.django_db
def test_provider_api_keys_are_encrypted_at_rest_and_never_returned(api, caplog):
    caplog.set_level(logging.DEBUG)
    created = api.post(
        "/api/upstreams/",
        {"name": "openai", "base_url": "https://api.example/v1", "api_key": PROVIDER_SECRET},
        format="json",
    )
    assert created.status_code == 201
    assert created.json()["has_api_key"] is True
    upstream = Upstream.objects.get(public_id=created.json()["id"])
    assert decrypt(upstream.api_key_encrypted) == PROVIDER_SECRET
    updated = api.patch(
        f"/api/upstreams/{upstream.public_id}/", {"api_key": PROVIDER_SECRET + "-v2"}, format="json"
    )
    responses = [
        created,
        updated,
        api.get("/api/upstreams/"),
        api.get(f"/api/upstreams/{upstream.public_id}/"),
        api.get("/api/audit-events/"),
    ]
    for response in responses:
        assert PROVIDER_SECRET not in response.content.decode()
    assert PROVIDER_SECRET not in _all_rows_text()
    assert PROVIDER_SECRET not in caplog.text
    audit = AuditEvent.objects.get(action="upstream.update")
    assert audit.changes["api_key_encrypted"] == ["[redacted]", "[redacted]"]


@pytest.mark.django_db
def test_every_write_is_audited_with_actor_and_before_after(api, tenant_a):
    api.patch(
        f"/api/teams/{tenant_a.team.public_id}/",
        {"rpm_limit": 42, "name": "Renamed"},
        format="json",
    )
    event = AuditEvent.objects.filter(action="team.update").latest("id")
    assert event.actor == "master"
    assert event.object_id == tenant_a.team.public_id
    assert event.changes["rpm_limit"] == [None, 42]
    assert event.changes["name"] == ["Team A", "Renamed"]
    assert event.organization_id == tenant_a.org.pk


@pytest.mark.django_db
def test_the_openapi_schema_generates_without_warnings(tmp_path):
    # --fail-on-warn turns any drf-spectacular warning into an error.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )
    assert "X-Admin-Key" in (tmp_path / "schema.yml").read_text()


@pytest.mark.django_db
def test_schema_and_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_a_key_cannot_be_given_an_expiry_in_the_past(api, tenant_a):
    response = api.patch(
        f"/api/keys/{tenant_a.key.public_id}/",
        {"expires_at": "2001-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert "expires_at" in response.json()["error"]["fields"]
    tenant_a.key.refresh_from_db()
    assert tenant_a.key.expires_at is None
