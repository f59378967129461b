"""Anthropic's Messages API (POST /v1/messages), for Claude Code and the `anthropic` SDKs.

Served by any chat model: passed through to upstreams speaking Messages (proxy/providers/
anthropic.py), translated to chat completions for OpenAI-compatible ones (translate_messages).
Errors come in Anthropic's shape, {"type": "error", "error": {"type", "message"}, "request_id"},
with Anthropic's error type for the status (ERROR_TYPES); the error object also carries our
stable `code` (insufficient_quota, budget_exceeded, rate_limit_exceeded, model_not_found, …) and,
when a field is at fault, `param`: extra fields, which the SDKs keep in the error's `body`.

Usage: Anthropic's input_tokens EXCLUDES cache reads and writes (proxy.usage.from_anthropic adds
them). A stream reports the input (and cache) in message_start and the cumulative output in
message_delta; until message_delta arrives the output counted is what was generated so far
(out_bytes), so a stream cut short is charged for what the client got.

Rate limits are told in Anthropic's anthropic-ratelimit-* headers as well as OpenAI's
(Messages.rate_headers).
"""

import orjson

from proxy import ratelimits
from proxy import usage as usages
from proxy.apis.base import Api, Exchange, StreamCodec, translation
from proxy.errors import GatewayError
from proxy.pricing import Demand
from proxy.tokens import estimate_prompt_tokens, estimate_text_tokens, reserve_input_tokens

# Anthropic's error type for a status (docs.claude.com/en/api/errors); other 4xx are
# invalid_request_error, other 5xx api_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
ROLES = ("user", "assistant")
TOOL_CHOICES = ("auto", "any", "tool", "none")
# What Anthropic's count_tokens takes of a Messages body (the rest of a call's body is dropped).
COUNT_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking")
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def error_type(status: int) -> str:
    found = ERROR_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def error_object(error: GatewayError, rid: str = "") -> dict:
    inner = {"type": error_type(error.status), "message": error.message}
    if error.code:
        inner["code"] = error.code
    if error.param:
        inner["param"] = error.param
    body: dict = {"type": "error", "error": inner}
    if rid:
        body["request_id"] = rid
    return body


def error_event(error: GatewayError, rid: str = "") -> bytes:
    return b"event: error\ndata: " + orjson.dumps(error_object(error, rid)) + b"\n\n"


def sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def bad(field: str, problem: str, code: str = "invalid_type") -> GatewayError:
    """A 400 naming the field, worded as Anthropic words them ("field: problem")."""
    return GatewayError(400, f"{field}: {problem}", "invalid_request_error", code, field)


def is_number(value) -> bool:
    return type(value) in (int, float)


