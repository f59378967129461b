"""What every API family of the mock shares: tokenizer, knobs, reply text, errors, ASGI sends.

The rules themselves (token arithmetic, knobs, reply text) are documented once, in the
docstring of devtools.mock_upstream; this module is their one implementation.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
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
MAX_BODY_BYTES = 32 * 1024 * 1024
REPLY_PREFIX = "Mock reply to: "
PROMPT_ECHO_CHARS = 40

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# One token with its leading whitespace, so "".join(pieces[:n]) counts exactly n tokens.
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")
_FILLER = (" lorem", " ipsum", " dolor", " sit", " amet", " consectetur", " adipiscing", " elit")
_MODEL_KNOB_RE = re.compile(
    r"(?<![a-z0-9])(fail-after|fail|slow|chunk-delay|reply|cached|cachewrite|reasoning)-(\d+)",
    re.IGNORECASE,
)
_MODEL_KNOB_FIELDS = {
    "fail-after": "fail_after_chunks",
    "fail": "status",
    "slow": "latency_ms",
    "chunk-delay": "chunk_delay_ms",
    "reply": "reply_tokens",
    "cached": "cached_tokens",
    "cachewrite": "cache_write_tokens",
    "reasoning": "reasoning_tokens",
}
_HEADER_KNOB_FIELDS = {
    b"x-mock-status": "status",
    b"x-mock-latency-ms": "latency_ms",
    b"x-mock-chunk-delay-ms": "chunk_delay_ms",
    b"x-mock-fail-after-chunks": "fail_after_chunks",
    b"x-mock-reply-tokens": "reply_tokens",
    b"x-mock-cached-tokens": "cached_tokens",
    b"x-mock-cache-write-tokens": "cache_write_tokens",
    b"x-mock-reasoning-tokens": "reasoning_tokens",
}

_ID_TAG = secrets.token_hex(4)
_ids = itertools.count(1)
JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


def count_tokens(text: str) -> int:
    """The mock's tokenizer: word runs plus other non-space characters."""
    return len(_TOKEN_RE.findall(text))


def pieces_of(text: str) -> tuple[str, ...]:
    """`text` cut into one piece per token, losslessly (trailing spaces join the last piece)."""
    pieces = _PIECE_RE.findall(text)
    rest = len(text) - sum(map(len, pieces))
    if rest:
        if pieces:
            pieces[-1] += text[-rest:]
        else:
            pieces = [text]
    return tuple(pieces)


@dataclass(frozen=True, slots=True)
class Knobs:
    status: int | None = None
    latency_ms: int | None = None
    chunk_delay_ms: int | None = None
    fail_after_chunks: int | None = None
    reply_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None


NO_KNOBS = Knobs()
_KNOB_NAMES = tuple(f.name for f in fields(Knobs))


class RequestError(Exception):
    """A refusal, rendered in the dialect of the route it happened on (OpenAI or Anthropic)."""

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
        self.message = message
        self.type_ = type_
        self.param = param
        self.code = code


class ClientGone(Exception):
    pass


def openai_error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


async def send_json(send: Send, status: int, body: bytes, headers: list | None = None) -> None:
    response_headers = [JSON_TYPE, (b"content-length", b"%d" % len(body))]
    if headers:
        response_headers += headers
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"Request body larger than {MAX_BODY_BYTES} bytes.")
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def header_knobs(headers: list[tuple[bytes, bytes]]) -> Knobs:
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
                raise RequestError(
                    400, f"Invalid {name.decode()} header: expected a non-negative integer."
                )
            found[field] = number
    return Knobs(**found) if found else NO_KNOBS


@lru_cache(maxsize=1024)
def model_knobs(model: str) -> Knobs:
    """The knobs spelled in a model name, e.g. "mock-slow-200-fail-503"."""
    found = {
        _MODEL_KNOB_FIELDS[name.lower()]: int(digits)
        for name, digits in _MODEL_KNOB_RE.findall(model)
    }
    return Knobs(**found) if found else NO_KNOBS


def merge_knobs(header: Knobs, model: Knobs) -> Knobs:
    """Each knob from the header when it sets one, else from the model name."""
    if header is NO_KNOBS:
        return model
    if model is NO_KNOBS:
        return header
    merged = {}
    for name in _KNOB_NAMES:
        value = getattr(header, name)
        merged[name] = getattr(model, name) if value is None else value
    return Knobs(**merged)


@dataclass(slots=True)
class Request:
    """One request as a handler sees it: the parsed body, the knobs, the ASGI channel."""

    scope: Scope
    receive: Receive
    send: Send
    payload: Any
    knobs: Knobs
    params: dict[str, str]


@lru_cache(maxsize=4096)
def _echo_pieces(echo: str) -> tuple[str, ...]:
    return tuple(_PIECE_RE.findall(REPLY_PREFIX + echo))


def _reply_pieces(echo: str, length: int) -> tuple[str, ...]:
    pieces = _echo_pieces(echo)
    missing = length - len(pieces)
    if missing <= 0:
        return pieces
    return pieces + (_FILLER * (missing // len(_FILLER) + 1))[:missing]


def natural_reply(prompt: str, knobs: Knobs) -> tuple[str, ...]:
    """The reply's token pieces before any limit: the echo of `prompt`, padded with filler."""
    length = knobs.reply_tokens if knobs.reply_tokens is not None else DEFAULT_REPLY_TOKENS
    if length > MAX_REPLY_TOKENS:
        raise RequestError(400, f"Mock reply length is capped at {MAX_REPLY_TOKENS} tokens.")
    return _reply_pieces(prompt[:PROMPT_ECHO_CHARS], length)


def positive_int(payload: dict, param: str) -> int | None:
    value = payload.get(param)
    if value is not None and (type(value) is not int or value < 1):
        raise RequestError(
            400,
            f"Invalid '{param}': expected an integer of at least 1.",
            param=param,
            code="invalid_value",
        )
    return value


def truncate(pieces: tuple[str, ...], limit: int | None) -> tuple[tuple[str, ...], bool]:
    """(pieces cut to `limit`, whether they were cut)."""
    if limit is not None and limit < len(pieces):
        return pieces[:limit], True
    return pieces, False


def content_text(content: Any) -> str:
    """A string content, or the text parts of a list content joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def new_id(prefix: str, sep: str = "-") -> str:
    return f"{prefix}{sep}mock-{_ID_TAG}-{next(_ids)}"


def sse(event: str, data: dict) -> bytes:
    """One named server-sent event (Anthropic and OpenAI Responses streams)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def stream(send: Send, receive: Receive, frames: list[bytes], knobs: Knobs) -> None:
    """Send SSE frames, honouring the chunk-delay and fail-after knobs."""
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
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


def cached_and_reasoning(knobs: Knobs, prompt_tokens: int) -> tuple[int, int]:
    """(cached prompt tokens, capped at the prompt; reasoning tokens) the knobs ask for."""
    cached = min(knobs.cached_tokens or 0, prompt_tokens)
    return cached, knobs.reasoning_tokens or 0


def require_string(payload: dict, param: str) -> str:
    value = payload.get(param)
    if value is None:
        raise RequestError(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if not isinstance(value, str) or not value:
        raise RequestError(
            400,
            f"Invalid '{param}': expected a non-empty string.",
            param=param,
            code="invalid_type",
        )
    return value
