"""The Messages <-> chat completions translations on their own: requests, answers, stream
events and usage, with the shapes each API documents."""

from types import SimpleNamespace

import orjson
import pytest

from proxy.apis import translate_messages as tm
from proxy.apis.messages import AnthropicStream, check_body, error_object
from proxy.errors import GatewayError
from proxy.usage import Usage

ROUTE = SimpleNamespace(name="public", upstream_model="up-model", max_out=321)


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: ".encode() + orjson.dumps(data)


def events(out: bytes) -> list[dict]:
    return [orjson.loads(line[5:]) for line in out.split(b"\n") if line.startswith(b"data: {")]


def test_a_messages_request_becomes_a_chat_request():
    request = {
        "model": "public",
        "max_tokens": 77,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "tu_1", "name": "w", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "tu_1", "content": "rain"},
                    {"type": "text", "text": "and"},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ],
            },
        ],
        "tools": [{"name": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "metadata": {"user_id": "u-1"},
    }
    # when
    body = tm.chat_request(request, ROUTE, stream=True)
    # then
    assert body["model"] == "up-model"
    assert body["max_completion_tokens"] == 77
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "tu_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "tu_1", "content": "rain"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
        },
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
    ]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["stop"] == ["END"] and body["temperature"] == 0.2 and body["user"] == "u-1"
    assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"container": "c"}, "container"),
        ({"tools": [{"type": "web_search_20250305", "name": "s"}]}, "tools.0"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages.0.content.0",
        ),
    ],
)
def test_what_chat_cannot_take_is_a_400_naming_it(extra, field):
    request = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    request.update(extra)
    with pytest.raises(GatewayError) as caught:
        tm.chat_request(request, ROUTE, stream=False)
    assert caught.value.status == 400 and caught.value.param == field


def test_a_chat_answer_becomes_a_message_with_anthropic_usage():
    payload = {
        "id": "c1",
        "choices": [
            {
                "message": {
                    "content": "hi",
                    "tool_calls": [{"id": "t", "function": {"name": "w", "arguments": '{"a": 1}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 60},
        },
    }
    # when
    message, used = tm.message_from_chat(payload, "public")
    # then
    assert message["content"] == [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "t", "name": "w", "input": {"a": 1}},
    ]
    assert message["stop_reason"] == "tool_use" and message["model"] == "public"
    assert message["usage"] == {
        "input_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
        "output_tokens": 9,
    }
    assert used == Usage(input=100, output=9, cache_read=60)


def test_a_chat_request_becomes_a_messages_request():
    request = {
        "model": "public",
        "messages": [
            {"role": "system", "content": "A."},
            {"role": "user", "content": [{"type": "text", "text": "look"}]},
            {"role": "developer", "content": "B."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}}
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sun"},
        ],
        "stop": "END",
        "tools": [
            {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
        "user": "u",
        "stream_options": {"include_usage": True},
    }
    # when
    body = tm.messages_request(request, ROUTE, stream=True)
    # then
    assert body["system"] == "A.\n\nB."
    assert body["max_tokens"] == 321  # the route's max_out: Anthropic requires one
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "w", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "sun"}],
        },
    ]
    assert body["stop_sequences"] == ["END"]
    assert body["tools"] == [{"name": "w", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "tool", "name": "w"}
    assert body["metadata"] == {"user_id": "u"} and body["stream"] is True


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"n": 3}, "n"), ({"logit_bias": {"1": 2}}, "logit_bias"), ({"audio": {}}, "audio")],
)
def test_what_anthropic_cannot_take_is_a_400_naming_it(extra, field):
    request = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(GatewayError) as caught:
        tm.messages_request(request, ROUTE, stream=False)
    assert caught.value.status == 400 and caught.value.param == field


@pytest.mark.parametrize(
    ("anthropic", "chat"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
    ],
)
def test_stop_reasons_map_both_ways(anthropic, chat):
    completion, _ = tm.completion_from_message({"content": [], "stop_reason": anthropic}, "p")
    assert completion["choices"][0]["finish_reason"] == chat
    if anthropic != "stop_sequence":
        payload = {"choices": [{"message": {}, "finish_reason": chat}]}
        assert tm.message_from_chat(payload, "p")[0]["stop_reason"] == anthropic


def test_anthropic_usage_becomes_openai_usage_with_every_input_token():
    payload = {
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 200,
            "cache_creation_input_tokens": 30,
            "output_tokens": 4,
        },
    }
    completion, used = tm.completion_from_message(payload, "p")
    assert completion["usage"] == {
        "prompt_tokens": 240,
        "completion_tokens": 4,
        "total_tokens": 244,
        "prompt_tokens_details": {"cached_tokens": 200},
    }
    assert used == Usage(input=240, output=4, cache_read=200, cache_write=30)


