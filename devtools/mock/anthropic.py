"""Anthropic Messages (POST /v1/messages, unary and streamed) and POST /v1/messages/count_tokens.

Shapes follow Anthropic's API reference: a `message` object with content blocks, stop_reason,
stop_sequence and usage; streams are named SSE events (message_start, content_block_start,
ping, content_block_delta, content_block_stop, message_delta, message_stop); errors are
{"type": "error", "error": {"type", "message"}, "request_id"} with Anthropic's error type for
the status (ERROR_TYPES). The rules (tokens, cache usage, tool use) are in the docstring of
devtools.mock_upstream, "Anthropic Messages".
"""

from __future__ import annotations

from typing import Any

import orjson

from devtools.mock import schema
from devtools.mock.core import (
    MESSAGE_OVERHEAD_TOKENS,
    Knobs,
    Request,
    RequestError,
    content_text,
    count_tokens,
    natural_reply,
    new_id,
    pieces_of,
    send_json,
    sse,
    stream,
    truncate,
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking")


def error_body(status: int, message: str) -> bytes:
    error = {"type": ERROR_TYPES.get(status, "api_error"), "message": message}
    return orjson.dumps({"type": "error", "error": error, "request_id": new_id("req", "_")})


def _invalid(message: str) -> RequestError:
    return RequestError(400, message)


def _block_text(block: dict, where: str) -> str:
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _invalid(f"{where}.text: Field required")
        return block["text"]
    if kind == "image":
        source = block.get("source")
        ok = isinstance(source, dict) and (
            (source.get("type") == "base64" and isinstance(source.get("data"), str))
            or (source.get("type") == "url" and isinstance(source.get("url"), str))
        )
        if not ok:
            raise _invalid(f"{where}.source: expected a base64 (media_type, data) or url source")
        return ""
    if kind == "tool_use":
        if not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict):
            raise _invalid(f"{where}: a tool_use block needs an id, a name and an input object")
        return block["name"] + " " + orjson.dumps(block["input"]).decode()
    if kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            raise _invalid(f"{where}.tool_use_id: Field required")
        return content_text(block.get("content"))
    if kind in _BLOCK_TYPES:
        return block.get("thinking", "") if kind == "thinking" else ""
    expected = ", ".join(f"'{t}'" for t in _BLOCK_TYPES)
    raise _invalid(f"{where}: Input tag {kind!r} found using 'type' does not match {expected}")


def _message_text(content: Any, where: str) -> tuple[str, bool]:
    """(the text the tokenizer counts, whether the content holds a tool_result)."""
    if isinstance(content, str):
        return content, False
    if not isinstance(content, list):
        raise _invalid(f"{where}: Input should be a valid string or a list of content blocks")
    texts = []
    has_result = False
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            raise _invalid(f"{where}.{index}: Input should be an object")
        texts.append(_block_text(block, f"{where}.{index}"))
        has_result = has_result or block.get("type") == "tool_result"
    return " ".join(texts), has_result


def _prompt(payload: dict) -> tuple[int, str, bool]:
    """(prompt tokens, the text the reply echoes, whether the last turn is a tool's result)."""
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise _invalid("model: Field required")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: Field required (a non-empty list of messages)")
    tokens = 0
    system = payload.get("system")
    if system is not None:
        if isinstance(system, list) and any(
            not isinstance(b, dict) or b.get("type") != "text" for b in system
        ):
            raise _invalid("system: Input should be a valid string or a list of text blocks")
        text, _ = _message_text(system, "system")
        tokens += count_tokens(text) + MESSAGE_OVERHEAD_TOKENS
    echo = ""
    answered = False
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        text, has_result = _message_text(message.get("content"), f"{where}.content")
        tokens += count_tokens(text) + MESSAGE_OVERHEAD_TOKENS
        if message["role"] == "user":
            echo = text
        answered = message["role"] == "user" and has_result
    return tokens, echo, answered


