"""Tenant isolation: an org-scoped admin key sees and changes only its own organization."""

import json

import pytest

from alerts.models import WebhookEndpoint
from alerts.services import webhook_endpoint_create
from billing.services import credits_grant
from orgs.models import AuditEvent, Organization
from teams.models import Team, VirtualKey
from teams.services import team_set_status
from tests.helpers.api import assert_api_error
from tests.helpers.tenants import add_call_history, db_state

# Tenant A's scoped key against tenant B's objects: each must be a 404, as if B did not exist.
CROSS_TENANT = [
    ("get", "organizations/{org}/", None),
    ("patch", "organizations/{org}/", {"name": "Pwned"}),
    ("delete", "organizations/{org}/", None),
    ("get", "organizations/{org}/usage/", None),
    ("get", "teams/{team}/", None),
    ("patch", "teams/{team}/", {"name": "Pwned", "overdraft_limit": "1000"}),
    ("delete", "teams/{team}/", None),
    ("post", "teams/{team}/suspend/", None),
    ("post", "teams/{team}/resume/", None),
    ("post", "teams/{team}/pause/", None),
    ("get", "teams/{team}/keys/", None),
    ("post", "teams/{team}/keys/", {"name": "backdoor"}),
    ("get", "teams/{team}/credits/", None),
    ("get", "teams/{team}/ledger/", None),
    ("get", "teams/{team}/usage/", None),
    ("get", "teams/{team}/calls/", None),
    ("get", "teams/{team}/jobs/", None),
    ("get", "jobs/{job}/", None),
    ("get", "calls/{call}/", None),
    ("get", "keys/{key}/", None),
    ("patch", "keys/{key}/", {"rpm_limit": 1}),
    ("delete", "keys/{key}/", None),
    ("post", "keys/{key}/rotate/", {"grace_period_seconds": 0}),
    ("get", "teams/{team}/alerts/", None),
    ("get", "webhooks/{webhook}/", None),
    ("patch", "webhooks/{webhook}/", {"url": "https://evil.example/h", "enabled": True}),
    ("delete", "webhooks/{webhook}/", None),
    ("post", "webhooks/{webhook}/rotate-secret/", None),
    ("get", "webhooks/{webhook}/deliveries/", None),
]

# Platform-only for an org-scoped key, whoever's object it is: 403. Money included: an
# organization cannot grant itself credits or extend itself credit.
PLATFORM_ONLY = [
    ("post", "teams/{own_team}/credits/grant/", {"amount": "1000", "reason": "free money"}),
    ("post", "teams/{own_team}/credits/adjust/", {"amount": "25", "reason": "goodwill"}),
    ("post", "teams/{other_team}/credits/grant/", {"amount": "1000", "reason": "free money"}),
    ("post", "teams/{other_team}/credits/adjust/", {"amount": "-25", "reason": "theft"}),
    ("patch", "teams/{own_team}/", {"overdraft_limit": "1000"}),
    ("get", "upstreams/", None),
    ("post", "upstreams/", {"name": "evil", "base_url": "http://evil.example/v1"}),
    ("get", "upstreams/{upstream}/", None),
    ("patch", "upstreams/{upstream}/", {"base_url": "http://evil.example/v1"}),
    ("delete", "upstreams/{upstream}/", None),
    ("post", "upstreams/{upstream}/import-models/", {"overwrite": ["gpt-a"]}),
    ("get", "litellm/drift/", None),
    ("get", "admin-keys/", None),
    ("post", "admin-keys/", {"name": "escalation"}),
    ("post", "admin-keys/", {"name": "into B", "organization": "{other_org}"}),
    ("get", "admin-keys/{other_admin_key}/", None),
    ("delete", "admin-keys/{other_admin_key}/", None),
    ("get", "admin-keys/{own_admin_key}/", None),
    ("post", "models/", {"name": "m-new", "upstream": "prov", "upstream_model": "x"}),
    ("patch", "models/{model}/", {"enabled": False}),
    ("delete", "models/{model}/", None),
    ("post", "models/{model}/check/", None),
    ("post", "model-groups/", {"name": "slow", "models": [{"model": "gpt-b"}]}),
    ("patch", "model-groups/{group}/", {"description": "hijacked"}),
    ("delete", "model-groups/{group}/", None),
    ("post", "organizations/", {"name": "Org C"}),
    ("patch", "organizations/{own_org}/", {"name": "Renamed"}),
    ("delete", "organizations/{own_org}/", None),
]

