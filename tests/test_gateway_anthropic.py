"""Anthropic's Messages API on the gateway, native Anthropic upstreams, and the translations
both ways: the official anthropic and openai SDKs against the running gateway and the mock
(which speaks chat completions and Anthropic Messages)."""

import anthropic
import httpx
import openai
import orjson
import pytest
from django.db.models import Sum

from billing import settlement
from billing.models import LedgerEntry, UsageRecord
from core.redis import client as redis_client
from livestate.keys import SHARD_RANGE, acct_key, shard_of, usage_stream
from modelgroups import services as catalog
from tests.helpers.gateway import concurrently, redis_account
from tests.helpers.ledger import posted_calls
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

HI = [{"role": "user", "content": "hi"}]
PROMPT = "Tell me about the sea, the wind and the long grey waves of the northern coast."
# Prices of every model here: 1 micro-credit per input token, 2 per output token.
PRICE = {
    "input_price_micros": 1_000_000,
    "output_price_micros": 2_000_000,
    "input_cost_micros": 500_000,
    "output_cost_micros": 1_000_000,
}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PIXEL = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


# The cache models' own prices per 1M tokens: reads at 0.10, writes at 1.25.
CACHE_PRICE = {"cache_read_price_micros": 100_000, "cache_write_price_micros": 1_250_000}


def cached_price_of(rec: dict) -> int:
    """The documented formula: each line exact (in millionths of a micro-credit), summed,
    rounded once half up."""
    read, write = rec.get("cr", 0), rec.get("cw", 0)
    exact = (
        (rec["in"] - read - write) * 1_000_000
        + read * 100_000
        + write * 1_250_000
        + rec["out"] * 2_000_000
    )
    return (exact + 500_000) // 1_000_000


def price_of(rec: dict) -> int:
    """The documented formula with these prices: every input token (cache reads and writes
    included, at the input price until a model sets theirs) at 1, every output token at 2."""
    return rec["in"] + 2 * rec["out"]


def money_state(tenant) -> dict:
    tenant.team.account.refresh_from_db()
    redis = redis_client()
    return {
        "redis_account": redis.hgetall(acct_key(tenant.team.pk)),
        "usage_stream": redis.xlen(usage_stream(shard_of(tenant.team.pk))),
        "balance": tenant.team.account.balance_micros,
        "ledger": list(tenant.team.account.entries.values_list("pk", flat=True)),
    }


def record_of(rid: str, timeout: float = 5.0) -> dict:
    def find():
        for shard in SHARD_RANGE:
            for _, fields in redis_client().xrange(usage_stream(shard)):
                rec = orjson.loads(fields[b"rec"])
                if rec["rid"] == rid:
                    return rec
        return None

    return eventually(find, timeout=timeout, what=f"a usage record for {rid}")


@pytest.fixture
def claude(live, mock_catalog, gw_org):
    """An Anthropic-native upstream (the mock's Messages API) and groups: `claude` (native),
    `native-first` (a failing native model, then an OpenAI-compatible one), `openai-first`
    (a failing OpenAI-compatible model, then a native one), `long` (a slow long reply)."""
    up = catalog.upstream_create(
        actor="test",
        name="anthropic-mock",
        kind="anthropic",
        base_url=live.mock_url,
        api_key="sk-ant-upstream-secret-123456",
    )

    def model(name, upstream_model, **extra):
        return catalog.model_create(
            actor="test", name=name, upstream=up, upstream_model=upstream_model, **PRICE, **extra
        )

    def group(name, *models):
        return catalog.model_group_create(
            actor="test", name=name, members=[{"model": m} for m in models]
        )

    native = model("claude-a", "claude-a", max_output_tokens=50)
    failing = model("claude-down", "claude-fail-503", max_output_tokens=50)
    cached = model(
        "claude-cached", "claude-cached-7-cachewrite-5", max_output_tokens=50, **CACHE_PRICE
    )
    long = model("claude-long", "claude-chunk-delay-20-reply-400", max_output_tokens=1000)
    openai_b, openai_bad = mock_catalog["models"]["b"], mock_catalog["models"]["bad"]
    oa_cached = catalog.model_create(
        actor="test",
        name="mock-cached",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-cached-6",
        max_output_tokens=50,
        **PRICE,
        **CACHE_PRICE,
    )
    broken = model("claude-broken", "claude-fail-after-5", max_output_tokens=50)
    oa_broken = catalog.model_create(
        actor="test",
        name="mock-broken",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-fail-after-5",
        max_output_tokens=50,
        **PRICE,
    )
    groups = [
        group("claude", native),
        group("claude-broken", broken),
        group("openai-broken", oa_broken),
        group("native-first", failing, openai_b),
        group("openai-first", openai_bad, native),
        group("claude-cache", cached),
        group("openai-cache", oa_cached),
        group("claude-long", long),
        mock_catalog["groups"]["chat"],
    ]
    return GatewayTenant("claude team", gw_org, groups, credits_micros=100_000_000)


