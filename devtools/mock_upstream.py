"""Mock upstream speaking OpenAI, Anthropic and Azure OpenAI: a dev, test and load-test tool.

Never a real provider. A raw ASGI app (no framework, orjson) so it is never the bottleneck of a
load test. Mounted by the gateway under `/mock/` (path left intact) or run alone:
    python -m devtools.mock_upstream --port 8001 [--latency-ms N] [--workers N]
The API families live in devtools/mock/ (one module each); this module routes to them.

Endpoints (an optional leading `/mock` is stripped):
    POST /v1/chat/completions, /v1/completions (both also "stream": true), /v1/embeddings
    GET  /v1/models
    POST /v1/responses (also streamed); GET, DELETE /v1/responses/{id}
    POST /v1/messages (also streamed), /v1/messages/count_tokens         (Anthropic)
    POST /v1/images/generations, /v1/audio/transcriptions (multipart), /v1/audio/speech,
         /v1/moderations
    /openai/deployments/{deployment}/<chat/completions | completions | embeddings |
         images/generations | audio/transcriptions | audio/speech>      (Azure OpenAI)
    GET  /openai/models                                                 (Azure OpenAI)

Replies are deterministic. The reply is the token pieces of
"Mock reply to: <first 40 chars of the last user message>" padded with filler words to
DEFAULT_REPLY_TOKENS tokens (more if the echo alone is longer).

Token counting: count_tokens(text) = number of `\\w+` runs plus number of other non-space
characters ("Hi, there!" = 4). A message (chat, Anthropic, a Responses input item, a system
prompt or instructions) counts count_tokens(its text) + MESSAGE_OVERHEAD_TOKENS, where the text
of a list content is its text parts joined by spaces (images count nothing; a tool call counts
its name and arguments, a tool result its content). Tool definitions count nothing.
Completions: sum over the prompt strings; embeddings: sum over the input strings (a token-id
array counts its length).

Chat completions: `n` identical choices (index 0..n-1; completion_tokens sums them; a stream
sends each frame for every choice). max_completion_tokens (or else max_tokens) below the reply
length truncates it, finish_reason "length", else "stop". With `tools` and tool_choice not
"none", unless the last message is a tool result (answered in text), the reply is one call to
the first function tool or the one tool_choice names: arguments a JSON object holding the
schema's required properties (devtools.mock.schema), content null, finish_reason "tool_calls",
completion tokens count_tokens(name) + count_tokens(arguments), never cut by a token limit;
streamed as tool_calls deltas, one per token of the arguments. response_format json_object
answers {"reply": "<reply>"}, json_schema the schema's sample. `logprobs` adds a
logprobs.content entry per generated token (-0.01 to -0.07 in a cycle) with `top_logprobs`
alternatives (the token itself first).

Usage details: OpenAI usage always has prompt_tokens_details {cached_tokens, audio_tokens} and
completion_tokens_details {reasoning_tokens, audio_tokens, accepted_/rejected_prediction_tokens},
zeros unless a knob asks. cached-N: cached_tokens = min(N, prompt_tokens), prompt_tokens
unchanged (it includes them). reasoning-N: reasoning_tokens = N, completion_tokens = visible
tokens + N (once, whatever `n`). Streams' usage chunk (stream_options.include_usage) carries
the same numbers.

OpenAI Responses: `input` a string (one user message) or items: messages (string content or
input_text / input_image / output_text parts), function_call, function_call_output. Input
tokens: the items, plus `instructions` as a message, plus, with previous_response_id, the
previous response's input items and visible output (its instructions are not carried; an
unknown id is a 400 previous_response_not_found). Function tools and tool_choice as in chat
(flat tools, a `function_call` output item) unless the last item is a function_call_output;
text.format json_object / json_schema as in chat. max_output_tokens below the reply truncates
it: status "incomplete", incomplete_details.reason "max_output_tokens". usage {input_tokens,
input_tokens_details.cached_tokens, output_tokens (visible + reasoning),
output_tokens_details.reasoning_tokens, total_tokens}. "store" (default true) keeps the
response for GET /v1/responses/{id} and previous_response_id (bounded, per process; 404 once
gone). Streams: response.created, response.in_progress, response.output_item.added, then for a
message response.content_part.added, response.output_text.delta (one per token),
response.output_text.done, response.content_part.done, or for a function call
response.function_call_arguments.delta / .done; then response.output_item.done and
response.completed (or response.incomplete) with the full response; every event has a
sequence_number from 0.

Anthropic Messages: requires the anthropic-version header (400 without); the key (x-api-key) is
not checked. model, messages and max_tokens are required; `system` a string or text blocks;
content blocks text, image (base64 or url source), tool_use, tool_result, document, thinking.
stop_reason "end_turn"; "max_tokens" when max_tokens cuts the reply; "stop_sequence" (with
stop_sequence set, text cut before it) when one of stop_sequences occurs in the reply; with
custom `tools` (tool_choice auto / any / tool, not none), unless the last user turn holds a
tool_result, one tool_use block (input as in chat), stop_reason "tool_use". usage:
cache_read_input_tokens = min(cached-N, prompt), cache_creation_input_tokens =
min(cachewrite-N, prompt - cache read), input_tokens = prompt - both (Anthropic's input
EXCLUDES cache reads and writes), output_tokens = count_tokens of the text (or the tool's name
+ input JSON). Streams: message_start (usage as the unary one but output_tokens 1, as
Anthropic sends), content_block_start, ping, content_block_delta (text_delta, or
input_json_delta for tool_use, one per token), content_block_stop, message_delta (stop_reason,
stop_sequence, the final usage), message_stop. count_tokens answers {"input_tokens": prompt}.
Errors, the injected ones included, are Anthropic's {"type": "error", "error": {"type",
"message"}, "request_id"} with its type per status (devtools.mock.anthropic.ERROR_TYPES; 529
overloaded_error).

Images, audio, moderations (devtools.mock.media): images/generations answers `n` copies of a
1x1 PNG (b64_json, or a data: URL for response_format url; size and quality are validated, not
drawn); a gpt-image model always answers b64_json with usage {input_tokens = prompt tokens,
output_tokens = n * IMAGE_OUTPUT_TOKENS[quality]}. audio/transcriptions takes multipart
file + model (+ response_format json | text | verbose_json, language): the duration is what a
WAV header says (data bytes / byte rate), else file bytes / 16000; json answers {"text",
"usage": {"type": "duration", "seconds": ceil(duration)}}, text the text, verbose_json adds
duration, language and one segment. audio/speech (model, input, voice, response_format)
streams silence, SPEECH_MS_PER_CHAR ms per input character, 24 kHz 16-bit mono: a WAV for every
format except pcm (raw samples), with the format's content-type. moderations: one result per
input string (one for a list of content parts), flagged when a word of FLAGGED_WORDS occurs,
0.99 in its categories, 0.0001 elsewhere.

Azure OpenAI: /openai/deployments/{deployment}/... needs the api-version query parameter (400
MissingApiVersionParameter without it; real Azure answers a less helpful 404) and an api-key
header (or an Authorization bearer token; 401 in Azure's shape without), then answers as the
OpenAI route with model = the deployment name when the body has none (its knobs apply).

Per-request knobs; a header wins over the model name, which wins over the server default:
    header                        model name contains   effect
    x-mock-status: S              fail-S                answer error S (the route's error shape)
    x-mock-latency-ms: N          slow-N                sleep N ms before the first byte
    x-mock-chunk-delay-ms: N      chunk-delay-N         sleep N ms between stream frames
    x-mock-fail-after-chunks: N   fail-after-N          stream N frames, then close mid-body
    x-mock-reply-tokens: N        reply-N               natural reply length of N tokens
    x-mock-cached-tokens: N       cached-N              N prompt tokens read from a cache
    x-mock-cache-write-tokens: N  cachewrite-N          N prompt tokens written (Anthropic)
    x-mock-reasoning-tokens: N    reasoning-N           N reasoning tokens (OpenAI chat, Responses)
The server-wide latency default is MOCK_LATENCY_MS (or --latency-ms). Keys are ignored, except
by a model whose name contains `echo-auth`: it answers 401 quoting the key it was sent
(authorization, x-api-key or api-key), as some providers do, to test that Tollgate redacts it;
and a chat model whose name contains `echo-error` answers 400 quoting the last user message, as
providers quote input they refuse. Request bodies are never logged or kept, except what a
stored Responses response shows (instructions, tools, metadata) and the last user text it
echoes, kept in memory for previous_response_id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from devtools.mock import anthropic, media, openai, responses
from devtools.mock.core import (
    DEFAULT_REPLY_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    ClientGone,
    Knobs,
    Receive,
    Request,
    RequestError,
    Scope,
    Send,
    count_tokens,
    header_knobs,
    merge_knobs,
    model_knobs,
    openai_error_body,
    read_body,
    send_json,
)

__all__ = [
    "DEFAULT_REPLY_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "Knobs",
    "MockUpstream",
    "app",
    "count_tokens",
    "model_knobs",
]


def _injected(type_: str, code: str | None, message: str) -> bytes:
    return openai_error_body(f"{message} (injected by the mock upstream)", type_, None, code)


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
    529: _injected("server_error", None, "Overloaded."),
}
_RETRY_AFTER = [(b"retry-after", b"1")]
_AZURE_AUTH = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)

Handler = Callable[[Request], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Route:
    handlers: dict[str, Handler]  # method -> handler
    body: str = "json"  # "json", "multipart" or "none"
    dialect: str = "openai"  # the error shape: "openai" or "anthropic"


_ROUTES: dict[str, _Route] = {
    "/v1/chat/completions": _Route({"POST": openai.chat}),
    "/v1/completions": _Route({"POST": openai.completions}),
    "/v1/embeddings": _Route({"POST": openai.embeddings}),
    "/v1/models": _Route({"GET": openai.models}, body="none"),
    "/v1/responses": _Route({"POST": responses.create}),
    "/v1/messages": _Route({"POST": anthropic.messages}, dialect="anthropic"),
    "/v1/messages/count_tokens": _Route(
        {"POST": anthropic.count_tokens_route}, dialect="anthropic"
    ),
    "/v1/images/generations": _Route({"POST": media.images}),
    "/v1/audio/transcriptions": _Route({"POST": media.transcriptions}, body="multipart"),
    "/v1/audio/speech": _Route({"POST": media.speech}),
    "/v1/moderations": _Route({"POST": media.moderations}),
}
_RESPONSE_BY_ID = _Route({"GET": responses.retrieve, "DELETE": responses.delete}, body="none")
_AZURE_PREFIX = "/openai/deployments/"
_AZURE_MODELS = "/openai/models"  # Azure's Models - List (the resource's, not its deployments)
_AZURE_OPERATIONS = (
    "chat/completions",
    "completions",
    "embeddings",
    "images/generations",
    "audio/transcriptions",
    "audio/speech",
)


def _match(path: str) -> tuple[_Route | None, dict[str, str]]:
    """The route of a path with parameters: /v1/responses/{id} and the Azure deployments."""
    if path.startswith("/v1/responses/"):
        response_id = path[len("/v1/responses/") :]
        if response_id and "/" not in response_id:
            return _RESPONSE_BY_ID, {"id": response_id}
    elif path == _AZURE_MODELS:
        return _ROUTES["/v1/models"], {"deployment": ""}  # the resource's list, Azure's rules
    elif path.startswith(_AZURE_PREFIX):
        deployment, _, operation = path[len(_AZURE_PREFIX) :].partition("/")
        if deployment and operation in _AZURE_OPERATIONS:
            return _ROUTES["/v1/" + operation], {"deployment": deployment}
    return None, {}


def _error(dialect: str, exc: RequestError) -> bytes:
    if dialect == "anthropic":
        return anthropic.error_body(exc.status, exc.message)
    return openai_error_body(exc.message, exc.type_, exc.param, exc.code)


def _azure_error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


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
        params: dict[str, str] = {}
        if route is None:
            route, params = _match(path)
        method = scope["method"]
        dialect = (
            route.dialect
            if route
            else ("anthropic" if path.startswith("/v1/messages") else "openai")
        )
        if route is None:
            error = RequestError(404, f"Invalid URL ({method} {scope['path']})")
            await send_json(send, 404, _error(dialect, error))
            return
        handler = route.handlers.get(method)
        if handler is None:
            allowed = ", ".join(route.handlers)
            error = RequestError(
                405, f"Method {method} not allowed for {scope['path']}; use {allowed}."
            )
            await send_json(send, 405, _error(dialect, error), [(b"allow", allowed.encode())])
            return
        try:
            await self._serve(scope, receive, send, route, params, handler)
        except RequestError as exc:
            await send_json(send, exc.status, _error(dialect, exc))
        except ClientGone:
            return

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: _Route,
        params: dict[str, str],
        handler: Handler,
    ) -> None:
        knobs = header_knobs(scope["headers"])
        deployment = params.get("deployment")
        if route.dialect == "anthropic" and b"anthropic-version" not in _headers(scope):
            raise RequestError(400, "anthropic-version: header is required")
        if deployment is not None:
            status, body = _azure_refusal(scope)
            if status:
                await send_json(send, status, body)
                return
        payload: Any = {}
        bad_body: RequestError | None = None
        if route.body == "json":
            try:
                payload = orjson.loads(await read_body(receive))
            except orjson.JSONDecodeError:
                payload = None
        elif route.body == "multipart":
            try:
                payload = await media.parse_multipart(scope, receive)
            except RequestError as exc:
                bad_body, payload = exc, {}
        if isinstance(payload, dict):
            model = payload.get("model")
            if deployment is not None and not model:
                model = payload["model"] = deployment
            if isinstance(model, str):
                knobs = merge_knobs(knobs, model_knobs(model))
        else:
            bad_body = RequestError(
                400, "We could not parse the JSON body of your request as an object."
            )
        latency_ms = knobs.latency_ms if knobs.latency_ms is not None else self.latency_ms
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if knobs.status is not None:
            await _inject(send, knobs.status, route.dialect)
            return
        if bad_body is not None:
            raise bad_body
        if "echo-auth" in str(payload.get("model")):
            headers = _headers(scope)
            key = (
                headers.get(b"authorization")
                or headers.get(b"x-api-key")
                or headers.get(b"api-key", b"")
            )
            message = f"Incorrect API key provided: {key.decode(errors='replace')}."
            raise RequestError(401, message, code="invalid_api_key")
        await handler(Request(scope, receive, send, payload, knobs, params))


def _azure_refusal(scope: Scope) -> tuple[int, bytes]:
    """(status, body) of Azure's refusal of a request without api-version or a key, or (0, b"")."""
    query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
    if not query.get("api-version", [""])[0]:
        message = "The api-version query parameter (?api-version=) is required for all requests."
        return 400, _azure_error("MissingApiVersionParameter", message)
    headers = _headers(scope)
    if not headers.get(b"api-key") and not headers.get(b"authorization", b"").startswith(
        b"Bearer "
    ):
        return 401, _azure_error("401", _AZURE_AUTH)
    return 0, b""


async def _inject(send: Send, status: int, dialect: str) -> None:
    error = _INJECTED_ERRORS.get(status)
    if error is None:
        supported = ", ".join(map(str, _INJECTED_ERRORS))
        raise RequestError(400, f"Mock status {status} is not supported; use one of {supported}.")
    if dialect == "anthropic":
        message = orjson.loads(error)["error"]["message"]
        error = anthropic.error_body(status, message)
    await send_json(send, status, error, _RETRY_AFTER if status == 429 else None)


def _env_latency_ms() -> int:
    return int(os.environ.get("MOCK_LATENCY_MS") or 0)


app = MockUpstream(latency_ms=_env_latency_ms())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.mock_upstream",
        description="Mock OpenAI, Anthropic and Azure OpenAI upstream, for dev and tests only.",
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
