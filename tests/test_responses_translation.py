"""The Responses API's shapes without a server: the chat translation both ways and the native
stream codec's terminal events (the cases the mock upstream cannot produce)."""

from types import SimpleNamespace

import orjson
import pytest

from proxy.apis.openai import OpenAIStream
from proxy.apis.responses import RESPONSES, NativeStream
from proxy.apis.translate_responses import ChatToResponses, chat_request, response_from_chat
from proxy.errors import GatewayError

ROUTE = SimpleNamespace(name="local-llama")


def test_a_conversation_with_tools_becomes_chat_messages():
    request = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Answer in French."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": '{"x":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "two"}],
            },
        ],
        "tools": [{"type": "function", "name": "a", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "a"},
        "max_output_tokens": 99,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {}, "strict": True}},
        "reasoning": {"effort": "low"},
        "temperature": 0.2,
        "store": True,
        "metadata": {"k": "v"},
    }
    chat = chat_request(request, ROUTE)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "a"}}
    assert chat["max_tokens"] == 99
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {}, "strict": True},
    }
    assert chat["reasoning_effort"] == "low"
    assert chat["temperature"] == 0.2
    assert "store" not in chat and "metadata" not in chat and "stream" not in chat


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        (
            {"previous_response_id": "resp_1"},
            "previous_response_id",
            "previous_response_id_unsupported",
        ),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice", "unsupported_parameter"),
        (
            {"input": [{"type": "item_reference", "id": "x"}]},
            "input[0].type",
            "unsupported_parameter",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
            "unsupported_parameter",
        ),
    ],
)
def test_what_chat_cannot_say_is_a_400_naming_the_field_and_the_model(extra, param, code):
    with pytest.raises(GatewayError) as caught:
        chat_request({"model": "m", "input": "hi", **extra}, ROUTE)
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, code)
    assert "local-llama" in caught.value.message


def test_a_cut_chat_answer_with_a_tool_call_is_an_incomplete_response():
    chat = {
        "created": 1700000000,
        "choices": [
            {
                "finish_reason": "length",
                "message": {
                    "content": "Let me check.",
                    "tool_calls": [
                        {"id": "call_9", "function": {"name": "a", "arguments": '{"q":'}}
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 8,
            "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }
    response = response_from_chat(chat, {"input": "hi", "max_output_tokens": 8}, "pub")
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["store"] is False
    assert response["model"] == "pub"
    message, call = response["output"]
    assert message["content"][0]["text"] == "Let me check."
    assert (call["type"], call["call_id"], call["arguments"]) == (
        "function_call",
        "call_9",
        '{"q":',
    )
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 8,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 18,
    }


def _events(raw: bytes) -> list[dict]:
    out = []
    for frame in raw.split(b"\n\n"):
        if frame:
            kind, data = frame.split(b"\n")
            body = orjson.loads(data[len(b"data: ") :])
            assert kind == b"event: " + body["type"].encode()
            out.append(body)
    return out


def test_a_chat_stream_cut_by_length_ends_as_response_incomplete():
    codec = ChatToResponses("pub", {"input": "hi"}, OpenAIStream("pub", True))
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    raw = b"".join(codec.frame(b"data: " + orjson.dumps(c)) or b"" for c in chunks)
    assert codec.is_end(b"data: [DONE]")
    events = _events(raw + codec.closing())
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events][-2:] == ["response.output_item.done", "response.incomplete"]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["input_tokens"] == 3 and final["usage"]["output_tokens"] == 2
    assert codec.usage.input == 3 and codec.usage.output == 2
    assert codec.out_bytes == 5


def _sse(kind: str, data: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data})


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {
                "input_tokens": 9,
                "output_tokens": 4,
                "output_tokens_details": {"reasoning_tokens": 2},
            },
            (9, 4, 2),
        ),
        (None, None),
    ],
)
def test_a_failed_native_stream_ends_the_settlement_with_its_usage_if_any(usage, expected):
    codec = NativeStream("pub", RESPONSES, 1, "mdl_1")
    created = _sse(
        "response.created", {"sequence_number": 0, "response": {"id": "r1", "model": "up"}}
    )
    delta = _sse("response.output_text.delta", {"sequence_number": 1, "delta": "abc"})
    failed = _sse(
        "response.failed",
        {"sequence_number": 2, "response": {"id": "r1", "model": "up", "usage": usage}},
    )
    assert not codec.is_end(created)
    assert orjson.loads(codec.frame(created).split(b"data: ")[1])["response"]["model"] == "pub"
    assert not codec.is_end(delta)
    assert codec.frame(delta) == delta + b"\n\n"  # passed on as it came
    assert codec.is_end(failed)
    assert b'"model":"pub"' in codec.closing()
    if expected is None:
        assert codec.usage is None  # the settlement estimates from what was generated
        assert codec.out_bytes == 3
    else:
        assert (codec.usage.input, codec.usage.output, codec.usage.reasoning) == expected
    error = orjson.loads(codec.error_frame(GatewayError(503, "x", "t", "c")).split(b"data: ")[1])
    assert (error["type"], error["code"], error["sequence_number"]) == ("error", "c", 3)
