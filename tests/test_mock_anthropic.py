"""The mock upstream's Anthropic Messages API, driven with the official anthropic SDK."""

from collections.abc import Iterator

import anthropic
import httpx
import orjson
import pytest

from devtools.mock_upstream import MESSAGE_OVERHEAD_TOKENS, app, count_tokens
from tests.helpers.mock_server import serving

HELLO = [{"role": "user", "content": "Hello, world!"}]  # 4 tokens
HELLO_PROMPT = 4 + MESSAGE_OVERHEAD_TOKENS
VERSION = {"anthropic-version": "2023-06-01"}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def client(base_url) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key="sk-ant-mock", max_retries=0) as c:
        yield c


@pytest.fixture
def http(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for frame in text.split("\n\n"):
        if frame:
            event, data = frame.split("\n")
            events.append(
                (event.removeprefix("event: "), orjson.loads(data.removeprefix("data: ")))
            )
    return events


def test_create_answers_a_text_message_with_exact_usage(client):
    # when
    message = client.messages.create(
        model="claude-mock", max_tokens=1024, system="Be brief.", messages=HELLO
    )
    # then
    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-mock"
    [block] = message.content
    assert block.type == "text"
    assert block.text.startswith("Mock reply to: Hello, world!")
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == (3 + 3) + HELLO_PROMPT
    assert message.usage.output_tokens == count_tokens(block.text)
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0


def test_system_blocks_and_multi_turn_content_blocks_are_counted(client):
    # given
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "first one"}]},
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "text", "text": "Hello, world!"},
            ],
        },
    ]
    # when
    message = client.messages.create(
        model="m",
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}],
        messages=messages,
    )
    # then
    assert message.usage.input_tokens == (3 + 3) + (2 + 3) + (1 + 3) + (4 + 3)
    assert message.content[0].text.startswith("Mock reply to:   Hello, world!")


def test_max_tokens_cuts_the_reply(client):
    # when
    message = client.messages.create(model="m", max_tokens=3, messages=HELLO)
    # then
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "Mock reply to"
    assert message.usage.output_tokens == 3


def test_a_stop_sequence_cuts_the_reply_before_it(client):
    # when
    message = client.messages.create(
        model="m", max_tokens=100, messages=HELLO, stop_sequences=["zzz", " ipsum"]
    )
    # then
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == " ipsum"
    text = message.content[0].text
    assert text.endswith("lorem")
    assert "ipsum" not in text
    assert message.usage.output_tokens == count_tokens(text)


def test_tools_give_a_tool_use_block_then_text_after_its_result(client):
    # when
    first = client.messages.create(model="m", max_tokens=100, messages=HELLO, tools=[WEATHER])
    # then
    assert first.stop_reason == "tool_use"
    [use] = first.content
    assert use.type == "tool_use"
    assert use.id.startswith("toolu_")
    assert use.name == "get_weather"
    assert use.input == {"city": "mock-city", "days": 1}
    assert first.usage.output_tokens == count_tokens("get_weather") + count_tokens(
        orjson.dumps(use.input).decode()
    )
    # when
    second = client.messages.create(
        model="m",
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            *HELLO,
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}],
            },
        ],
    )
    # then
    assert second.stop_reason == "end_turn"
    assert second.content[0].text.startswith("Mock reply to: Sunny")


