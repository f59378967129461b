"""OpenAI Responses: POST /v1/responses, and GET / DELETE /v1/responses/{id}.

Served by chat-mode models, with the same keys, limits, reservation and settlement as a chat
call. The worst case reserved: the input from the body's size at the dearest input rate, the
output max_output_tokens, else the dearest route's model maximum. With previous_response_id
the upstream adds the stored conversation to the input: the reservation does not see it, the
settlement charges it (capped, as every charge, at what the team may still spend).

Per route, one of two exchanges:
- native, where the upstream kind speaks Responses (openai, litellm, mock: the "responses"
  path of proxy/providers/openai.py): the request as sent with the upstream model id, the
  answer and the stream events that carry the Response (response.created, .in_progress,
  .completed, .failed, .incomplete) with the public name; usage from `usage`
  (proxy.usage.from_responses). A stream settles on its terminal event: response.completed,
  response.incomplete (cut by max_output_tokens: charged its usage like a completed one) or
  response.failed (charged the usage it reports; without one, like a stream broken off: what
  was generated until then). An OpenAI-compatible server without /responses (Ollama, older
  vLLM) answers 404: that attempt is retried at once on the same route translated through chat
  (Exchange.instead), and the route is remembered as chat-only for this process, so the 404
  is paid once. A 404 that names the model (model_not_found) is the route's misconfiguration,
  not a missing path, and falls back as any failed attempt.
- translated (proxy/apis/translate_responses.py), where it speaks only chat completions, or
  speaks what chat is translated into (an Anthropic route: Responses -> chat -> Messages).

Stored responses: a native answer with `store` true leaves livestate.keys.response_key ->
the model that made it (livestate/keys.py), kept RESPONSE_TTL_SECONDS (OpenAI keeps a stored
response 30 days). GET /v1/responses/{id} (and /input_items) and DELETE are forwarded to that
model's upstream, authenticated, not metered (no tokens); an id this team did not create
through the gateway is a 404, another team's included. previous_response_id must name one of
the team's stored responses (else 400 previous_response_not_found: a team must not continue
another's conversation on a shared provider key); the call then goes only to routes on the
upstream that stored it.
"""

import logging
from types import SimpleNamespace

import aiohttp
import orjson
from redis.exceptions import RedisError

from livestate.keys import response_key
from proxy import usage as usages
from proxy.apis.base import Api, Exchange, StreamCodec, invalid, missing, positive_int
from proxy.apis.openai import CHAT, output_cap
from proxy.apis.translate_responses import (
    Translated,
    chat_request,
    error_event,
)
from proxy.auth import presented_secret
from proxy.errors import GatewayError
from proxy.pricing import Demand
from proxy.responses import send_json
from proxy.tokens import estimate_text_tokens, reserve_input_tokens

logger = logging.getLogger(__name__)

RESPONSE_TTL_SECONDS = 30 * 24 * 3600

ROLES = frozenset({"user", "assistant", "system", "developer"})
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
PARTS = TEXT_PARTS | {"input_image", "input_file", "input_audio", "refusal"}
TOOL_CHOICES = frozenset({"none", "auto", "required"})
FORMATS = frozenset({"text", "json_object", "json_schema"})
# What the gateway refuses, and why (the 400's message).
REFUSED = {
    "background": "a background response is generated after the call ends, so it could not "
    "be metered; stream it instead.",
    "conversation": "a conversation is stored upstream outside any team; send the items, or "
    "previous_response_id.",
}
# Stream events whose `response` is the whole Response (the model name is swapped in them).
TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})


# --- body checks ---------------------------------------------------------------------------


def _is_number(value) -> bool:
    return type(value) in (int, float)


