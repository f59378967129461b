"""Mock OpenAI-compatible upstream: a dev, test and load-test tool, never a real provider.

A raw ASGI app (no framework, orjson) so it is never the bottleneck of a load test. Mounted by
the gateway under `/mock/` (path left intact) or run alone:
    python -m devtools.mock_upstream --port 8001 [--latency-ms N] [--workers N]

Endpoints (an optional leading `/mock` is stripped): POST /v1/chat/completions (also with
"stream": true), POST /v1/completions (idem), POST /v1/embeddings, GET /v1/models.

Replies are deterministic. The completion is the token pieces of
"Mock reply to: <first 40 chars of the last user message>" padded with filler words to
DEFAULT_REPLY_TOKENS tokens (more if the echo alone is longer), finish_reason "stop";
max_completion_tokens (or else max_tokens) below that truncates it, finish_reason "length".

Token counting: count_tokens(text) = number of `\\w+` runs plus number of other non-space
characters ("Hi, there!" = 4). Chat prompt_tokens = sum over messages of
(count_tokens(text) + MESSAGE_OVERHEAD_TOKENS), where text is a string content or the text parts
of a list content joined by spaces. Completions: sum over the prompt strings; embeddings: sum
over the input strings (a token-id array counts its length).

Per-request knobs; a header wins over the model name, which wins over the server default:
    header                       model name contains   effect
    x-mock-status: S             fail-S                answer error S (OpenAI error body)
    x-mock-latency-ms: N         slow-N                sleep N ms before the first byte
    x-mock-chunk-delay-ms: N     chunk-delay-N         sleep N ms between stream frames
    x-mock-fail-after-chunks: N  fail-after-N          stream N frames, then close mid-body
    x-mock-reply-tokens: N       reply-N               natural reply length of N tokens
The server-wide latency default is MOCK_LATENCY_MS (or --latency-ms). The authorization header
is ignored, except by a model whose name contains `echo-auth`: it answers 401 with the header
in the message, as some providers do, to test that Tollgate redacts it; and a chat model whose
name contains `echo-error` answers 400 quoting the last user message, as providers quote input
they refuse. Request bodies are never logged or kept.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import math
import os
import random
import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MESSAGE_OVERHEAD_TOKENS = 3
DEFAULT_REPLY_TOKENS = 24
MAX_REPLY_TOKENS = 100_000
DEFAULT_EMBEDDING_DIMENSIONS = 8
MAX_EMBEDDING_DIMENSIONS = 4096
MAX_BODY_BYTES = 32 * 1024 * 1024
REPLY_PREFIX = "Mock reply to: "
PROMPT_ECHO_CHARS = 40
MODELS = ("mock-chat", "mock-embedding")

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# One token with its leading whitespace, so "".join(pieces[:n]) counts exactly n tokens.
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")
_FILLER = (" lorem", " ipsum", " dolor", " sit", " amet", " consectetur", " adipiscing", " elit")
_MODEL_KNOB_RE = re.compile(
    r"(?<![a-z0-9])(fail-after|fail|slow|chunk-delay|reply)-(\d+)", re.IGNORECASE
)
_MODEL_KNOB_FIELDS = {
    "fail-after": "fail_after_chunks",
    "fail": "status",
    "slow": "latency_ms",
    "chunk-delay": "chunk_delay_ms",
    "reply": "reply_tokens",
}
_HEADER_KNOB_FIELDS = {
    b"x-mock-status": "status",
    b"x-mock-latency-ms": "latency_ms",
    b"x-mock-chunk-delay-ms": "chunk_delay_ms",
    b"x-mock-fail-after-chunks": "fail_after_chunks",
    b"x-mock-reply-tokens": "reply_tokens",
}

_ID_TAG = secrets.token_hex(4)
_ids = itertools.count(1)
_SENTINEL = "\ue000mock-piece\ue000"
_SENTINEL_JSON = orjson.dumps(_SENTINEL)
_JSON_TYPE = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_DONE_FRAME = b"data: [DONE]\n\n"


def count_tokens(text: str) -> int:
    """The mock's tokenizer: word runs plus other non-space characters."""
    return len(_TOKEN_RE.findall(text))


