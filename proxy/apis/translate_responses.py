"""OpenAI Responses to an upstream that speaks only chat completions (stateless).

The request becomes a chat request: `instructions` a system message, the input items messages
(input_text / output_text parts as text, input_image as image_url, function_call items the
assistant's tool_calls, function_call_output items tool messages), function tools chat tools,
tool_choice likewise, max_output_tokens max_tokens, text.format response_format,
reasoning.effort reasoning_effort; temperature, top_p, parallel_tool_calls, user and
service_tier go as they are, everything else is dropped. What chat cannot say is a 400 naming
the field, before anything is sent: previous_response_id (`previous_response_id_unsupported`:
nothing stores responses there), item_reference items, file inputs, tools that are not
functions.

The chat answer becomes a Response object: a message item with output_text (and refusal)
content, a function_call item per tool call, status "incomplete" when the answer was cut
(finish_reason length: max_output_tokens; content_filter), the usage mapped (input_tokens incl.
cached, output_tokens incl. reasoning), `store: false` (nothing is kept upstream: GET of its id
is a 404). A chat stream becomes the Responses events, numbered by sequence_number:
response.created, response.in_progress, then per output item response.output_item.added,
(message) response.content_part.added, response.output_text.delta…, response.output_text.done,
response.content_part.done, (function call) response.function_call_arguments.delta… / .done,
response.output_item.done, and last response.completed (or response.incomplete) with the usage.

The chat side is whatever exchange the chat API has for the route (`Translated(inner)`): the
OpenAI passthrough for OpenAI-compatible upstreams, or a chat translation of its own (an
Anthropic route's chat -> messages), so Responses -> chat -> X composes without code here.
"""

import os
import time

import orjson

from proxy.apis.base import Exchange, StreamCodec, invalid
from proxy.errors import GatewayError

# Events whose `response` carries the whole object; ids like OpenAI's (a prefix and hex).
_ID_BYTES = 24


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(_ID_BYTES).hex()}"


def unsupported(field: str, what: str, route) -> GatewayError:
    return invalid(
        field,
        f"{what} is not supported on '{route.name}': its upstream speaks chat completions "
        "only (stateless). Use another model, or leave it out.",
        "unsupported_parameter",
    )


def previous_unsupported(route) -> GatewayError:
    return invalid(
        "previous_response_id",
        f"'previous_response_id' is not supported on '{route.name}': its upstream speaks chat "
        "completions only and stores no responses. Send the whole conversation as input items.",
        "previous_response_id_unsupported",
    )


# --- the request ---------------------------------------------------------------------------