B_BALANCE = 25_000_000


def fill(value, ids: dict):
    """Put ids into "{placeholders}" of a path or body."""
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


def call(client, method: str, path: str, body=None):
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, json.dumps(body), content_type="application/json")


def result_ids(response) -> set[str]:
    assert response.status_code == 200
    return {row["id"] for row in response.json()["results"]}


@pytest.fixture
def tenant_b_with_history(tenant_b):
    """Tenant B with credits and a paused team, so suspend/resume/adjust would show."""
    credits_grant(
        team=tenant_b.team,
        amount_micros=B_BALANCE,
        reason="prepaid",
        actor="test",
        idempotency_key="b-seed",
    )
    team_set_status(actor="test", team=tenant_b.team, status=Team.Status.PAUSED)
    tenant_b.job, tenant_b.call = add_call_history(tenant_b)
    tenant_b.webhook, _ = webhook_endpoint_create(
        actor="test", organization=tenant_b.org, url="https://b.example/hook", enabled=False
    )
    return tenant_b


def assert_b_untouched(tenant_b):
    org = Organization.objects.get(pk=tenant_b.org.pk)
    team = Team.objects.select_related("account").get(pk=tenant_b.team.pk)
    key = VirtualKey.objects.get(pk=tenant_b.key.pk)
    assert (org.name, org.status) == ("Org B", "active")
    assert (team.name, team.status) == ("Team B", Team.Status.PAUSED)
    assert team.account.balance_micros == B_BALANCE
    assert team.account.overdraft_limit_micros == 0
    assert (key.status, key.key_hash) == (VirtualKey.Status.ACTIVE, tenant_b.key.key_hash)
    assert list(team.keys.all()) == [key]
    webhook = WebhookEndpoint.objects.get(pk=tenant_b.webhook.pk)
    assert (webhook.url, webhook.enabled, webhook.secret_encrypted) == (
        "https://b.example/hook",
        False,
        tenant_b.webhook.secret_encrypted,
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    CROSS_TENANT,
    ids=[f"{method.upper()} /api/{path}" for method, path, _ in CROSS_TENANT],
)
def test_scoped_key_gets_404_for_another_tenants_objects_and_changes_nothing(
    method, path, body, tenant_a, tenant_b_with_history
):
    # given
    b = tenant_b_with_history
    b_ids = {
        "org": b.org.public_id,
        "team": b.team.public_id,
        "key": b.key.public_id,
        "job": b.job.public_id,
        "call": b.call.request_id,
        "webhook": b.webhook.public_id,
    }
    missing_ids = {
        "org": "org_doesnotexist",
        "team": "team_doesnotexist",
        "key": "key_doesnotexist",
        "job": "job_doesnotexist",
        "call": "req_doesnotexist",
        "webhook": "wh_doesnotexist",
    }
    before = db_state()
    # when
    response = call(tenant_a.client, method, "/api/" + fill(path, b_ids), body)
    # then: the same answer as for an id that does not exist, so B's ids cannot be probed
    assert_api_error(response, 404, "not_found")
    missing = call(tenant_a.client, method, "/api/" + fill(path, missing_ids), body)
    assert response.json() == missing.json()
    assert db_state() == before
    assert_b_untouched(b)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    PLATFORM_ONLY,
    ids=[
        f"{method.upper()} /api/{path}"
        + (" into another org" if "organization" in (body or {}) else "")
        for method, path, body in PLATFORM_ONLY
    ],
)
def test_scoped_key_gets_403_on_platform_only_endpoints_and_changes_nothing(
    method, path, body, tenant_a, tenant_b, catalog_objects
):
    # given
    ids = {
        "upstream": catalog_objects["upstream"].public_id,
        "model": catalog_objects["fallback"].public_id,
        "group": catalog_objects["group"].public_id,
        "own_org": tenant_a.org.public_id,
        "own_team": tenant_a.team.public_id,
        "other_team": tenant_b.team.public_id,
        "own_admin_key": tenant_a.admin_key.public_id,
        "other_org": tenant_b.org.public_id,
        "other_admin_key": tenant_b.admin_key.public_id,
    }
    before = db_state()
    # when
    response = call(tenant_a.client, method, "/api/" + fill(path, ids), fill(body, ids))
    # then
    assert_api_error(response, 403, "permission_denied")
    assert db_state() == before


