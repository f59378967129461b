"""Bad input gets a JSON error envelope naming the problem, never a 500 or an HTML page."""

import json

import pytest

from alerts.services import webhook_endpoint_create
from billing.models import CreditAccount
from modelgroups import services as catalog
from orgs.models import Organization
from orgs.services import organization_create
from saas.urls import api_patterns
from teams.services import team_create
from tests.helpers.api import MASTER, assert_api_error, client_with
from tests.helpers.tenants import db_state

INT_OVERFLOW = 2**31  # one past Postgres `integer`
DEEP_METADATA = json.loads(  # deeper than metadata may nest
    '{"a": ' * 40 + "1" + "}" * 40
)


def send(client, method: str, path: str, body=None):
    """A request whose body is sent as given: str or bytes verbatim, anything else as JSON."""
    if body is None:
        return getattr(client, method)(path)
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    return client.generic(method.upper(), path, body, content_type="application/json")


@pytest.fixture
def ids(tenant_a, tenant_b, catalog_objects) -> dict:
    """Placeholders for paths and bodies; group `slow` exists but no team has it."""
    catalog.model_group_create(
        actor="test", name="slow", members=[{"model": catalog_objects["fallback"]}]
    )
    return {
        "org": tenant_a.org.public_id,
        "other_org": tenant_b.org.public_id,
        "team": tenant_a.team.public_id,
        "key": tenant_a.key.public_id,
        "webhook": webhook_endpoint_create(
            actor="test", organization=tenant_a.org, url="https://a.example/hook"
        )[0].public_id,
    }


def fill(value, ids: dict):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


MALFORMED_BODIES = {
    "truncated": '{"name": "x", ',
    "single quotes": "{'name': 'x'}",
    "trailing comma": '{"name": "x",}',
    "NaN literal": '{"amount": NaN}',
    "invalid utf-8": b'{"name": "\xff\xfe"}',
    "nested too deep": "[" * 100_000,  # past the json module's recursion limit
}
WRITE_ENDPOINTS = [
    ("post", "/api/organizations/"),
    ("post", "/api/teams/"),
    ("patch", "/api/teams/{team}/"),
    ("post", "/api/teams/{team}/keys/"),
    ("post", "/api/teams/{team}/credits/grant/"),
    ("post", "/api/keys/{key}/rotate/"),
    ("post", "/api/model-groups/"),
    ("post", "/api/webhooks/"),
]


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS)
def test_malformed_json_body_is_invalid_json(api, ids, method, path, body):
    # given
    before = db_state()
    # when
    response = send(api, method, fill(path, ids), body)
    # then
    assert_api_error(response, 400, "invalid_json", with_fields=True)
    assert db_state() == before


def test_body_that_is_not_json_is_unsupported_media_type(api, ids):
    before = db_state()
    response = api.post("/api/organizations/", {"name": "Form Org"}, format="multipart")
    assert_api_error(response, 415, "unsupported_media_type", with_fields=True)
    assert db_state() == before


MISSING = object()
# A valid body for each write; every case below breaks one field of it.
VALID_BODIES = {
    ("post", "/api/organizations/"): {"name": "Org New"},
    ("patch", "/api/organizations/{org}/"): {},
    ("post", "/api/admin-keys/"): {"name": "ops"},
    ("post", "/api/teams/"): {"organization": "{org}", "name": "Team New"},
    ("patch", "/api/teams/{team}/"): {},
    ("post", "/api/teams/{team}/keys/"): {"name": "k"},
    ("post", "/api/keys/{key}/rotate/"): {},
    ("post", "/api/teams/{team}/credits/grant/"): {"amount": "5", "reason": "top-up"},
    ("post", "/api/teams/{team}/credits/adjust/"): {"amount": "5", "reason": "fix"},
    ("post", "/api/upstreams/"): {"name": "u", "base_url": "http://u.example/v1"},
    ("post", "/api/models/"): {"name": "m-new", "upstream": "prov", "upstream_model": "x"},
    ("post", "/api/model-groups/"): {"name": "new-group", "models": [{"model": "gpt-a"}]},
    ("post", "/api/webhooks/"): {"organization": "{org}", "url": "https://h.example/t"},
    ("patch", "/api/webhooks/{webhook}/"): {},
}


