"""The OpenAI Responses API on the gateway (POST /v1/responses, GET/DELETE /v1/responses/{id}):
native to upstreams that speak it (the mock), translated through chat completions for those
that do not (an Ollama-like server whose /responses is a 404), with the money exact."""

from decimal import ROUND_HALF_UP, Decimal

import httpx
import openai
import orjson
import pytest
from django.db.models import Sum

from billing import settlement
from billing.models import LedgerEntry, UsageRecord
from core.redis import client as redis_client
from livestate.keys import CATALOG, SHARD_RANGE, acct_key, shard_of, usage_stream
from modelgroups import services as catalog
from tests.helpers.chat_only import ChatOnlyServer
from tests.helpers.gateway import assert_error, concurrently, redis_account
from tests.helpers.ledger import posted_calls
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

PRICES = {  # per 1M tokens: 1.5 and 2.5 micro-credits a token, so halves get rounded
    "input_price_micros": 1_500_000,
    "output_price_micros": 2_500_000,
    "input_cost_micros": 500_000,
    "output_cost_micros": 1_000_000,
}
# A cache read at a tenth of the input, a reasoning token dearer than the output.
KNOB_PRICES = {"cache_read_price_micros": 150_000, "reasoning_price_micros": 3_100_000}
LONG = "hello there, how are you doing on this fine and sunny day?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="session")
def chat_only_server():
    server = ChatOnlyServer().start()
    yield server
    server.stop()


@pytest.fixture
def upstreams(live, chat_only_server):
    native = catalog.upstream_create(
        actor="test", name="mock", kind="mock", base_url=live.mock_url, api_key="sk-up-123456"
    )
    chat_only = catalog.upstream_create(
        actor="test",
        name="ollama-like",
        kind="openai",
        base_url=chat_only_server.url,
        api_key="sk-up-654321",
    )
    anthropic = catalog.upstream_create(
        actor="test",
        name="anthropic-mock",
        kind="anthropic",
        base_url=live.mock_url,
        api_key="sk-ant-up-123456",
    )
    return {"native": native, "chat": chat_only, "anthropic": anthropic}


def model_group(upstreams, kind: str, name: str, upstream_model: str, **extra):
    model = catalog.model_create(
        actor="test",
        name=name,
        upstream=upstreams[kind],
        upstream_model=upstream_model,
        **{"max_output_tokens": 50, **PRICES, **extra},
    )
    return catalog.model_group_create(
        actor="test", name=f"{name}-group", members=[{"model": model}]
    )


@pytest.fixture
def groups(upstreams):
    return {
        "native": model_group(upstreams, "native", "resp-native", "provider-resp-2025"),
        "chat": model_group(upstreams, "chat", "resp-chat", "provider-chat-2025"),
        "native-knobs": model_group(
            upstreams, "native", "resp-knobs", "mock-cached-5-reasoning-7", **KNOB_PRICES
        ),
        "chat-knobs": model_group(
            upstreams, "chat", "chat-knobs", "mock-cached-5-reasoning-7", **KNOB_PRICES
        ),
        "anthropic": model_group(upstreams, "anthropic", "resp-claude", "claude-mock"),
        "long": model_group(
            upstreams,
            "native",
            "resp-long",
            "mock-chunk-delay-20-reply-400",
            max_output_tokens=1000,
        ),
    }


@pytest.fixture
def tenant(groups, gw_org):
    return GatewayTenant("responses team", gw_org, list(groups.values()), 100_000_000)


def sdk(live, tenant) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=live.url + "/v1", api_key=tenant.secret, max_retries=0, timeout=10
    )


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


def record_of(rid: str) -> dict:
    def find():
        for shard in SHARD_RANGE:
            for _, fields in redis_client().xrange(usage_stream(shard)):
                rec = orjson.loads(fields[b"rec"])
                if rec["rid"] == rid:
                    return rec
        return None

    return eventually(find, what=f"a usage record for {rid}")


def published_rates(model_name: str) -> dict:
    """The model's prices as the catalog publishes them: a cache read and a reasoning token
    cost their own price where the model has one, else the input's and the output's."""
    raw = orjson.loads(redis_client().get(CATALOG))
    entry = next(m for m in raw["models"].values() if m["name"] == model_name)
    return {
        "in": entry["in_price"],
        "out": entry["out_price"],
        "cr": entry.get("cr_price", entry["in_price"]),
        "rs": entry.get("rs_price", entry["out_price"]),
    }


def documented_price(rates: dict, inp: int, out: int, cached: int, reasoning: int) -> int:
    """README, "Pricing": each line at its rate per 1M tokens, summed exactly, rounded once
    half up: plain input, cache reads, plain output, reasoning."""
    micros = (
        Decimal(inp - cached) * rates["in"]
        + Decimal(cached) * rates["cr"]
        + Decimal(out - reasoning) * rates["out"]
        + Decimal(reasoning) * rates["rs"]
    ) / 1_000_000
    return int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- native: the official SDK against the mock's Responses API ---------------------------------