@pytest.mark.parametrize(
    "path", ["models/", "models/{model}/", "model-groups/", "model-groups/{group}/"]
)
def test_scoped_key_can_read_the_shared_catalog(path, tenant_a, catalog_objects):
    ids = {
        "model": catalog_objects["primary"].public_id,
        "group": catalog_objects["group"].public_id,
    }
    assert tenant_a.client.get("/api/" + fill(path, ids)).status_code == 200


@pytest.mark.parametrize("viewer", ["a", "b"])
def test_scoped_key_lists_only_its_own_organizations_objects(viewer, tenant_a, tenant_b):
    # given: both tenants have written audit events through their own keys
    me, other = (tenant_a, tenant_b) if viewer == "a" else (tenant_b, tenant_a)
    for tenant in (me, other):
        tenant.client.post(f"/api/teams/{tenant.team.public_id}/suspend/")
    client = me.client
    # then
    assert result_ids(client.get("/api/organizations/")) == {me.org.public_id}
    assert result_ids(client.get("/api/teams/")) == {me.team.public_id}
    assert result_ids(client.get("/api/teams/", {"organization": other.org.public_id})) == set()
    assert result_ids(client.get(f"/api/teams/{me.team.public_id}/keys/")) == {me.key.public_id}
    events = client.get("/api/audit-events/").json()["results"]
    assert events
    assert {e["organization"] for e in events} == {me.org.public_id}
    assert {"team.suspended"} <= {e["action"] for e in events}
    for query in ({"organization": other.org.public_id}, {"object_id": other.team.public_id}):
        assert client.get("/api/audit-events/", query).json()["results"] == []


def test_scoped_key_cannot_create_a_team_in_another_organization(tenant_a, tenant_b):
    # given
    before = db_state()
    # when
    response = tenant_a.client.post(
        "/api/teams/", {"organization": tenant_b.org.public_id, "name": "Sneaky"}, format="json"
    )
    # then: the answer an unknown organization id gets
    error = assert_api_error(response, 400, "validation_error")
    assert error["fields"] == {
        "organization": [f"No organization with id {tenant_b.org.public_id}."]
    }
    unknown = tenant_a.client.post(
        "/api/teams/", {"organization": "org_doesnotexist", "name": "Sneaky"}, format="json"
    )
    assert unknown.json()["error"]["fields"] == {
        "organization": ["No organization with id org_doesnotexist."]
    }
    assert db_state() == before
    assert not Team.objects.filter(name="Sneaky").exists()


def test_scoped_key_cannot_move_its_team_into_another_organization(tenant_a, tenant_b):
    # when
    response = tenant_a.client.patch(
        f"/api/teams/{tenant_a.team.public_id}/",
        {"organization": tenant_b.org.public_id},
        format="json",
    )
    # then
    assert response.status_code == 200
    assert response.json()["organization"] == tenant_a.org.public_id
    assert Team.objects.get(pk=tenant_a.team.pk).organization_id == tenant_a.org.pk
    assert not tenant_b.org.teams.exclude(pk=tenant_b.team.pk).exists()