def _check_parts(content, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid(where, f"'{where}' must be a string or an array of content parts.")
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise invalid(at, f"'{at}' must be an object.")
        kind = part.get("type")
        if kind not in PARTS:
            raise invalid(
                f"{at}.type",
                f"'{at}.type' must be one of {', '.join(sorted(PARTS))}.",
                "invalid_value",
            )
        if kind in TEXT_PARTS and not isinstance(part.get("text"), str):
            raise invalid(f"{at}.text", f"'{at}.text' must be a string.")
        if kind == "input_image" and not (
            isinstance(part.get("image_url"), str) or isinstance(part.get("file_id"), str)
        ):
            raise invalid(f"{at}.image_url", f"'{at}' needs an 'image_url' or a 'file_id' string.")


def _check_item(item, where: str) -> None:
    if not isinstance(item, dict):
        raise invalid(where, f"'{where}' must be an object.")
    kind = item.get("type", "message")
    if not isinstance(kind, str):
        raise invalid(f"{where}.type", f"'{where}.type' must be a string.")
    if kind == "message":
        if item.get("role") not in ROLES:
            raise invalid(
                f"{where}.role",
                f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.",
                "invalid_value",
            )
        if "content" not in item:
            raise missing(f"{where}.content")
        _check_parts(item["content"], f"{where}.content")
    elif kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(item.get(field), str):
                raise invalid(f"{where}.{field}", f"'{where}.{field}' must be a string.")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise invalid(f"{where}.call_id", f"'{where}.call_id' must be a string.")
        if "output" not in item:
            raise missing(f"{where}.output")
        _check_parts(item["output"], f"{where}.output")
    # Other item types (reasoning, item_reference, built-in tools' calls) are the upstream's to
    # judge; the translation refuses those it cannot say in chat.


def _check_tools(request: dict) -> None:
    tools = request.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid("tools", "'tools' must be an array of tool objects.")
    for i, tool in enumerate(tools or ()):
        at = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise invalid(at, f"'{at}' must be an object with a 'type'.")
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise invalid(f"{at}.name", f"'{at}.name' must be a non-empty string.")
            if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
                raise invalid(f"{at}.parameters", f"'{at}.parameters' must be a JSON schema.")
    choice = request.get("tool_choice")
    if choice is None or choice in TOOL_CHOICES:
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise invalid(
            "tool_choice",
            "'tool_choice' must be 'none', 'auto', 'required' or a tool object.",
            "invalid_value",
        )
    if choice["type"] == "function" and not isinstance(choice.get("name"), str):
        raise invalid("tool_choice.name", "'tool_choice.name' must name a function.")


def _check_text(request: dict) -> None:
    text = request.get("text")
    if text is None:
        return
    if not isinstance(text, dict):
        raise invalid("text", "'text' must be an object.")
    fmt = text.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in FORMATS:
        raise invalid(
            "text.format.type",
            "'text.format.type' must be 'text', 'json_object' or 'json_schema'.",
            "invalid_value",
        )
    if fmt["type"] == "json_schema":
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise invalid("text.format.name", "'text.format.name' must be a non-empty string.")
        if not isinstance(fmt.get("schema"), dict):
            raise invalid("text.format.schema", "'text.format.schema' must be a JSON schema.")


def _check_metadata(request: dict) -> None:
    metadata = request.get("metadata")
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid("metadata", "'metadata' must be an object of string values.")
    if len(metadata) > 16:
        raise invalid("metadata", "'metadata' may have at most 16 keys.", "invalid_value")


# --- the native exchange -------------------------------------------------------------------


def estimate_output(payload) -> int:
    """Output tokens of a unary Response, counted locally (text and call arguments)."""
    total = 0
    output = payload.get("output") if isinstance(payload, dict) else None
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("arguments"), str):
            total += len(item["arguments"].encode())
        for part in item.get("content") or ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"].encode())
    return estimate_text_tokens(total)


def names_model(raw: bytes) -> bool:
    """A 404 about the model (a wrong upstream id), not about the path."""
    try:
        error = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == "model_not_found"


class Native(Exchange):
    """Responses to an upstream that speaks it: the names swapped, the usage read."""

    upstream = "responses"

    def __init__(self, api: "ResponsesApi"):
        self.api = api

    def body(self, call, route) -> bytes:
        request = call.request
        request["model"] = route.upstream_model
        return orjson.dumps(request)

    def unary(self, call, route, payload):
        reported = None
        if isinstance(payload, dict):
            if "model" in payload:
                payload["model"] = route.name
            reported = payload.get("usage")
        usage = usages.from_responses(reported)
        return orjson.dumps(payload), usage, lambda: estimate_output(payload)

    def codec(self, call, route) -> StreamCodec:
        return NativeStream(route.name, self.api, call.team.id, route.id)

    def instead(self, route, status: int, raw: bytes) -> Exchange | None:
        if status != 404 or names_model(raw) or "chat" not in route.provider.formats:
            return None
        logger.info("%s has no /responses: served translated through chat from now", route.name)
        self.api.chat_only.add((route.id, route.url_base))
        return self.api.exchange(route)

    async def remember(self, call, route, payload) -> None:
        if isinstance(payload, dict) and payload.get("store") is not False:
            await self.api.remember(call.team.id, payload.get("id"), route.id)


