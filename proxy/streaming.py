"""Streamed calls: the upstream's SSE relayed frame by frame through the call's codec
(proxy/apis: the public model name swapped in, the usage read, a translation where the
upstream speaks another API). A binary codec (speech audio) relays a body that is not SSE,
chunk by chunk; its end is the end of the upstream's body.

The end of the stream (the upstream's end frame: [DONE], Anthropic's message_stop…) waits for
the settlement; a stream that ends without it (client gone, upstream cut) is charged for what
was generated until then. A settlement Redis would not take ends the stream with an error
event instead of a clean end (the record is kept and written later: proxy/recovery.py).
"""

import asyncio
import logging
import time

import aiohttp
from django.conf import settings

from proxy import cache, metrics
from proxy.apis.base import StreamCodec
from proxy.breaker import Breaker
from proxy.call import Call
from proxy.errors import GatewayError
from proxy.settlement import Settlement, SettlementUnavailable
from proxy.tokens import estimate_text_tokens
from proxy.upstream import Answer

logger = logging.getLogger(__name__)


async def relay(
    call: Call, answer: Answer, settle: Settlement, responses: cache.ResponseCache, breaker: Breaker
) -> None:
    """Pass the stream through until its end, the upstream's failure or the client's leaving.

    The pump runs as its own task so a client that hangs up stops it at once (closing an
    aiohttp response does not wake a pending read); what was generated until then is
    charged."""
    route, resp = answer.route, answer.response
    stream = StreamRelay(call, settle, route, answer.exchange.codec(call, route))
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
    """The state of one relayed stream: what was sent; the codec (proxy/apis) knows what was
    generated and reported."""

    __slots__ = (
        "cacheable",
        "call",
        "capture",
        "capture_room",
        "codec",
        "done",
        "failed",
        "public",
        "route",
        "send",
        "settlement",
        "started",
        "unrecorded",
    )

    def __init__(self, call: Call, settlement: Settlement, route, codec: StreamCodec):
        self.call, self.settlement, self.route, self.codec = call, settlement, route, codec
        self.send = call.send
        self.public = route.name
        self.started = False
        self.failed = False
        self.done = False  # the upstream's end of stream seen
        # The settlement could not be written (kept for later): the stream ends with this error.
        self.unrecorded: SettlementUnavailable | None = None
        # What was sent, kept only when it is logged or cached, and only up to a bound.
        lookup = call.lookup
        self.capture: list[bytes] | None = [] if (lookup or call.team.log) else None
        self.capture_room = max(settings.GATEWAY_CACHE_MAX_BYTES, settings.GATEWAY_LOG_MAX_BYTES)
        self.cacheable = lookup is not None and lookup.may_write and call.api.cacheable

    def captured(self) -> bytes | None:
        return b"".join(self.capture) if self.capture is not None else None

    async def settle(self, *, status: str = "ok", failed: bool = False) -> None:
        codec = self.codec
        await self.settlement.finish_reported(
            self.route,
            codec.usage,
            lambda: estimate_text_tokens(codec.out_bytes),
            status=status,
            failed=failed,
            response=self.captured(),
        )

    def cache_entry(self) -> dict:
        frames = self.capture or []
        codec = self.codec
        if codec.wants_usage:
            frames = cache.strip_usage(frames)
        used = self.settlement.usage
        return {
            "frames": [f.decode() for f in frames],
            "template": codec.template or {},
            "usage": codec.raw_usage,
            "model": self.public,
            "in": used.input,
            "out": used.output,
        }

    async def pump(self, resp) -> None:
        buffer = b""
        codec = self.codec
        codec.opened(resp.headers)
        if codec.binary:
            return await self._pump_binary(resp)
        try:
            async for data in resp.content.iter_any():
                buffer += data
                frames = []
                while (cut := buffer.find(b"\n\n")) >= 0:
                    frame, buffer = buffer[:cut], buffer[cut + 2 :]
                    if codec.is_end(frame):
                        # Content already in hand goes out first; only the end of the stream
                        # waits for the settlement (so a crash after it loses nothing).
                        await self._flush(frames)
                        frames = []
                        self.done = True
                        try:
                            await self.settle()
                        except SettlementUnavailable as exc:
                            self.unrecorded = exc  # close() sends it, and no clean end
                            return
                        await codec.remember()
                        frames.append(codec.closing())
                        continue
                    out = codec.frame(frame)
                    if out:
                        frames.append(out)
                await self._flush(frames)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failed = True
            logger.warning("upstream stream broke for %s: %s", self.call.rid, type(exc).__name__)

    async def _pump_binary(self, resp) -> None:
        """A body that is not SSE (audio): each chunk passed on as it comes; the upstream's
        end of body is the end of the stream, settled before the client's end goes out."""
        codec = self.codec
        try:
            async for data in resp.content.iter_any():
                out = codec.frame(data)
                if out:
                    await self._flush([out])
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failed = True
            logger.warning("upstream stream broke for %s: %s", self.call.rid, type(exc).__name__)
            return
        self.done = True
        try:
            await self.settle()
        except SettlementUnavailable as exc:
            self.unrecorded = exc

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
                out_t = estimate_text_tokens(self.codec.out_bytes)
                lease.progress(self.route, out_t, self.settlement.asked)

    async def _start(self) -> None:
        if not self.started:
            self.started = True
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        *self.codec.headers(),
                        (b"x-request-id", self.call.rid.encode()),
                        (b"x-tollgate-model", self.public.encode()),
                        *([(b"x-cache", b"miss")] if self.call.lookup is not None else []),
                        *self.call.rate_headers,
                    ],
                }
            )

    async def close(self) -> None:
        await self._start()
        codec = self.codec
        if codec.binary and (self.failed or self.unrecorded is not None):
            # Audio has no place for an error event: the body stays unfinished (no last
            # chunk), so the client sees a cut-off response, not a clean end.
            return
        if self.unrecorded is not None:
            tail = codec.error_frame(self.unrecorded)  # no clean end: it did not end cleanly
        elif self.failed:
            error = GatewayError(
                502, "The upstream stream broke off.", "upstream_error", "upstream_stream_error"
            )
            tail = codec.broken(error)
        elif not self.done:
            tail = codec.unfinished()
        else:
            tail = b""
        if tail:
            await self.send({"type": "http.response.body", "body": tail, "more_body": True})
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
