"""OpenAI Responses: POST /v1/responses (unary and streamed), GET and DELETE /v1/responses/{id}.

A response is kept (unless "store": false) in a bounded in-memory store, per process, oldest
dropped past STORE_LIMIT: enough for previous_response_id chains in tests and `make run`, and
never a memory leak under a load test. The rules (tokens, tools, events) are in the docstring
of devtools.mock_upstream, "OpenAI Responses".
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import orjson

from devtools.mock import schema
from devtools.mock.core import (
    MESSAGE_OVERHEAD_TOKENS,
    Request,
    RequestError,
    cached_and_reasoning,
    count_tokens,
    natural_reply,
    new_id,
    pieces_of,
    positive_int,
    send_json,
    sse,
    stream,
    truncate,
)
from devtools.mock.openai import chosen_function, require_model

STORE_LIMIT = 1000


class _Stored:
    __slots__ = ("context_tokens", "echo", "response")

    def __init__(self, response: dict, context_tokens: int, echo: str):
        self.response = response
        self.context_tokens = context_tokens  # what a follow-up's input carries over
        self.echo = echo


_store: OrderedDict[str, _Stored] = OrderedDict()


def _part_text(part: Any, where: str) -> str:
    if not isinstance(part, dict):
        raise RequestError(400, f"Invalid '{where}': expected an object.", param=where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise RequestError(
                400, f"Missing required parameter: '{where}.text'.", param=f"{where}.text"
            )
        return part["text"]
    if kind in ("input_image", "input_file", "input_audio", "refusal"):
        return part.get("refusal", "") if kind == "refusal" else ""
    raise RequestError(
        400,
        f"Invalid value for '{where}.type': {kind!r} is not a supported content part.",
        param=f"{where}.type",
        code="invalid_value",
    )


def _item_text(item: dict, where: str) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_part_text(p, f"{where}.content[{i}]") for i, p in enumerate(content))
    raise RequestError(
        400,
        f"Invalid '{where}.content': expected a string or an array of content parts.",
        param=f"{where}.content",
        code="invalid_type",
    )


def _input(raw: Any) -> tuple[int, str | None, bool]:
    """(input tokens of the items, the last user text, whether the last item is a tool output)."""
    if isinstance(raw, str):
        return count_tokens(raw) + MESSAGE_OVERHEAD_TOKENS, raw, False
    if not isinstance(raw, list) or not raw:
        raise RequestError(
            400,
            "Invalid 'input': expected a string or a non-empty array of input items.",
            param="input",
            code="invalid_value",
        )
    tokens = 0
    echo = None
    answered = False
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise RequestError(400, f"Invalid '{where}': expected an object.", param=where)
        kind = item.get("type", "message")
        answered = kind == "function_call_output"
        if kind == "message":
            text = _item_text(item, where)
            if item.get("role") == "user":
                echo = text
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(item.get("call_id"), str) or output is None:
                raise RequestError(
                    400,
                    f"Missing required parameter: '{where}.call_id' and '{where}.output'.",
                    param=where,
                    code="missing_required_parameter",
                )
            text = output if isinstance(output, str) else _item_text({"content": output}, where)
            echo = text
        elif kind == "function_call":
            text = f"{item.get('name', '')} {item.get('arguments', '')}"
        elif kind == "reasoning":
            text = ""
        else:
            raise RequestError(
                400,
                f"Invalid value for '{where}.type': {kind!r} is not supported by the mock.",
                param=f"{where}.type",
                code="invalid_value",
            )
        tokens += count_tokens(text) + MESSAGE_OVERHEAD_TOKENS
    return tokens, echo, answered


def _text_format(payload: dict) -> dict:
    text = payload.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    return fmt if isinstance(fmt, dict) else {"type": "text"}


def _reply_text(fmt: dict, natural: str) -> str:
    kind = fmt.get("type")
    if kind == "json_object":
        return orjson.dumps({"reply": natural}).decode()
    if kind == "json_schema":
        return orjson.dumps(schema.sample_object(fmt.get("schema", {}))).decode()
    if kind != "text":
        raise RequestError(
            400,
            "Invalid 'text.format.type': expected 'text', 'json_object' or 'json_schema'.",
            param="text.format.type",
            code="invalid_value",
        )
    return natural


async def create(req: Request) -> None:
    payload, knobs = req.payload, req.knobs
    model = require_model(payload)
    if "input" not in payload:
        raise RequestError(
            400,
            "Missing required parameter: 'input'.",
            param="input",
            code="missing_required_parameter",
        )
    previous_id = payload.get("previous_response_id")
    previous = None
    if previous_id is not None:
        previous = _store.get(previous_id) if isinstance(previous_id, str) else None
        if previous is None:
            raise RequestError(
                400,
                f"Previous response with id '{previous_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
    instructions = payload.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RequestError(400, "Invalid 'instructions': expected a string.", param="instructions")
    item_tokens, echo, answered = _input(payload["input"])
    carried = previous.context_tokens if previous else 0
    input_tokens = carried + item_tokens
    if instructions:
        input_tokens += count_tokens(instructions) + MESSAGE_OVERHEAD_TOKENS
    if echo is None:
        echo = previous.echo if previous else ""
    limit = positive_int(payload, "max_output_tokens")
    function = chosen_function(
        payload.get("tools"), payload.get("tool_choice"), answered=answered, nested=False
    )
    fmt = _text_format(payload)
    incomplete = None
    if function is not None:
        name, parameters = function
        arguments = orjson.dumps(schema.sample_object(parameters)).decode()
        pieces = pieces_of(arguments)
        visible = count_tokens(name) + len(pieces)
        item: dict[str, Any] = {
            "type": "function_call",
            "id": new_id("fc", "_"),
            "call_id": new_id("call", "_"),
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }
    else:
        natural = "".join(natural_reply(echo, knobs))
        pieces, cut = truncate(pieces_of(_reply_text(fmt, natural)), limit)
        visible = len(pieces)
        if cut:
            incomplete = {"reason": "max_output_tokens"}
        text = "".join(pieces)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = {
            "type": "message",
            "id": new_id("msg", "_"),
            "status": "incomplete" if cut else "completed",
            "role": "assistant",
            "content": [part],
        }
    cached, reasoning = cached_and_reasoning(knobs, input_tokens)
    output_tokens = visible + reasoning
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }
    store = payload.get("store", True) is not False
    now = int(time.time())
    response = {
        "id": new_id("resp", "_"),
        "object": "response",
        "created_at": now,
        "status": "incomplete" if incomplete else "completed",
        "completed_at": None if incomplete else now,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": instructions,
        "max_output_tokens": limit,
        "model": model,
        "output": [item],
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": previous_id,
        "reasoning": {"effort": None, "summary": None},
        "store": store,
        "temperature": payload.get("temperature", 1.0),
        "text": {"format": fmt},
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools") or [],
        "top_p": payload.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": payload.get("metadata") or {},
    }
    if store:
        # What a follow-up carries: this input (instructions are not carried) and the output.
        _store[response["id"]] = _Stored(response, carried + item_tokens + visible, echo)
        while len(_store) > STORE_LIMIT:
            _store.popitem(last=False)
    if payload.get("stream") is not True:
        await send_json(req.send, 200, orjson.dumps(response))
        return
    await stream(req.send, req.receive, _frames(response, item, pieces), knobs)


def _frames(response: dict, item: dict, pieces: tuple[str, ...]) -> list[bytes]:
    events: list[dict] = []
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    pending["completed_at"] = None
    events.append({"type": "response.created", "response": pending})
    events.append({"type": "response.in_progress", "response": pending})
    item_id = item["id"]
    where = {"item_id": item_id, "output_index": 0}
    if item["type"] == "function_call":
        added = {**item, "arguments": "", "status": "in_progress"}
        events.append({"type": "response.output_item.added", "output_index": 0, "item": added})
        events += [
            {"type": "response.function_call_arguments.delta", **where, "delta": p} for p in pieces
        ]
        events.append(
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        )
    else:
        part = item["content"][0]
        added = {**item, "status": "in_progress", "content": []}
        events.append({"type": "response.output_item.added", "output_index": 0, "item": added})
        empty = {**part, "text": ""}
        at = {**where, "content_index": 0}
        events.append({"type": "response.content_part.added", **at, "part": empty})
        events += [
            {"type": "response.output_text.delta", **at, "delta": p, "logprobs": []} for p in pieces
        ]
        events.append(
            {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []}
        )
        events.append({"type": "response.content_part.done", **at, "part": part})
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    events.append({"type": final, "response": response})
    return [sse(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(events)]


def _not_found(response_id: str) -> RequestError:
    return RequestError(404, f"Response with id '{response_id}' not found.")


async def retrieve(req: Request) -> None:
    stored = _store.get(req.params["id"])
    if stored is None:
        raise _not_found(req.params["id"])
    await send_json(req.send, 200, orjson.dumps(stored.response))


async def delete(req: Request) -> None:
    if _store.pop(req.params["id"], None) is None:
        raise _not_found(req.params["id"])
    body = {"id": req.params["id"], "object": "response", "deleted": True}
    await send_json(req.send, 200, orjson.dumps(body))