def _text_of(content) -> str:
    """A content (string or parts) as plain text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        p.get("text") or p.get("refusal") or ""
        for p in content
        if isinstance(p, dict) and isinstance(p.get("text") or p.get("refusal") or "", str)
    )


def _parts(content: list, where: str, route) -> list[dict]:
    parts = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise unsupported(f"{where}.content[{i}].file_id", "An image by file_id", route)
            image = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise unsupported(f"{where}.content[{i}].type", f"A {kind!r} content part", route)
    return parts


def _message(item: dict, where: str, route) -> dict:
    role = item.get("role")
    content = item.get("content")
    if role == "developer":
        role = "system"  # what every chat server knows
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts = _parts(content, where, route)
    if role != "user" or all(p["type"] == "text" for p in parts):
        # System and assistant contents are text; a text-only user turn too, for servers that
        # take no parts.
        return {"role": role, "content": "".join(p.get("text", "") for p in parts)}
    return {"role": role, "content": parts}


def _messages(request: dict, route) -> list[dict]:
    messages: list[dict] = []
    instructions = request.get("instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    source = request["input"]
    if isinstance(source, str):
        messages.append({"role": "user", "content": source})
        return messages
    for index, item in enumerate(source):
        where = f"input[{index}]"
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where, route))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                # Parallel calls (and the text before them) are one assistant turn in chat.
                last.setdefault("tool_calls", []).append(call)
                if not last.get("content"):
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else _text_of(output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue  # chat has no place for it; the model reasons afresh
        else:
            raise unsupported(f"{where}.type", f"An input item of type {kind!r}", route)
    return messages


def _tools(request: dict, route) -> list[dict] | None:
    tools = request.get("tools")
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise unsupported(f"tools[{i}].type", f"A {tool.get('type')!r} tool", route)
        function = {"name": tool["name"]}
        for field in ("description", "parameters", "strict"):
            if tool.get(field) is not None:
                function[field] = tool[field]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice, route):
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice["name"]}}
    raise unsupported("tool_choice", f"tool_choice of type {choice.get('type')!r}", route)


def _response_format(request: dict):
    text = request.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {"name": fmt["name"], "schema": fmt["schema"]}
    for field in ("description", "strict"):
        if fmt.get(field) is not None:
            schema[field] = fmt[field]
    return {"type": "json_schema", "json_schema": schema}


def chat_request(request: dict, route) -> dict:
    """The chat completions request for a Responses request (checked by ResponsesApi.check)."""
    if request.get("previous_response_id") is not None:
        raise previous_unsupported(route)
    chat: dict = {"model": request.get("model"), "messages": _messages(request, route)}
    tools = _tools(request, route)
    if tools:
        chat["tools"] = tools
        if request.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = request["parallel_tool_calls"]
    choice = _tool_choice(request.get("tool_choice"), route)
    if choice is not None:
        chat["tool_choice"] = choice
    if request.get("max_output_tokens") is not None:
        chat["max_tokens"] = request["max_output_tokens"]
    fmt = _response_format(request)
    if fmt is not None:
        chat["response_format"] = fmt
    reasoning = request.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        chat["reasoning_effort"] = reasoning["effort"]
    for field in ("temperature", "top_p", "user", "service_tier"):
        if request.get(field) is not None:
            chat[field] = request[field]
    if request.get("stream"):
        chat["stream"] = True
    return chat


# --- the answer ----------------------------------------------------------------------------

# chat finish_reason -> the Response's incomplete_details.reason
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def responses_usage(chat_usage) -> dict | None:
    """Chat usage in the Responses shape (the totals include cached and reasoning tokens)."""
    if not isinstance(chat_usage, dict):
        return None
    prompt = chat_usage.get("prompt_tokens_details")
    completion = chat_usage.get("completion_tokens_details")
    inp, out = chat_usage.get("prompt_tokens") or 0, chat_usage.get("completion_tokens") or 0
    return {
        "input_tokens": inp,
        "input_tokens_details": {
            "cached_tokens": (prompt.get("cached_tokens") or 0) if isinstance(prompt, dict) else 0
        },
        "output_tokens": out,
        "output_tokens_details": {
            "reasoning_tokens": (completion.get("reasoning_tokens") or 0)
            if isinstance(completion, dict)
            else 0
        },
        "total_tokens": chat_usage.get("total_tokens") or inp + out,
    }


def response_object(request: dict, public: str, *, rid: str, created: int) -> dict:
    """A Response without output: what response.created carries, and the answer's frame."""
    text = request.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    reasoning = request.get("reasoning")
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": public,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
            "summary": None,
        },
        "store": False,  # a chat-only upstream keeps nothing (README, "Responses")
        "temperature": request.get("temperature", 1.0),
        "text": {"format": fmt if isinstance(fmt, dict) else {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _finish(response: dict, finish_reason, usage) -> None:
    reason = INCOMPLETE.get(finish_reason)
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = usage


def message_item(item_id: str, text: str, refusal: str | None, status: str) -> dict:
    content: list[dict] = []
    if text or not refusal:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def response_from_chat(chat: dict, request: dict, public: str) -> dict:
    """A unary chat answer as a Response object."""
    choices = chat.get("choices") if isinstance(chat, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    status = "incomplete" if finish in INCOMPLETE else "completed"
    created = chat.get("created") if isinstance(chat.get("created"), int) else int(time.time())
    response = response_object(request, public, rid=new_id("resp"), created=created)
    output = response["output"]
    text = message.get("content")
    refusal = message.get("refusal")
    if text or refusal:
        output.append(message_item(new_id("msg"), _text_of(text), refusal, status))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        output.append(
            call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                function.get("name") or "",
                function.get("arguments") or "",
                "completed",
            )
        )
    _finish(response, finish, responses_usage(chat.get("usage")))
    return response


class ChatView:
    """The call as the chat exchange underneath sees it: the translated request, usage asked."""

    __slots__ = ("_call", "request", "wants_usage")

    def __init__(self, call, request: dict):
        self._call, self.request = call, request
        self.wants_usage = True  # the usage chunk is read here, never sent on as chat

    def __getattr__(self, name):
        return getattr(self._call, name)


class Translated(Exchange):
    """Responses to a route through the chat API's exchange for it (`inner`)."""

    def __init__(self, inner: Exchange):
        self.inner = inner
        self.upstream = inner.upstream

    def body(self, call, route) -> bytes:
        return self.inner.body(ChatView(call, chat_request(call.request, route)), route)

    def decode(self, raw: bytes):
        return self.inner.decode(raw)

    def unary(self, call, route, payload):
        view = ChatView(call, call.request)
        body, usage, estimate = self.inner.unary(view, route, payload)
        chat = orjson.loads(body)
        response = response_from_chat(chat, call.request, route.name)
        return orjson.dumps(response), usage, estimate

    def codec(self, call, route) -> StreamCodec:
        view = ChatView(call, chat_request(call.request, route))
        return ChatToResponses(route.name, call.request, self.inner.codec(view, route))

    def error(self, status: int, raw: bytes) -> bytes:
        return self.inner.error(status, raw)


def event(kind: str, seq: int, data: dict) -> bytes:
    return (
        b"event: "
        + kind.encode()
        + b"\ndata: "
        + orjson.dumps({"type": kind, **data, "sequence_number": seq})
        + b"\n\n"
    )


def error_event(error: GatewayError, seq: int) -> bytes:
    return event(
        "error", seq, {"code": error.code or error.type, "message": error.message, "param": None}
    )


class _Call:
    __slots__ = ("arguments", "call_id", "item_id", "name", "output_index")

    def __init__(self, call_id: str, name: str, output_index: int):
        self.item_id, self.call_id, self.name = new_id("fc"), call_id, name
        self.arguments = ""
        self.output_index = output_index


class ChatToResponses(StreamCodec):
    """Chat SSE chunks (as the inner chat codec gives them) to Responses events."""

    __slots__ = (
        "calls",
        "finish",
        "inner",
        "items",
        "open",
        "refusal",
        "response",
        "seq",
        "text",
        "text_id",
        "text_index",
        "usage_raw",
    )

    def __init__(self, public: str, request: dict, inner: StreamCodec):
        super().__init__(public)
        self.inner = inner
        self.response = response_object(
            request, public, rid=new_id("resp"), created=int(time.time())
        )
        self.seq = 0
        self.open = False  # response.created sent
        self.text_id: str | None = None  # the message item, once text came
        self.text_index = 0
        self.text = ""
        self.refusal = ""
        self.calls: dict[int, _Call] = {}  # chat tool call index -> its item
        self.items: list = []  # output items in order: "text" or a _Call
        self.finish = None
        self.usage_raw = None

    def _event(self, out: list, kind: str, data: dict) -> None:
        out.append(event(kind, self.seq, data))
        self.seq += 1

    def _start(self, out: list) -> None:
        if not self.open:
            self.open = True
            self._event(out, "response.created", {"response": self.response})
            self._event(out, "response.in_progress", {"response": self.response})

    def opened(self, headers) -> None:
        self.inner.opened(headers)

    def is_end(self, frame: bytes) -> bool:
        return self.inner.is_end(frame)

    def frame(self, frame: bytes) -> bytes | None:
        relayed = self.inner.frame(frame)
        self.usage = self.inner.usage
        return self._chunks(relayed) if relayed else None

    def _chunks(self, relayed: bytes) -> bytes | None:
        out: list[bytes] = []
        for piece in relayed.split(b"\n\n"):
            if not piece.startswith(b"data:"):
                continue
            try:
                chunk = orjson.loads(piece[5:])
            except orjson.JSONDecodeError:
                continue  # [DONE] and anything else that is not a chunk
            if isinstance(chunk, dict):
                self._chunk(chunk, out)
        return b"".join(out) or None

    def _chunk(self, chunk: dict, out: list) -> None:
        self._start(out)
        if isinstance(chunk.get("usage"), dict):
            self.usage_raw = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text(content, out)
            if isinstance(delta.get("refusal"), str):
                self.refusal += delta["refusal"]
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool(call, out)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def _text(self, content: str, out: list) -> None:
        if self.text_id is None:
            self.text_id = new_id("msg")
            self.text_index = len(self.items)
            self.items.append("text")
            item = {**message_item(self.text_id, "", None, "in_progress"), "content": []}
            self._event(
                out, "response.output_item.added", {"output_index": self.text_index, "item": item}
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            self._event(out, "response.content_part.added", {**self._at(), "part": part})
        self.text += content
        self.out_bytes += len(content.encode())
        self._event(
            out, "response.output_text.delta", {**self._at(), "delta": content, "logprobs": []}
        )

    def _at(self) -> dict:
        return {"item_id": self.text_id, "output_index": self.text_index, "content_index": 0}

    def _tool(self, delta: dict, out: list) -> None:
        index = delta.get("index", 0)
        function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
        call = self.calls.get(index)
        if call is None:
            call = _Call(delta.get("id") or new_id("call"), function.get("name") or "", 0)
            call.output_index = len(self.items)
            self.calls[index] = call
            self.items.append(call)
            item = call_item(call.item_id, call.call_id, call.name, "", "in_progress")
            self._event(
                out, "response.output_item.added", {"output_index": call.output_index, "item": item}
            )
        elif function.get("name"):
            call.name += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments += arguments
            self.out_bytes += len(arguments.encode())
            self._event(
                out,
                "response.function_call_arguments.delta",
                {"item_id": call.item_id, "output_index": call.output_index, "delta": arguments},
            )

    def _final(self) -> bytes:
        """The items' done events and the last event, with the whole Response."""
        out: list[bytes] = []
        self._start(out)
        status = "incomplete" if self.finish in INCOMPLETE else "completed"
        output = []
        for entry in self.items:
            if entry == "text":
                item = message_item(self.text_id, self.text, self.refusal or None, status)
                part = item["content"][0]
                self._event(
                    out,
                    "response.output_text.done",
                    {**self._at(), "text": self.text, "logprobs": []},
                )
                self._event(out, "response.content_part.done", {**self._at(), "part": part})
                at = self.text_index
            else:
                item = call_item(entry.item_id, entry.call_id, entry.name, entry.arguments, status)
                self._event(
                    out,
                    "response.function_call_arguments.done",
                    {
                        "item_id": entry.item_id,
                        "output_index": entry.output_index,
                        "name": entry.name,
                        "arguments": entry.arguments,
                    },
                )
                at = entry.output_index
            self._event(out, "response.output_item.done", {"output_index": at, "item": item})
            output.append(item)
        response = self.response
        response["output"] = output
        _finish(response, self.finish, responses_usage(self.usage_raw))
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        self._event(out, kind, {"response": response})
        return b"".join(out)

    def closing(self) -> bytes:
        # What the inner codec still has to say (a translation may hold its last chunk), then
        # the end of the Response.
        tail = self.inner.closing()
        head = self._chunks(tail) if tail else None
        return (head or b"") + self._final()

    def error_frame(self, error: GatewayError) -> bytes:
        frame = error_event(error, self.seq)
        self.seq += 1
        return frame

    def unfinished(self) -> bytes:
        # A chat server that ends without [DONE]: the Response ends with what came.
        return self._final()
