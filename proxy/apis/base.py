"""What every client-facing API (an endpoint's request and answer shape) provides the stages.

An `Api` is one endpoint's shape: the model mode it needs, its body checks, the worst case it
reserves for, its error shape, and for each route an `Exchange`: how the call is put to that
route's upstream and how the answer comes back. A route whose upstream speaks the API natively
gets the API's passthrough exchange; one that speaks another API gets a translating exchange
(proxy/apis/translate_*.py, registered per pair), or none, and is then not a route for this API.

A stream goes through a `StreamCodec`, one per call: upstream SSE frames in, the client's
frames out, the usage it reported and a count of what was generated on the way. A `binary`
codec relays a body that is not SSE (speech audio): each chunk as it comes, the upstream's end
of body as the end of the stream, the upstream's content type passed on.

Not every API takes or sends JSON: `Api.parse` reads its own body (multipart uploads:
proxy/apis/multipart.py) under its own `max_body`, and `Exchange.content_type` names the body
`Exchange.body` builds when it is not JSON.

`Api.rate_headers` names the rate-limit headers every answer of an admitted call carries
(OpenAI's; Anthropic's as well on Messages).
"""

from collections.abc import Callable

import orjson

from proxy import ratelimits
from proxy.errors import GatewayError
from proxy.pricing import Demand
from proxy.responses import SSE_HEADERS, json_object
from proxy.usage import Usage


class StreamCodec:
    """One stream's relay state. Subclasses fill `frame`, `is_end` and the closings."""

    __slots__ = ("out_bytes", "public", "template", "usage")

    # True: the upstream body is not SSE; `frame` gets each chunk as it arrives and the end of
    # the body is the end of the stream (`is_end` is not asked; the settlement comes first).
    binary = False

    def __init__(self, public: str):
        self.public = public  # the model name the client sees
        self.out_bytes = 0  # generated text so far, for estimates and lease progress
        self.usage: Usage | None = None  # what the upstream reported
        self.template: dict | None = None  # ids of the stream, for a cache replay

    def frame(self, frame: bytes) -> bytes | None:
        """One upstream SSE frame (without its blank line) as the client gets it."""
        raise NotImplementedError

    def is_end(self, frame: bytes) -> bool:
        """The upstream's end of stream: it waits for the settlement, then `closing` goes out."""
        raise NotImplementedError

    def closing(self) -> bytes:
        """The client's clean end of stream, after the settlement."""
        raise NotImplementedError

    def error_frame(self, error: GatewayError) -> bytes:
        """An error inside the stream, in the client's shape (the stream ends after it)."""
        raise NotImplementedError

    def broken(self, error: GatewayError) -> bytes:
        """What ends a stream the upstream broke off."""
        return self.error_frame(error)

    def unfinished(self) -> bytes:
        """What ends a stream the upstream ended without its end frame."""
        return b""

    def opened(self, headers) -> None:
        """The upstream's response headers, before the first frame."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The client's content headers (SSE unless the codec relays another body)."""
        return SSE_HEADERS

    async def remember(self) -> None:
        """After the settlement, before `closing` goes out: what the API keeps of the stream
        (the Responses API: which model stored the response). Nothing by default."""


class Exchange:
    """How a call of one API is put to one kind of upstream API, and how the answer returns.

    `upstream` names the API the upstream is spoken to in (its path below the provider's base
    URL is the provider's business: proxy/providers)."""

    upstream = ""

    def content_type(self, call) -> str | None:
        """The upstream body's content type when it is not JSON (None: the provider's JSON)."""
        return None

    def body(self, call, route) -> bytes:
        """The upstream request body for this route."""
        raise NotImplementedError

    def decode(self, raw: bytes):
        """A unary upstream answer; ValueError when it is not one (the call falls back)."""
        return orjson.loads(raw)

    def unary(self, call, route, payload) -> tuple[bytes, Usage | None, Callable[[], int]]:
        """(client body, reported usage or None, estimate of the output tokens)."""
        raise NotImplementedError

    def answer_headers(self, call) -> list[tuple[bytes, bytes]] | None:
        """The content headers of a unary answer that is not JSON (None: JSON)."""
        return None

    def codec(self, call, route) -> StreamCodec:
        raise NotImplementedError

    def error(self, status: int, raw: bytes) -> bytes:
        """An upstream's refusal of the caller's request, passed on in the client's shape."""
        return raw

    def instead(self, route, status: int, raw: bytes) -> "Exchange | None":
        """An error answer that means this route speaks the API another way after all (an
        OpenAI-compatible server without /responses answers 404): the exchange to retry the
        same route with at once, before any fallback; None (the default) to fall back."""
        return None

    async def remember(self, call, route, payload) -> None:
        """After the settlement, before a unary answer goes out: what the API keeps of it.
        Nothing by default."""