@dataclass(frozen=True, slots=True)
class Knobs:
    status: int | None = None
    latency_ms: int | None = None
    chunk_delay_ms: int | None = None
    fail_after_chunks: int | None = None
    reply_tokens: int | None = None


_NO_KNOBS = Knobs()


class _RequestError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.body = _error_body(message, type_, param, code)


class _ClientGone(Exception):
    pass


def _error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def _injected(type_: str, code: str | None, message: str) -> bytes:
    return _error_body(f"{message} (injected by the mock upstream)", type_, None, code)


_INJECTED_ERRORS = {
    400: _injected("invalid_request_error", None, "Bad request."),
    401: _injected("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: _injected("permission_error", None, "You are not allowed to use this model."),
    404: _injected("invalid_request_error", "model_not_found", "The model does not exist."),
    408: _injected("timeout", None, "Request timed out."),
    409: _injected("invalid_request_error", None, "Conflict."),
    422: _injected("invalid_request_error", None, "Unprocessable entity."),
    429: _injected("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: _injected("server_error", None, "The server had an error processing your request."),
    502: _injected("server_error", None, "Bad gateway."),
    503: _injected("server_error", None, "The engine is currently overloaded."),
    504: _injected("server_error", None, "Gateway timeout."),
}
_RETRY_AFTER = [(b"retry-after", b"1")]
_INVALID_REQUEST = ("invalid_request_error", None, None)


async def _send_json(send: Send, status: int, body: bytes, headers: list | None = None) -> None:
    response_headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body))]
    if headers:
        response_headers += headers
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise _RequestError(413, f"Request body larger than {MAX_BODY_BYTES} bytes.")
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def _header_knobs(headers: list[tuple[bytes, bytes]]) -> Knobs:
    found: dict[str, int] = {}
    for name, value in headers:
        if name.startswith(b"x-mock-"):
            field = _HEADER_KNOB_FIELDS.get(name)
            if field is None:
                continue
            try:
                number = int(value)
            except ValueError:
                number = -1
            if number < 0:
                raise _RequestError(
                    400, f"Invalid {name.decode()} header: expected a non-negative integer."
                )
            found[field] = number
    return Knobs(**found) if found else _NO_KNOBS


@lru_cache(maxsize=1024)
def model_knobs(model: str) -> Knobs:
    """The knobs spelled in a model name, e.g. "mock-slow-200-fail-503"."""
    found = {
        _MODEL_KNOB_FIELDS[name.lower()]: int(digits)
        for name, digits in _MODEL_KNOB_RE.findall(model)
    }
    return Knobs(**found) if found else _NO_KNOBS


def _merge(header: Knobs, model: Knobs) -> Knobs:
    if header is _NO_KNOBS:
        return model
    if model is _NO_KNOBS:
        return header
    return Knobs(
        status=_first(header.status, model.status),
        latency_ms=_first(header.latency_ms, model.latency_ms),
        chunk_delay_ms=_first(header.chunk_delay_ms, model.chunk_delay_ms),
        fail_after_chunks=_first(header.fail_after_chunks, model.fail_after_chunks),
        reply_tokens=_first(header.reply_tokens, model.reply_tokens),
    )


def _first(a: int | None, b: int | None) -> int | None:
    return a if a is not None else b


@lru_cache(maxsize=4096)
def _echo_pieces(echo: str) -> tuple[str, ...]:
    return tuple(_PIECE_RE.findall(REPLY_PREFIX + echo))


