"""The response cache: identical requests from the same team answered from Redis.

Off unless a team or a model group sets a TTL. The key is the team, the endpoint and the
request normalized (keys sorted; `stream`, `stream_options`, `user` and `metadata` left out,
since they do not change the answer), so teams never share entries. A unary answer is stored as
its JSON body; a streamed one as its SSE frames without usage (usage is added back on replay
when the client asks). A stream request may also be served from a unary entry, re-chunked.
"""

import hashlib
import time

import orjson

from livestate.keys import RESPONSE_CACHE_PREFIX as PREFIX

IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata"})


def cache_keys(team_id: int, path: str, request: dict) -> tuple[str, str]:
    """(unary entry key, stream entry key) for this request."""
    canonical = {k: v for k, v in request.items() if k not in IGNORED_FIELDS}
    digest = hashlib.sha256(
        path.encode() + b"\0" + orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    base = f"{PREFIX}{team_id}:{digest}"
    return base + ":u", base + ":s"


def request_directives(scope) -> tuple[bool, bool]:
    """(may read the cache, may write it), from the client's Cache-Control header."""
    for name, value in scope["headers"]:
        if name == b"cache-control":
            directives = {d.strip() for d in value.lower().split(b",")}
            return b"no-cache" not in directives, b"no-store" not in directives
    return True, True


def strip_usage(frames: list[bytes]) -> list[bytes]:
    """The frames as a client that did not ask for usage would get them."""
    out = []
    for frame in frames:
        if not frame.startswith(b"data:"):
            out.append(frame)
            continue
        try:
            chunk = orjson.loads(frame[5:].strip())
        except orjson.JSONDecodeError:
            out.append(frame)
            continue
        if not isinstance(chunk, dict) or "usage" not in chunk:
            out.append(frame)
            continue
        del chunk["usage"]
        if chunk.get("choices"):
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    return out


def usage_frame(template: dict, usage: dict) -> bytes:
    """The final usage-only chunk, as OpenAI sends it with stream_options.include_usage."""
    chunk = {
        "id": template.get("id", ""),
        "object": template.get("object", "chat.completion.chunk"),
        "created": template.get("created", int(time.time())),
        "model": template.get("model", ""),
        "choices": [],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def frames_from_unary(payload: dict, chat: bool) -> list[bytes]:
    """Re-chunk a stored unary answer as a stream: one delta per choice, then its finish."""
    base = {
        "id": payload.get("id", ""),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": payload.get("created", int(time.time())),
        "model": payload.get("model", ""),
    }
    frames = []
    for choice in payload.get("choices") or ():
        index = choice.get("index", 0)
        if chat:
            message = dict(choice.get("message") or {})
            delta = {"role": message.pop("role", "assistant")}
            for name, value in message.items():
                if name == "tool_calls" and isinstance(value, list):
                    value = [{"index": i, **call} for i, call in enumerate(value)]
                if value is not None:
                    delta[name] = value
            first = {"index": index, "delta": delta, "finish_reason": None}
            last = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        else:
            first = {"index": index, "text": choice.get("text", ""), "finish_reason": None}
            last = {"index": index, "text": "", "finish_reason": choice.get("finish_reason")}
        for part in (first, last):
            frames.append(b"data: " + orjson.dumps({**base, "choices": [part]}) + b"\n\n")
    return frames
