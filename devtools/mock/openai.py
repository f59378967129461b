"""OpenAI chat completions, legacy completions, embeddings and the model list.

Chat beyond the plain reply (rules in devtools.mock_upstream's docstring, "Chat completions"):
`n` identical choices, a tool call when tools are offered, JSON content for response_format,
logprobs per generated token. The plain single-choice stream (the load-test path) builds its
frames from one pre-encoded template, so none of that costs it anything.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import time
from functools import lru_cache
from typing import Any

import orjson

from devtools.mock import schema
from devtools.mock.core import (
    MESSAGE_OVERHEAD_TOKENS,
    Knobs,
    Request,
    RequestError,
    cached_and_reasoning,
    content_text,
    count_tokens,
    natural_reply,
    new_id,
    pieces_of,
    positive_int,
    send_json,
    stream,
    truncate,
)

DEFAULT_EMBEDDING_DIMENSIONS = 8
MAX_EMBEDDING_DIMENSIONS = 4096
MAX_CHOICES = 128
MAX_TOP_LOGPROBS = 20
MODELS = ("mock-chat", "mock-embedding")

_SENTINEL = "\ue000mock-piece\ue000"
_SENTINEL_JSON = orjson.dumps(_SENTINEL)
_DONE_FRAME = b"data: [DONE]\n\n"
_ALTERNATIVES = (" lorem", " ipsum", " dolor", " sit", " amet")


def require_model(payload: dict) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "you must provide a model parameter")
    return model


def _stream_flags(payload: dict) -> tuple[bool, bool]:
    stream_ = payload.get("stream") is True
    options = payload.get("stream_options")
    if options is not None and not stream_:
        raise RequestError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return stream_, include_usage


def chat_usage(prompt: int, visible: int, knobs: Knobs) -> dict[str, Any]:
    """OpenAI usage: prompt_tokens includes the cached ones, completion_tokens the reasoning."""
    cached, reasoning = cached_and_reasoning(knobs, prompt)
    completion = visible + reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _limit(payload: dict) -> int | None:
    limit = positive_int(payload, "max_completion_tokens")
    return limit if limit is not None else positive_int(payload, "max_tokens")


def _choices_count(payload: dict) -> int:
    n = payload.get("n", 1)
    if n is None:
        return 1
    if type(n) is not int or not 1 <= n <= MAX_CHOICES:
        raise RequestError(
            400,
            f"Invalid 'n': expected an integer from 1 to {MAX_CHOICES}.",
            param="n",
            code="invalid_value",
        )
    return n


def chosen_function(
    tools: Any, choice: Any, *, answered: bool, nested: bool
) -> tuple[str, dict] | None:
    """(name, parameters schema) of the function the mock calls, or None for a text reply.

    `nested`: chat tools are {"type": "function", "function": {...}}, Responses tools are flat.
    `answered`: the conversation ends with a tool's result, which the mock answers in text.
    """
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise RequestError(400, "Invalid 'tools': expected an array.", param="tools")
    functions: dict[str, dict] = {}
    for index, tool in enumerate(tools):
        spec = tool.get("function") if nested and isinstance(tool, dict) else tool
        name = spec.get("name") if isinstance(spec, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(name, str)
        ):
            if isinstance(tool, dict) and tool.get("type") not in (None, "function"):
                continue  # built-in tools (web search and the like): the mock never calls them
            raise RequestError(
                400,
                f"Invalid 'tools[{index}]': expected a function tool with a name.",
                param=f"tools[{index}]",
                code="invalid_value",
            )
        params = spec.get("parameters")
        functions.setdefault(name, params if isinstance(params, dict) else {})
    if not functions or answered or choice == "none":
        return None
    if isinstance(choice, dict):
        spec = choice.get("function") if nested else choice
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in functions:
            raise RequestError(
                400,
                f"Invalid 'tool_choice': no function named {name!r} in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        return name, functions[name]
    if choice not in (None, "auto", "required"):
        raise RequestError(
            400,
            "Invalid 'tool_choice': expected 'none', 'auto', 'required' or a named function.",
            param="tool_choice",
            code="invalid_value",
        )
    name = next(iter(functions))
    return name, functions[name]


def _json_content(payload: dict, text: str) -> str | None:
    """The JSON text that response_format asks for, or None for plain text."""
    response_format = payload.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return orjson.dumps({"reply": text}).decode()
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise RequestError(
                400,
                "Missing required parameter: 'response_format.json_schema.name'.",
                param="response_format.json_schema.name",
                code="missing_required_parameter",
            )
        return orjson.dumps(schema.sample_object(spec.get("schema", {}))).decode()
    raise RequestError(
        400,
        "Invalid 'response_format.type': expected 'text', 'json_object' or 'json_schema'.",
        param="response_format.type",
        code="invalid_value",
    )


def _top_logprobs(payload: dict) -> int | None:
    """How many alternatives per token when logprobs are asked, else None."""
    top = payload.get("top_logprobs")
    if payload.get("logprobs") is not True:
        if top is not None:
            raise RequestError(
                400,
                "Invalid 'top_logprobs': 'logprobs' must be set to true to use it.",
                param="top_logprobs",
                code="invalid_value",
            )
        return None
    if top is None:
        return 0
    if type(top) is not int or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise RequestError(
            400,
            f"Invalid 'top_logprobs': expected an integer from 0 to {MAX_TOP_LOGPROBS}.",
            param="top_logprobs",
            code="invalid_value",
        )
    return top


def _logprob(token: str, value: float) -> dict:
    return {"token": token, "logprob": value, "bytes": list(token.encode())}


def logprob_entry(index: int, piece: str, top: int) -> dict:
    """Token `index`'s logprob, -0.01 to -0.07 in a cycle; alternatives 1.0 lower each."""
    value = -0.01 * (index % 7 + 1)
    alternatives = [piece] + [a for a in _ALTERNATIVES if a != piece]
    entry = _logprob(piece, value)
    entry["top_logprobs"] = [
        _logprob(alt, value - rank) for rank, alt in enumerate(alternatives[:top])
    ]
    return entry