def _reply_pieces(echo: str, length: int) -> tuple[str, ...]:
    pieces = _echo_pieces(echo)
    missing = length - len(pieces)
    if missing <= 0:
        return pieces
    return pieces + (_FILLER * (missing // len(_FILLER) + 1))[:missing]


def _reply(prompt: str, payload: dict, knobs: Knobs) -> tuple[tuple[str, ...], str]:
    length = knobs.reply_tokens if knobs.reply_tokens is not None else DEFAULT_REPLY_TOKENS
    if length > MAX_REPLY_TOKENS:
        raise _RequestError(400, f"Mock reply length is capped at {MAX_REPLY_TOKENS} tokens.")
    pieces = _reply_pieces(prompt[:PROMPT_ECHO_CHARS], length)
    param = "max_completion_tokens"
    limit = payload.get(param)
    if limit is None:
        param = "max_tokens"
        limit = payload.get(param)
    if limit is None:
        return pieces, "stop"
    if type(limit) is not int or limit < 1:
        raise _RequestError(
            400,
            f"Invalid '{param}': expected an integer of at least 1.",
            param=param,
            code="invalid_value",
        )
    if limit < len(pieces):
        return pieces[:limit], "length"
    return pieces, "stop"


def _require_model(payload: dict) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _RequestError(400, "you must provide a model parameter")
    return model


def _stream_flags(payload: dict) -> tuple[bool, bool]:
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    if options is not None and not stream:
        raise _RequestError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return stream, include_usage


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _frames(
    header: dict[str, Any],
    first_choice: dict[str, Any] | None,
    piece_choice: dict[str, Any],
    finish_choice: dict[str, Any],
    pieces: tuple[str, ...],
    usage: dict[str, int] | None,
) -> list[bytes]:
    """SSE frames: [first], one per piece, finish, [usage], [DONE]; usage None means not asked."""
    tail: dict[str, Any] = {} if usage is None else {"usage": None}

    def frame(choices: list) -> bytes:
        return b"data: " + orjson.dumps({**header, "choices": choices, **tail}) + b"\n\n"

    # Every piece frame is the same bytes around the JSON-encoded piece: encode it once.
    before, _, after = frame([piece_choice]).rpartition(_SENTINEL_JSON)
    frames = [] if first_choice is None else [frame([first_choice])]
    frames += [before + orjson.dumps(piece) + after for piece in pieces]
    frames.append(frame([finish_choice]))
    if usage is not None:
        frames.append(b"data: " + orjson.dumps({**header, "choices": [], "usage": usage}) + b"\n\n")
    frames.append(_DONE_FRAME)
    return frames


async def _stream(send: Send, receive: Receive, frames: list[bytes], knobs: Knobs) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    drop = knobs.fail_after_chunks is not None
    if drop:
        frames = frames[: knobs.fail_after_chunks]
    if not knobs.chunk_delay_ms:
        await send({"type": "http.response.body", "body": b"".join(frames), "more_body": drop})
        return
    delay = knobs.chunk_delay_ms / 1000
    # The request body is read, so receive() now resolves only when the client goes away.
    client_gone = asyncio.ensure_future(receive())
    try:
        for index, frame in enumerate(frames):
            if index:
                await asyncio.sleep(delay)
            if client_gone.done():
                return
            await send({"type": "http.response.body", "body": frame, "more_body": True})
    finally:
        client_gone.cancel()
    if not drop:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    # With a drop the app returns mid-body: the server closes the connection without the
    # chunked terminator, which clients see as a truncated stream (uvicorn logs one line).


def _new_id(prefix: str) -> str:
    return f"{prefix}-mock-{_ID_TAG}-{next(_ids)}"


async def _chat(payload: dict, knobs: Knobs, receive: Receive, send: Send) -> None:
    model = _require_model(payload)
    messages = payload.get("messages")
    if messages is None:
        raise _RequestError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise _RequestError(
            400,
            "Invalid 'messages': expected a non-empty array of message objects.",
            param="messages",
            code="invalid_value",
        )
    prompt_tokens = 0
    last_user: str | None = None
    text = ""
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _RequestError(
                400,
                f"Invalid type for 'messages[{index}]': expected an object.",
                param=f"messages[{index}]",
                code="invalid_type",
            )
        text = _content_text(message.get("content"))
        prompt_tokens += count_tokens(text) + MESSAGE_OVERHEAD_TOKENS
        if message.get("role") == "user":
            last_user = text
    if "echo-error" in model:
        raise _RequestError(400, f"Could not process the message: {last_user or text}")
    stream, include_usage = _stream_flags(payload)
    pieces, finish = _reply(text if last_user is None else last_user, payload, knobs)
    usage = _usage(prompt_tokens, len(pieces))
    header = {
        "id": _new_id("chatcmpl"),
        "object": "chat.completion.chunk" if stream else "chat.completion",
        "created": int(time.time()),
        "model": model,
    }
    if not stream:
        message_out = {"role": "assistant", "content": "".join(pieces)}
        choice = {"index": 0, "message": message_out, "logprobs": None, "finish_reason": finish}
        await _send_json(send, 200, orjson.dumps({**header, "choices": [choice], "usage": usage}))
        return
    frames = _frames(
        header,
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        },
        {"index": 0, "delta": {"content": _SENTINEL}, "logprobs": None, "finish_reason": None},
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish},
        pieces,
        usage if include_usage else None,
    )
    await _stream(send, receive, frames, knobs)