def messages_sdk(live, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live.url, api_key=secret, max_retries=0, timeout=10)


def chat_sdk(live, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=secret, max_retries=0, timeout=10)


# --- the anthropic SDK, native and translated -------------------------------------------


@pytest.mark.parametrize(("model", "public"), [("claude", "claude-a"), ("chat", "mock-a")])
def test_a_message_answers_with_text_usage_and_the_public_model(live, claude, model, public):
    # when
    raw = messages_sdk(live, claude.secret).messages.with_raw_response.create(
        model=model, max_tokens=100, messages=HI
    )
    message = raw.parse()
    # then
    assert message.type == "message" and message.role == "assistant"
    assert message.model == public
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Mock reply to: hi")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    rec = record_of(raw.headers["x-request-id"])
    assert (rec["in"], rec["out"]) == (message.usage.input_tokens, message.usage.output_tokens)
    assert rec["price"] == price_of(rec)
    assert rec["est"] is False


@pytest.mark.parametrize("model", ["claude", "chat"])
def test_a_message_stream_assembles_the_text_and_the_final_usage(live, claude, model):
    # given: the unary answer, for reference
    client = messages_sdk(live, claude.secret)
    unary = client.messages.create(model=model, max_tokens=100, messages=HI)
    # when
    with client.messages.stream(model=model, max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    # then
    assert text == unary.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.model == unary.model
    assert final.usage.output_tokens == unary.usage.output_tokens
    assert final.usage.input_tokens == unary.usage.input_tokens


@pytest.mark.parametrize("model", ["claude", "chat"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_comes_back_as_a_tool_use_block(live, claude, model, stream):
    client = messages_sdk(live, claude.secret)
    asked = {"model": model, "max_tokens": 100, "messages": HI, "tools": [WEATHER]}
    # when
    if stream:
        with client.messages.stream(**asked) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**asked)
    # then
    assert message.stop_reason == "tool_use"
    (use,) = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather"
    assert isinstance(use.input["city"], str)
    assert use.id
    # and the tool's result answers in text
    follow = client.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            *HI,
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert follow.stop_reason == "end_turn"
    assert follow.content[0].text.startswith("Mock reply to:")


@pytest.mark.parametrize("model", ["claude", "chat"])
def test_images_as_base64_and_url_are_accepted(live, claude, model):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is this"},
    ]
    # when
    message = messages_sdk(live, claude.secret).messages.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": content}]
    )
    # then
    assert "what is this" in message.content[0].text


def test_count_tokens_asks_a_native_upstream_and_charges_nothing(live, claude):
    client = messages_sdk(live, claude.secret)
    unary = client.messages.create(model="claude", max_tokens=10, messages=HI)
    settlement.settle_usage()
    before = money_state(claude)
    # when
    raw = client.messages.with_raw_response.count_tokens(model="claude", messages=HI)
    # then
    assert raw.parse().input_tokens == unary.usage.input_tokens
    assert raw.headers["x-tollgate-token-count"] == "upstream"
    settlement.settle_usage()
    assert money_state(claude) == before


def test_count_tokens_on_an_openai_compatible_route_is_a_local_estimate(live, claude):
    before = money_state(claude)
    # when
    raw = messages_sdk(live, claude.secret).messages.with_raw_response.count_tokens(
        model="chat", messages=[{"role": "user", "content": PROMPT}], system="Be brief."
    )
    # then
    assert raw.parse().input_tokens > len(PROMPT) // 8
    assert raw.headers["x-tollgate-token-count"] == "estimate"
    assert money_state(claude) == before


def test_count_tokens_checks_the_key_and_the_model(live, claude):
    with pytest.raises(anthropic.AuthenticationError):
        messages_sdk(live, "sk-wrong").messages.count_tokens(model="claude", messages=HI)
    with pytest.raises(anthropic.NotFoundError) as caught:
        messages_sdk(live, claude.secret).messages.count_tokens(model="nope", messages=HI)
    assert caught.value.body["error"]["code"] == "model_not_found"