def bad(method, path, field, value, id=None):
    """A valid body for the endpoint with `field` set to `value` (or left out: MISSING)."""
    body = {k: v for k, v in VALID_BODIES[method, path].items() if k != field}
    if value is not MISSING:
        body[field] = value
    shown = "missing" if value is MISSING else repr(value)
    return pytest.param(
        method, path, body, field, id=id or f"{method.upper()} {path} {field}={shown}"
    )


TEAMS, TEAM = "/api/teams/", "/api/teams/{team}/"
GRANT, ADJUST = "/api/teams/{team}/credits/grant/", "/api/teams/{team}/credits/adjust/"
KEYS = "/api/teams/{team}/keys/"

INVALID_BODIES = [
    bad("post", TEAMS, "organization", MISSING),
    bad("post", TEAMS, "organization", "org_doesnotexist"),
    bad("post", TEAMS, "organization", "org_\u0000"),
    bad("post", TEAMS, "name", ""),
    bad("post", TEAMS, "rpm_limit", "lots"),
    bad("post", TEAMS, "rpm_limit", 0),
    bad("post", TEAMS, "rpm_limit", INT_OVERFLOW),
    bad("post", TEAMS, "tpm_limit", 1.5),
    bad("post", TEAMS, "max_parallel_requests", INT_OVERFLOW),
    bad("post", TEAMS, "model_groups", ["mg_doesnotexist"]),
    bad("post", TEAMS, "model_groups", "fast"),
    bad("post", TEAMS, "metadata", "tags"),
    bad("post", TEAMS, "metadata", {"note": "a\u0000b"}),
    bad("post", TEAMS, "metadata", {"note": "\ud800"}),
    bad("post", TEAMS, "metadata", DEEP_METADATA, id="POST /api/teams/ metadata=40 deep"),
    bad("post", TEAMS, "budget_limit", 1.5),
    bad("post", TEAMS, "budget_period", "yearly"),
    bad("post", TEAMS, "overdraft_limit", "-1"),
    bad("post", TEAMS, "allowance", "5"),  # with no budget period to recur on
    bad("post", TEAMS, "alert_thresholds", [5000]),
    bad("post", TEAMS, "low_balance_alert", "-1"),
    bad("post", TEAMS, "low_balance_alert", 1.5),
    bad("post", TEAMS, "low_balance_alert", "lots"),
    bad("post", TEAMS, "low_balance_alert", "1000000001"),
    bad("patch", TEAM, "low_balance_alert", "0.0000001"),
    bad("patch", TEAM, "rpm_limit", "lots"),
    bad("patch", TEAM, "model_groups", ["mg_doesnotexist"]),
    bad("post", GRANT, "amount", 1.5),
    bad("post", GRANT, "amount", True),
    bad("post", GRANT, "amount", "ten"),
    bad("post", GRANT, "amount", "NaN"),
    bad("post", GRANT, "amount", "-5"),
    bad("post", GRANT, "amount", "0"),
    bad("post", GRANT, "amount", "1.0000001"),
    bad("post", GRANT, "amount", "1.000000000000000000000000000001"),
    bad("post", GRANT, "amount", "1000000000000"),
    bad("post", GRANT, "amount", "1e999990"),
    bad("post", GRANT, "amount", "1e999999999"),
    bad("post", GRANT, "reason", MISSING),
    bad("post", GRANT, "reason", "   "),
    bad("post", GRANT, "idempotency_key", "k" * 101, id="POST grant idempotency_key=101 chars"),
    bad("post", ADJUST, "amount", "0"),
    bad("post", ADJUST, "amount", "-0.0000001"),
    bad("post", KEYS, "name", MISSING),
    bad("post", KEYS, "rpm_limit", "x"),
    bad("post", KEYS, "tpm_limit", INT_OVERFLOW),
    bad("post", KEYS, "model_groups", ["slow"]),  # not one of the team's groups
    bad("post", KEYS, "expires_at", "soon"),
    bad("post", KEYS, "expires_at", "2001-01-01T00:00:00Z"),
    bad("post", "/api/keys/{key}/rotate/", "grace_period_seconds", -1),
    bad("post", "/api/organizations/", "name", MISSING),
    bad("post", "/api/organizations/", "status", "deleted"),
    bad("post", "/api/organizations/", "metadata", []),
    bad("patch", "/api/organizations/{org}/", "name", None),
    bad("post", "/api/organizations/", "billing_email", "not an address"),
    bad("patch", "/api/organizations/{org}/", "billing_email", "billing@"),
    bad("post", "/api/webhooks/", "url", MISSING),
    bad("post", "/api/webhooks/", "url", "not a url"),
    bad("post", "/api/webhooks/", "url", "ftp://h.example/t"),
    bad("post", "/api/webhooks/", "url", "https://h.example/" + "x" * 500, id="webhook url=long"),
    bad("post", "/api/webhooks/", "organization", "org_doesnotexist"),
    bad("post", "/api/webhooks/", "enabled", "maybe"),
    bad("patch", "/api/webhooks/{webhook}/", "url", "javascript:alert(1)"),
    bad("patch", "/api/webhooks/{webhook}/", "description", "d" * 201, id="webhook desc=long"),
    bad("post", "/api/admin-keys/", "organization", "org_doesnotexist"),
    bad("post", "/api/upstreams/", "base_url", "not a url"),
    bad("post", "/api/upstreams/", "read_timeout_seconds", "slow"),
    bad("post", "/api/models/", "upstream", "ups_doesnotexist"),
    bad("post", "/api/models/", "context_window", INT_OVERFLOW),
    bad("post", "/api/models/", "input_cost_per_mtok", 0.5),
    bad("post", "/api/model-groups/", "name", "no spaces"),
    bad("post", "/api/model-groups/", "models", []),
    bad("post", "/api/model-groups/", "models", [{"model": "mdl_doesnotexist"}]),
    bad("post", "/api/model-groups/", "models", [{"model": "gpt-a"}, {"model": "gpt-a"}]),
    bad("post", "/api/model-groups/", "models", [{"model": "gpt-a", "priority": INT_OVERFLOW}]),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), INVALID_BODIES)
