"""The gateway from outside with raw HTTP: hostile or broken input, error shape, secrets that must
not leak, and tenants that must not see or touch each other."""

import time

import httpx
import orjson
import pytest

from billing.models import UsageRecord
from billing.settlement import settle_usage
from core.redis import client as redis_client
from livestate.keys import SHARD_RANGE, acct_key, usage_stream
from modelgroups import services as catalog
from orgs.services import admin_key_create, organization_create
from teams.models import VirtualKey
from teams.services import key_create, key_revoke, team_set_status, team_update
from tests.helpers.api import MASTER
from tests.helpers.gateway import assert_error, until_refused
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

HI = [{"role": "user", "content": "hi"}]
UPSTREAM_SECRET = "sk-upstream-provider-secret-123456"
PRICE = {
    "input_price_micros": 1_000_000,
    "output_price_micros": 2_000_000,
    "input_cost_micros": 500_000,
    "output_cost_micros": 1_000_000,
}


def chat(live, headers: dict, model: str = "chat", **fields) -> httpx.Response:
    return httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=headers,
        json={"model": model, "messages": HI, **fields},
        timeout=10,
    )


def post_raw(live, headers: dict, body: bytes, path: str = "/v1/chat/completions"):
    return httpx.post(
        f"{live.url}{path}",
        headers={**headers, "content-type": "application/json"},
        content=body,
        timeout=10,
    )


def models(live, headers: dict) -> set[str]:
    r = httpx.get(f"{live.url}/v1/models", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return {m["id"] for m in r.json()["data"]}


def money_state(tenant) -> dict:
    """Everything a call could move for a tenant, in Redis and in Postgres."""
    account = tenant.team.account
    account.refresh_from_db()
    return {
        "redis_account": redis_client().hgetall(acct_key(tenant.team.pk)),
        "balance": account.balance_micros,
        "ledger": list(account.entries.values_list("pk", "amount_micros")),
        "usage": list(tenant.team.usage.values_list("request_id", flat=True)),
        "last_used": list(tenant.team.keys.values_list("pk", "last_used_at")),
    }


def usage_stream_length() -> int:
    return sum(redis_client().xlen(usage_stream(s)) for s in SHARD_RANGE)


@pytest.fixture
def live_small_bodies(settings, request):
    """A live server whose gateway accepts bodies up to 2 KiB (read in Gateway.__init__)."""
    settings.GATEWAY_MAX_BODY_BYTES = 2048
    live = request.getfixturevalue("live")
    assert live.gateway.max_body == 2048
    return live


@pytest.fixture
def two_orgs(live, mock_catalog):
    """Org A's team may use `chat`; org B's team only `b-private`, whose model A has no route to."""
    private = catalog.model_create(
        actor="test",
        name="b-model",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-b",
        max_output_tokens=50,
        **PRICE,
    )
    group = catalog.model_group_create(actor="test", name="b-private", members=[{"model": private}])
    org_a, _ = organization_create(actor="test", name="Org A")
    org_b, _ = organization_create(actor="test", name="Org B")
    a = GatewayTenant("team a", org_a, [mock_catalog["groups"]["chat"]], 100_000_000)
    b = GatewayTenant("team b", org_b, [group], 50_000_000)
    return a, b


# --- input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{", b"{'model': 'chat'}", b"", b"\xff\xfe{}", b'{"model": "chat",}', b"[" * 5000],
    ids=["truncated", "single-quotes", "empty", "not-utf8", "trailing-comma", "deep-nesting"],
)
def test_malformed_json_is_400_invalid_json(live, gw_team, body):
    # given
    before = money_state(gw_team), usage_stream_length()
    # when
    r = post_raw(live, gw_team.headers(), body)
    # then
    error = assert_error(r, 400, "invalid_request_error", "invalid_json")
    assert error["message"] == "The request body is not valid JSON."
    assert (money_state(gw_team), usage_stream_length()) == before


@pytest.mark.parametrize(
    "body", [b"[]", b'[{"model": "chat"}]', b'"chat"', b"42", b"null", b"true"]
)
def test_json_that_is_not_an_object_is_400(live, gw_team, body):
    # when
    r = post_raw(live, gw_team.headers(), body)
    # then
    error = assert_error(r, 400, "invalid_request_error", "invalid_json")
    assert "must be a JSON object" in error["message"]


@pytest.mark.parametrize("model", [None, "", 5, ["chat"], {"name": "chat"}, "<missing>"])
def test_missing_or_non_string_model_is_400_on_param_model(live, gw_team, model):
    # given
    request = {"messages": HI} if model == "<missing>" else {"model": model, "messages": HI}
    before = money_state(gw_team), usage_stream_length()
    # when
    r = post_raw(live, gw_team.headers(), orjson.dumps(request))
    # then
    error = assert_error(r, 400, "invalid_request_error", "missing_required_parameter")
    assert error["param"] == "model"
    assert (money_state(gw_team), usage_stream_length()) == before


