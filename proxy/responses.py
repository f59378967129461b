"""The ASGI plumbing every stage shares: read a request body, answer JSON or an error."""

import orjson

from proxy.errors import GatewayError

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class ClientGone(Exception):
    """The client hung up before we answered."""


async def send_json(send, status: int, body: bytes, rid: str, extra: list | None = None) -> None:
    await send_body(send, status, body, rid, JSON_HEADERS, extra)


async def send_body(
    send, status: int, body: bytes, rid: str, content: list, extra: list | None = None
) -> None:
    """A whole answer with its content headers (JSON's, or another type's: a transcript)."""
    headers = [*content, (b"x-request-id", rid.encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, exc: GatewayError, rid: str, body: bytes | None = None) -> None:
    """The error answer: OpenAI's shape unless the API's own `body` is given."""
    await send_json(send, exc.status, exc.body() if body is None else body, rid, exc.headers)


async def read_body(receive, max_body: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            raise GatewayError(
                413,
                f"The request body is larger than {max_body} bytes.",
                "invalid_request_error",
                "request_too_large",
            )
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_object(body: bytes) -> dict:
    """The body as a JSON object, or the 400 that says why not."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError(
            400, "The request body is not valid JSON.", "invalid_request_error", "invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise GatewayError(
            400,
            "The request body must be a JSON object.",
            "invalid_request_error",
            "invalid_json",
        )
    return data
