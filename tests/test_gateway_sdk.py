"""The official openai SDK against the running gateway: what a customer's code actually sees."""

import time
from datetime import timedelta

import openai
import pytest
from django.utils import timezone

from billing.models import LedgerEntry, UsageRecord
from billing.settlement import settle_usage
from core.redis import client as redis_client
from livestate.keys import acct_key, shard_of, usage_stream
from modelgroups import services as catalog
from orgs.services import organization_create
from teams.models import VirtualKey
from teams.services import key_create, key_revoke, team_set_status
from tests.helpers.gateway import until_refused
from tests.helpers.ledger import posted_calls
from tests.helpers.tenants import GatewayTenant

HI = [{"role": "user", "content": "hi"}]


def sdk(live, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=secret, max_retries=0, timeout=10)


def money_state(tenant) -> dict:
    """Everything a call could move: the gateway's account copy, the usage stream, Postgres."""
    tenant.team.account.refresh_from_db()
    redis = redis_client()
    return {
        "redis_account": redis.hgetall(acct_key(tenant.team.pk)),
        "usage_stream": redis.xlen(usage_stream(shard_of(tenant.team.pk))),
        "balance": tenant.team.account.balance_micros,
        "ledger": list(tenant.team.account.entries.values_list("pk", flat=True)),
    }


def assert_openai_error(exc: openai.APIStatusError, status: int, type_: str, code: str | None):
    assert exc.status_code == status
    assert set(exc.body) == {"message", "type", "param", "code"}
    assert exc.type == type_
    assert exc.code == code
    assert exc.message
    assert exc.response.headers["x-request-id"].startswith("req_")


@pytest.fixture
def client(live, gw_team) -> openai.OpenAI:
    return sdk(live, gw_team.secret)


@pytest.fixture
def renamed(live, mock_catalog, gw_org):
    """A public model whose upstream id differs: `acme-chat` is `provider-chat-2025` upstream."""
    model = catalog.model_create(
        actor="test",
        name="acme-chat",
        upstream=mock_catalog["upstream"],
        upstream_model="provider-chat-2025",
        max_output_tokens=50,
        input_price_micros=1_000_000,
        output_price_micros=2_000_000,
    )
    group = catalog.model_group_create(actor="test", name="acme", members=[{"model": model}])
    return GatewayTenant("acme team", gw_org, [group], credits_micros=100_000_000)


# --- successful calls -------------------------------------------------------------------


def test_chat_completion_returns_content_usage_and_the_public_model(client):
    # when
    completion = client.chat.completions.create(model="chat", messages=HI)
    # then
    assert completion.object == "chat.completion"
    assert completion.model == "mock-a"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content.startswith("Mock reply to: hi")
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion._request_id.startswith("req_")


def test_chat_completion_names_the_public_model_not_the_upstream_id(live, renamed):
    # when
    raw = sdk(live, renamed.secret).chat.completions.with_raw_response.create(
        model="acme", messages=HI
    )
    # then
    completion = raw.parse()
    assert completion.model == "acme-chat"
    assert raw.headers["x-tollgate-model"] == "acme-chat"
    assert "provider-chat-2025" not in raw.text


