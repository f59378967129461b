"""The response cache: identical requests from the same team answered from Redis.

Off unless a team or a model group sets a TTL. The key is the team, the endpoint and the
request normalized (keys sorted; `stream`, `stream_options`, `user` and `metadata` left out,
since they do not change the answer), so teams never share entries. A unary answer is stored as
its JSON body; a streamed one as its SSE frames without usage (usage is added back on replay
when the client asks). A stream request may also be served from a unary entry, re-chunked.
"""

import hashlib
import logging
import time

import orjson
from django.conf import settings

from livestate.keys import response_cache_keys
from proxy.call import Call
from proxy.responses import SSE_HEADERS, send_json
from proxy.settlement import SettlementUnavailable
from proxy.usage import Usage

logger = logging.getLogger(__name__)

IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata"})


def cache_keys(team_id: int, path: str, request: dict) -> tuple[str, str]:
    """(unary entry key, stream entry key) for this request."""
    canonical = {k: v for k, v in request.items() if k not in IGNORED_FIELDS}
    digest = hashlib.sha256(
        path.encode() + b"\0" + orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return response_cache_keys(team_id, digest)


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


class CacheLookup:
    """Where this request's answer is (or will be) cached, and whether it may be stored."""

    __slots__ = ("may_write", "stream_key", "ttl", "unary_key")

    def __init__(self, team_id: int, path: str, request: dict, ttl: int, may_write: bool):
        self.unary_key, self.stream_key = cache_keys(team_id, path, request)
        self.ttl, self.may_write = ttl, may_write


class ResponseCache:
    """The response cache of one gateway: its Redis and the catalog that says which model
    answered."""

    __slots__ = ("redis", "replica")

    def __init__(self, redis, replica):
        self.redis, self.replica = redis, replica

    async def lookup(self, call: Call):
        """Set call.lookup when the cache is on for this call; (route, entry) on a usable hit."""
        if not call.api.cacheable:
            return None
        ttl = call.team.cache_ttl
        if ttl is None and call.group is not None:
            ttl = call.group.cache_ttl
        if not ttl:
            return None
        may_read, may_write = request_directives(call.scope)
        call.lookup = lookup = CacheLookup(call.team.id, call.path, call.request, ttl, may_write)
        if not may_read:
            return None
        if call.stream:
            raw_stream, raw_unary = await self.redis.mget(lookup.stream_key, lookup.unary_key)
            raw = raw_stream or raw_unary
        else:
            raw = await self.redis.get(lookup.unary_key)
        if raw is None:
            return None
        entry = orjson.loads(raw)
        route = self.replica.catalog.routes_by_name.get(entry["model"])
        if route is None or route.mode != call.mode:
            return None  # the model that answered is gone or changed: ask again
        return route, entry

    async def put(self, lookup: CacheLookup, key: str, entry: dict) -> None:
        raw = orjson.dumps(entry)
        if len(raw) <= settings.GATEWAY_CACHE_MAX_BYTES:
            try:
                await self.redis.set(key, raw, ex=lookup.ttl)
            except Exception:
                logger.exception("could not store a cache entry")  # the answer was served

    async def serve(self, call: Call, hit, settle) -> None:
        """Answer from the cache: settled at the hit price before the end of the response."""
        route, entry = hit
        settle.hit_price = settle.reserve
        headers = [
            (b"x-tollgate-model", route.name.encode()),
            (b"x-cache", b"hit"),
            *call.rate_headers,
        ]
        send = call.send
        if not call.stream:
            body = entry["body"].encode()
            try:
                await settle.finish(route, Usage(entry["in"], entry["out"]), "ok", response=body)
            except SettlementUnavailable:
                settle.waive()  # a 503 instead of the answer: nothing to charge
                raise
            return await send_json(send, 200, body, call.rid, headers)
        if "frames" in entry:
            frames = [f.encode() for f in entry["frames"]]
            template = entry.get("template") or {}
            usage = entry["usage"]
        else:
            payload = orjson.loads(entry["body"])
            frames = frames_from_unary(payload, chat=call.mode == "chat")
            template = {
                "id": payload.get("id", ""),
                "created": payload.get("created"),
                "model": payload.get("model", ""),
                "object": "chat.completion.chunk" if call.mode == "chat" else "text_completion",
            }
            usage = payload.get("usage")
        if call.wants_usage and usage:
            frames.append(usage_frame(template, usage))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, (b"x-request-id", call.rid.encode()), *headers],
            }
        )
        body = b"".join(frames)
        await send({"type": "http.response.body", "body": body, "more_body": True})
        try:
            await settle.finish(route, Usage(entry["in"], entry["out"]), "ok", response=body)
        except SettlementUnavailable as exc:
            # Kept and written later; the stream ends with the error, never a clean [DONE].
            return await send({"type": "http.response.body", "body": b"data: " + exc.body()})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