def test_invalid_body_is_a_validation_error_naming_the_field(api, ids, method, path, body, field):
    # given
    before = db_state()
    # when
    response = send(api, method, fill(path, ids), fill(body, ids))
    # then
    error = assert_api_error(response, 400, "validation_error", with_fields=True)
    assert field in error["fields"]
    assert db_state() == before


INVALID_QUERIES = [
    ("/api/teams/{team}/usage/?start=yesterday", "start"),
    ("/api/teams/{team}/usage/?group_by=week", "group_by"),
    ("/api/teams/{team}/usage/?group_by=day,model,key", "group_by"),
    ("/api/teams/{team}/usage/?group_by=day,day", "group_by"),
    ("/api/organizations/{org}/usage/?group_by=model,", "group_by"),
    ("/api/teams/{team}/usage/?start=2026-02-01T00:00:00Z&end=2026-01-01T00:00:00Z", "start"),
    ("/api/teams/{team}/usage/?start=2020-01-01T00:00:00Z&end=2026-01-01T00:00:00Z", "start"),
    ("/api/teams/{team}/usage/?end=0001-01-01T00:00:00Z", "end"),
    ("/api/organizations/{org}/usage/?end=0001-01-02T00:00:00Z", "end"),
    ("/api/audit-events/?since=yesterday", "since"),
    ("/api/teams/?status=deleted", "status"),
]