def check_blocks(content, field: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad(field, "must be a string or an array of content blocks.")
    for i, block in enumerate(content):
        where = f"{field}.{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise bad(where, "must be a content block object with a 'type'.")
        kind = block["type"]
        if kind == "text" and not isinstance(block.get("text"), str):
            raise bad(f"{where}.text", "must be a string.")
        if kind == "image" and not isinstance(block.get("source"), dict):
            raise bad(f"{where}.source", "must be an image source object.")
        if kind == "tool_use" and not (
            isinstance(block.get("id"), str)
            and isinstance(block.get("name"), str)
            and isinstance(block.get("input"), dict)
        ):
            raise bad(where, "a tool_use block needs a string id and name and an input object.")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise bad(f"{where}.tool_use_id", "must be a string.")


def check_body(request: dict, *, counting: bool = False) -> None:
    """A Messages body's fields, each refused with a 400 naming it (count_tokens needs no
    max_tokens)."""
    if not counting:
        max_tokens = request.get("max_tokens")
        if max_tokens is None:
            raise bad("max_tokens", "Field required.", "missing_required_parameter")
        if type(max_tokens) is not int or max_tokens < 1:
            raise bad("max_tokens", "must be a positive integer.")
    messages = request.get("messages")
    if messages is None:
        raise bad("messages", "Field required.", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "must be a non-empty array of messages.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad(f"messages.{i}", "must be an object with a role and a content.")
        if message.get("role") not in ROLES:
            raise bad(f"messages.{i}.role", "must be 'user' or 'assistant'.", "invalid_value")
        if "content" not in message:
            raise bad(f"messages.{i}.content", "Field required.", "missing_required_parameter")
        check_blocks(message["content"], f"messages.{i}.content")
    system = request.get("system")
    if system is not None:
        if isinstance(system, list) and any(
            not isinstance(b, dict) or b.get("type") != "text" for b in system
        ):
            raise bad("system", "must be a string or an array of text blocks.")
        check_blocks(system, "system")
    tools = request.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad("tools", "must be an array of tools.")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise bad(f"tools.{i}.name", "must be a string.")
            custom = tool.get("type") in (None, "custom")
            if custom and not isinstance(tool.get("input_schema"), dict):
                raise bad(f"tools.{i}.input_schema", "must be a JSON schema object.")
    choice = request.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICES:
            raise bad("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'.")
        if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
            raise bad("tool_choice.name", "must be a string.")
    stops = request.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise bad("stop_sequences", "must be an array of strings.")
    for field in ("temperature", "top_p"):
        if request.get(field) is not None and not is_number(request[field]):
            raise bad(field, "must be a number.")
    top_k = request.get("top_k")
    if top_k is not None and (type(top_k) is not int or top_k < 0):
        raise bad("top_k", "must be a non-negative integer.")
    if "stream" in request and type(request["stream"]) is not bool:
        raise bad("stream", "must be a boolean.")
    metadata = request.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise bad("metadata", "must be an object.")
        user_id = metadata.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise bad("metadata.user_id", "must be a string.")


def text_of(content) -> str:
    """The text of a string or of content blocks' text (for local estimates)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def estimate_input(request: dict) -> int:
    """A local count of a Messages body's input tokens (count_tokens on OpenAI-compatible
    routes): the messages as chat messages, the system prompt, the tools' JSON."""
    total = estimate_prompt_tokens({"messages": request.get("messages") or []})
    system = request.get("system")
    if system:
        total += estimate_text_tokens(len(text_of(system).encode()))
    if request.get("tools"):
        total += estimate_text_tokens(len(orjson.dumps(request["tools"])))
    return total


def output_bytes(content) -> int:
    """The generated text of a message's content blocks, in bytes."""
    total = 0
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            total += len((block.get("text") or "").encode())
        elif block.get("type") == "tool_use":
            total += len(orjson.dumps(block.get("input") or {}))
        elif block.get("type") == "thinking":
            total += len((block.get("thinking") or "").encode())
    return total


def sse_parts(frame: bytes) -> tuple[bytes, bytes]:
    """(event name, data) of one SSE frame."""
    event, data = b"", []
    for line in frame.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"event:"):
            event = line[6:].strip()
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip())
    return event, b"\n".join(data)


def event_of(frame: bytes) -> tuple[bytes, dict | None]:
    """(event name, JSON data or None) of an Anthropic SSE frame; the name is the data's
    `type` when the frame has no event line."""
    event, data = sse_parts(frame)
    try:
        parsed = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        parsed = None
    if not event and parsed is not None and isinstance(parsed.get("type"), str):
        event = parsed["type"].encode()
    return event, parsed


def is_message_stop(frame: bytes) -> bool:
    if frame.startswith(b"event:"):
        return frame[6:].lstrip().startswith(b"message_stop")
    return event_of(frame)[0] == b"message_stop"


class StreamUsage:
    """The usage of an Anthropic stream as it goes: input and cache from message_start, the
    cumulative output from message_delta; before that, the output generated so far."""

    __slots__ = ("final", "raw")

    def __init__(self):
        self.raw: dict = {}
        self.final = False  # message_delta's usage seen

    def add(self, reported, *, final: bool = False) -> None:
        if isinstance(reported, dict):
            self.raw.update({k: v for k, v in reported.items() if v is not None})
            self.final = self.final or final

    def usage(self, out_bytes: int) -> usages.Usage | None:
        u = usages.from_anthropic(self.raw) if self.raw else None
        if u is not None and not self.final:
            u.output = max(u.output, estimate_text_tokens(out_bytes))
        return u