def test_tool_choice_none_answers_in_text(client):
    message = client.messages.create(
        model="m", max_tokens=100, messages=HELLO, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert message.stop_reason == "end_turn"


def test_stream_helper_gives_the_same_message_as_create(client):
    # given
    unary = client.messages.create(model="mock-cached-2", max_tokens=100, messages=HELLO)
    # when
    with client.messages.stream(model="mock-cached-2", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    # then
    assert text == unary.content[0].text
    assert [b.text for b in final.content] == [unary.content[0].text]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == unary.usage.input_tokens
    assert final.usage.cache_read_input_tokens == 2
    assert final.usage.output_tokens == unary.usage.output_tokens


def test_streamed_tool_use_is_reassembled_by_the_sdk(client):
    # when
    with client.messages.stream(
        model="m", max_tokens=100, messages=HELLO, tools=[WEATHER]
    ) as stream:
        final = stream.get_final_message()
    # then
    assert final.stop_reason == "tool_use"
    assert final.content[0].input == {"city": "mock-city", "days": 1}


def test_raw_stream_sends_anthropic_events_in_order(http):
    # when
    body = {"model": "m", "max_tokens": 3, "messages": HELLO, "stream": True}
    events = sse_events(http.post("/v1/messages", json=body, headers=VERSION).text)
    # then
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    assert [d["delta"] for _, d in events[3:6]] == [
        {"type": "text_delta", "text": "Mock"},
        {"type": "text_delta", "text": " reply"},
        {"type": "text_delta", "text": " to"},
    ]
    delta = events[7][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3


def test_cache_knobs_split_the_prompt_in_unary_and_stream_usage(http):
    # given: the prompt is HELLO_PROMPT = 7 tokens; 2 read from the cache, 3 written to it
    headers = {**VERSION, "x-mock-cached-tokens": "2"}
    body = {"model": "mock-cachewrite-3", "max_tokens": 5, "messages": HELLO}
    # when
    unary = http.post("/v1/messages", json=body, headers=headers).json()["usage"]
    events = sse_events(
        http.post("/v1/messages", json={**body, "stream": True}, headers=headers).text
    )
    # then
    assert unary["input_tokens"] == HELLO_PROMPT - 2 - 3
    assert unary["cache_read_input_tokens"] == 2
    assert unary["cache_creation_input_tokens"] == 3
    assert unary["output_tokens"] == 5
    start = events[0][1]["message"]["usage"]
    delta = events[-2][1]["usage"]
    for usage in (start, delta):
        assert usage["input_tokens"] == unary["input_tokens"]
        assert usage["cache_read_input_tokens"] == 2
        assert usage["cache_creation_input_tokens"] == 3
    assert delta["output_tokens"] == 5


def test_cache_reads_and_writes_never_exceed_the_prompt(http):
    body = {"model": "mock-cached-5-cachewrite-50", "max_tokens": 5, "messages": HELLO}
    usage = http.post("/v1/messages", json=body, headers=VERSION).json()["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (0, 5)
    assert usage["cache_creation_input_tokens"] == HELLO_PROMPT - 5


def test_count_tokens_uses_the_same_tokenizer(client):
    # given
    created = client.messages.create(model="m", max_tokens=10, system="Be brief.", messages=HELLO)
    # when
    counted = client.messages.count_tokens(model="m", system="Be brief.", messages=HELLO)
    # then
    assert counted.input_tokens == created.usage.input_tokens == 6 + HELLO_PROMPT


def test_missing_anthropic_version_is_a_400_in_anthropic_shape(http):
    # when
    response = http.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": HELLO})
    # then
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in body["error"]["message"]
    assert body["request_id"].startswith("req_")


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": HELLO},
        {"model": "m", "max_tokens": 0, "messages": HELLO},
        {"model": "m", "max_tokens": 5},
        {"max_tokens": 5, "messages": HELLO},
        {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "x"}]}]},
    ],
)
def test_invalid_requests_are_400s_in_anthropic_shape(http, body):
    response = http.post("/v1/messages", json=body, headers=VERSION)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("model", "error_class", "error_type"),
    [
        ("mock-fail-529", anthropic.OverloadedError, "overloaded_error"),
        ("mock-fail-429", anthropic.RateLimitError, "rate_limit_error"),
        ("mock-fail-500", anthropic.InternalServerError, "api_error"),
        ("mock-fail-401", anthropic.AuthenticationError, "authentication_error"),
        ("mock-fail-404", anthropic.NotFoundError, "not_found_error"),
    ],
)
def test_injected_errors_are_typed_anthropic_errors(client, model, error_class, error_type):
    with pytest.raises(error_class) as caught:
        client.messages.create(model=model, max_tokens=5, messages=HELLO)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == error_type


def test_echo_auth_quotes_the_x_api_key(client):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model="mock-echo-auth", max_tokens=5, messages=HELLO)
    assert "sk-ant-mock" in caught.value.body["error"]["message"]


def test_fail_after_cuts_an_anthropic_stream(base_url):
    # when
    body = {"model": "mock-fail-after-2", "max_tokens": 5, "messages": HELLO, "stream": True}
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", f"{base_url}/v1/messages", json=body, headers=VERSION) as response,
    ):
        for chunk in response.iter_bytes():
            received += chunk
    # then
    assert [name for name, _ in sse_events(received.decode())] == [
        "message_start",
        "content_block_start",
    ]


def test_unknown_messages_path_is_an_anthropic_404(http):
    response = http.post("/v1/messages/nope", json={}, headers=VERSION)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
