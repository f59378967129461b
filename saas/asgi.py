"""One ASGI entry point: the gateway (/v1) and the dev mock upstream (/mock) on a raw fast path,
static files (/static/) from memory, Django (admin API, panel, health) for everything else."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")
django_app = get_asgi_application()

from core.static import static_files  # noqa: E402
from devtools.mock_upstream import app as mock_upstream  # noqa: E402
from proxy.gateway import gateway  # noqa: E402 - needs Django set up first


def make_application(gateway_app):
    async def application(scope, receive, send):
        if scope["type"] == "lifespan":
            # Django does not speak lifespan; the gateway opens its Redis and HTTP pools here.
            return await gateway_app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith("/v1/") or path == "/v1":
            return await gateway_app(scope, receive, send)
        if path.startswith("/mock/"):
            return await mock_upstream(scope, receive, send)
        if path.startswith("/static/"):
            return await static_files(scope, receive, send)
        return await django_app(scope, receive, send)

    return application


application = make_application(gateway)