def test_streaming_assembles_the_content_and_sends_no_usage_unless_asked(live, renamed):
    # when
    stream = sdk(live, renamed.secret).chat.completions.create(
        model="acme", messages=HI, stream=True
    )
    chunks = list(stream)
    # then
    assert len(chunks) > 3
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.model == "acme-chat" for c in chunks)
    assert all(c.usage is None for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.startswith("Mock reply to: hi")
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streaming_with_include_usage_ends_with_a_usage_chunk(client):
    # given: the same call without streaming, for the reference answer
    unary = client.chat.completions.create(model="chat", messages=HI)
    # when
    stream = client.chat.completions.create(
        model="chat", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    # then
    *body, last = chunks
    assert last.choices == []
    assert last.usage.prompt_tokens == unary.usage.prompt_tokens
    assert last.usage.completion_tokens == unary.usage.completion_tokens
    assert all(c.usage is None for c in body)
    content = "".join(c.choices[0].delta.content or "" for c in body if c.choices)
    assert content == unary.choices[0].message.content


def test_embeddings_return_one_vector_per_input(client):
    # when
    result = client.embeddings.create(model="embed", input=["first text", "second text"])
    # then
    assert [d.index for d in result.data] == [0, 1]
    for item in result.data:
        assert len(item.embedding) == 8
        assert all(isinstance(x, float) for x in item.embedding)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.model == "mock-embed"
    assert result.usage.prompt_tokens > 0


def test_models_list_shows_exactly_the_team_groups_and_their_models(client):
    # when
    ids = [m.id for m in client.models.list()]
    # then: gw_team has chat, flaky, broken and embed; `other` is not assigned
    assert sorted(ids) == sorted(
        [
            "chat",
            "mock-a",
            "mock-b",
            "flaky",
            "mock-bad",
            "broken",
            "mock-bad-503",
            "embed",
            "mock-embed",
        ]
    )
    assert len(ids) == len(set(ids))


def test_models_list_of_a_restricted_key_shows_only_its_groups(live, gw_team, mock_catalog):
    # given
    _, secret = key_create(
        actor="test",
        team=gw_team.team,
        name="embed only",
        model_groups=[mock_catalog["groups"]["embed"]],
    )
    # when
    ids = {m.id for m in sdk(live, secret).models.list()}
    # then
    assert ids == {"embed", "mock-embed"}


def test_models_retrieve_finds_a_usable_group_or_model_and_nothing_else(client):
    # when
    group = client.models.retrieve("chat")
    model = client.models.retrieve("mock-embed")
    # then
    assert (group.id, group.object, group.owned_by) == ("chat", "model", "tollgate")
    assert model.id == "mock-embed"
    for hidden in ("other", "no-such-model"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve(hidden)
        assert_openai_error(caught.value, 404, "invalid_request_error", "model_not_found")


def test_settlement_posts_one_usage_entry_per_successful_call(client, gw_team):
    # given
    started = timezone.now()
    before = money_state(gw_team)
    ok = [
        client.chat.completions.create(model="chat", messages=HI)._request_id,
        client.embeddings.create(model="embed", input="text")._request_id,
    ]
    with client.chat.completions.create(model="chat", messages=HI, stream=True) as stream:
        list(stream)
        ok.append(stream.response.headers["x-request-id"])
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="broken", messages=HI)
    failed_rid = failed.value.response.headers["x-request-id"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HI)
    # when
    settle_usage()
    # then
    usage = LedgerEntry.objects.filter(account=gw_team.team.account, kind="usage")
    # each answered call debited once, at its record's price, by the entry that names it
    assert sorted(usage.values_list("calls__request_id", flat=True)) == sorted(ok)
    assert all(e.amount_micros < 0 for e in usage)
    assert sum(e.amount_micros for e in usage) == -sum(
        UsageRecord.objects.filter(request_id__in=ok).values_list("price_micros", flat=True)
    )
    assert posted_calls(gw_team.team) == len(ok)
    gw_team.team.account.refresh_from_db()
    assert gw_team.team.account.balance_micros == before["balance"] + sum(
        e.amount_micros for e in usage
    )
    records = {r.request_id: r for r in UsageRecord.objects.filter(team=gw_team.team)}
    assert set(records) == {*ok, failed_rid}
    assert records[failed_rid].status == "error"
    assert records[failed_rid].price_micros == 0
    key = VirtualKey.objects.get(pk=gw_team.key.pk)
    assert key.last_used_at is not None
    assert started - timedelta(seconds=1) <= key.last_used_at <= timezone.now()


def test_settling_twice_posts_nothing_more(client, gw_team):
    # given
    client.chat.completions.create(model="chat", messages=HI)
    settle_usage()
    after_first = money_state(gw_team)
    # when
    settle_usage()
    # then
    assert money_state(gw_team) == after_first


# --- errors as typed SDK exceptions -------------------------------------------------------


def test_bad_key_raises_authentication_error(live, gw_team):
    # given
    before = money_state(gw_team)
    # when
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(live, "sk-not-a-real-key-000000").chat.completions.create(model="chat", messages=HI)
    # then
    assert_openai_error(caught.value, 401, "invalid_request_error", "invalid_api_key")
    assert money_state(gw_team) == before


def test_revoked_key_raises_authentication_error(client, gw_team):
    # given
    client.chat.completions.create(model="chat", messages=HI)
    key_revoke(actor="test", key=gw_team.key)
    # when
    exc = until_refused(
        lambda: client.chat.completions.create(model="chat", messages=HI),
        error=openai.AuthenticationError,
    )
    # then
    assert_openai_error(exc, 401, "invalid_request_error", "key_revoked")
    before = money_state(gw_team)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="chat", messages=HI)
    assert money_state(gw_team) == before


def test_expired_key_raises_authentication_error(live, gw_team):
    # given: a key that expires a moment from now; the gateway checks the time itself
    _, secret = key_create(
        actor="test",
        team=gw_team.team,
        name="short-lived",
        expires_at=timezone.now() + timedelta(seconds=1),
    )
    client = sdk(live, secret)
    client.chat.completions.create(model="chat", messages=HI)
    time.sleep(1.1)
    before = money_state(gw_team)
    # when
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="chat", messages=HI)
    # then
    assert_openai_error(caught.value, 401, "invalid_request_error", "key_expired")
    assert money_state(gw_team) == before


def test_group_not_assigned_to_the_team_raises_permission_denied(client, gw_team):
    # given
    before = money_state(gw_team)
    # when
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="other", messages=HI)
    # then
    assert_openai_error(caught.value, 403, "permission_error", "model_not_allowed")
    assert caught.value.param == "model"
    assert money_state(gw_team) == before


@pytest.mark.parametrize(
    ("status", "error_type"), [("suspended", "team_suspended"), ("paused", "team_paused")]
)
def test_stopped_team_raises_permission_denied(client, gw_team, status, error_type):
    # given
    client.chat.completions.create(model="chat", messages=HI)
    team_set_status(actor="test", team=gw_team.team, status=status)
    # when
    exc = until_refused(
        lambda: client.chat.completions.create(model="chat", messages=HI),
        error=openai.PermissionDeniedError,
    )
    # then
    assert_openai_error(exc, 403, error_type, error_type)
    before = money_state(gw_team)
    with pytest.raises(openai.PermissionDeniedError):
        client.embeddings.create(model="embed", input="x")
    assert money_state(gw_team) == before


def test_unknown_model_raises_not_found(client, gw_team):
    # given
    before = money_state(gw_team)
    # when
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-nonexistent", messages=HI)
    # then
    assert_openai_error(caught.value, 404, "invalid_request_error", "model_not_found")
    assert caught.value.param == "model"
    assert money_state(gw_team) == before


def test_missing_messages_raises_bad_request(client, gw_team):
    # given
    before = money_state(gw_team)
    # when
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chat", messages=[])
    # then
    assert_openai_error(caught.value, 400, "invalid_request_error", "missing_required_parameter")
    assert caught.value.param == "messages"
    assert money_state(gw_team) == before


def test_chat_call_against_an_embedding_group_raises_bad_request(client, gw_team):
    # given
    before = money_state(gw_team)
    # when
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="embed", messages=HI)
    # then
    assert_openai_error(caught.value, 400, "invalid_request_error", "model_mode_mismatch")
    assert money_state(gw_team) == before


def test_team_without_credits_raises_insufficient_quota(live, mock_catalog, gw_org):
    # given
    broke = GatewayTenant("broke", gw_org, [mock_catalog["groups"]["chat"]], credits_micros=0)
    before = money_state(broke)
    # when
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(live, broke.secret).chat.completions.create(model="chat", messages=HI)
    # then
    assert_openai_error(caught.value, 429, "insufficient_quota", "insufficient_quota")
    assert money_state(broke) == before


def test_team_over_its_hard_period_budget_raises_budget_exceeded(live, mock_catalog):
    # given: plenty of credits, but a monthly budget of one micro-credit
    org, _ = organization_create(actor="test", name="Budget Org")
    capped = GatewayTenant(
        "capped",
        org,
        [mock_catalog["groups"]["chat"]],
        credits_micros=100_000_000,
        budget_period="monthly",
        budget_limit_micros=1,
        budget_mode="hard",
    )
    before = money_state(capped)
    # when
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(live, capped.secret).chat.completions.create(model="chat", messages=HI)
    # then
    assert_openai_error(caught.value, 429, "budget_exceeded", "budget_exceeded")
    assert money_state(capped) == before