def test_a_response_has_its_text_usage_and_the_public_model(live, tenant):
    # when
    raw = sdk(live, tenant).responses.with_raw_response.create(
        model="resp-native-group", input="hi", instructions="Be brief."
    )
    # then
    response = raw.parse()
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "resp-native"
    assert "provider-resp-2025" not in raw.text
    assert raw.headers["x-tollgate-model"] == "resp-native"
    assert response.output_text.startswith("Mock reply to: hi")
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )
    assert response.store is True


def test_a_streamed_response_sends_the_events_and_its_usage_last(live, tenant):
    # given: the same call unary, for the reference
    client = sdk(live, tenant)
    unary = client.responses.create(model="resp-native-group", input="hi")
    # when
    events = list(client.responses.create(model="resp-native-group", input="hi", stream=True))
    # then
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    carrying = [e for e in events if hasattr(e, "response")]
    assert {e.response.model for e in carrying} == {"resp-native"}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == unary.output_text
    final = events[-1].response
    assert final.usage.input_tokens == unary.usage.input_tokens
    assert final.usage.output_tokens == unary.usage.output_tokens


@pytest.mark.parametrize("group", ["resp-native-group", "resp-chat-group"])
def test_tools_give_a_function_call_then_its_output_gives_an_answer(live, tenant, group):
    # given
    client = sdk(live, tenant)
    question = {"role": "user", "content": "Weather in Paris?"}
    # when
    first = client.responses.create(model=group, input=[question], tools=[WEATHER])
    # then
    (call,) = first.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert orjson.loads(call.arguments).keys() >= {"city"}
    # when: the tool's output goes back
    second = client.responses.create(
        model=group,
        input=[
            question,
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
        ],
        tools=[WEATHER],
    )
    # then
    assert second.output[0].type == "message"
    assert second.output_text
    assert second.status == "completed"


def test_a_stored_response_is_retrieved_and_deleted_but_not_by_another_team(
    live, tenant, groups, gw_org
):
    # given
    client = sdk(live, tenant)
    created = client.responses.create(model="resp-native-group", input="remember me")
    other = GatewayTenant("other team", gw_org, [groups["native"]], 100_000_000)
    before = money_state(tenant)
    # when
    fetched = client.responses.retrieve(created.id)
    # then: as created, with the public name, and not metered
    assert fetched.id == created.id
    assert fetched.model == "resp-native"
    assert fetched.output_text == created.output_text
    assert money_state(tenant) == before
    # another team's key, on the very same model and upstream, does not find it
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(live, other).responses.retrieve(created.id)
    assert caught.value.status_code == 404
    assert caught.value.code == "not_found"
    with pytest.raises(openai.NotFoundError):
        sdk(live, other).responses.delete(created.id)
    # nor continue it
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live, other).responses.create(
            model="resp-native-group", input="and?", previous_response_id=created.id
        )
    assert caught.value.code == "previous_response_not_found"
    # its owner deletes it; then it is gone
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_a_stored_response_needs_a_key(live, tenant):
    created = sdk(live, tenant).responses.create(model="resp-native-group", input="hi")
    r = httpx.get(f"{live.url}/v1/responses/{created.id}")
    assert_error(r, 401, "invalid_request_error", "missing_api_key")


def test_previous_response_id_continues_the_conversation_natively(live, tenant):
    # given
    client = sdk(live, tenant)
    first = client.responses.create(model="resp-native-group", input="my name is Ada")
    # when
    second = client.responses.create(
        model="resp-native-group", input="what is my name?", previous_response_id=first.id
    )
    alone = client.responses.create(model="resp-native-group", input="what is my name?")
    # then: the upstream carried the first exchange into the second's input
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > alone.usage.input_tokens


