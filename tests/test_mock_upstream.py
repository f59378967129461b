"""The mock OpenAI-compatible upstream, served by a real uvicorn on a free port."""

import asyncio
import base64
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from devtools.mock_upstream import MockUpstream, app, count_tokens
from tests.helpers.mock_server import serving

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
NO_COMPLETION_DETAILS = {
    "reasoning_tokens": 0,
    "audio_tokens": 0,
    "accepted_prediction_tokens": 0,
    "rejected_prediction_tokens": 0,
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def client(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def chat_body(content="Hello, world! How are you?", model="gpt-test", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def stream_events(response: httpx.Response) -> list:
    """The decoded `data:` payloads of an SSE response; "[DONE]" stays a string."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def test_chat_completion_has_openai_shape_and_usage_arithmetic(client):
    # given
    body = {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]},
        ],
    }
    # when
    response = client.post(CHAT, json=body, headers={"authorization": "Bearer sk-ignored"})
    # then
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["id"].startswith("chatcmpl-mock-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-test"
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content.startswith("Mock reply to: Hello, world!")
    # "Be brief." = 3 tokens, "Hello, world!" = 4 tokens, plus 3 per message
    assert data["usage"] == {
        "prompt_tokens": (3 + 3) + (4 + 3),
        "completion_tokens": count_tokens(content),
        "total_tokens": 13 + count_tokens(content),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": NO_COMPLETION_DETAILS,
    }


def test_reply_echoes_only_the_first_40_chars_of_the_last_user_message(client):
    # given
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "an earlier question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "x" * 30 + " and then a long tail that is cut off"},
        ],
    }
    # when
    content = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    # then
    assert content.startswith("Mock reply to: " + "x" * 30 + " and then ")
    assert "tail" not in content


def test_same_request_gives_same_reply(client):
    # when
    first = client.post(CHAT, json=chat_body()).json()
    second = client.post(CHAT, json=chat_body()).json()
    # then
    assert first["choices"] == second["choices"]
    assert first["usage"] == second["usage"]
    assert first["id"] != second["id"]


def test_completion_tokens_match_the_tokenizer_even_for_odd_text(client):
    # given a message whose first 40 characters end mid-word and mix punctuation
    body = chat_body(content="¿Qué?!... naïve—text,with;punct  and   spaces+++ tail")
    # when
    data = client.post(CHAT, json=body).json()
    # then
    content = data["choices"][0]["message"]["content"]
    assert count_tokens(content) == data["usage"]["completion_tokens"]


@pytest.mark.parametrize("limit_param", ["max_tokens", "max_completion_tokens"])
def test_token_limit_truncates_with_finish_reason_length(client, limit_param):
    # when
    data = client.post(CHAT, json=chat_body(**{limit_param: 5})).json()
    # then
    choice = data["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "Mock reply to: Hello"
    assert data["usage"]["completion_tokens"] == 5


def test_token_limit_above_the_reply_length_stops_naturally(client):
    # when
    data = client.post(CHAT, json=chat_body(max_tokens=1000)).json()
    # then
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] < 1000


@pytest.mark.parametrize(
    ("model", "headers"),
    [("mock-reply-100", {}), ("gpt-test", {"x-mock-reply-tokens": "100"})],
)
def test_reply_length_knob_sets_the_natural_length(client, model, headers):
    # when
    data = client.post(CHAT, json=chat_body(model=model), headers=headers).json()
    # then
    assert data["usage"]["completion_tokens"] == 100
    assert data["choices"][0]["finish_reason"] == "stop"


def test_stream_sends_role_then_one_chunk_per_token_then_finish_and_done(client):
    # given
    expected = client.post(CHAT, json=chat_body(max_tokens=6)).json()
    # when
    with client.stream("POST", CHAT, json=chat_body(max_tokens=6, stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = stream_events(response)
    # then
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"gpt-test"}
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(pieces) == 6
    assert "".join(pieces) == expected["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 7
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }


def test_stream_with_include_usage_ends_with_a_usage_chunk_before_done(client):
    # given
    body = chat_body(stream=True, stream_options={"include_usage": True})
    expected_usage = client.post(CHAT, json=chat_body()).json()["usage"]
    # when
    with client.stream("POST", CHAT, json=body) as response:
        events = stream_events(response)
    # then
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == expected_usage
    assert all(c["usage"] is None for c in events[:-2])
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


def test_stream_options_without_stream_is_rejected(client):
    # when
    response = client.post(CHAT, json=chat_body(stream_options={"include_usage": True}))
    # then
    assert assert_openai_error(response, 400)["param"] == "stream_options"


def test_legacy_completions_answer_and_stream(client):
    # given
    body = {"model": "gpt-instruct", "prompt": "Say hi.", "max_tokens": 5}
    # when
    data = client.post("/v1/completions", json=body).json()
    with client.stream(
        "POST",
        "/v1/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as response:
        events = stream_events(response)
    # then
    assert data["id"].startswith("cmpl-mock-")
    assert data["object"] == "text_completion"
    assert data["choices"][0]["text"] == "Mock reply to: Say"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": NO_COMPLETION_DETAILS,
    }
    assert "".join(c["choices"][0]["text"] for c in events[:-2] if c["choices"]) == (
        "Mock reply to: Say"
    )
    assert events[-2]["usage"] == data["usage"]
    assert events[-1] == "[DONE]"


def test_embeddings_have_openai_shape_and_are_deterministic(client):
    # given
    body = {"model": "embed-test", "input": ["first text", "second, text"]}
    # when
    data = client.post("/v1/embeddings", json=body).json()
    again = client.post("/v1/embeddings", json={"model": "embed-test", "input": "first text"})
    # then
    assert data["object"] == "list"
    assert data["model"] == "embed-test"
    assert [d["index"] for d in data["data"]] == [0, 1]
    assert {d["object"] for d in data["data"]} == {"embedding"}
    first, second = (d["embedding"] for d in data["data"])
    assert len(first) == 8
    assert first != second
    assert sum(v * v for v in first) == pytest.approx(1.0)
    assert again.json()["data"][0]["embedding"] == first
    assert data["usage"] == {"prompt_tokens": 2 + 3, "total_tokens": 5}


def test_embeddings_honour_dimensions_base64_and_token_arrays(client):
    # given
    floats = {"model": "e", "input": "abc", "dimensions": 32}
    # when
    as_floats = client.post("/v1/embeddings", json=floats).json()
    as_base64 = client.post("/v1/embeddings", json={**floats, "encoding_format": "base64"}).json()
    tokens = client.post("/v1/embeddings", json={"model": "e", "input": [[1, 2, 3], [4]]}).json()
    # then
    vector = as_floats["data"][0]["embedding"]
    assert len(vector) == 32
    decoded = struct.unpack("<32f", base64.b64decode(as_base64["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector, abs=1e-6)
    assert len(tokens["data"]) == 2
    assert tokens["usage"]["prompt_tokens"] == 4


def test_embeddings_reject_a_bad_dimensions_value(client):
    # when
    response = client.post("/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 0})
    # then
    assert assert_openai_error(response, 400)["param"] == "dimensions"


def test_models_lists_mock_models(client):
    # when
    data = client.get("/v1/models").json()
    # then
    assert data["object"] == "list"
    assert {m["object"] for m in data["data"]} == {"model"}
    assert "mock-chat" in {m["id"] for m in data["data"]}


def test_mock_prefix_serves_the_same_endpoints(client):
    # when
    chat = client.post("/mock" + CHAT, json=chat_body())
    models = client.get("/mock/v1/models")
    with client.stream("POST", "/mock" + CHAT, json=chat_body(stream=True)) as response:
        events = stream_events(response)
    # then
    assert chat.json()["choices"] == client.post(CHAT, json=chat_body()).json()["choices"]
    assert models.status_code == 200
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_status_header_injects_an_openai_error(client, status):
    # when
    response = client.post(CHAT, json=chat_body(), headers={"x-mock-status": str(status)})
    # then
    assert_openai_error(response, status)
    assert ("retry-after" in response.headers) == (status == 429)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_model_name_injects_an_openai_error(client, status):
    # when
    response = client.post(CHAT, json=chat_body(model=f"mock-fail-{status}"))
    # then
    error = assert_openai_error(response, status)
    assert error["type"] == ("requests" if status == 429 else "server_error")


def test_model_name_injects_errors_on_embeddings_and_streams(client):
    # when
    embeddings = client.post("/v1/embeddings", json={"model": "e-fail-503", "input": "x"})
    stream = client.post(CHAT, json=chat_body(model="mock-fail-500", stream=True))
    # then
    assert_openai_error(embeddings, 503)
    assert_openai_error(stream, 500)


def test_an_echo_auth_model_answers_401_with_the_key_it_was_sent(client):
    # when: like a provider that repeats the rejected key (what Tollgate must redact)
    response = client.post(
        CHAT, json=chat_body(model="mock-echo-auth"), headers={"authorization": "Bearer sk-x1"}
    )
    # then
    error = assert_openai_error(response, 401)
    assert error["message"] == "Incorrect API key provided: Bearer sk-x1."


def test_status_header_wins_over_the_model_name(client):
    # when
    response = client.post(
        CHAT, json=chat_body(model="mock-fail-500"), headers={"x-mock-status": "429"}
    )
    # then
    assert_openai_error(response, 429)


def test_injected_status_does_not_need_a_valid_body(client):
    # when
    response = client.post(CHAT, content=b"not json", headers={"x-mock-status": "503"})
    # then
    assert_openai_error(response, 503)


@pytest.mark.parametrize(
    "headers",
    [{"x-mock-status": "299"}, {"x-mock-status": "abc"}, {"x-mock-latency-ms": "-1"}],
)
def test_bad_knob_values_are_rejected(client, headers):
    # when
    response = client.post(CHAT, json=chat_body(), headers=headers)
    # then
    assert_openai_error(response, 400)


@pytest.mark.parametrize(
    ("model", "headers"),
    [("gpt-test", {"x-mock-latency-ms": "200"}), ("mock-slow-200", {})],
)
def test_latency_knob_delays_the_answer(client, model, headers):
    # when
    started = time.monotonic()
    response = client.post(CHAT, json=chat_body(model=model), headers=headers)
    elapsed = time.monotonic() - started
    # then
    assert response.status_code == 200
    assert elapsed >= 0.2


def test_latency_delays_the_first_byte_of_a_stream(client):
    # when
    started = time.monotonic()
    with client.stream(
        "POST", CHAT, json=chat_body(stream=True), headers={"x-mock-latency-ms": "200"}
    ) as response:
        to_headers = time.monotonic() - started
        events = stream_events(response)
    # then
    assert to_headers >= 0.2
    assert events[-1] == "[DONE]"


def test_latency_also_delays_injected_errors(client):
    # when
    started = time.monotonic()
    response = client.post(CHAT, json=chat_body(model="mock-slow-200-fail-503"))
    # then
    assert time.monotonic() - started >= 0.2
    assert_openai_error(response, 503)


@pytest.mark.parametrize(
    ("model", "headers"),
    [("gpt-test", {"x-mock-chunk-delay-ms": "50"}), ("mock-chunk-delay-50", {})],
)
def test_chunk_delay_spaces_the_stream_frames(client, model, headers):
    # given role + 4 tokens + finish + [DONE] = 7 frames, so 6 gaps
    body = chat_body(model=model, stream=True, max_tokens=4)
    # when
    started = time.monotonic()
    with client.stream("POST", CHAT, json=body, headers=headers) as response:
        events = stream_events(response)
    # then
    assert time.monotonic() - started >= 0.3
    assert len(events) == 7
    assert events[-1] == "[DONE]"


def test_server_default_latency_applies_when_the_request_sets_none():
    with serving(MockUpstream(latency_ms=200)) as url, httpx.Client(base_url=url) as client:
        # when
        started = time.monotonic()
        response = client.get("/v1/models")
        # then
        assert time.monotonic() - started >= 0.2
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("model", "headers"),
    [
        ("gpt-test", {"x-mock-fail-after-chunks": "3"}),
        ("mock-fail-after-3", {}),
        ("gpt-test", {"x-mock-fail-after-chunks": "3", "x-mock-chunk-delay-ms": "10"}),
    ],
)
def test_fail_after_chunks_drops_the_connection_mid_stream(client, model, headers):
    # given
    body = chat_body(model=model, stream=True, stream_options={"include_usage": True})
    events = []
    # when
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", CHAT, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[len("data: ") :]))
    # then
    assert len(events) == 3
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


def test_slow_stream_stops_once_the_client_is_gone():
    # given a 1000-token stream at 20 ms a frame whose client leaves after 50 ms
    body = orjson.dumps(chat_body(model="mock-reply-1000-chunk-delay-20", stream=True))
    scope = {"type": "http", "method": "POST", "path": CHAT, "headers": []}
    bodies_sent = []
    request_read = False

    async def receive():
        nonlocal request_read
        if not request_read:
            request_read = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body":
            bodies_sent.append(message)

    # when
    asyncio.run(app(scope, receive, send))
    # then the app returned long before the end of the stream
    assert 0 < len(bodies_sent) < 100


def test_malformed_json_is_a_400(client):
    # when
    response = client.post(CHAT, content=b'{"model": "m", "messages": [', headers={})
    # then
    assert_openai_error(response, 400)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, None),
        (chat_body(max_tokens=0), "max_tokens"),
        (chat_body(max_completion_tokens="5"), "max_completion_tokens"),
        ([1, 2], None),
    ],
)
def test_invalid_chat_requests_are_400s(client, body, param):
    # when
    response = client.post(CHAT, json=body)
    # then
    assert assert_openai_error(response, 400)["param"] == param


def test_missing_messages_is_reported_like_openai(client):
    # when
    error = assert_openai_error(client.post(CHAT, json={"model": "m"}), 400)
    # then
    assert error["code"] == "missing_required_parameter"
    assert error["type"] == "invalid_request_error"


def test_unknown_path_is_a_404(client):
    # when
    response = client.post("/v1/nope", json={})
    # then
    assert "/v1/nope" in assert_openai_error(response, 404)["message"]


def test_wrong_method_is_a_405(client):
    # when
    get_chat = client.get(CHAT)
    post_models = client.post("/mock/v1/models", json={})
    # then
    assert_openai_error(get_chat, 405)
    assert get_chat.headers["allow"] == "POST"
    assert_openai_error(post_models, 405)
    assert post_models.headers["allow"] == "GET"


def test_standalone_server_uses_mock_latency_ms_from_the_environment():
    # given a free port and the module run as a program
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MOCK_LATENCY_MS": "200"}
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "devtools.mock_upstream", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, "the standalone mock exited"
            assert time.monotonic() < deadline, "the standalone mock did not start"
            try:
                httpx.get(f"{url}/v1/models", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        # when
        started = time.monotonic()
        response = httpx.post(f"{url}{CHAT}", json=chat_body(), timeout=5)
        # then
        assert time.monotonic() - started >= 0.2
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(10)