def test_scoped_key_manages_its_own_organization(tenant_a):
    # given
    client, team_id = tenant_a.client, tenant_a.team.public_id
    actor = f"admin_key:{tenant_a.admin_key.public_id}"
    # when
    created = client.post(
        "/api/teams/", {"organization": tenant_a.org.public_id, "name": "Team A2"}, format="json"
    )
    limited = client.patch(f"/api/teams/{team_id}/", {"rpm_limit": 30}, format="json")
    suspended = client.post(f"/api/teams/{team_id}/suspend/")
    rotated = client.post(f"/api/keys/{tenant_a.key.public_id}/rotate/", {}, format="json")
    # then
    assert created.status_code == 201
    assert created.json()["organization"] == tenant_a.org.public_id
    assert limited.status_code == 200 and limited.json()["rpm_limit"] == 30
    assert suspended.status_code == 200
    assert suspended.json()["status"] == "suspended"
    assert rotated.status_code == 200
    assert client.get(f"/api/organizations/{tenant_a.org.public_id}/").status_code == 200
    events = AuditEvent.objects.filter(actor=actor)
    assert {e.organization_id for e in events} == {tenant_a.org.pk}
    assert {e.action for e in events} == {
        "team.create",
        "team.update",
        "team.suspended",
        "key.rotate",
    }


def test_master_key_sees_and_manages_both_tenants(api, tenant_a, tenant_b_with_history):
    # given
    b = tenant_b_with_history
    # then
    orgs = {tenant_a.org.public_id, b.org.public_id}
    assert result_ids(api.get("/api/organizations/")) == orgs
    assert result_ids(api.get("/api/teams/")) == {tenant_a.team.public_id, b.team.public_id}
    events = api.get("/api/audit-events/").json()["results"]
    assert orgs <= {e["organization"] for e in events}
    for tenant in (tenant_a, b):
        assert api.get(f"/api/teams/{tenant.team.public_id}/").status_code == 200
        assert result_ids(api.get(f"/api/teams/{tenant.team.public_id}/keys/")) == {
            tenant.key.public_id
        }
    resumed = api.post(f"/api/teams/{b.team.public_id}/resume/")
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "active"
    assert api.get(f"/api/teams/{b.team.public_id}/credits/").json()["balance"] == "25.000000"


@pytest.mark.parametrize("viewer", ["a", "b", "platform"])
def test_webhook_endpoints_are_listed_only_to_their_organization(viewer, api, tenant_a, tenant_b):
    # given: one endpoint per organization
    hooks = {
        t.org.public_id: webhook_endpoint_create(
            actor="test", organization=t.org, url=f"https://{t.org.pk}.example/hook"
        )[0].public_id
        for t in (tenant_a, tenant_b)
    }
    client = {"a": tenant_a.client, "b": tenant_b.client, "platform": api}[viewer]
    # when
    listed = result_ids(client.get("/api/webhooks/"))
    # then
    if viewer == "platform":
        assert listed == set(hooks.values())
    else:
        own = (tenant_a if viewer == "a" else tenant_b).org.public_id
        assert listed == {hooks[own]}


def test_scoped_key_creates_webhooks_only_in_its_own_organization(tenant_a, tenant_b):
    # given
    before = db_state()
    # when
    into_b = tenant_a.client.post(
        "/api/webhooks/",
        {"organization": tenant_b.org.public_id, "url": "https://a.example/steal"},
        format="json",
    )
    # then: the answer an unknown organization id gets, and nothing was created
    error = assert_api_error(into_b, 400, "validation_error")
    assert error["fields"] == {
        "organization": [f"No organization with id {tenant_b.org.public_id}."]
    }
    assert db_state() == before
    # while its own organization (the default) works
    own = tenant_a.client.post("/api/webhooks/", {"url": "https://a.example/h"}, format="json")
    assert own.status_code == 201
    assert own.json()["organization"] == tenant_a.org.public_id
    assert not WebhookEndpoint.objects.filter(organization=tenant_b.org).exists()


def test_the_platform_admin_must_name_the_webhooks_organization(api, tenant_a):
    before = db_state()
    response = api.post("/api/webhooks/", {"url": "https://x.example/h"}, format="json")
    assert_api_error(response, 400, "validation_error")
    assert "organization" in response.json()["error"]["fields"]
    assert db_state() == before