async def _completions(payload: dict, knobs: Knobs, receive: Receive, send: Send) -> None:
    model = _require_model(payload)
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = prompt
    else:
        raise _RequestError(
            400,
            "Invalid 'prompt': the mock accepts a string or a non-empty array of strings.",
            param="prompt",
            code="invalid_value",
        )
    stream, include_usage = _stream_flags(payload)
    # One choice, answering the last prompt string; prompt_tokens counts them all.
    pieces, finish = _reply(prompts[-1], payload, knobs)
    usage = _usage(sum(count_tokens(p) for p in prompts), len(pieces))
    header = {
        "id": _new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    if not stream:
        choice = {"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": finish}
        await _send_json(send, 200, orjson.dumps({**header, "choices": [choice], "usage": usage}))
        return
    frames = _frames(
        header,
        None,
        {"text": _SENTINEL, "index": 0, "logprobs": None, "finish_reason": None},
        {"text": "", "index": 0, "logprobs": None, "finish_reason": finish},
        pieces,
        usage if include_usage else None,
    )
    await _stream(send, receive, frames, knobs)


# Bounded: at MAX_EMBEDDING_DIMENSIONS an entry is ~130 KB.
@lru_cache(maxsize=256)
def _embedding(digest: bytes, dimensions: int) -> tuple[float, ...]:
    rng = random.Random(int.from_bytes(digest, "big"))
    values = [rng.random() * 2.0 - 1.0 for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


def _embedding_inputs(raw: Any) -> list[tuple[bytes, int]]:
    """(hash key, token count) per input: a string, a token-id array, or a list of either."""
    if isinstance(raw, str):
        return [(raw.encode(), count_tokens(raw))]
    if isinstance(raw, list) and raw:
        if all(type(t) is int for t in raw):
            return [(orjson.dumps(raw), len(raw))]
        inputs = []
        for item in raw:
            if isinstance(item, str):
                inputs.append((item.encode(), count_tokens(item)))
            elif isinstance(item, list) and item and all(type(t) is int for t in item):
                inputs.append((orjson.dumps(item), len(item)))
            else:
                break
        else:
            return inputs
    raise _RequestError(
        400,
        "Invalid 'input': expected a string, an array of strings or token-id arrays.",
        param="input",
        code="invalid_value",
    )


async def _embeddings(payload: dict, knobs: Knobs, receive: Receive, send: Send) -> None:
    model = _require_model(payload)
    inputs = _embedding_inputs(payload.get("input"))
    dimensions = payload.get("dimensions", DEFAULT_EMBEDDING_DIMENSIONS)
    if type(dimensions) is not int or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise _RequestError(
            400,
            f"Invalid 'dimensions': expected an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}.",
            param="dimensions",
            code="invalid_value",
        )
    encoding = payload.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _RequestError(
            400,
            "Invalid 'encoding_format': expected 'float' or 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    data = []
    prompt_tokens = 0
    for index, (key, tokens) in enumerate(inputs):
        vector: Any = _embedding(hashlib.blake2b(key, digest_size=16).digest(), dimensions)
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
        prompt_tokens += tokens
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    body = orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})
    await _send_json(send, 200, body)


_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "tollgate-mock"}
            for name in MODELS
        ],
    }
)