# --- typed errors ---------------------------------------------------------------------


def assert_anthropic_error(exc: anthropic.APIStatusError, status: int, type_: str, code: str):
    assert exc.status_code == status
    body = exc.body
    assert body["type"] == "error"
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["request_id"] == exc.response.headers["x-request-id"]
    assert body["request_id"].startswith("req_")


def test_a_wrong_key_is_an_authentication_error(live, claude):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        messages_sdk(live, "sk-not-a-key").messages.create(
            model="claude", max_tokens=10, messages=HI
        )
    assert_anthropic_error(caught.value, 401, "authentication_error", "invalid_api_key")


def test_the_key_may_also_come_as_a_bearer_token(live, claude):
    client = anthropic.Anthropic(
        base_url=live.url, auth_token=claude.secret, max_retries=0, timeout=10
    )
    assert client.messages.create(model="claude", max_tokens=10, messages=HI).content


def test_an_unknown_model_is_a_not_found_error(live, claude):
    with pytest.raises(anthropic.NotFoundError) as caught:
        messages_sdk(live, claude.secret).messages.create(
            model="no-such-model", max_tokens=10, messages=HI
        )
    assert_anthropic_error(caught.value, 404, "not_found_error", "model_not_found")


def test_a_rate_limit_is_a_rate_limit_error_with_retry_after(live, mock_catalog, gw_org):
    limited = GatewayTenant(
        "limited", gw_org, [mock_catalog["groups"]["chat"]], 100_000_000, rpm_limit=1
    )
    client = messages_sdk(live, limited.secret)
    client.messages.create(model="chat", max_tokens=10, messages=HI)
    # when
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="chat", max_tokens=10, messages=HI)
    # then
    assert_anthropic_error(caught.value, 429, "rate_limit_error", "rate_limit_exceeded")
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.response.headers["x-ratelimit-limit-requests"] == "1"


def test_no_credit_and_no_budget_are_rate_limit_errors_with_our_code(live, mock_catalog, gw_org):
    broke = GatewayTenant("broke", gw_org, [mock_catalog["groups"]["chat"]], 0)
    capped = GatewayTenant(
        "capped",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        100_000_000,
        budget_period="monthly",
        budget_limit_micros=1,
        budget_mode="hard",
    )
    for tenant, code in ((broke, "insufficient_quota"), (capped, "budget_exceeded")):
        before = money_state(tenant)
        with pytest.raises(anthropic.RateLimitError) as caught:
            messages_sdk(live, tenant.secret).messages.create(
                model="chat", max_tokens=10, messages=HI
            )
        assert_anthropic_error(caught.value, 429, "rate_limit_error", code)
        assert money_state(tenant) == before


