"""Admin API authentication: every endpoint refuses a missing, wrong or revoked X-Admin-Key."""

import json

import pytest

from alerts.services import webhook_endpoint_create
from orgs.models import AdminKey
from orgs.services import admin_key_create, admin_key_revoke
from saas.urls import api_patterns
from tests.helpers.api import MASTER, client_with
from tests.helpers.tenants import add_call_history, db_state

PUBLIC_ROUTES = {"schema/", "docs/"}

# Every (method, route) under /api/, with a body that would change something if it got through.
# A callable body is given the ids of the objects the fixtures made.
ENDPOINTS = [
    ("get", "organizations/", None),
    ("post", "organizations/", {"name": "Intruder Org"}),
    ("get", "organizations/<str:id>/", None),
    ("patch", "organizations/<str:id>/", {"name": "Renamed Org"}),
    ("delete", "organizations/<str:id>/", None),
    ("get", "organizations/<str:id>/usage/", None),
    ("get", "teams/", None),
    ("post", "teams/", lambda ids: {"organization": ids["organizations"], "name": "Intruders"}),
    ("get", "teams/<str:id>/", None),
    ("patch", "teams/<str:id>/", {"name": "Renamed", "rpm_limit": 1}),
    ("delete", "teams/<str:id>/", None),
    ("post", "teams/<str:id>/suspend/", None),
    ("post", "teams/<str:id>/resume/", None),
    ("post", "teams/<str:id>/pause/", None),
    ("get", "teams/<str:id>/keys/", None),
    ("post", "teams/<str:id>/keys/", {"name": "backdoor"}),
    ("get", "teams/<str:id>/credits/", None),
    ("post", "teams/<str:id>/credits/grant/", {"amount": "100", "reason": "free money"}),
    ("post", "teams/<str:id>/credits/adjust/", {"amount": "100", "reason": "free money"}),
    ("get", "teams/<str:id>/ledger/", None),
    ("get", "teams/<str:id>/usage/", None),
    ("get", "teams/<str:id>/calls/", None),
    ("get", "teams/<str:id>/jobs/", None),
    ("get", "jobs/<str:id>/", None),
    ("get", "calls/<str:id>/", None),
    ("get", "teams/<str:id>/alerts/", None),
    ("get", "keys/<str:id>/", None),
    ("patch", "keys/<str:id>/", {"name": "renamed", "rpm_limit": 1}),
    ("delete", "keys/<str:id>/", None),
    ("post", "keys/<str:id>/rotate/", {"grace_period_seconds": 0}),
    ("get", "upstreams/", None),
    ("post", "upstreams/", {"name": "evil", "base_url": "http://evil.example/v1"}),
    ("get", "upstreams/<str:id>/", None),
    ("patch", "upstreams/<str:id>/", {"base_url": "http://evil.example/v1"}),
    ("delete", "upstreams/<str:id>/", None),
    ("post", "upstreams/<str:id>/import-models/", {"overwrite": ["gpt-a"]}),
    ("get", "litellm/drift/", None),
    ("get", "models/", None),
    ("post", "models/", {"name": "m-new", "upstream": "prov", "upstream_model": "x"}),
    ("get", "models/<str:id>/", None),
    ("patch", "models/<str:id>/", {"enabled": False}),
    ("delete", "models/<str:id>/", None),
    ("post", "models/<str:id>/check/", None),
    ("get", "model-groups/", None),
    ("post", "model-groups/", {"name": "slow", "models": [{"model": "gpt-b"}]}),
    ("get", "model-groups/<str:id>/", None),
    ("patch", "model-groups/<str:id>/", {"description": "hijacked"}),
    ("delete", "model-groups/<str:id>/", None),
    ("get", "webhooks/", None),
    (
        "post",
        "webhooks/",
        lambda ids: {"organization": ids["organizations"], "url": "https://evil.example/h"},
    ),
    ("get", "webhooks/<str:id>/", None),
    ("patch", "webhooks/<str:id>/", {"url": "https://evil.example/h", "enabled": True}),
    ("delete", "webhooks/<str:id>/", None),
    ("post", "webhooks/<str:id>/rotate-secret/", None),
    ("get", "webhooks/<str:id>/deliveries/", None),
    ("get", "admin-keys/", None),
    ("post", "admin-keys/", {"name": "escalation"}),
    ("get", "admin-keys/<str:id>/", None),
    ("delete", "admin-keys/<str:id>/", None),
    ("get", "audit-events/", None),
]


def assert_unauthenticated(response):
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"] == "X-Admin-Key"
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["message"].strip()
    return error


def call(client, method: str, route: str, body, ids: dict):
    """Request /api/<route>, with <str:id> replaced by the id of that kind of object."""
    if "<str:id>" in route:
        route = route.replace("<str:id>", ids[route.split("/")[0]])
    path = "/api/" + route
    if callable(body):
        body = body(ids)
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, json.dumps(body), content_type="application/json")


@pytest.fixture
def ids(tenant_a, catalog_objects) -> dict:
    """Ids of a real object of every kind, by the first segment of the route that serves it."""
    platform_key, _ = admin_key_create(actor="test", name="ops")
    job, call = add_call_history(tenant_a)
    webhook, _ = webhook_endpoint_create(
        actor="test", organization=tenant_a.org, url="https://a.example/hook", enabled=False
    )
    return {
        "jobs": job.public_id,
        "calls": call.request_id,
        "organizations": tenant_a.org.public_id,
        "teams": tenant_a.team.public_id,
        "keys": tenant_a.key.public_id,
        "upstreams": catalog_objects["upstream"].public_id,
        "models": catalog_objects["fallback"].public_id,
        "model-groups": catalog_objects["group"].public_id,
        "admin-keys": platform_key.public_id,
        "webhooks": webhook.public_id,
    }


@pytest.fixture
def revoked_platform_secret(db) -> str:
    key, secret = admin_key_create(actor="test", name="former ops")
    admin_key_revoke(actor="test", key=key)
    return secret


def test_every_admin_endpoint_and_method_is_in_the_auth_table():
    served = {
        (method, str(pattern.pattern))
        for pattern in api_patterns
        if str(pattern.pattern) not in PUBLIC_ROUTES
        for method in ("get", "post", "put", "patch", "delete")
        if hasattr(pattern.callback.cls, method)
    }
    assert served == {(method, route) for method, route, _ in ENDPOINTS}


@pytest.mark.parametrize(
    ("method", "route", "body"),
    ENDPOINTS,
    ids=[f"{method.upper()} /api/{route}" for method, route, _ in ENDPOINTS],
)
@pytest.mark.parametrize("credential", ["missing", "wrong", "revoked"])
def test_admin_endpoint_refuses_a_missing_wrong_or_revoked_key(
    credential, method, route, body, ids, revoked_platform_secret
):
    # given
    secret = {"missing": None, "wrong": "tga-not-a-real-key", "revoked": revoked_platform_secret}
    client = client_with(secret[credential])
    before = db_state()
    # when
    response = call(client, method, route, body, ids)
    # then
    assert_unauthenticated(response)
    assert db_state() == before


@pytest.mark.parametrize(
    "variant",
    [
        "empty header",
        "master key plus a character",
        "master key upper-cased",
        "admin key prefix with a wrong tail",
        "a virtual key secret",
        "a tenant admin key with a wrong tail",
    ],
)
@pytest.mark.parametrize(("method", "route"), [("get", "teams/"), ("post", "organizations/")])
def test_near_miss_admin_keys_are_refused(variant, method, route, tenant_a):
    # given
    secret = {
        "empty header": "",
        "master key plus a character": MASTER + "x",
        "master key upper-cased": MASTER.upper(),
        "admin key prefix with a wrong tail": tenant_a.admin_key.key_prefix + "x" * 40,
        "a virtual key secret": tenant_a.key_secret,
        "a tenant admin key with a wrong tail": tenant_a.admin_secret[:-1] + "#",
    }[variant]
    before = db_state()
    # when
    body = {"name": "Intruder Org"} if method == "post" else None
    response = call(client_with(secret), method, route, body, {})
    # then
    assert_unauthenticated(response)
    assert db_state() == before


def test_revoked_key_is_told_it_was_revoked(db, revoked_platform_secret):
    # when
    response = client_with(revoked_platform_secret).get("/api/teams/")
    # then
    error = assert_unauthenticated(response)
    assert "revoked" in error["message"]


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
@pytest.mark.parametrize("secret", [None, "tga-not-a-real-key"])
def test_schema_and_docs_are_public(db, path, secret):
    # when
    response = client_with(secret).get(path)
    # then
    assert response.status_code == 200


def test_minted_platform_admin_key_works_and_is_the_actor_in_the_audit_trail(api):
    # given: the master key mints a platform-wide admin key
    minted = api.post("/api/admin-keys/", {"name": "ops"}, format="json")
    assert minted.status_code == 201
    key_id, secret = minted.json()["id"], minted.json()["secret"]
    assert minted.json()["organization"] is None
    ops = client_with(secret)
    # when
    created = ops.post("/api/organizations/", {"name": "Made by ops"}, format="json")
    # then
    assert created.status_code == 201
    events = api.get("/api/audit-events/", {"object_id": created.json()["id"]}).json()["results"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("organization.create", f"admin_key:{key_id}")
    ]
    mint = api.get("/api/audit-events/", {"object_id": key_id}).json()["results"]
    assert [(e["action"], e["actor"]) for e in mint] == [("admin_key.create", "master")]
    assert ops.get("/api/upstreams/").status_code == 200  # platform-only endpoints too
    assert AdminKey.objects.get(public_id=key_id).last_used_at is not None


def test_admin_key_revoked_through_the_api_stops_working_at_once(api):
    # given
    minted = api.post("/api/admin-keys/", {"name": "ops"}, format="json").json()
    ops = client_with(minted["secret"])
    assert ops.get("/api/teams/").status_code == 200
    # when
    revoked = api.delete(f"/api/admin-keys/{minted['id']}/")
    # then
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    before = db_state()
    response = ops.post("/api/organizations/", {"name": "Too late"}, format="json")
    error = assert_unauthenticated(response)
    assert minted["id"] in error["message"]
    assert db_state() == before
