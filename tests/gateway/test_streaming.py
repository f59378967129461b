"""SSE relay framing and the response cache's stream frames."""

import orjson

from proxy import cache
from proxy.apis.openai import OpenAIStream
from proxy.usage import Usage
from tests.helpers.gateway_state import catalog_raw, model, replica_with

ROUTE = replica_with(catalog_raw({"m1": model("public-name")}, {})).catalog.routes_by_name[
    "public-name"
]


def relay(*, wants_usage: bool) -> OpenAIStream:
    return OpenAIStream(ROUTE.name, wants_usage)


def data(chunk: dict) -> bytes:
    return b"data: " + orjson.dumps(chunk)


def parsed(frame: bytes) -> dict:
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    return orjson.loads(frame[6:])


CONTENT = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 5,
    "model": "upstream-model-id",
    "choices": [{"index": 0, "delta": {"content": "héllo"}, "finish_reason": None}],
    "usage": None,
}
USAGE_ONLY = {**CONTENT, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


def test_each_chunk_carries_the_public_model_name_and_counts_the_content():
    r = relay(wants_usage=False)
    out = parsed(r.frame(data(CONTENT)))
    assert out["model"] == "public-name"
    assert "usage" not in out  # the null placeholder include_usage brings is not passed on
    assert r.out_bytes == len("héllo")
    assert r.template == {"id": "c1", "object": "chat.completion.chunk", "created": 5,
                          "model": "public-name"}  # fmt: skip


def test_the_usage_chunk_is_dropped_when_the_client_did_not_ask_but_still_read():
    r = relay(wants_usage=False)
    assert r.frame(data(USAGE_ONLY)) is None
    assert r.raw_usage == {"prompt_tokens": 3, "completion_tokens": 2}
    assert r.usage == Usage(3, 2)


def test_usage_on_a_content_chunk_is_removed_and_the_content_kept():
    r = relay(wants_usage=False)
    chunk = {**CONTENT, "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    out = parsed(r.frame(data(chunk)))
    assert "usage" not in out
    assert out["choices"][0]["delta"]["content"] == "héllo"
    assert r.usage.output == 2


def test_the_usage_chunk_is_passed_on_when_the_client_asked():
    r = relay(wants_usage=True)
    out = parsed(r.frame(data(USAGE_ONLY)))
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert out["model"] == "public-name"


def test_frames_that_are_not_json_objects_pass_through_unchanged():
    r = relay(wants_usage=False)
    assert r.frame(b": keep-alive") == b": keep-alive\n\n"
    assert r.frame(b"data: not json") == b"data: not json\n\n"
    assert r.frame(b"data: [1, 2]") == b"data: [1, 2]\n\n"


def test_cached_frames_lose_their_usage_and_usage_only_frames():
    frames = [data(CONTENT) + b"\n\n", data(USAGE_ONLY) + b"\n\n", b": comment\n\n"]
    out = cache.strip_usage(frames)
    assert len(out) == 2
    assert "usage" not in parsed(out[0])
    assert out[1] == b": comment\n\n"


def test_a_unary_answer_replays_as_a_stream_with_usage_at_the_end():
    payload = {
        "id": "x",
        "created": 9,
        "model": "public-name",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "tool_calls": [{"id": "t"}]},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    first, last = (parsed(f) for f in cache.frames_from_unary(payload, chat=True))
    assert first["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "hi",
        "tool_calls": [{"index": 0, "id": "t"}],
    }
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert first["object"] == "chat.completion.chunk"
    usage = parsed(cache.usage_frame({"id": "x", "created": 9}, payload["usage"]))
    assert usage["choices"] == [] and usage["usage"] == payload["usage"]
