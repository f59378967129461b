"""Anthropic Messages <-> OpenAI chat completions, both ways, registered as translations.

MessagesToChat: a Messages call to an OpenAI-compatible route. ChatToMessages: a chat call to
an upstream speaking Messages (Anthropic). Requests, unary answers, streams, upstream 4xx
errors (in the client's shape) and usage are translated; the charge always comes from the
upstream's own usage in its own shape (proxy.usage), never from the translated copy.

Fields (decided here, documented in the README):
  Messages -> chat: system (string or text blocks) becomes the first system message; text,
  image (base64 or URL), tool_use and tool_result blocks become content parts, tool_calls and
  tool messages; tools/tool_choice (auto, any -> required, tool, none;
  disable_parallel_tool_use -> parallel_tool_calls false), stop_sequences -> stop, max_tokens
  -> max_completion_tokens, metadata.user_id -> user; temperature, top_p and top_k are passed
  as is (an upstream that knows no top_k refuses it itself). Dropped: cache_control marks,
  thinking blocks of earlier turns, `thinking`, `service_tier`. Any other field, a server tool
  (a tool with a `type`), a document block or an image inside a tool_result is a 400 naming it.
  Chat -> Messages: system and developer messages (anywhere) join `system`; user content
  parts text and image_url (data: URLs as base64 sources, others as url sources); assistant
  tool_calls -> tool_use blocks; tool messages -> tool_result blocks in the next user turn;
  consecutive turns of one role are merged (Anthropic alternates); max_completion_tokens or
  max_tokens, else the route's max_out (Anthropic requires it); stop -> stop_sequences; tools,
  tool_choice (required -> any), parallel_tool_calls false -> disable_parallel_tool_use; user
  -> metadata.user_id; temperature, top_p. n > 1 is refused (Anthropic has no n). Dropped:
  stream_options (include_usage is honoured by the gateway), metadata, store, seed,
  service_tier, zero frequency/presence penalties, logprobs false, response_format text. Any
  other field is a 400 naming it.
Stop reasons: end_turn / stop_sequence / pause_turn -> stop, max_tokens -> length, tool_use ->
tool_calls, refusal -> content_filter, and back (stop -> end_turn, length -> max_tokens,
tool_calls -> tool_use, content_filter -> refusal).
Usage: chat usage.prompt_tokens is every input token, cached ones included; Anthropic's
input_tokens excludes cache reads and writes: input_tokens = prompt - cached, and back
prompt_tokens = input + cache reads + cache writes, cached_tokens = cache reads.
"""

import time

import orjson

from proxy import usage as usages
from proxy.apis.base import Exchange, StreamCodec, register_translation
from proxy.apis.messages import (
    MESSAGE_STOP,
    StreamUsage,
    error_event,
    error_object,
    event_of,
    is_message_stop,
    output_bytes,
    sse,
)
from proxy.apis.openai import estimate_output
from proxy.errors import GatewayError
from proxy.tokens import estimate_text_tokens

TO_CHAT_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
TO_MESSAGES_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

MESSAGES_MAPPED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    }
)
MESSAGES_DROPPED = frozenset({"thinking", "service_tier"})
CHAT_MAPPED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "temperature",
        "top_p",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "n",
    }
)
CHAT_DROPPED = frozenset({"stream_options", "metadata", "store", "seed", "service_tier"})


def unsupported(field: str, where: str) -> GatewayError:
    return GatewayError(
        400,
        f"'{field}' is not supported when the model is served {where}; remove it or use "
        "another model.",
        "invalid_request_error",
        "unsupported_parameter",
        field,
    )


def invalid(field: str, message: str) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_value", field)


def loads_arguments(arguments, field: str) -> dict:
    """A tool call's JSON arguments as the object Anthropic's tool_use input is."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise invalid(field, f"'{field}' must be a JSON object.") from None
    if not isinstance(parsed, dict):
        raise invalid(field, f"'{field}' must be a JSON object.")
    return parsed


def arguments_of(text) -> dict:
    """An upstream's tool call arguments (already generated: never an error)."""
    try:
        parsed = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {"_raw": text}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


def openai_usage(u: usages.Usage | None) -> dict | None:
    if u is None:
        return None
    return {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
    }


def anthropic_usage(u: usages.Usage | None) -> dict:
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": max(u.input - u.cache_read - u.cache_write, 0),
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": u.output,
    }