def test_messages_that_are_not_an_array_are_400(live, gw_team):
    # when
    r = post_raw(live, gw_team.headers(), b'{"model": "chat", "messages": "hi"}')
    # then
    error = assert_error(r, 400, "invalid_request_error", "invalid_type")
    assert error["param"] == "messages"


def test_body_over_the_configured_limit_is_413_and_costs_nothing(live_small_bodies, gw_team):
    # given
    live = live_small_bodies
    big = {"model": "chat", "messages": [{"role": "user", "content": "x" * 4096}]}
    before = money_state(gw_team), usage_stream_length()
    # when
    r = post_raw(live, gw_team.headers(), orjson.dumps(big))
    # then
    error = assert_error(r, 413, "invalid_request_error", "request_too_large")
    assert "2048 bytes" in error["message"]
    assert (money_state(gw_team), usage_stream_length()) == before


def test_chunked_body_over_the_limit_is_413(live_small_bodies, gw_team):
    # given: no content-length, so the gateway can only count while it reads
    def chunks():
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"y" * 512
        yield b'"}]}'

    # when
    r = httpx.post(
        f"{live_small_bodies.url}/v1/chat/completions",
        headers={**gw_team.headers(), "content-type": "application/json"},
        content=chunks(),
        timeout=10,
    )
    # then
    assert_error(r, 413, "invalid_request_error", "request_too_large")


def test_body_within_the_configured_limit_is_served(live_small_bodies, gw_team):
    # given
    request = {"model": "chat", "messages": [{"role": "user", "content": "x" * 1500}]}
    assert len(orjson.dumps(request)) < 2048
    # when
    r = post_raw(live_small_bodies, gw_team.headers(), orjson.dumps(request))
    # then
    assert r.status_code == 200, r.text


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"x-api-key": ""}],
    ids=["none", "bare-bearer", "basic-auth", "empty-x-api-key"],
)
def test_request_without_a_key_is_401(live, gw_team, headers):
    # given
    before = money_state(gw_team), usage_stream_length()
    # when
    r = chat(live, headers)
    # then
    assert_error(r, 401, "invalid_request_error", "missing_api_key")
    assert (money_state(gw_team), usage_stream_length()) == before


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
def test_wrong_key_is_401_invalid_api_key(live, gw_team, header):
    # given
    wrong = "sk-" + "0" * 40
    value = f"Bearer {wrong}" if header == "Authorization" else wrong
    before = money_state(gw_team), usage_stream_length()
    # when
    r = chat(live, {header: value})
    # then
    assert_error(r, 401, "invalid_request_error", "invalid_api_key")
    assert (money_state(gw_team), usage_stream_length()) == before


def test_admin_credentials_are_not_gateway_keys(live, gw_team, gw_org):
    # given: the platform admin's master key and an organization's admin key
    _, org_admin_secret = admin_key_create(actor="test", name="org admin", organization=gw_org)
    before = money_state(gw_team), usage_stream_length()
    for secret in (MASTER, org_admin_secret):
        # when
        r = chat(live, {"Authorization": f"Bearer {secret}"})
        listing = httpx.get(
            f"{live.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10
        )
        # then
        assert_error(r, 401, "invalid_request_error", "invalid_api_key")
        assert_error(listing, 401, "invalid_request_error", "invalid_api_key")
    assert (money_state(gw_team), usage_stream_length()) == before


def test_x_api_key_header_is_accepted(live, gw_team):
    # when
    r = chat(live, {"x-api-key": gw_team.secret})
    # then
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("Mock reply to: hi")


@pytest.mark.parametrize("basic_first", [True, False], ids=["basic-first", "basic-last"])
def test_x_api_key_works_next_to_a_non_bearer_authorization_in_any_order(
    live, gw_team, basic_first
):
    # given: e.g. a corporate proxy's Basic credentials alongside the gateway key
    headers = [("authorization", "Basic dXNlcjpwYXNz"), ("x-api-key", gw_team.secret)]
    if not basic_first:
        headers.reverse()
    # when
    r = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=headers,
        json={"model": "chat", "messages": HI},
        timeout=10,
    )
    # then: the header order must not decide whether a valid key is seen
    assert r.status_code == 200, r.text


def test_lowercase_bearer_scheme_is_accepted(live, gw_team):
    # when
    r = chat(live, {"authorization": f"bearer {gw_team.secret}"})
    # then
    assert r.status_code == 200, r.text


