"""One ASGI entry point: the gateway (/v1) and the dev mock upstream (/mock, when enabled) on a
raw fast path, static files (/static/) from memory, Django (admin API, panel, health) for
everything else."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
django_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from core.api import BODY_TOO_LARGE  # noqa: E402
from core.static import static_files  # noqa: E402
from devtools.mock_upstream import app as mock_upstream  # noqa: E402
from proxy.errors import GatewayError  # noqa: E402
from proxy.gateway import gateway  # noqa: E402 - needs Django set up first

# OpenAI's endpoints called without the /v1 prefix (a base URL missing it): they would reach the
# panel and get an HTML page; an SDK gets an answer it can show instead. Not `/models/`, which
# is the panel's models page.
OPENAI_PATHS_WITHOUT_V1 = {
    "/chat/completions",
    "/chat/completions/",
    "/completions",
    "/completions/",
    "/embeddings",
    "/embeddings/",
    "/models",
}


async def send_error(send, error: GatewayError) -> None:
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def without_v1(path: str) -> GatewayError:
    endpoint = "/v1" + path.rstrip("/")
    return GatewayError(
        404,
        f"No endpoint at {path}: the OpenAI-compatible API is under /v1, call {endpoint} "
        "(an SDK's base URL ends with /v1).",
        "invalid_request_error",
        "not_found",
    )


MOCK_DISABLED = GatewayError(
    404,
    "The mock upstream is not enabled in this deployment (MOCK_UPSTREAM_ENABLED).",
    "invalid_request_error",
    "not_found",
)


def bounded_receive(scope, receive, limit: int):
    """Django reads (and spools) the whole body before any view or middleware runs, whatever
    its size, so a body without a Content-Length (chunked) is cut here at the limit, and the
    request marked, instead of filling memory and disk.

    After the cut, the rest of the body is read and dropped: Django, once it has its (cut)
    body, only listens for the disconnect, and an `http.request` reaching it then is an error."""
    received = 0
    cut = False

    async def receive_bounded():
        nonlocal received, cut
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            if cut:
                continue
            received += len(message.get("body", b""))
            if received > limit:
                cut = True
                scope[BODY_TOO_LARGE] = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

    return receive_bounded


def make_application(gateway_app):
    async def application(scope, receive, send):
        if scope["type"] == "lifespan":
            # Django does not speak lifespan; the gateway opens its Redis and HTTP pools here.
            return await gateway_app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith("/v1/") or path == "/v1":
            return await gateway_app(scope, receive, send)
        if path.startswith("/mock/"):
            if settings.MOCK_UPSTREAM_ENABLED:
                return await mock_upstream(scope, receive, send)
            return await send_error(send, MOCK_DISABLED)
        if path.startswith("/static/"):
            return await static_files(scope, receive, send)
        if path in OPENAI_PATHS_WITHOUT_V1:
            return await send_error(send, without_v1(path))
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return await django_app(scope, bounded_receive(scope, receive, limit), send)

    return application


application = make_application(gateway)