class NativeStream(StreamCodec):
    """A Responses event stream relayed as is, the public name in the Response it carries."""

    __slots__ = ("api", "final", "parsed", "response_id", "route_id", "seq", "stored", "team")

    def __init__(self, public: str, api: "ResponsesApi", team: int, route_id: str):
        super().__init__(public)
        self.api, self.team, self.route_id = api, team, route_id
        self.seq = -1  # the last sequence_number seen
        self.parsed: tuple[bytes, bytes | None, str] = (b"", None, "")  # frame, out, type
        self.final = b""  # the terminal event, sent after the settlement
        self.response_id = None
        self.stored = True

    def _read(self, frame: bytes) -> tuple[bytes | None, str]:
        """(the frame as the client gets it, the event type) of an upstream frame."""
        if self.parsed[0] is frame:
            return self.parsed[1], self.parsed[2]
        out, kind = frame + b"\n\n", ""
        lines = frame.split(b"\n")
        for i, line in enumerate(lines):
            if not line.startswith(b"data:"):
                continue
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                break  # [DONE] or anything else: as it came
            if isinstance(data, dict):
                kind = data.get("type") if isinstance(data.get("type"), str) else ""
                if type(data.get("sequence_number")) is int:
                    self.seq = data["sequence_number"]
                if isinstance(data.get("delta"), str):
                    self.out_bytes += len(data["delta"].encode())
                response = data.get("response")
                if isinstance(response, dict):
                    self._response(response, kind)
                    lines[i] = b"data: " + orjson.dumps(data)
                    out = b"\n".join(lines) + b"\n\n"
            break
        self.parsed = (frame, out, kind)
        return out, kind

    def _response(self, response: dict, kind: str) -> None:
        if "model" in response:
            response["model"] = self.public
        if isinstance(response.get("id"), str):
            self.response_id = response["id"]
        if response.get("store") is False:
            self.stored = False
        if kind in TERMINAL:
            self.usage = usages.from_responses(response.get("usage"))

    def is_end(self, frame: bytes) -> bool:
        out, kind = self._read(frame)
        if kind in TERMINAL:
            self.final = out or b""
            return True
        return False

    def frame(self, frame: bytes) -> bytes | None:
        return self._read(frame)[0]

    async def remember(self) -> None:
        if self.stored:
            await self.api.remember(self.team, self.response_id, self.route_id)

    def closing(self) -> bytes:
        return self.final

    def error_frame(self, error: GatewayError) -> bytes:
        self.seq += 1
        return error_event(error, self.seq)


# --- the API -------------------------------------------------------------------------------