@pytest.mark.parametrize(("path", "field"), INVALID_QUERIES)
def test_invalid_query_is_a_validation_error_naming_the_parameter(api, ids, path, field):
    response = api.get(fill(path, ids))
    error = assert_api_error(response, 400, "validation_error", with_fields=True)
    assert field in error["fields"]


ID_ROUTES = [
    (method, str(pattern.pattern))
    for pattern in api_patterns
    if "<str:id>" in str(pattern.pattern)
    for method in ("get", "post", "patch", "delete")
    if hasattr(pattern.callback.cls, method)
]


# %00 is a NUL byte, which Postgres refuses inside a query.
@pytest.mark.parametrize("unknown_id", ["team_doesnotexist", "has%00nul"])
@pytest.mark.parametrize(
    ("method", "route"), ID_ROUTES, ids=[f"{m.upper()} /api/{r}" for m, r in ID_ROUTES]
)
def test_unknown_object_id_is_not_found(api, ids, method, route, unknown_id):
    # given
    before = db_state()
    # when
    response = send(api, method, "/api/" + route.replace("<str:id>", unknown_id), {})
    # then
    assert_api_error(response, 404, "not_found", with_fields=True)
    assert db_state() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/"),
        ("get", "/api/nope/"),
        ("get", "/api/nope"),
        ("post", "/api/nope/"),
        ("get", "/api/teams/team_x/nope/"),
        ("delete", "/api/organizations/org_x/teams/"),
    ],
)
@pytest.mark.parametrize("authenticated", [True, False])
def test_unknown_api_path_is_a_json_404(db, method, path, authenticated):
    client = client_with(MASTER if authenticated else None)
    response = send(client, method, path, {} if method != "get" else None)
    assert_api_error(response, 404, "not_found", with_fields=True)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/teams/{team}/"),
        ("delete", "/api/teams/"),
        ("post", "/api/teams/{team}/credits/"),
        ("patch", "/api/audit-events/"),
    ],
)
def test_unsupported_method_is_a_json_405(api, ids, method, path):
    before = db_state()
    response = send(api, method, fill(path, ids), {})
    assert_api_error(response, 405, "method_not_allowed", with_fields=True)
    assert db_state() == before


@pytest.fixture
def taken(ids, tenant_a):
    """An organization and a team that hold external ids."""
    organization_create(actor="test", name="Org X", external_id="crm-1")
    team_create(actor="test", organization=tenant_a.org, name="Team X", external_id="ext-team")
    return ids