START = {
    "type": "message_start",
    "message": {
        "id": "m1",
        "model": "up-model",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1},
    },
}


def test_an_anthropic_stream_cut_short_counts_the_input_and_what_was_generated():
    codec = AnthropicStream("public", "req_1")
    # when: message_start and some text, no message_delta
    first = codec.frame(sse("message_start", START))
    for _ in range(10):
        codec.frame(
            sse(
                "content_block_delta",
                {"type": "content_block_delta", "delta": {"text": "abcdefgh"}},
            )
        )
    # then: the input exactly, the output from the bytes generated (80 bytes, 4 per token)
    assert events(first)[0]["message"]["model"] == "public"
    assert codec.usage == Usage(input=15, output=20, cache_read=5)
    # and message_delta's cumulative count wins once it comes
    codec.frame(sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 23}}))
    assert codec.usage == Usage(input=15, output=23, cache_read=5)
    assert codec.is_end(b'event: message_stop\ndata: {"type":"message_stop"}')


def test_an_anthropic_stream_becomes_chat_chunks_with_usage_last():
    codec = tm.MessagesToChatStream("public", wants_usage=True)
    frames = [
        sse("message_start", START),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "w", "input": {}},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
            },
        ),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 7},
            },
        ),
    ]
    # when
    out = b"".join(codec.frame(f) or b"" for f in frames) + codec.closing()
    # then
    chunks = events(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "w"
    assert chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"a":'
    assert chunks[4]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["prompt_tokens"] == 15
    assert chunks[5]["usage"]["completion_tokens"] == 7
    assert out.endswith(b"data: [DONE]\n\n")
    assert {c["model"] for c in chunks} == {"public"}


def test_a_chat_stream_becomes_anthropic_events():
    codec = tm.ChatToMessagesStream("public", "req_1")

    def chunk(**fields):
        return b"data: " + orjson.dumps({"id": "c1", **fields})

    frames = [
        chunk(choices=[{"delta": {"role": "assistant", "content": "He"}}]),
        chunk(choices=[{"delta": {"content": "llo"}}]),
        chunk(
            choices=[
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "t1", "function": {"name": "w", "arguments": ""}}
                        ]
                    }
                }
            ]
        ),
        chunk(choices=[{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]),
        chunk(choices=[{"delta": {}, "finish_reason": "tool_calls"}]),
        chunk(
            choices=[],
            usage={
                "prompt_tokens": 12,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
        ),
    ]
    # when
    out = b"".join(codec.frame(f) or b"" for f in frames)
    assert codec.is_end(b"data: [DONE]")
    out += codec.closing()
    # then
    types = [e["type"] for e in events(out)]
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = events(out)[-2]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2,
        "output_tokens": 5,
    }
    assert codec.usage == Usage(input=12, output=5, cache_read=2)


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_errors_take_anthropics_type_for_their_status_and_keep_our_code(status, type_):
    error = GatewayError(status, "why", "whatever", "our_code")
    assert error_object(error, "req_9") == {
        "type": "error",
        "error": {"type": type_, "message": "why", "code": "our_code"},
        "request_id": "req_9",
    }


def test_count_tokens_bodies_need_no_max_tokens():
    check_body({"model": "m", "messages": [{"role": "user", "content": "x"}]}, counting=True)
    with pytest.raises(GatewayError):
        check_body({"model": "m", "messages": [{"role": "user", "content": "x"}]})


def test_an_anthropic_upstreams_url_and_headers():
    from proxy.providers.anthropic import ANTHROPIC

    for base in ("https://api.anthropic.com", "https://api.anthropic.com/v1/"):
        route = SimpleNamespace(url_base=base, api_version="2023-06-01", auth_key="sk-ant")
        assert ANTHROPIC.url(route, "messages") == "https://api.anthropic.com/v1/messages"
    assert ANTHROPIC.url(route, "count_tokens").endswith("/v1/messages/count_tokens")
    # the caller's anthropic-version and -beta go along; the key as x-api-key, never Bearer
    scope = {"headers": [(b"anthropic-beta", b"tools-2024"), (b"anthropic-version", b"2099")]}
    headers = ANTHROPIC.headers_for(route, "req_1", scope)
    assert headers["x-api-key"] == "sk-ant" and "Authorization" not in headers
    assert headers["anthropic-beta"] == "tools-2024" and headers["anthropic-version"] == "2099"
    assert ANTHROPIC.headers_for(route, "req_1", {"headers": []})["anthropic-version"] == (
        "2023-06-01"
    )


def test_an_upstream_error_event_ends_the_stream_without_a_second_error():
    codec = AnthropicStream("public", "req_1")
    codec.frame(sse("message_start", START))
    out = codec.frame(
        sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    )
    assert events(out)[0]["error"]["type"] == "overloaded_error"
    assert codec.unfinished() == b""