# --- routing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v1/nope", "/v1", "/v1/", "/v1/chat/completions/", "/v1/chat", "/v1/images/edits"],
)
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_unknown_endpoint_is_404_json(live, gw_team, path, with_key):
    # when
    r = httpx.post(
        f"{live.url}{path}", headers=gw_team.headers() if with_key else {}, json={}, timeout=10
    )
    # then
    error = assert_error(r, 404, "invalid_request_error", "unknown_url")
    assert path in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/embeddings"),
        ("DELETE", "/v1/completions"),
        ("POST", "/v1/models"),
        ("DELETE", "/v1/models/chat"),
    ],
)
def test_wrong_method_is_405_json(live, gw_team, method, path):
    # when
    r = httpx.request(method, f"{live.url}{path}", headers=gw_team.headers(), timeout=10)
    # then
    assert_error(r, 405, "invalid_request_error", "method_not_allowed")


def test_unknown_model_is_404_on_param_model(live, gw_team):
    # when
    r = chat(live, gw_team.headers(), model="gpt-nonexistent")
    # then
    error = assert_error(r, 404, "invalid_request_error", "model_not_found")
    assert error["param"] == "model"


# --- upstream failures ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_failing_upstreams_give_502_naming_the_failures_without_their_secret(live, gw_team, stream):
    # given
    before = money_state(gw_team)
    # when
    r = chat(live, gw_team.headers(), model="broken", stream=stream)
    # then
    error = assert_error(r, 502, "upstream_error", "upstream_error")
    assert "2 attempt(s)" in error["message"]
    assert "mock-bad: HTTP 500" in error["message"]
    assert "mock-bad-503: HTTP 503" in error["message"]
    assert UPSTREAM_SECRET not in r.text
    assert UPSTREAM_SECRET not in str(r.headers)
    assert "Bearer" not in r.text
    # and a failed call costs nothing
    settle_usage()
    after = money_state(gw_team)
    assert after["balance"] == before["balance"]
    assert after["ledger"] == before["ledger"]
    assert after["usage"] == [r.headers["x-request-id"]]


# --- tenant isolation ---------------------------------------------------------------------


def test_other_orgs_group_and_model_are_403_with_only_a_count(live, two_orgs):
    # given
    a, b = two_orgs
    before = money_state(a), money_state(b), usage_stream_length()
    for caller, foreign, own in (
        (a, "b-private", "chat"),
        (a, "b-model", "chat"),
        (b, "chat", "b-private"),
        (b, "mock-a", "b-private"),
    ):
        # when
        r = chat(live, caller.headers(), model=foreign)
        # then
        error = assert_error(r, 403, "permission_error", "model_not_allowed")
        assert error["param"] == "model"
        assert "access to 1 model group(s)" in error["message"]
        assert own not in error["message"]
    assert (money_state(a), money_state(b), usage_stream_length()) == before


def test_models_list_shows_each_org_only_its_own_groups(live, two_orgs):
    # given
    a, b = two_orgs
    # when / then
    assert models(live, a.headers()) == {"chat", "mock-a", "mock-b"}
    assert models(live, b.headers()) == {"b-private", "b-model"}
    for path in ("/v1/models/b-private", "/v1/models/b-model", "/v1/models/other"):
        r = httpx.get(f"{live.url}{path}", headers=a.headers(), timeout=10)
        assert_error(r, 404, "invalid_request_error", "model_not_found")


def test_calls_of_one_org_never_change_the_other_orgs_money(live, two_orgs):
    # given: B has history of its own
    a, b = two_orgs
    assert chat(live, b.headers(), model="b-private").status_code == 200
    settle_usage()
    b_before = money_state(b)
    a_before = money_state(a)
    # when: A spends, streams, and tries B's group
    served = [
        chat(live, a.headers()),
        chat(live, a.headers(), model="mock-b", stream=True),
    ]
    assert [r.status_code for r in served] == [200, 200]
    assert chat(live, a.headers(), model="b-private").status_code == 403
    settle_usage()
    # then
    assert money_state(b) == b_before
    a_after = money_state(a)
    assert sorted(a_after["usage"]) == sorted(r.headers["x-request-id"] for r in served)
    # both served calls were debited, by entries new since, which debit exactly them
    new = {pk for pk, _ in a_after["ledger"]} - {pk for pk, _ in a_before["ledger"]}
    served_ids = [r.headers["x-request-id"] for r in served]
    debited = UsageRecord.objects.filter(request_id__in=served_ids, ledger_entry__in=new)
    assert sorted(debited.values_list("request_id", flat=True)) == sorted(served_ids)
    assert sum(amount for pk, amount in a_after["ledger"] if pk in new) == -sum(
        debited.values_list("price_micros", flat=True)
    )
    assert a_after["balance"] < a_before["balance"]


def test_revoking_a_key_of_one_org_leaves_the_other_org_and_other_keys_working(live, two_orgs):
    # given
    a, b = two_orgs
    _, a_second = key_create(actor="test", team=a.team, name="second key")
    assert chat(live, a.headers()).status_code == 200
    assert chat(live, b.headers(), model="b-private").status_code == 200
    # when
    key_revoke(actor="test", key=a.key)
    # then
    r = until_refused(lambda: chat(live, a.headers()))
    assert_error(r, 401, "invalid_request_error", "key_revoked")
    for _ in range(3):
        assert chat(live, b.headers(), model="b-private").status_code == 200
        assert chat(live, {"Authorization": f"Bearer {a_second}"}).status_code == 200
    assert VirtualKey.objects.get(pk=b.key.pk).status == "active"


def test_key_whose_groups_all_left_the_team_can_use_nothing(live, gw_team, mock_catalog):
    # given: a key restricted to `embed`, then the team loses `embed`
    g = mock_catalog["groups"]
    _, secret = key_create(actor="test", team=gw_team.team, name="embed", model_groups=[g["embed"]])
    headers = {"Authorization": f"Bearer {secret}"}
    changed = time.monotonic()
    team_update(actor="test", team=gw_team.team, data={}, model_groups=[g["chat"], g["flaky"]])
    # when: the change has reached the gateway (the unrestricted key lost `embed` too)
    left = {"chat", "mock-a", "mock-b", "flaky", "mock-bad"}
    eventually(
        lambda: models(live, gw_team.headers()) == left,
        timeout=1.0,
        since=changed,
        what="the team change reaching the gateway",
    )
    # then: an empty restriction-after-intersection is nothing, never "all of the team"
    assert models(live, headers) == set()
    before = money_state(gw_team), usage_stream_length()
    for model in ("chat", "embed", "flaky"):
        error = assert_error(
            chat(live, headers, model=model), 403, "permission_error", "model_not_allowed"
        )
        assert "access to 0 model group(s)" in error["message"]
    assert (money_state(gw_team), usage_stream_length()) == before


def test_key_restricted_to_a_subset_of_groups_can_use_only_that_subset(live, gw_team, mock_catalog):
    # given: the team has chat, flaky, broken and embed; the key only chat and embed
    g = mock_catalog["groups"]
    _, secret = key_create(
        actor="test", team=gw_team.team, name="subset", model_groups=[g["chat"], g["embed"]]
    )
    headers = {"Authorization": f"Bearer {secret}"}
    # when / then
    assert chat(live, headers).status_code == 200
    assert chat(live, headers, model="mock-b").status_code == 200  # a member of chat
    embedded = httpx.post(
        f"{live.url}/v1/embeddings",
        headers=headers,
        json={"model": "embed", "input": "text"},
        timeout=10,
    )
    assert embedded.status_code == 200, embedded.text
    before = money_state(gw_team), usage_stream_length()
    for outside in ("flaky", "broken", "mock-bad", "other"):
        r = chat(live, headers, model=outside)
        error = assert_error(r, 403, "permission_error", "model_not_allowed")
        assert "access to 2 model group(s)" in error["message"]
    assert (money_state(gw_team), usage_stream_length()) == before
    assert models(live, headers) == {"chat", "mock-a", "mock-b", "embed", "mock-embed"}
    # and the team's unrestricted key still reaches every group of the team
    assert chat(live, gw_team.headers(), model="flaky").status_code == 200


# --- control-plane changes reach the gateway ---------------------------------------------


def test_revocation_takes_effect_within_one_second(live, gw_team):
    # given: the key is live and cached in the gateway
    assert chat(live, gw_team.headers()).status_code == 200
    # when
    changed = time.monotonic()
    key_revoke(actor="test", key=gw_team.key)
    # then
    r = until_refused(lambda: chat(live, gw_team.headers()), since=changed)
    assert time.monotonic() - changed < 1.0
    assert_error(r, 401, "invalid_request_error", "key_revoked")


def test_suspension_and_resumption_take_effect_within_one_second(live, gw_team):
    # given
    assert chat(live, gw_team.headers()).status_code == 200
    # when
    changed = time.monotonic()
    team_set_status(actor="test", team=gw_team.team, status="suspended")
    # then
    r = until_refused(lambda: chat(live, gw_team.headers()), since=changed)
    assert time.monotonic() - changed < 1.0
    assert_error(r, 403, "team_suspended", "team_suspended")
    before = money_state(gw_team), usage_stream_length()
    assert chat(live, gw_team.headers()).status_code == 403
    assert (money_state(gw_team), usage_stream_length()) == before

    # when
    changed = time.monotonic()
    team_set_status(actor="test", team=gw_team.team, status="active")
    # then
    eventually(
        lambda: chat(live, gw_team.headers()).status_code == 200,
        timeout=1.0,
        since=changed,
        what="serving again after resuming",
    )