async def _models(payload: dict, knobs: Knobs, receive: Receive, send: Send) -> None:
    await _send_json(send, 200, _MODELS_BODY)


Handler = Callable[[dict, Knobs, Receive, Send], Awaitable[None]]
_ROUTES: dict[str, tuple[str, Handler]] = {
    "/v1/chat/completions": ("POST", _chat),
    "/v1/completions": ("POST", _completions),
    "/v1/embeddings": ("POST", _embeddings),
    "/v1/models": ("GET", _models),
}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class MockUpstream:
    """ASGI3 app; `latency_ms` is the server-wide delay a request's own knobs may override."""

    def __init__(self, *, latency_ms: int = 0):
        self.latency_ms = latency_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith("/mock/"):
            path = path[5:]
        route = _ROUTES.get(path)
        method = scope["method"]
        if route is None:
            body = _error_body(f"Invalid URL ({method} {scope['path']})", *_INVALID_REQUEST)
            await _send_json(send, 404, body)
            return
        allowed, handler = route
        if method != allowed:
            message = f"Method {method} not allowed for {scope['path']}; use {allowed}."
            body = _error_body(message, *_INVALID_REQUEST)
            await _send_json(send, 405, body, [(b"allow", allowed.encode())])
            return
        try:
            knobs = _header_knobs(scope["headers"])
            payload: Any = {}
            bad_body: _RequestError | None = None
            if allowed == "POST":
                try:
                    payload = orjson.loads(await _read_body(receive))
                except orjson.JSONDecodeError:
                    payload = None
                if isinstance(payload, dict):
                    model = payload.get("model")
                    if isinstance(model, str):
                        knobs = _merge(knobs, model_knobs(model))
                else:
                    bad_body = _RequestError(
                        400, "We could not parse the JSON body of your request as an object."
                    )
            latency_ms = knobs.latency_ms if knobs.latency_ms is not None else self.latency_ms
            if latency_ms:
                await asyncio.sleep(latency_ms / 1000)
            if knobs.status is not None:
                error = _INJECTED_ERRORS.get(knobs.status)
                if error is None:
                    supported = ", ".join(map(str, _INJECTED_ERRORS))
                    raise _RequestError(
                        400, f"Mock status {knobs.status} is not supported; use one of {supported}."
                    )
                await _send_json(
                    send, knobs.status, error, _RETRY_AFTER if knobs.status == 429 else None
                )
                return
            if bad_body is not None:
                raise bad_body
            if "echo-auth" in str(payload.get("model")):
                auth = dict(scope["headers"]).get(b"authorization", b"").decode(errors="replace")
                message = f"Incorrect API key provided: {auth}."
                raise _RequestError(401, message, code="invalid_api_key")
            await handler(payload, knobs, receive, send)
        except _RequestError as exc:
            await _send_json(send, exc.status, exc.body)
        except _ClientGone:
            return


def _env_latency_ms() -> int:
    return int(os.environ.get("MOCK_LATENCY_MS") or 0)


app = MockUpstream(latency_ms=_env_latency_ms())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.mock_upstream",
        description="Mock OpenAI-compatible upstream, for development and tests only.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency-ms", type=int, default=_env_latency_ms())
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    import uvicorn

    # Workers import `app` afresh, so the latency travels to them through the environment.
    os.environ["MOCK_LATENCY_MS"] = str(args.latency_ms)
    uvicorn.run(
        "devtools.mock_upstream:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