# --- Messages -> chat completions -------------------------------------------------------


def image_part(source, field: str) -> dict:
    if not isinstance(source, dict):
        raise invalid(field, f"'{field}' must be an image source object.")
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise invalid(field, f"'{field}' needs a media_type and base64 data.")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise invalid(field, f"'{field}' must be a base64 or url image source.")


def tool_result_text(content, field: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise invalid(field, f"'{field}' must be a string or text blocks.")
    texts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise unsupported(f"{field}.{i}", "by an OpenAI-compatible upstream (text only)")
        texts.append(block.get("text") or "")
    return "\n".join(texts)


def chat_messages(request: dict) -> list[dict]:
    out: list[dict] = []
    system = request.get("system")
    if system:
        text = system if isinstance(system, str) else "\n\n".join(b["text"] for b in system)
        out.append({"role": "system", "content": text})
    for i, message in enumerate(request["messages"]):
        role, content = message["role"], message["content"]
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        parts, calls, results = [], [], []
        for j, block in enumerate(content):
            field = f"messages.{i}.content.{j}"
            kind = block["type"]
            if kind == "text":
                parts.append({"type": "text", "text": block["text"]})
            elif kind == "image":
                parts.append(image_part(block.get("source"), f"{field}.source"))
            elif kind == "tool_use":
                calls.append(
                    {
                        "id": block["id"],
                        "type": "function",
                        "function": {
                            "name": block["name"],
                            "arguments": orjson.dumps(block["input"]).decode(),
                        },
                    }
                )
            elif kind == "tool_result":
                text = tool_result_text(block.get("content"), f"{field}.content")
                if block.get("is_error"):
                    text = "Error: " + text
                results.append(
                    {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}
                )
            elif kind in ("thinking", "redacted_thinking"):
                continue  # an earlier turn's reasoning: no chat equivalent
            else:
                raise unsupported(field, "by an OpenAI-compatible upstream")
        out.extend(results)  # right after the assistant turn that called the tools
        if role == "assistant":
            turn: dict = {"role": "assistant", "content": "".join(p["text"] for p in parts) or None}
            if calls:
                turn["tool_calls"] = calls
            if turn["content"] is not None or calls:
                out.append(turn)
        elif parts:
            only_text = all(p["type"] == "text" for p in parts)
            out.append(
                {
                    "role": "user",
                    "content": "".join(p["text"] for p in parts) if only_text else parts,
                }
            )
    return out


def chat_tools(tools: list) -> list[dict]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            raise unsupported(f"tools.{i}", "by an OpenAI-compatible upstream (server tool)")
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: dict):
    kind = choice["type"]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def chat_request(request: dict, route, stream: bool) -> dict:
    for field in request:
        if field not in MESSAGES_MAPPED and field not in MESSAGES_DROPPED:
            raise unsupported(field, "by an OpenAI-compatible upstream")
    body: dict = {
        "model": route.upstream_model,
        "messages": chat_messages(request),
        "max_completion_tokens": request["max_tokens"],
    }
    for field in ("temperature", "top_p", "top_k"):
        if request.get(field) is not None:
            body[field] = request[field]
    if request.get("stop_sequences"):
        body["stop"] = request["stop_sequences"]
    if request.get("tools"):
        body["tools"] = chat_tools(request["tools"])
        choice = request.get("tool_choice")
        if choice:
            body["tool_choice"] = chat_tool_choice(choice)
            if choice.get("disable_parallel_tool_use") is True:
                body["parallel_tool_calls"] = False
    user = (request.get("metadata") or {}).get("user_id")
    if user:
        body["user"] = user
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def message_from_chat(payload: dict, public: str) -> tuple[dict, usages.Usage | None]:
    choices = payload.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": arguments_of(function.get("arguments")),
            }
        )
    used = usages.from_openai(payload.get("usage"))
    answer = {
        "id": "msg_" + str(payload.get("id") or ""),
        "type": "message",
        "role": "assistant",
        "model": public,
        "content": content,
        "stop_reason": TO_MESSAGES_STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(used),
    }
    return answer, used