class AnthropicStream(StreamCodec):
    """An Anthropic SSE stream relayed as is, with the public model name in message_start;
    message_stop waits for the settlement."""

    __slots__ = ("errored", "rid", "tally")

    def __init__(self, public: str, rid: str):
        super().__init__(public)
        self.rid = rid
        self.tally = StreamUsage()
        self.errored = False  # the upstream sent its own error event (the stream ends there)

    def is_end(self, frame: bytes) -> bool:
        return is_message_stop(frame)

    def closing(self) -> bytes:
        return MESSAGE_STOP

    def error_frame(self, error: GatewayError) -> bytes:
        return error_event(error, self.rid)

    def unfinished(self) -> bytes:
        if self.errored:
            return b""  # the client has the upstream's error event already
        return self.error_frame(
            GatewayError(
                502,
                "The upstream ended the stream before message_stop.",
                "upstream_error",
                "upstream_stream_error",
            )
        )

    def frame(self, frame: bytes) -> bytes | None:
        if frame.startswith(b"event: ping"):
            return frame + b"\n\n"
        event, data = event_of(frame)
        if data is None:
            return frame + b"\n\n"
        if event == b"content_block_delta":
            delta = data.get("delta") or {}
            if isinstance(delta, dict):
                piece = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
                if isinstance(piece, str):
                    self.out_bytes += len(piece)
        elif event == b"message_start":
            message = data.get("message")
            if isinstance(message, dict):
                message["model"] = self.public
                self.template = {"id": message.get("id")}
                self.tally.add(message.get("usage"))
                frame = b"event: message_start\ndata: " + orjson.dumps(data)
        elif event == b"message_delta":
            self.tally.add(data.get("usage"), final=True)
        elif event == b"error":
            self.errored = True
        elif event == b"content_block_start":
            block = data.get("content_block") or {}
            if isinstance(block, dict) and isinstance(block.get("name"), str):
                self.out_bytes += len(block["name"])
        self.usage = self.tally.usage(self.out_bytes)
        return frame + b"\n\n"


class NativeMessages(Exchange):
    """A Messages call to an upstream speaking Messages: the body as sent, the upstream model
    id swapped in, the public model name swapped back."""

    upstream = "messages"

    def body(self, call, route) -> bytes:
        request = dict(call.request)  # not in place: a fallback may translate the original
        request["model"] = route.upstream_model
        return orjson.dumps(request)

    def unary(self, call, route, payload):
        if isinstance(payload, dict) and "model" in payload:
            payload["model"] = route.name
        reported = payload.get("usage") if isinstance(payload, dict) else None
        content = payload.get("content") if isinstance(payload, dict) else None
        return (
            orjson.dumps(payload),
            usages.from_anthropic(reported),
            lambda: estimate_text_tokens(output_bytes(content)),
        )

    def codec(self, call, route) -> StreamCodec:
        return AnthropicStream(route.name, call.rid)


class Messages(Api):
    name = "messages"
    mode = "chat"

    def __init__(self):
        self.native = NativeMessages()

    def error_body(self, error: GatewayError, rid: str = "") -> bytes:
        return orjson.dumps(error_object(error, rid))

    def check(self, request: dict) -> None:
        check_body(request)

    def rate_headers(self, headroom, now_ms: int) -> list[tuple[bytes, bytes]]:
        """Anthropic's anthropic-ratelimit-* (reset as an RFC 3339 time) as well as OpenAI's."""
        return [
            *ratelimits.openai_headers(headroom, now_ms),
            *ratelimits.anthropic_headers(headroom, now_ms),
        ]

    def streams(self, request: dict) -> bool:
        return request.get("stream") is True

    def demand(self, call) -> Demand:
        return Demand(input=reserve_input_tokens(len(call.body)), output=call.request["max_tokens"])

    def exchange(self, route) -> Exchange | None:
        if self.name in route.provider.formats:
            return self.native
        return translation(self.name, route)


MESSAGES = Messages()