def _tool_calls_tokens(calls: Any) -> int:
    """An assistant message's tool calls count their names and arguments."""
    tokens = 0
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            tokens += count_tokens(f"{function.get('name', '')} {function.get('arguments', '')}")
    return tokens


def _messages(payload: dict) -> tuple[int, str, str | None, Any]:
    """(prompt tokens, last message text, last user text, last role)."""
    messages = payload.get("messages")
    if messages is None:
        raise RequestError(
            400,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            400,
            "Invalid 'messages': expected a non-empty array of message objects.",
            param="messages",
            code="invalid_value",
        )
    prompt_tokens = 0
    last_user: str | None = None
    text = ""
    role = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(
                400,
                f"Invalid type for 'messages[{index}]': expected an object.",
                param=f"messages[{index}]",
                code="invalid_type",
            )
        text = content_text(message.get("content"))
        prompt_tokens += count_tokens(text) + MESSAGE_OVERHEAD_TOKENS
        calls = message.get("tool_calls")
        if calls:
            prompt_tokens += _tool_calls_tokens(calls)
        role = message.get("role")
        if role == "user":
            last_user = text
    return prompt_tokens, text, last_user, role


async def chat(req: Request) -> None:
    payload, knobs = req.payload, req.knobs
    model = require_model(payload)
    prompt_tokens, text, last_user, last_role = _messages(payload)
    if "echo-error" in model:
        raise RequestError(400, f"Could not process the message: {last_user or text}")
    stream_, include_usage = _stream_flags(payload)
    n = _choices_count(payload)
    limit = _limit(payload)
    top = _top_logprobs(payload)
    function = chosen_function(
        payload.get("tools"),
        payload.get("tool_choice"),
        answered=last_role == "tool",
        nested=True,
    )
    tool_call = None
    if function is not None:
        name, parameters = function
        arguments = orjson.dumps(schema.sample_object(parameters)).decode()
        tool_call = {"id": new_id("call", "_"), "type": "function", "name": name}
        pieces = pieces_of(arguments)
        visible = count_tokens(name) + len(pieces)
        finish = "tool_calls"
    else:
        pieces = natural_reply(text if last_user is None else last_user, knobs)
        if payload.get("response_format") is not None:
            json_text = _json_content(payload, "".join(pieces))
            if json_text is not None:
                pieces = pieces_of(json_text)
        pieces, cut = truncate(pieces, limit)
        visible = len(pieces)
        finish = "length" if cut else "stop"
    usage = chat_usage(prompt_tokens, visible * n, knobs)
    header = {
        "id": new_id("chatcmpl"),
        "object": "chat.completion.chunk" if stream_ else "chat.completion",
        "created": int(time.time()),
        "model": model,
    }
    if not stream_:
        if tool_call is not None:
            call = {
                "id": tool_call["id"],
                "type": "function",
                "function": {"name": tool_call["name"], "arguments": "".join(pieces)},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": "".join(pieces)}
        logprobs = None
        if top is not None and tool_call is None:
            content = [logprob_entry(i, piece, top) for i, piece in enumerate(pieces)]
            logprobs = {"content": content, "refusal": None}
        choices = [
            {"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish}
            for i in range(n)
        ]
        body = orjson.dumps({**header, "choices": choices, "usage": usage})
        await send_json(req.send, 200, body)
        return
    frames = _chat_frames(
        header, n, pieces, finish, tool_call, top, usage if include_usage else None
    )
    await stream(req.send, req.receive, frames, knobs)


def _chat_frames(
    header: dict,
    n: int,
    pieces: tuple[str, ...],
    finish: str,
    tool_call: dict | None,
    top: int | None,
    usage: dict | None,
) -> list[bytes]:
    """Role chunk per choice, then each piece for every choice, finish per choice, [usage]."""
    tail: dict[str, Any] = {} if usage is None else {"usage": None}

    def frame(choice: dict) -> bytes:
        return b"data: " + orjson.dumps({**header, "choices": [choice], **tail}) + b"\n\n"

    frames = []
    templates = []
    for i in range(n):
        if tool_call is None:
            first = {"role": "assistant", "content": ""}
            delta: dict = {"content": _SENTINEL}
        else:
            call = {
                "index": 0,
                "id": tool_call["id"],
                "type": "function",
                "function": {"name": tool_call["name"], "arguments": ""},
            }
            first = {"role": "assistant", "content": None, "tool_calls": [call]}
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": _SENTINEL}}]}
        frames.append(frame({"index": i, "delta": first, "logprobs": None, "finish_reason": None}))
        piece = {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
        # Every piece frame is the same bytes around the JSON-encoded piece: encode it once.
        templates.append(frame(piece).rpartition(_SENTINEL_JSON))
    if n == 1 and (top is None or tool_call is not None):
        before, _, after = templates[0]
        frames += [before + orjson.dumps(piece) + after for piece in pieces]
    elif top is None or tool_call is not None:
        for piece in pieces:
            encoded = orjson.dumps(piece)
            frames += [before + encoded + after for before, _, after in templates]
    else:
        for j, piece in enumerate(pieces):
            logprobs = {"content": [logprob_entry(j, piece, top)], "refusal": None}
            for i in range(n):
                choice = {
                    "index": i,
                    "delta": {"content": piece},
                    "logprobs": logprobs,
                    "finish_reason": None,
                }
                frames.append(frame(choice))
    for i in range(n):
        frames.append(frame({"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}))
    if usage is not None:
        frames.append(b"data: " + orjson.dumps({**header, "choices": [], "usage": usage}) + b"\n\n")
    frames.append(_DONE_FRAME)
    return frames


async def completions(req: Request) -> None:
    payload, knobs = req.payload, req.knobs
    model = require_model(payload)
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = prompt
    else:
        raise RequestError(
            400,
            "Invalid 'prompt': the mock accepts a string or a non-empty array of strings.",
            param="prompt",
            code="invalid_value",
        )
    stream_, include_usage = _stream_flags(payload)
    # One choice, answering the last prompt string; prompt_tokens counts them all.
    pieces, cut = truncate(natural_reply(prompts[-1], knobs), _limit(payload))
    finish = "length" if cut else "stop"
    usage = chat_usage(sum(count_tokens(p) for p in prompts), len(pieces), knobs)
    header = {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    if not stream_:
        choice = {"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": finish}
        body = orjson.dumps({**header, "choices": [choice], "usage": usage})
        await send_json(req.send, 200, body)
        return
    tail: dict[str, Any] = {"usage": None} if include_usage else {}

    def frame(choice: dict) -> bytes:
        return b"data: " + orjson.dumps({**header, "choices": [choice], **tail}) + b"\n\n"

    piece = {"text": _SENTINEL, "index": 0, "logprobs": None, "finish_reason": None}
    before, _, after = frame(piece).rpartition(_SENTINEL_JSON)
    frames = [before + orjson.dumps(p) + after for p in pieces]
    frames.append(frame({"text": "", "index": 0, "logprobs": None, "finish_reason": finish}))
    if include_usage:
        frames.append(b"data: " + orjson.dumps({**header, "choices": [], "usage": usage}) + b"\n\n")
    frames.append(_DONE_FRAME)
    await stream(req.send, req.receive, frames, knobs)


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
    raise RequestError(
        400,
        "Invalid 'input': expected a string, an array of strings or token-id arrays.",
        param="input",
        code="invalid_value",
    )


async def embeddings(req: Request) -> None:
    payload = req.payload
    model = require_model(payload)
    inputs = _embedding_inputs(payload.get("input"))
    dimensions = payload.get("dimensions", DEFAULT_EMBEDDING_DIMENSIONS)
    if type(dimensions) is not int or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise RequestError(
            400,
            f"Invalid 'dimensions': expected an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}.",
            param="dimensions",
            code="invalid_value",
        )
    encoding = payload.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise RequestError(
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
    await send_json(req.send, 200, body)


_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "tollgate-mock"}
            for name in MODELS
        ],
    }
)


async def models(req: Request) -> None:
    await send_json(req.send, 200, _MODELS_BODY)