CONFLICTS = [
    ("post", "/api/organizations/", {"name": "Org A"}, "name"),
    ("patch", "/api/organizations/{other_org}/", {"name": "Org A"}, "name"),
    ("post", "/api/organizations/", {"name": "Org Y", "external_id": "crm-1"}, "external_id"),
    ("patch", "/api/organizations/{other_org}/", {"external_id": "crm-1"}, "external_id"),
    ("post", "/api/teams/", {"organization": "{org}", "name": "Team A"}, "name"),
    ("patch", "/api/teams/{team}/", {"name": "Team X"}, "name"),
    (
        "post",
        "/api/teams/",
        {"organization": "{other_org}", "name": "New", "external_id": "ext-team"},
        "external_id",
    ),
    ("patch", "/api/teams/{team}/", {"external_id": "ext-team"}, "external_id"),
    ("post", "/api/model-groups/", {"name": "fast", "models": [{"model": "gpt-b"}]}, "name"),
    ("post", "/api/upstreams/", {"name": "prov", "base_url": "http://p.example/v1"}, "name"),
    ("post", "/api/models/", {**VALID_BODIES["post", "/api/models/"], "name": "gpt-a"}, "name"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    CONFLICTS,
    ids=[f"{m.upper()} {p} {json.dumps(b)}" for m, p, b, _ in CONFLICTS],
)
def test_duplicate_is_a_conflict_naming_the_field(api, taken, method, path, body, field):
    # given
    before = db_state()
    # when
    response = send(api, method, fill(path, taken), fill(body, taken))
    # then
    error = assert_api_error(response, 409, "conflict", with_fields=True)
    assert field in error["fields"]
    assert db_state() == before


def test_creating_an_organization_again_with_its_external_id_returns_it(api, taken):
    # given
    org = Organization.objects.get(external_id="crm-1")
    before = db_state()
    # when
    response = api.post(
        "/api/organizations/", {"name": "Org X", "external_id": "crm-1"}, format="json"
    )
    # then
    assert response.status_code == 200
    assert response.json()["id"] == org.public_id
    assert db_state() == before


def test_same_team_name_in_another_organization_is_fine(api, ids, tenant_b):
    response = api.post(
        "/api/teams/", {"organization": ids["other_org"], "name": "Team A"}, format="json"
    )
    assert response.status_code == 201
    assert tenant_b.org.teams.filter(name="Team A").exists()


def balance(team) -> int:
    return CreditAccount.objects.get(team=team).balance_micros


@pytest.mark.parametrize("key_in", ["body", "header"])
def test_grant_with_the_same_idempotency_key_posts_once(api, tenant_a, key_in):
    # given
    path = f"/api/teams/{tenant_a.team.public_id}/credits/grant/"
    body = {"amount": "12.5", "reason": "invoice 42"}
    if key_in == "body":
        body["idempotency_key"] = "invoice-42"
        headers = {}
    else:
        headers = {"HTTP_IDEMPOTENCY_KEY": "invoice-42"}
    first = api.post(path, body, format="json", **headers)
    assert first.status_code == 201
    assert first.json()["replayed"] is False
    before = db_state()
    # when
    second = api.post(path, body, format="json", **headers)
    # then
    assert second.status_code == 200
    assert second["Content-Type"] == "application/json"
    assert second.json()["replayed"] is True
    assert second.json()["entry"] == first.json()["entry"]
    assert second.json()["credits"]["balance"] == "12.500000"
    assert balance(tenant_a.team) == 12_500_000
    assert db_state() == before


def test_idempotency_key_reused_for_another_amount_is_refused(api, tenant_a):
    # given
    path = f"/api/teams/{tenant_a.team.public_id}/credits/grant/"
    api.post(path, {"amount": "5", "reason": "r", "idempotency_key": "k1"}, format="json")
    before = db_state()
    # when
    response = api.post(
        path, {"amount": "50", "reason": "r", "idempotency_key": "k1"}, format="json"
    )
    # then
    error = assert_api_error(response, 400, "validation_error", with_fields=True)
    assert "idempotency_key" in error["fields"]
    assert db_state() == before


@pytest.mark.parametrize(
    ("overdraft", "debit_ok", "debit_too_far"),
    [(None, "-10", "-0.000001"), ("5", "-15", "-0.000001")],
    ids=["prepaid", "with overdraft"],
)
def test_adjust_below_the_overdraft_is_insufficient_credits(
    api, tenant_a, overdraft, debit_ok, debit_too_far
):
    # given: a balance of 10, taken down to exactly -overdraft
    team_path = f"/api/teams/{tenant_a.team.public_id}/"
    if overdraft:
        patched = api.patch(team_path, {"overdraft_limit": overdraft}, format="json")
        assert patched.status_code == 200
    api.post(team_path + "credits/grant/", {"amount": "10", "reason": "prepaid"}, format="json")
    ok = api.post(team_path + "credits/adjust/", {"amount": debit_ok, "reason": "r"}, format="json")
    assert ok.status_code == 201
    floor = -int(overdraft or 0) * 1_000_000
    assert balance(tenant_a.team) == floor
    before = db_state()
    # when
    response = api.post(
        team_path + "credits/adjust/", {"amount": debit_too_far, "reason": "r"}, format="json"
    )
    # then
    assert_api_error(response, 409, "insufficient_credits", with_fields=True)
    assert balance(tenant_a.team) == floor
    assert db_state() == before
