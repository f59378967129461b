"""OpenAI's chat completions, completions and embeddings: passed through to OpenAI-compatible
upstreams with the public model name swapped in, usage read from the answer."""

import orjson

from proxy import usage as usages
from proxy.apis.base import (
    Api,
    Exchange,
    StreamCodec,
    invalid,
    missing,
    positive_int,
    translation,
)
from proxy.errors import GatewayError
from proxy.pricing import Demand
from proxy.tokens import estimate_text_tokens, reserve_input_tokens

# OpenAI's own bound on `n` (and `best_of`).
MAX_ANSWERS = 128


def estimate_output(payload) -> int:
    """Output tokens of a unary chat or completion answer, counted locally."""
    if not isinstance(payload, dict):
        return 0
    total = 0
    for choice in payload.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") or {}
        total += len((message.get("content") or "").encode()) + len(
            (choice.get("text") or "").encode()
        )
    return estimate_text_tokens(total)


def output_cap(call, *fields: str) -> int:
    """The output tokens one answer may use: what the caller capped, else the dearest route's
    model maximum."""
    for field in fields:
        asked = call.request.get(field)
        if type(asked) is int and asked > 0:
            return asked
    return max(r.max_out for r in call.routes)


def ask_for_usage(request: dict) -> None:
    """A stream always asks for usage; the extra chunk is removed again when the client did
    not ask (OpenAIStream)."""
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return
    request["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }


class OpenAIStream(StreamCodec):
    """An OpenAI SSE stream relayed as is, with the public model name; the usage chunk the
    gateway asked for is removed again when the client did not ask for it."""

    __slots__ = ("raw_usage", "wants_usage")

    def __init__(self, public: str, wants_usage: bool):
        super().__init__(public)
        self.wants_usage = wants_usage
        self.raw_usage = None  # as reported, for the cache

    def is_end(self, frame: bytes) -> bool:
        return frame.startswith(b"data:") and frame[5:].strip() == b"[DONE]"

    def closing(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error_frame(self, error: GatewayError) -> bytes:
        return b"data: " + error.body() + b"\n\n"

    def broken(self, error: GatewayError) -> bytes:
        return b"data: " + error.body() + b"\n\ndata: [DONE]\n\n"

    def frame(self, frame: bytes) -> bytes | None:
        if not frame.startswith(b"data:"):
            return frame + b"\n\n"
        payload = frame[5:].strip()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return frame + b"\n\n"
        if not isinstance(chunk, dict):
            return frame + b"\n\n"
        if "model" in chunk:
            chunk["model"] = self.public
        if self.template is None:
            self.template = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                delta = choice.get("delta") or {}
                self.out_bytes += len(delta.get("content") or "") + len(choice.get("text") or "")
        if chunk.get("usage"):
            self.raw_usage = chunk["usage"]
            self.usage = usages.from_openai(self.raw_usage)
            if not self.wants_usage:
                del chunk["usage"]
                if not any(
                    (c.get("delta") or {}).get("content") or c.get("finish_reason")
                    for c in chunk.get("choices") or ()
                ):
                    return None  # the usage-only chunk the client did not ask for
        elif "usage" in chunk and not self.wants_usage:
            del chunk["usage"]  # the `usage: null` placeholders that come with include_usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


class Passthrough(Exchange):
    """The call as the client sent it, to an upstream speaking the same API."""

    def __init__(self, api: str):
        self.upstream = api

    def body(self, call, route) -> bytes:
        request = call.request
        request["model"] = route.upstream_model
        if call.stream:
            ask_for_usage(request)
        return orjson.dumps(request)

    def unary(self, call, route, payload):
        if isinstance(payload, dict) and "model" in payload:
            payload["model"] = route.name
        reported = payload.get("usage") if isinstance(payload, dict) else None
        return orjson.dumps(payload), usages.from_openai(reported), lambda: estimate_output(payload)

    def codec(self, call, route) -> StreamCodec:
        return OpenAIStream(route.name, call.wants_usage)


class OpenAIApi(Api):
    """The three OpenAI shapes share everything but their checks and output bound."""

    cacheable = True

    def __init__(self, name: str, required: str):
        self.name = self.mode = name
        self.required = required
        self.native = Passthrough(name)

    def check(self, request: dict) -> None:
        if request.get(self.required) in (None, "", []):
            raise missing(self.required)

    def exchange(self, route) -> Exchange | None:
        if self.name in route.provider.formats:
            return self.native
        return translation(self.name, route)

    def answers(self, request: dict) -> int:
        n = positive_int(request, "n", limit=MAX_ANSWERS) or 1
        return n

    def demand(self, call) -> Demand:
        return Demand(
            input=reserve_input_tokens(len(call.body)),
            output=output_cap(call, "max_completion_tokens", "max_tokens"),
            answers=self.answers(call.request),
        )


class Chat(OpenAIApi):
    def check(self, request: dict) -> None:
        super().check(request)
        if not isinstance(request["messages"], list):
            raise invalid("messages", "'messages' must be an array of message objects.")


class Completion(OpenAIApi):
    def answers(self, request: dict) -> int:
        # best_of answers are generated (and billed) server-side, n of them returned.
        n = super().answers(request)
        best_of = positive_int(request, "best_of", limit=MAX_ANSWERS)
        return max(n, best_of or 1)


class Embedding(OpenAIApi):
    def streams(self, request: dict) -> bool:
        return False

    def demand(self, call) -> Demand:
        return Demand(input=reserve_input_tokens(len(call.body)))


CHAT = Chat("chat", "messages")
COMPLETION = Completion("completion", "prompt")
EMBEDDING = Embedding("embedding", "input")