class ResponsesApi(Api):
    name = "responses"
    mode = "chat"

    def __init__(self):
        self.native = Native(self)
        # (route id, base URL) of OpenAI-compatible routes found without /responses (a 404):
        # translated through chat for the life of the process.
        self.chat_only: set[tuple[str, str]] = set()
        self.redis = self.replica = None  # the gateway's, from startup()

    def startup(self, redis, replica) -> None:
        self.redis, self.replica = redis, replica

    def check(self, request: dict) -> None:
        source = request.get("input")
        if source is None or source == "" or source == []:
            raise missing("input")
        if isinstance(source, list):
            for i, item in enumerate(source):
                _check_item(item, f"input[{i}]")
        elif not isinstance(source, str):
            raise invalid("input", "'input' must be a string or an array of input items.")
        for field in ("instructions", "previous_response_id", "user"):
            if request.get(field) is not None and not isinstance(request[field], str):
                raise invalid(field, f"'{field}' must be a string.")
        for field in ("stream", "store", "parallel_tool_calls", "background"):
            if request.get(field) is not None and type(request[field]) is not bool:
                raise invalid(field, f"'{field}' must be a boolean.")
        for field, why in REFUSED.items():
            if request.get(field) not in (None, False):
                raise invalid(
                    field,
                    f"'{field}' is not supported through this gateway: {why}",
                    "unsupported_parameter",
                )
        positive_int(request, "max_output_tokens")
        for field, top in (("temperature", 2), ("top_p", 1)):
            value = request.get(field)
            if value is not None and not (_is_number(value) and 0 <= value <= top):
                raise invalid(field, f"'{field}' must be a number from 0 to {top}.")
        if request.get("reasoning") is not None and not isinstance(request["reasoning"], dict):
            raise invalid("reasoning", "'reasoning' must be an object.")
        _check_tools(request)
        _check_text(request)
        _check_metadata(request)

    def demand(self, call) -> Demand:
        return Demand(
            input=reserve_input_tokens(len(call.body)),
            output=output_cap(call, "max_output_tokens"),
        )

    def exchange(self, route) -> Exchange | None:
        if "responses" in route.provider.formats and (
            (route.id, route.url_base) not in self.chat_only
        ):
            return self.native
        chat = CHAT.exchange(route)
        return Translated(chat) if chat is not None else None

    async def prepare(self, call) -> None:
        """Routes that cannot take this request (a translation that cannot say it) are left
        out, and previous_response_id pins the call to the upstream that stored it; both
        before anything is reserved."""
        served, refused = [], None
        for route in call.routes:
            if self.exchange(route) is not self.native:
                try:
                    chat_request(call.request, route)
                except GatewayError as exc:
                    refused = refused or exc
                    continue
            served.append(route)
        if not served:
            raise refused
        previous = call.request.get("previous_response_id")
        if previous is not None:
            served = await self._continuing(call, served, previous)
        call.routes = served

    async def _continuing(self, call, routes: list, previous: str) -> list:
        maker = await self.maker(call.team.id, previous, call)
        if maker is None:
            raise invalid(
                "previous_response_id",
                f"Previous response with id '{previous}' not found.",
                "previous_response_not_found",
            )
        same = [r for r in routes if r.id == maker.id] or [
            r for r in routes if r.url_base == maker.url_base and r.auth == maker.auth
        ]
        if not same:
            raise invalid(
                "previous_response_id",
                f"The response '{previous}' was made by '{maker.name}', whose upstream keeps "
                f"it; '{call.request.get('model')}' cannot continue it. Call '{maker.name}'.",
                "previous_response_model_mismatch",
            )
        return same

    async def remember(self, team: int, response_id, route_id: str) -> None:
        """The team's stored response and the model that holds it (its Redis error is logged:
        the answer is already generated and paid; its id is then unknown here)."""
        if not isinstance(response_id, str) or not response_id or self.redis is None:
            return
        try:
            await self.redis.set(response_key(team, response_id), route_id, ex=RESPONSE_TTL_SECONDS)
        except RedisError as exc:
            logger.warning("could not keep response %s's model: %s", response_id, exc)

    async def maker(self, team: int, response_id: str, call=None):
        """The route that stored the team's response, or None."""
        found = await self.redis.get(response_key(team, response_id))
        if found is None:
            return None
        route_id = found.decode()
        routes = call.routes if call is not None else ()
        for route in routes:
            if route.id == route_id:
                return route
        return self.route_by_id(route_id)

    def route_by_id(self, route_id: str):
        routes = self.replica.catalog.routes_by_name.values()
        return next((r for r in routes if r.id == route_id), None)

    # --- GET / DELETE /v1/responses/{id} -----------------------------------------------------

    async def stored(self, session, scope, send, rid: str, team, rest: str) -> None:
        """Forward a stored response's GET (and /input_items) or DELETE to its upstream."""
        method = scope["method"]
        response_id, _, sub = rest.partition("/")
        if method not in ("GET", "DELETE") or (sub and (method != "GET" or sub != "input_items")):
            raise GatewayError(
                405,
                "Use GET or DELETE /v1/responses/{id}, or GET /v1/responses/{id}/input_items.",
                "invalid_request_error",
                "method_not_allowed",
            )
        query = scope.get("query_string") or b""
        if b"stream=true" in query:
            raise invalid("stream", "A stored response is not replayed as a stream here.")
        route = await self.maker(team.id, response_id) if response_id else None
        if route is None or self.exchange(route) is not self.native:
            raise GatewayError(
                404,
                f"Response with id '{response_id}' not found.",
                "invalid_request_error",
                "not_found",
                "id",
            )
        url = route.provider.url(route, "responses") + "/" + rest
        if query and method == "GET":
            url += "?" + query.decode()
        caller = SimpleNamespace(rid=rid, caller_auth=None)
        if route.forward_key:
            caller.caller_auth = "Bearer " + presented_secret(scope).decode()
        try:
            async with session.request(
                method, url, headers=route.provider.headers(route, caller), timeout=route.timeout
            ) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayError(
                502,
                f"The upstream of '{route.name}' did not answer ({type(exc).__name__}).",
                "upstream_error",
                "upstream_error",
            ) from None
        if status >= 500:
            raise GatewayError(
                502,
                f"The upstream of '{route.name}' failed with HTTP {status}.",
                "upstream_error",
                "upstream_error",
            )
        if status == 200:
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError:
                payload = None
            if isinstance(payload, dict):
                if payload.get("model") is not None:
                    payload["model"] = route.name
                raw = orjson.dumps(payload)
            if method == "DELETE":
                await self.redis.delete(response_key(team.id, response_id))
        else:
            raw = route.redact(raw.decode(errors="replace")).encode()
        await send_json(send, status, raw, rid, [(b"x-tollgate-model", route.name.encode())])


RESPONSES = ResponsesApi()