class Api:
    """One endpoint's shape. `name` is what routes and translations are keyed by."""

    name = ""
    mode = ""  # the model mode it needs (modelgroups.Model.Mode)
    method = "POST"
    cacheable = False  # answers may be kept by the response cache (proxy/cache.py)
    max_body: int | None = None  # request body bound in bytes; None: GATEWAY_MAX_BODY_BYTES

    def startup(self, redis, replica) -> None:
        """The gateway's Redis client and replica, once at its start, for an API that keeps
        state of its own (the Responses API's stored-response index). Nothing by default."""

    async def prepare(self, call) -> None:
        """After the body checks, before anything is reserved: an API whose calls depend on
        live state or on the route narrows `call.routes` here, or refuses. Nothing by
        default."""

    def parse(self, scope, body: bytes) -> dict:
        """The request as a dict (a JSON object unless the API takes another body)."""
        return json_object(body)

    def error_body(self, error: GatewayError, rid: str = "") -> bytes:
        """The error shape of this API (OpenAI's unless overridden); `rid` is the request id,
        for shapes that carry it in the body."""
        return error.body()

    def check(self, request: dict) -> None:
        """Refuse a body the upstream would refuse anyway, before anything is reserved."""

    def rate_headers(self, headroom, now_ms: int) -> list[tuple[bytes, bytes]]:
        """The rate-limit headers on every answer of an admitted call, from what its admission
        left (livestate.scripts.Headroom): OpenAI's names unless the API's clients read others
        as well (proxy/ratelimits.py)."""
        return ratelimits.openai_headers(headroom, now_ms)

    def streams(self, request: dict) -> bool:
        return bool(request.get("stream"))

    def demand(self, call) -> Demand:
        """The worst case to reserve for."""
        raise NotImplementedError

    def exchange(self, route) -> Exchange | None:
        """How to call this route, or None when it cannot serve this API."""
        raise NotImplementedError


# (client API, upstream API) -> the exchange translating one into the other, registered by the
# proxy/apis/translate_*.py modules; an Api whose route's provider does not speak it natively
# asks `translation` for one into a format the provider does speak.
TRANSLATIONS: dict[tuple[str, str], Exchange] = {}


def register_translation(client: str, upstream: str, exchange: Exchange) -> None:
    TRANSLATIONS[(client, upstream)] = exchange


def translation(api: str, route) -> Exchange | None:
    """The registered translation of `api` into an API the route's provider speaks, or None."""
    formats = route.provider.formats
    for (client, upstream), exchange in TRANSLATIONS.items():
        if client == api and upstream in formats:
            return exchange
    return None


def missing(field: str) -> GatewayError:
    return GatewayError(
        400, f"'{field}' is required.", "invalid_request_error", "missing_required_parameter", field
    )


def invalid(field: str, message: str, code: str = "invalid_type") -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, field)


def positive_int(request: dict, field: str, *, limit: int | None = None) -> int | None:
    """A request's optional positive integer field, or the 400 naming it."""
    value = request.get(field)
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise invalid(field, f"'{field}' must be a positive integer.")
    if limit is not None and value > limit:
        raise invalid(field, f"'{field}' must be at most {limit}.", "invalid_value")
    return value