def test_a_streamed_response_is_stored_for_retrieval(live, tenant):
    client = sdk(live, tenant)
    events = list(client.responses.create(model="resp-native-group", input="hi", stream=True))
    final = events[-1].response
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_store_false_keeps_nothing(live, tenant):
    client = sdk(live, tenant)
    created = client.responses.create(model="resp-native-group", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


# --- translated: an upstream without /responses ----------------------------------------------


def test_an_upstream_without_responses_is_translated_and_its_404_paid_once(
    live, tenant, chat_only_server
):
    # given
    client = sdk(live, tenant)
    asked = chat_only_server.app.responses_asked
    # when
    first = client.responses.create(model="resp-chat-group", input="hi", instructions="Be brief.")
    second = client.responses.create(model="resp-chat-group", input="hi again")
    # then
    assert chat_only_server.app.responses_asked == asked + 1
    for response in (first, second):
        assert response.object == "response"
        assert response.id.startswith("resp_")
        assert response.status == "completed"
        assert response.model == "resp-chat"
        assert response.store is False  # nothing is kept upstream
        assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert first.output_text.startswith("Mock reply to: hi")
    assert first.instructions == "Be brief."
    # not stored: a 404, as the answer said
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_a_translated_stream_sends_the_responses_events(live, tenant):
    # given
    client = sdk(live, tenant)
    unary = client.responses.create(model="resp-chat-group", input="hi")
    # when
    events = list(client.responses.create(model="resp-chat-group", input="hi", stream=True))
    # then
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == unary.output_text
    final = events[-1].response
    assert final.output_text == text
    assert final.model == "resp-chat"
    assert final.usage.input_tokens == unary.usage.input_tokens
    assert final.usage.output_tokens == unary.usage.output_tokens


def test_a_translated_stream_of_a_function_call(live, tenant):
    events = list(
        sdk(live, tenant).responses.create(
            model="resp-chat-group", input="Weather in Paris?", tools=[WEATHER], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[2] == "response.output_item.added"
    assert events[2].item.type == "function_call"
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == arguments
    assert orjson.loads(arguments).keys() >= {"city"}
    (item,) = events[-1].response.output
    assert (item.type, item.name, item.arguments) == ("function_call", "get_weather", arguments)
    assert kinds[-2:] == ["response.output_item.done", "response.completed"]


def test_previous_response_id_on_a_translated_model_is_a_400_and_costs_nothing(live, tenant):
    # given
    client = sdk(live, tenant)
    client.responses.create(model="resp-chat-group", input="hi")  # the route is known chat-only
    before = money_state(tenant)
    # when
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="resp-chat-group", input="and?", previous_response_id="resp_123"
        )
    # then
    assert caught.value.code == "previous_response_id_unsupported"
    assert caught.value.param == "previous_response_id"
    assert "resp-chat" in caught.value.message
    assert money_state(tenant) == before


def test_a_tool_chat_cannot_say_is_a_400_naming_it_on_a_translated_model(live, tenant):
    client = sdk(live, tenant)
    client.responses.create(model="resp-chat-group", input="hi")
    before = money_state(tenant)
    r = httpx.post(
        f"{live.url}/v1/responses",
        headers=tenant.headers(),
        json={"model": "resp-chat-group", "input": "hi", "tools": [{"type": "web_search"}]},
    )
    error = assert_error(r, 400, "invalid_request_error", "unsupported_parameter")
    assert error["param"] == "tools[0].type"
    assert money_state(tenant) == before


def test_an_anthropic_model_answers_through_chat_then_messages(live, tenant):
    # given: Responses -> chat -> Anthropic Messages, both translations composed
    client = sdk(live, tenant)
    # when
    unary = client.responses.create(model="resp-claude-group", input="hi", instructions="Brief.")
    events = list(client.responses.create(model="resp-claude-group", input="hi", stream=True))
    called = client.responses.create(
        model="resp-claude-group", input="Weather in Paris?", tools=[WEATHER]
    )
    # then
    assert unary.model == "resp-claude" and unary.store is False
    assert unary.output_text.startswith("Mock reply to: hi")
    assert unary.usage.input_tokens > 0 and unary.usage.output_tokens > 0
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == unary.output_text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens == unary.usage.output_tokens
    (call,) = called.output
    assert (call.type, call.name) == ("function_call", "get_weather")


# --- money -------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["resp-knobs-group", "chat-knobs-group"])
@pytest.mark.parametrize("stream", [False, True])
def test_cached_and_reasoning_tokens_are_charged_to_the_micro_credit(live, tenant, group, stream):
    # when
    client = sdk(live, tenant)
    if stream:
        raw = client.responses.with_raw_response.create(model=group, input=LONG, stream=True)
        usage = next(e for e in raw.parse() if e.type == "response.completed").response.usage
    else:
        raw = client.responses.with_raw_response.create(model=group, input=LONG)
        usage = raw.parse().usage
    rid = raw.headers["x-request-id"]
    # then: the upstream's knobs came through
    assert usage.input_tokens_details.cached_tokens == 5
    assert usage.output_tokens_details.reasoning_tokens == 7
    record = record_of(rid)
    assert (record["in"], record["out"]) == (usage.input_tokens, usage.output_tokens)
    assert (record["cr"], record["rs"], record["est"]) == (5, 7, False)
    rates = published_rates(raw.headers["x-tollgate-model"])
    expected = documented_price(rates, usage.input_tokens, usage.output_tokens, 5, 7)
    assert (rates["cr"], rates["rs"]) == (150_000, 3_100_000)
    assert record["price"] == expected
    settlement.settle_usage()
    row = UsageRecord.objects.get(request_id=rid)
    assert row.price_micros == expected
    assert (row.cache_read_tokens, row.reasoning_tokens) == (5, 7)


def test_a_client_that_leaves_mid_stream_pays_for_what_was_generated(live, tenant):
    # when: read a few events of a long, slow stream, then hang up
    with httpx.stream(
        "POST",
        f"{live.url}/v1/responses",
        headers=tenant.headers(),
        json={"model": "resp-long-group", "input": "tell me a story", "stream": True},
    ) as r:
        rid = r.headers["x-request-id"]
        for seen, _ in enumerate(r.iter_raw(), start=1):
            if seen >= 6:
                break
    record = record_of(rid)
    # then: estimated, charged exactly its estimate, well short of the full reply
    assert record["est"] is True
    assert 0 < record["out"] < 400
    rates = published_rates("resp-long")
    assert record["price"] == documented_price(rates, record["in"], record["out"], 0, 0)
    assert redis_account(tenant.team)["resv"] == 0


@pytest.mark.parametrize("group", ["native", "chat"])
def test_hundreds_of_concurrent_responses_never_spend_more_than_the_credits(
    live, groups, gw_org, group
):
    # given: credits for a handful of calls
    granted = 1_000
    poor = GatewayTenant("poor", gw_org, [groups[group]], granted)
    body = {"model": groups[group].name, "input": "hello", "max_output_tokens": 30}
    # when
    responses = concurrently(live.url, "/v1/responses", poor.headers(), body, 300)
    settlement.settle_usage()
    # then
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert 1 <= len(ok) < 300
    assert {r.status_code for r in refused} == {429}
    assert {r.json()["error"]["type"] for r in refused} == {"insufficient_quota"}
    entries = LedgerEntry.objects.filter(account__team=poor.team, kind=LedgerEntry.Kind.USAGE)
    charged = -entries.aggregate(s=Sum("amount_micros"))["s"]
    assert charged <= granted
    poor.team.account.refresh_from_db()
    assert poor.team.account.balance_micros == granted - charged >= 0
    assert posted_calls(poor.team) == len(ok)
    rates = published_rates(ok[0].headers["x-tollgate-model"])
    assert charged == sum(
        documented_price(
            rates, r.json()["usage"]["input_tokens"], r.json()["usage"]["output_tokens"], 0, 0
        )
        for r in ok
    )
    account = redis_account(poor.team)
    assert account["resv"] == 0 and account["pend"] == 0


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "input", "missing_required_parameter"),
        ({"input": ""}, "input", "missing_required_parameter"),
        ({"input": 5}, "input", "invalid_type"),
        ({"input": [1]}, "input[0]", "invalid_type"),
        ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role", "invalid_value"),
        ({"input": [{"role": "user"}]}, "input[0].content", "missing_required_parameter"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
            "invalid_type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "video"}]}]},
            "input[0].content[0].type",
            "invalid_value",
        ),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "invalid_type",
        ),
        ({"input": "hi", "instructions": 3}, "instructions", "invalid_type"),
        ({"input": "hi", "tools": {}}, "tools", "invalid_type"),
        ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name", "invalid_type"),
        ({"input": "hi", "tool_choice": "always"}, "tool_choice", "invalid_value"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens", "invalid_type"),
        ({"input": "hi", "max_output_tokens": "10"}, "max_output_tokens", "invalid_type"),
        ({"input": "hi", "temperature": "hot"}, "temperature", "invalid_type"),
        ({"input": "hi", "top_p": 3}, "top_p", "invalid_type"),
        ({"input": "hi", "stream": "yes"}, "stream", "invalid_type"),
        ({"input": "hi", "store": 1}, "store", "invalid_type"),
        ({"input": "hi", "previous_response_id": 7}, "previous_response_id", "invalid_type"),
        ({"input": "hi", "metadata": {"a": 1}}, "metadata", "invalid_type"),
        ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value"),
        (
            {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format.schema",
            "invalid_type",
        ),
        ({"input": "hi", "reasoning": "high"}, "reasoning", "invalid_type"),
        ({"input": "hi", "background": True}, "background", "unsupported_parameter"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ],
)
@pytest.mark.parametrize("group", ["resp-native-group", "resp-chat-group"])
def test_a_bad_body_is_a_400_naming_the_field_and_costs_nothing(
    live, tenant, group, body, param, code
):
    before = money_state(tenant)
    r = httpx.post(
        f"{live.url}/v1/responses", headers=tenant.headers(), json={"model": group, **body}
    )
    error = assert_error(r, 400, "invalid_request_error", code)
    assert error["param"] == param
    assert money_state(tenant) == before


def test_responses_need_a_chat_model(live, gw_team):
    r = httpx.post(
        f"{live.url}/v1/responses", headers=gw_team.headers(), json={"model": "embed", "input": "x"}
    )
    assert_error(r, 400, "invalid_request_error", "model_mode_mismatch")