def anthropic_error_from(status: int, raw: bytes, rid: str) -> bytes:
    """An OpenAI-shaped upstream error in Anthropic's shape."""
    message, code = raw.decode(errors="replace")[:500] or f"HTTP {status}", None
    try:
        parsed = orjson.loads(raw)
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = err.get("code") if isinstance(err.get("code"), str) else None
    except orjson.JSONDecodeError:
        pass
    return orjson.dumps(error_object(GatewayError(status, message, "", code), rid))


class ChatToMessagesStream(StreamCodec):
    """An OpenAI chat stream as Anthropic events: message_start on the first chunk, one
    content block per text run or tool call, message_delta and message_stop at [DONE]."""

    __slots__ = ("block", "index", "rid", "started", "stop_reason", "tools")

    def __init__(self, public: str, rid: str):
        super().__init__(public)
        self.rid = rid
        self.started = False
        self.block: str | int | None = None  # the open block: "text", or a tool call's index
        self.index = -1  # the open block's index in the message
        self.stop_reason: str | None = None
        self.tools: set = set()

    def is_end(self, frame: bytes) -> bool:
        return frame.startswith(b"data:") and frame[5:].strip() == b"[DONE]"

    def _start(self, chunk_id) -> bytes:
        self.started = True
        self.template = {"id": chunk_id}
        message = {
            "id": "msg_" + str(chunk_id or ""),
            "type": "message",
            "role": "assistant",
            "model": self.public,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self.block is None:
            return b""
        self.block = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _open(self, key, block: dict) -> bytes:
        out = self._close_block()
        self.block = key
        self.index += 1
        return out + sse(
            "content_block_start",
            {"type": "content_block_start", "index": self.index, "content_block": block},
        )

    def _delta(self, delta: dict) -> bytes:
        return sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": self.index, "delta": delta},
        )

    def frame(self, frame: bytes) -> bytes | None:
        if not frame.startswith(b"data:"):
            return None
        try:
            chunk = orjson.loads(frame[5:].strip())
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict):
            return None
        out = b""
        if not self.started:
            out += self._start(chunk.get("id"))
        if isinstance(chunk.get("error"), dict):
            err = chunk["error"]
            error = GatewayError(502, str(err.get("message") or "upstream error"), "", None)
            return out + error_event(error, self.rid)
        if chunk.get("usage"):
            self.usage = usages.from_openai(chunk["usage"])
        choices = chunk.get("choices") or ()
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            if self.block != "text":
                out += self._open("text", {"type": "text", "text": ""})
            self.out_bytes += len(text)
            out += self._delta({"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            key = call.get("index", 0)
            function = call.get("function") or {}
            if key not in self.tools:
                self.tools.add(key)
                name = function.get("name") or ""
                self.out_bytes += len(name)
                block = {"type": "tool_use", "id": call.get("id") or "", "name": name, "input": {}}
                out += self._open(key, block)
            arguments = function.get("arguments")
            if arguments and key == self.block:
                self.out_bytes += len(arguments)
                out += self._delta({"type": "input_json_delta", "partial_json": arguments})
        if choice.get("finish_reason"):
            self.stop_reason = TO_MESSAGES_STOP.get(choice["finish_reason"], "end_turn")
        return out or None

    def closing(self) -> bytes:
        out = b"" if self.started else self._start("")
        out += self._close_block()
        usage = anthropic_usage(self.usage)
        delta = {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None}
        out += sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + MESSAGE_STOP

    def unfinished(self) -> bytes:
        if self.stop_reason is not None:
            return self.closing()  # a server that ends without [DONE] after its last chunk
        return self.error_frame(
            GatewayError(502, "The upstream ended the stream early.", "upstream_error", None)
        )

    def error_frame(self, error: GatewayError) -> bytes:
        return error_event(error, self.rid)


class MessagesToChat(Exchange):
    upstream = "chat"

    def body(self, call, route) -> bytes:
        return orjson.dumps(chat_request(call.request, route, call.stream))

    def unary(self, call, route, payload):
        if not isinstance(payload, dict):
            payload = {}
        answer, used = message_from_chat(payload, route.name)
        return orjson.dumps(answer), used, lambda: estimate_output(payload)

    def codec(self, call, route) -> StreamCodec:
        return ChatToMessagesStream(route.name, call.rid)

    def error(self, status: int, raw: bytes) -> bytes:
        return anthropic_error_from(status, raw, "")


# --- chat completions -> Messages -------------------------------------------------------


def text_parts(content, field: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise invalid(field, f"'{field}' must be a string or an array of content parts.")
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise unsupported(f"{field}.{i}", "by an Anthropic upstream (text only here)")
        texts.append(str(part.get("text") or ""))
    return "\n".join(texts)


def anthropic_image(part: dict, field: str) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise invalid(field, f"'{field}.image_url.url' must be a URL or a data: URL.")
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media, _, encoding = header.partition(";")
        if encoding != "base64" or not data:
            raise invalid(field, f"'{field}' must be a base64 data: URL.")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def user_blocks(content, field: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid(field, f"'{field}' must be a string or an array of content parts.")
    blocks = []
    for i, part in enumerate(content):
        where = f"{field}.{i}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            blocks.append(anthropic_image(part, where))
        else:
            raise unsupported(where, "by an Anthropic upstream")
    return blocks


def anthropic_messages(messages) -> tuple[list[str], list[dict]]:
    """(system texts, alternating user/assistant turns)."""
    system: list[str] = []
    turns: list[dict] = []

    def add(role: str, blocks: list[dict]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(field, f"'{field}' must be a message object.")
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system.append(text_parts(content, f"{field}.content"))
        elif role == "user":
            add("user", user_blocks(content, f"{field}.content"))
        elif role == "assistant":
            blocks: list[dict] = []
            text = text_parts(content, f"{field}.content")
            if text:
                blocks.append({"type": "text", "text": text})
            for j, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise invalid(f"{field}.tool_calls[{j}]", "A tool call needs a function name.")
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or f"call_{i}_{j}"),
                        "name": function["name"],
                        "input": loads_arguments(
                            function.get("arguments"), f"{field}.tool_calls[{j}].function.arguments"
                        ),
                    }
                )
            add("assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or ""),
                "content": text_parts(content, f"{field}.content"),
            }
            add("user", [result])
        else:
            raise invalid(f"{field}.role", f"'{field}.role' {role!r} is not supported here.")
    if not turns:
        raise invalid("messages", "'messages' needs at least one user or assistant message.")
    return system, turns


def anthropic_tools(tools) -> list[dict]:
    if not isinstance(tools, list):
        raise invalid("tools", "'tools' must be an array.")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise unsupported(f"tools[{i}]", "by an Anthropic upstream (function tools only)")
        if not isinstance(function.get("name"), str):
            raise invalid(f"tools[{i}].function.name", "A tool needs a function name.")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        entry = {"name": function["name"], "input_schema": schema}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def anthropic_tool_choice(choice) -> dict:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return {"type": "tool", "name": choice["function"]["name"]}
    raise invalid("tool_choice", "'tool_choice' must be auto, none, required or a function.")


def messages_request(request: dict, route, stream: bool) -> dict:
    for field, value in request.items():
        if field in CHAT_MAPPED or field in CHAT_DROPPED:
            continue
        harmless = (
            (field in ("frequency_penalty", "presence_penalty") and not value)
            or (field == "logprobs" and not value)
            or (
                field == "response_format"
                and isinstance(value, dict)
                and value.get("type") == "text"
            )
        )
        if not harmless:
            raise unsupported(field, "by an Anthropic upstream")
    n = request.get("n")
    if n is not None and n != 1:
        raise GatewayError(
            400,
            "'n' must be 1 for this model: Anthropic models answer one choice per call; "
            "send n separate requests.",
            "invalid_request_error",
            "unsupported_parameter",
            "n",
        )
    system, turns = anthropic_messages(request.get("messages") or [])
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        max_tokens = route.max_out
    body: dict = {"model": route.upstream_model, "max_tokens": max_tokens, "messages": turns}
    if system:
        body["system"] = "\n\n".join(system)
    for field in ("temperature", "top_p"):
        if request.get(field) is not None:
            body[field] = request[field]
    stop = request.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.get("tools"):
        body["tools"] = anthropic_tools(request["tools"])
        choice = request.get("tool_choice")
        tool_choice = anthropic_tool_choice(choice) if choice is not None else None
        if request.get("parallel_tool_calls") is False:
            tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    if isinstance(request.get("user"), str) and request["user"]:
        body["metadata"] = {"user_id": request["user"]}
    if stream:
        body["stream"] = True
    return body


def completion_from_message(payload: dict, public: str) -> tuple[dict, usages.Usage | None]:
    text, calls = [], []
    for block in payload.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id") or "",
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    used = usages.from_anthropic(payload.get("usage"))
    completion = {
        "id": "chatcmpl-" + str(payload.get("id") or ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": TO_CHAT_STOP.get(payload.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": openai_usage(used),
    }
    return completion, used


def openai_error_from(status: int, raw: bytes) -> bytes:
    """An Anthropic-shaped upstream error in OpenAI's shape."""
    message, kind = raw.decode(errors="replace")[:500] or f"HTTP {status}", "invalid_request_error"
    try:
        parsed = orjson.loads(raw)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            kind = str(err.get("type") or kind)
    except orjson.JSONDecodeError:
        pass
    return GatewayError(status, message, kind, kind).body()


class MessagesToChatStream(StreamCodec):
    """An Anthropic stream as OpenAI chat chunks; the usage chunk (include_usage) and [DONE]
    follow message_stop, after the settlement."""

    __slots__ = ("created", "id", "raw_usage", "tally", "tools", "wants_usage")

    def __init__(self, public: str, wants_usage: bool):
        super().__init__(public)
        self.wants_usage = wants_usage
        self.raw_usage: dict | None = None  # in OpenAI's shape, for the response cache
        self.tally = StreamUsage()
        self.id = ""
        self.created = int(time.time())
        self.tools: dict[int, int] = {}  # content block index -> tool call index

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.public,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def is_end(self, frame: bytes) -> bool:
        return is_message_stop(frame)

    def frame(self, frame: bytes) -> bytes | None:
        event, data = event_of(frame)
        if data is None:
            return None
        out = None
        if event == b"content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                self.out_bytes += len(delta["text"])
                out = self._chunk({"content": delta["text"]})
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                piece = delta["partial_json"]
                self.out_bytes += len(piece)
                index = self.tools.get(data.get("index"), 0)
                out = self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                )
            elif delta.get("type") == "thinking_delta":
                self.out_bytes += len(delta.get("thinking") or "")
        elif event == b"content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools[data.get("index")] = len(self.tools)
                name = block.get("name") or ""
                self.out_bytes += len(name)
                call = {
                    "index": index,
                    "id": block.get("id") or "",
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                out = self._chunk({"tool_calls": [call]})
        elif event == b"message_start":
            message = data.get("message") or {}
            self.id = "chatcmpl-" + str(message.get("id") or "")
            self.template = {"id": self.id, "object": "chat.completion.chunk", "model": self.public}
            self.tally.add(message.get("usage"))
            out = self._chunk({"role": "assistant", "content": ""})
        elif event == b"message_delta":
            self.tally.add(data.get("usage"), final=True)
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                out = self._chunk({}, TO_CHAT_STOP.get(reason, "stop"))
        elif event == b"error":
            err = data.get("error") or {}
            error = GatewayError(
                502,
                str(err.get("message") or "upstream error"),
                str(err.get("type") or "upstream_error"),
                "upstream_error",
            )
            out = b"data: " + error.body() + b"\n\n"
        self.usage = self.tally.usage(self.out_bytes)
        return out

    def closing(self) -> bytes:
        out = b""
        self.raw_usage = openai_usage(self.usage)
        if self.wants_usage:
            chunk = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.public,
                "choices": [],
                "usage": self.raw_usage,
            }
            out = b"data: " + orjson.dumps(chunk) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def error_frame(self, error: GatewayError) -> bytes:
        return b"data: " + error.body() + b"\n\n"

    def broken(self, error: GatewayError) -> bytes:
        return b"data: " + error.body() + b"\n\ndata: [DONE]\n\n"


class ChatToMessages(Exchange):
    upstream = "messages"

    def body(self, call, route) -> bytes:
        return orjson.dumps(messages_request(call.request, route, call.stream))

    def unary(self, call, route, payload):
        if not isinstance(payload, dict):
            payload = {}
        completion, used = completion_from_message(payload, route.name)
        content = payload.get("content")
        return (
            orjson.dumps(completion),
            used,
            lambda: estimate_text_tokens(output_bytes(content)),
        )

    def codec(self, call, route) -> StreamCodec:
        return MessagesToChatStream(route.name, call.wants_usage)

    def error(self, status: int, raw: bytes) -> bytes:
        return openai_error_from(status, raw)


register_translation("messages", "chat", MessagesToChat())
register_translation("chat", "messages", ChatToMessages())
