"""Streamed calls: the upstream's SSE relayed chunk by chunk with the public model name.

The gateway always asks the upstream for usage (stream_options.include_usage) and strips the
usage chunk again when the client did not ask for it. The end of the stream ([DONE]) waits
for the settlement; a stream that ends without it (client gone, upstream cut) is charged for
what was generated until then. A settlement Redis would not take ends the stream with an error
event instead of [DONE] (the record is kept and written later: proxy/recovery.py).
"""

import asyncio
import logging
import time

import aiohttp
import orjson
from django.conf import settings

from proxy import cache, metrics
from proxy.breaker import Breaker
from proxy.call import Call
from proxy.errors import GatewayError
from proxy.responses import SSE_HEADERS
from proxy.settlement import Settlement, SettlementUnavailable
from proxy.tokens import estimate_text_tokens
from proxy.upstream import Answer

logger = logging.getLogger(__name__)


def ask_for_usage(call: Call) -> None:
    """Always ask for usage; the extra chunk is removed again when the client did not ask."""
    options = call.request.get("stream_options")
    call.request["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }


async def relay(
    call: Call, answer: Answer, settle: Settlement, responses: cache.ResponseCache, breaker: Breaker
) -> None:
    """Pass the stream through until its end, the upstream's failure or the client's leaving.

    The pump runs as its own task so a client that hangs up stops it at once (closing an
    aiohttp response does not wake a pending read); what was generated until then is
    charged."""
    route, resp = answer.route, answer.response
    stream = StreamRelay(call, settle, route)
    relay_started = time.perf_counter()
    pump = asyncio.ensure_future(stream.pump(resp))
    gone = asyncio.ensure_future(_wait_disconnect(call.receive))
    try:
        await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, gone):
            if not task.done():
                task.cancel()
        await asyncio.gather(pump, gone, return_exceptions=True)
        resp.release()
        metrics.upstream_wait_ended(relay_started)
    client_gone = gone.done() and not gone.cancelled()
    if stream.failed:
        breaker.failed(route.id)  # the upstream broke off mid-stream
    if not settle.finished:
        # No [DONE] (client gone, upstream cut, or a server that omits it): charge what
        # was generated up to this point.
        try:
            await stream.settle(status="error" if stream.failed else "ok", failed=stream.failed)
        except SettlementUnavailable as exc:
            stream.unrecorded = exc
    if not client_gone:
        await stream.close()
        if stream.done and not stream.failed and stream.unrecorded is None and stream.cacheable:
            lookup = call.lookup
            await responses.put(lookup, lookup.stream_key, stream.cache_entry())


class StreamRelay:
    """The state of one relayed stream: what was sent, generated and reported."""

    __slots__ = (
        "cacheable",
        "call",
        "capture",
        "capture_room",
        "done",
        "failed",
        "out_bytes",
        "public",
        "route",
        "send",
        "settlement",
        "started",
        "template",
        "unrecorded",
        "usage",
        "wants_usage",
    )

    def __init__(self, call: Call, settlement: Settlement, route):
        self.call, self.settlement, self.route = call, settlement, route
        self.send = call.send
        self.public = route.name
        self.wants_usage = call.wants_usage
        self.usage = None
        self.out_bytes = 0
        self.started = False
        self.failed = False
        self.done = False  # [DONE] seen
        # The settlement could not be written (kept for later): the stream ends with this error.
        self.unrecorded: SettlementUnavailable | None = None
        self.template: dict | None = None  # the first chunk's id, created…: for a replay
        # What was sent, kept only when it is logged or cached, and only up to a bound.
        lookup = call.lookup
        self.capture: list[bytes] | None = [] if (lookup or call.team.log) else None
        self.capture_room = max(settings.GATEWAY_CACHE_MAX_BYTES, settings.GATEWAY_LOG_MAX_BYTES)
        self.cacheable = lookup is not None and lookup.may_write

    def captured(self) -> bytes | None:
        return b"".join(self.capture) if self.capture is not None else None

    async def settle(self, *, status: str = "ok", failed: bool = False) -> None:
        await self.settlement.finish_reported(
            self.route,
            self.usage,
            lambda: estimate_text_tokens(self.out_bytes),
            status=status,
            failed=failed,
            response=self.captured(),
        )

    def cache_entry(self) -> dict:
        frames = self.capture or []
        if self.wants_usage:
            frames = cache.strip_usage(frames)
        in_t, out_t = self.settlement.tokens
        return {
            "frames": [f.decode() for f in frames],
            "template": self.template or {},
            "usage": self.usage,
            "model": self.public,
            "in": in_t,
            "out": out_t,
        }

    async def pump(self, resp) -> None:
        buffer = b""
        try:
            async for data in resp.content.iter_any():
                buffer += data
                frames = []
                while (cut := buffer.find(b"\n\n")) >= 0:
                    frame, buffer = buffer[:cut], buffer[cut + 2 :]
                    if frame.startswith(b"data:") and frame[5:].strip() == b"[DONE]":
                        # Content already in hand goes out first; only the end of the stream
                        # waits for the settlement (so a crash after it loses nothing).
                        await self._flush(frames)
                        frames = []
                        self.done = True
                        try:
                            await self.settle()
                        except SettlementUnavailable as exc:
                            self.unrecorded = exc  # close() sends it, and no [DONE]
                            return
                        frames.append(b"data: [DONE]\n\n")
                        continue
                    out = self.frame(frame)
                    if out:
                        frames.append(out)
                await self._flush(frames)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failed = True
            logger.warning("upstream stream broke for %s: %s", self.call.rid, type(exc).__name__)

    async def _flush(self, frames: list[bytes]) -> None:
        if frames:
            if self.capture is not None and self.capture_room >= 0:
                self.capture.extend(frames)
                self.capture_room -= sum(len(f) for f in frames)
                if self.capture_room < 0:
                    self.cacheable = False  # too big to cache; a log keeps its first part
            await self._start()
            await self.send(
                {"type": "http.response.body", "body": b"".join(frames), "more_body": True}
            )
            lease = self.call.lease
            if lease is not None and not self.settlement.done:
                # What the client has now, for the reaper to charge if this process dies.
                out_t = estimate_text_tokens(self.out_bytes)
                lease.progress(self.route, out_t, self.settlement.asked)

    def frame(self, frame: bytes) -> bytes | None:
        """One upstream SSE frame as the client gets it (None: not sent at all)."""
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
            delta = choice.get("delta") or {}
            self.out_bytes += len(delta.get("content") or "") + len(choice.get("text") or "")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
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

    async def _start(self) -> None:
        if not self.started:
            self.started = True
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        *SSE_HEADERS,
                        (b"x-request-id", self.call.rid.encode()),
                        (b"x-tollgate-model", self.public.encode()),
                        *([(b"x-cache", b"miss")] if self.call.lookup is not None else []),
                    ],
                }
            )

    async def close(self) -> None:
        await self._start()
        if self.unrecorded is not None:
            # OpenAI's stream error shape; no [DONE]: this stream did not end cleanly.
            await self.send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + self.unrecorded.body() + b"\n\n",
                    "more_body": True,
                }
            )
        elif self.failed:
            error = GatewayError(
                502, "The upstream stream broke off.", "upstream_error", "upstream_stream_error"
            )
            await self.send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + error.body() + b"\n\ndata: [DONE]\n\n",
                    "more_body": True,
                }
            )
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