def _tool(payload: dict, answered: bool) -> tuple[str, dict] | None:
    """(name, input_schema) of the tool the mock uses, or None for a text reply."""
    tools = payload.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    custom: dict[str, dict] = {}
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{index}.name: Field required")
        if tool.get("type") in (None, "custom"):
            input_schema = tool.get("input_schema")
            if not isinstance(input_schema, dict):
                raise _invalid(f"tools.{index}.input_schema: Field required")
            custom.setdefault(tool["name"], input_schema)
    choice = payload.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise _invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if kind == "none" or answered or not custom:
        return None
    if kind == "tool":
        name = choice.get("name")
        if name not in custom:
            raise _invalid(f"tool_choice.name: no tool named {name!r} in tools")
        return name, custom[name]
    name = next(iter(custom))
    return name, custom[name]


def _stop_sequences(payload: dict) -> list[str]:
    sequences = payload.get("stop_sequences") or []
    if not isinstance(sequences, list) or not all(isinstance(s, str) and s for s in sequences):
        raise _invalid("stop_sequences: Input should be a list of non-empty strings")
    return sequences


def usage(prompt: int, output: int, knobs: Knobs) -> dict[str, Any]:
    """Anthropic usage: input_tokens excludes the cache reads and writes."""
    read = min(knobs.cached_tokens or 0, prompt)
    write = min(knobs.cache_write_tokens or 0, prompt - read)
    return {
        "input_tokens": prompt - read - write,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output,
        "service_tier": "standard",
    }


async def messages(req: Request) -> None:
    payload, knobs = req.payload, req.knobs
    prompt, echo, answered = _prompt(payload)
    max_tokens = payload.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens: Field required")
    if type(max_tokens) is not int or max_tokens < 1:
        raise _invalid("max_tokens: Input should be an integer of at least 1")
    sequences = _stop_sequences(payload)
    tool = _tool(payload, answered)
    stop_sequence = None
    if tool is not None:
        name, input_schema = tool
        arguments = schema.sample_object(input_schema)
        block: dict = {"type": "tool_use", "id": new_id("toolu", "_"), "name": name}
        pieces = pieces_of(orjson.dumps(arguments).decode())
        output = count_tokens(name) + len(pieces)
        stop_reason = "tool_use"
        final_block = {**block, "input": arguments}
    else:
        cut_pieces, cut = truncate(natural_reply(echo, knobs), max_tokens)
        text = "".join(cut_pieces)
        found = [(text.find(s), s) for s in sequences if s in text]
        if found:
            position, stop_sequence = min(found)
            text = text[:position]
            stop_reason = "stop_sequence"
        else:
            stop_reason = "max_tokens" if cut else "end_turn"
        pieces = pieces_of(text)
        output = count_tokens(text)
        block = {"type": "text", "text": ""}
        final_block = {"type": "text", "text": text}
    model = payload["model"]
    message = {
        "id": new_id("msg", "_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [final_block],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(prompt, output, knobs),
    }
    if payload.get("stream") is not True:
        await send_json(req.send, 200, orjson.dumps(message))
        return
    # As Anthropic does: message_start counts the prompt and a first output token,
    # message_delta carries the final (cumulative) usage.
    start_usage = usage(prompt, 1, knobs)
    delta_usage = {
        k: v for k, v in message["usage"].items() if k not in ("cache_creation", "service_tier")
    }
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = start_usage
    if tool is not None:
        block = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        deltas = [{"type": "text_delta", "text": p} for p in pieces]
    frames = [
        sse("message_start", {"type": "message_start", "message": start}),
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        sse("ping", {"type": "ping"}),
    ]
    frames += [
        sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
        for d in deltas
    ]
    frames += [
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": delta_usage,
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    await stream(req.send, req.receive, frames, knobs)


async def count_tokens_route(req: Request) -> None:
    prompt, _, _ = _prompt(req.payload)
    _tool(req.payload, False)  # validated as /v1/messages would; tools count no tokens
    await send_json(req.send, 200, orjson.dumps({"input_tokens": prompt}))