BAD_BODIES = [
    ({"messages": HI}, "max_tokens"),
    ({"max_tokens": 0, "messages": HI}, "max_tokens"),
    ({"max_tokens": "10", "messages": HI}, "max_tokens"),
    ({"max_tokens": 10}, "messages"),
    ({"max_tokens": 10, "messages": []}, "messages"),
    ({"max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"max_tokens": 10, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"max_tokens": 10, "messages": [{"role": "user"}]}, "messages.0.content"),
    (
        {"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages.0.content.0.text",
    ),
    ({"max_tokens": 10, "messages": HI, "system": [{"type": "image"}]}, "system"),
    ({"max_tokens": 10, "messages": HI, "temperature": "hot"}, "temperature"),
    ({"max_tokens": 10, "messages": HI, "top_k": 1.5}, "top_k"),
    ({"max_tokens": 10, "messages": HI, "stream": "yes"}, "stream"),
    ({"max_tokens": 10, "messages": HI, "stop_sequences": "END"}, "stop_sequences"),
    ({"max_tokens": 10, "messages": HI, "tools": [{"name": "x"}]}, "tools.0.input_schema"),
    ({"max_tokens": 10, "messages": HI, "tool_choice": {"type": "some"}}, "tool_choice.type"),
    ({"max_tokens": 10, "messages": HI, "metadata": {"user_id": 7}}, "metadata.user_id"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_a_400_naming_the_field_and_costs_nothing(live, claude, body, field):
    before = money_state(claude)
    # when
    response = httpx.post(
        f"{live.url}/v1/messages",
        headers={"x-api-key": claude.secret, "anthropic-version": "2023-06-01"},
        json={"model": "claude", **body},
    )
    # then
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["param"] == field
    assert error["error"]["message"].startswith(field)
    assert error["request_id"] == response.headers["x-request-id"]
    assert money_state(claude) == before


def test_a_body_that_is_not_json_is_an_anthropic_400(live, claude):
    response = httpx.post(
        f"{live.url}/v1/messages",
        headers={"x-api-key": claude.secret, "content-type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "The request body is not valid JSON.",
        "code": "invalid_json",
    }


def test_a_field_openai_models_cannot_take_is_refused_naming_it(live, claude):
    with pytest.raises(anthropic.BadRequestError) as caught:
        messages_sdk(live, claude.secret).messages.create(
            model="chat",
            max_tokens=10,
            messages=HI,
            extra_body={"container": "c_1"},
        )
    assert caught.value.body["error"]["param"] == "container"


def test_an_upstream_refusal_of_the_callers_request_passes_on_in_anthropic_shape(live, claude):
    # when: the native upstream refuses the body (an unknown content block type)
    response = httpx.post(
        f"{live.url}/v1/messages",
        headers={"x-api-key": claude.secret},
        json={
            "model": "claude",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}],
        },
    )
    # then
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    record = record_of(response.headers["x-request-id"])
    assert record["price"] == 0 and record["status"] == "rejected"


# --- an OpenAI chat call to a native Anthropic route ----------------------------------


def test_a_chat_call_to_an_anthropic_model_answers_as_a_chat_completion(live, claude):
    client = chat_sdk(live, claude.secret)
    # when
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[{"role": "system", "content": "Be brief."}, *HI],
        max_tokens=100,
        stop=["never-there"],
        temperature=0.5,
    )
    completion = raw.parse()
    # then
    assert completion.object == "chat.completion"
    assert completion.model == "claude-a"
    assert completion.choices[0].message.content.startswith("Mock reply to: hi")
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    rec = record_of(raw.headers["x-request-id"])
    assert (rec["in"], rec["out"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert rec["price"] == price_of(rec)


def test_a_chat_stream_from_an_anthropic_model_honours_include_usage(live, claude):
    client = chat_sdk(live, claude.secret)
    unary = client.chat.completions.create(model="claude", messages=HI)
    # when
    plain = list(client.chat.completions.create(model="claude", messages=HI, stream=True))
    counted = list(
        client.chat.completions.create(
            model="claude", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    # then
    for chunks in (plain, counted):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == unary.choices[0].message.content
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert all(c.model == "claude-a" for c in chunks)
    assert all(c.usage is None for c in plain)
    *_, last = counted
    assert last.choices == []
    assert last.usage.prompt_tokens == unary.usage.prompt_tokens
    assert last.usage.completion_tokens == unary.usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_chat_tools_round_trip_through_an_anthropic_model(live, claude, stream):
    client = chat_sdk(live, claude.secret)
    tools = [
        {
            "type": "function",
            "function": {
                "name": WEATHER["name"],
                "description": WEATHER["description"],
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    # when
    if stream:
        chunks = list(
            client.chat.completions.create(model="claude", messages=HI, tools=tools, stream=True)
        )
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
        name = calls[0].function.name
        call_id = calls[0].id
        arguments = "".join(tc.function.arguments or "" for tc in calls)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        completion = client.chat.completions.create(model="claude", messages=HI, tools=tools)
        (call,) = completion.choices[0].message.tool_calls
        name, call_id, arguments = call.function.name, call.id, call.function.arguments
        finish = completion.choices[0].finish_reason
    # then
    assert finish == "tool_calls"
    assert name == "get_weather"
    assert isinstance(orjson.loads(arguments)["city"], str)
    follow = client.chat.completions.create(
        model="claude",
        tools=tools,
        messages=[
            *HI,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content.startswith("Mock reply to: sunny")


def test_chat_images_reach_an_anthropic_model(live, claude):
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    completion = chat_sdk(live, claude.secret).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": content}]
    )
    assert completion.choices[0].message.content.startswith("Mock reply to: what is this")


def test_chat_n_above_one_is_refused_for_an_anthropic_model(live, claude):
    with pytest.raises(openai.BadRequestError) as caught:
        chat_sdk(live, claude.secret).chat.completions.create(model="claude", messages=HI, n=2)
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.param == "n"


# --- fallback across providers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "answers"), [("native-first", "mock-b"), ("openai-first", "claude-a")]
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_mixed_group_falls_back_across_providers_in_both_formats(
    live, claude, group, answers, stream
):
    # when: a Messages call
    client = messages_sdk(live, claude.secret)
    if stream:
        with client.messages.stream(model=group, max_tokens=50, messages=HI) as s:
            text = "".join(s.text_stream)
            message = s.get_final_message()
    else:
        message = client.messages.create(model=group, max_tokens=50, messages=HI)
        text = message.content[0].text
    # then
    assert message.model == answers
    assert text.startswith("Mock reply to: hi")
    # when: a chat call
    chat = chat_sdk(live, claude.secret)
    if stream:
        chunks = list(chat.chat.completions.create(model=group, messages=HI, stream=True))
        model = chunks[0].model
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = chat.chat.completions.create(model=group, messages=HI)
        model, text = completion.model, completion.choices[0].message.content
    # then
    assert model == answers
    assert text.startswith("Mock reply to: hi")


# --- cost exactness ---------------------------------------------------------------------


def _post_messages(live, tenant, model: str, stream: bool) -> tuple[str, dict]:
    """(request id, the usage the client was told)."""
    body = {
        "model": model,
        "max_tokens": 50,
        "stream": stream,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    headers = {"x-api-key": tenant.secret, "anthropic-version": "2023-06-01"}
    if not stream:
        response = httpx.post(f"{live.url}/v1/messages", headers=headers, json=body)
        assert response.status_code == 200, response.text
        return response.headers["x-request-id"], response.json()["usage"]
    usage: dict = {}
    with httpx.stream("POST", f"{live.url}/v1/messages", headers=headers, json=body) as r:
        rid = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("data:"):
                event = orjson.loads(line[5:])
                if event["type"] == "message_start":
                    usage.update(event["message"]["usage"])
                elif event["type"] == "message_delta":
                    usage.update({k: v for k, v in event["usage"].items() if v is not None})
    return rid, usage


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["claude-cache", "openai-cache"])
def test_cache_reads_and_writes_are_charged_exactly(live, claude, model, stream):
    # when
    rid, told = _post_messages(live, claude, model, stream)
    # then: Anthropic's input_tokens excludes the cache; the charge counts all of it
    rec = record_of(rid)
    read, write = told["cache_read_input_tokens"], told.get("cache_creation_input_tokens", 0)
    assert read > 0
    if model == "claude-cache":
        assert (read, write) == (7, 5)
    assert rec["in"] == told["input_tokens"] + read + write
    assert rec["out"] == told["output_tokens"]
    assert rec.get("cr") == read
    assert rec.get("cw", 0) == write
    assert rec["price"] == cached_price_of(rec)
    assert cached_price_of(rec) != price_of(rec)  # the cache lines are priced apart
    settlement.settle_usage()
    assert LedgerEntry.objects.get(calls__request_id=rid).amount_micros == -rec["price"]
    stored = UsageRecord.objects.get(request_id=rid)
    assert (stored.cache_read_tokens, stored.cache_write_tokens) == (read, write)
    assert stored.price_micros == rec["price"]


def test_chat_usage_from_an_anthropic_model_counts_the_cache_in_prompt_tokens(live, claude):
    asked = [{"role": "user", "content": PROMPT}]
    prompt = messages_sdk(live, claude.secret).messages.count_tokens(
        model="claude-cache", messages=asked
    )
    # when
    completion = chat_sdk(live, claude.secret).chat.completions.create(
        model="claude-cache", messages=asked
    )
    # then: every input token, cache reads (7) and writes (5) included
    usage = completion.usage
    assert usage.prompt_tokens_details.cached_tokens == 7
    assert usage.prompt_tokens == prompt.input_tokens


def test_a_client_leaving_a_native_stream_pays_for_what_was_generated(live, claude):
    # when: read a few events of a long slow stream, then hang up
    with httpx.stream(
        "POST",
        f"{live.url}/v1/messages",
        headers={"x-api-key": claude.secret},
        json={"model": "claude-long", "max_tokens": 1000, "stream": True, "messages": HI},
    ) as r:
        rid = r.headers["x-request-id"]
        for seen, _ in enumerate(r.iter_raw(), start=1):
            if seen >= 6:
                break
    # then: the input as message_start said, the output generated so far
    rec = record_of(rid)
    assert rec["in"] == 4  # "hi" + 3
    assert 0 < rec["out"] < 400
    assert rec["price"] == price_of(rec)
    assert redis_account(claude.team)["resv"] == 0


@pytest.mark.parametrize("model", ["claude-broken", "openai-broken"])
def test_a_stream_the_upstream_breaks_ends_with_an_error_event_and_pays_what_was_sent(
    live, claude, model
):
    # when: the upstream sends a few events, then drops the connection
    with httpx.stream(
        "POST",
        f"{live.url}/v1/messages",
        headers={"x-api-key": claude.secret},
        json={"model": model, "max_tokens": 50, "stream": True, "messages": HI},
    ) as r:
        rid = r.headers["x-request-id"]
        lines = list(r.iter_lines())
    # then: Anthropic's error event last, no message_stop
    assert "event: error" in lines
    error = orjson.loads(lines[lines.index("event: error") + 1][5:])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert error["error"]["code"] == "upstream_stream_error"
    assert error["request_id"] == rid
    assert "event: message_stop" not in lines
    rec = record_of(rid)
    assert rec["out"] > 0
    assert rec["price"] == price_of(rec)


# --- the overspend invariant ------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude", "chat"])
def test_hundreds_of_concurrent_messages_never_spend_more_than_the_credits(
    live, claude, mock_catalog, gw_org, model
):
    # given: credits for a handful of calls
    granted = 1_000
    groups = list(claude.team.model_groups.all())
    tenant = GatewayTenant("poor", gw_org, groups, granted)
    body = {"model": model, "max_tokens": 30, "messages": [{"role": "user", "content": "hello"}]}
    # when
    responses = concurrently(live.url, "/v1/messages", {"x-api-key": tenant.secret}, body, 300)
    settlement.settle_usage()
    # then
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert 1 <= len(ok) < 300
    assert {r.status_code for r in refused} == {429}
    assert {r.json()["error"]["code"] for r in refused} == {"insufficient_quota"}
    entries = LedgerEntry.objects.filter(account__team=tenant.team, kind=LedgerEntry.Kind.USAGE)
    charged = -entries.aggregate(s=Sum("amount_micros"))["s"]
    assert charged <= granted
    assert charged == sum(
        r.json()["usage"]["input_tokens"] + 2 * r.json()["usage"]["output_tokens"] for r in ok
    )
    tenant.team.account.refresh_from_db()
    assert tenant.team.account.balance_micros == granted - charged >= 0
    assert posted_calls(tenant.team) == len(ok)
    account = redis_account(tenant.team)
    assert account["resv"] == 0 and account["pend"] == 0


# --- the control plane's connection test and health probe ------------------------------


def test_an_anthropic_upstream_without_v1_in_its_base_url_serves_and_is_probed(live, gw_org):
    # given: the base URL as Anthropic documents it, without /v1
    from modelgroups import connection
    from modelgroups.models import ModelHealth
    from modelgroups.tasks import probe_models

    up = catalog.upstream_create(
        actor="test",
        name="anthropic-root",
        kind="anthropic",
        base_url=live.url + "/mock",
        api_key="sk-ant-upstream-secret-123456",
    )
    working = catalog.model_create(actor="test", name="root-a", upstream=up, upstream_model="c")
    catalog.model_create(actor="test", name="root-down", upstream=up, upstream_model="c-fail-503")
    group = catalog.model_group_create(actor="test", name="root", members=[{"model": working}])
    tenant = GatewayTenant("root team", gw_org, [group], credits_micros=10_000_000)
    # when / then: a call (the mock refuses one without anthropic-version)
    message = messages_sdk(live, tenant.secret).messages.create(
        model="root", max_tokens=10, messages=HI
    )
    assert message.content[0].text.startswith("Mock reply to: hi")
    # when / then: the panel's connection test
    result = connection.upstream_probe(upstream=up)
    assert result.ok, result.message
    # when / then: the health probe, a one-token Messages call per model
    probe_models()
    health = {h.model.name: h for h in ModelHealth.objects.select_related("model")}
    assert health["root-a"].status == "up", health["root-a"].last_error
    assert health["root-down"].status == "down"
    assert health["root-down"].last_error.startswith("HTTP 503")


def test_the_probe_speaks_messages_to_an_anthropic_upstream():
    from modelgroups import probe

    target = probe.Target(
        key=1,
        method=probe.CALL,
        mode="chat",
        base_url="https://api.anthropic.com",
        upstream_model="claude-x",
        api_key="sk-ant-k",
        connect_timeout=1.0,
        kind="anthropic",
    )
    path, body = probe._call_request(target)
    assert probe.api_base(target.kind, target.base_url) + path == (
        "https://api.anthropic.com/v1/messages"
    )
    assert body["max_tokens"] == 1 and body["messages"][0]["role"] == "user"
    headers = probe._headers(target)
    assert headers["x-api-key"] == "sk-ant-k"
    assert headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers
