"""Static files (the panel's CSS, JS and vendored htmx; the Django admin's assets) as a tiny
ASGI app the router calls before Django.

Why not whitenoise: it is WSGI-only, and under ASGI its middleware hands Django a file iterator
that Django must drain in a worker thread (with a warning). The panel ships a few small files,
so they are read once, kept in memory (gzipped once too) and answered without a thread or an
ORM in sight, in development (`make run`) and production alike. Files come from the staticfiles
finders, so no collectstatic step is needed, and only files they list can be served: a path is
a dictionary key, never joined onto the filesystem.
"""

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from urllib.parse import parse_qs

from django.conf import settings
from django.contrib.staticfiles import finders

# Larger files (none today) are read per request instead of being kept in memory.
MAX_CACHED_BYTES = 1024 * 1024
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str  # also the `?v=` that `{% asset %}` puts in URLs


def _index() -> dict[str, str]:
    """Public path -> absolute file path; the first finder to list a path wins, as in
    Django's own `findstatic`."""
    index: dict[str, str] = {}
    for finder in finders.get_finders():
        for path, storage in finder.list(["CVS", ".*", "*~"]):
            public = path.replace("\\", "/")
            prefix = getattr(storage, "prefix", None)
            if prefix:
                public = f"{prefix}/{public}"
            index.setdefault(public, storage.path(path))
    return index


def _load(filename: str) -> Asset:
    with open(filename, "rb") as fh:
        body = fh.read()
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type == "application/javascript":
        content_type += "; charset=utf-8"
    gzipped = None
    if content_type.startswith(COMPRESSIBLE) and len(body) > 1024:
        gzipped = gzip.compress(body, 9, mtime=0)
    return Asset(body, gzipped, content_type, hashlib.sha256(body).hexdigest()[:16])


class StaticFiles:
    def __init__(self):
        self._files: dict[str, str] | None = None
        self._cache: dict[str, Asset] = {}

    def asset(self, path: str) -> Asset | None:
        if self._files is None:
            self._files = _index()
        asset = self._cache.get(path)
        if asset is None:
            filename = self._files.get(path)
            if filename is None:
                return None
            asset = _load(filename)
            if len(asset.body) <= MAX_CACHED_BYTES:
                self._cache[path] = asset
        return asset

    def version(self, path: str) -> str:
        """The content hash of a static file, for cache-busting URLs ("" if unknown)."""
        asset = self.asset(path)
        return asset.etag if asset else ""

    async def __call__(self, scope, receive, send):
        path = scope["path"][len(settings.STATIC_URL) :]
        if scope["method"] not in ("GET", "HEAD"):
            return await _respond(send, 405, b"Method not allowed.", [(b"allow", b"GET, HEAD")])
        asset = self.asset(path)
        if asset is None:
            return await _respond(send, 404, b"No such static file.")
        headers = dict(scope.get("headers") or [])
        etag = f'"{asset.etag}"'.encode()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        # A URL carrying the content hash never changes meaning: cache it for a year.
        # A bare URL is revalidated each time (a 304 costs next to nothing).
        if query.get("v") == [asset.etag]:
            cache = b"public, max-age=31536000, immutable"
        else:
            cache = b"no-cache"
        common = [(b"etag", etag), (b"cache-control", cache), (b"vary", b"Accept-Encoding")]
        if headers.get(b"if-none-match") == etag:
            return await _respond(send, 304, b"", common)
        body, extra = asset.body, []
        if asset.gzipped and b"gzip" in headers.get(b"accept-encoding", b""):
            body, extra = asset.gzipped, [(b"content-encoding", b"gzip")]
        response_headers = [
            (b"content-type", asset.content_type.encode()),
            (b"x-content-type-options", b"nosniff"),
            *common,
            *extra,
        ]
        await _respond(send, 200, body, response_headers, head=scope["method"] == "HEAD")


async def _respond(send, status: int, body: bytes, headers=(), *, head: bool = False):
    headers = list(headers)
    if not any(name == b"content-type" for name, _ in headers):
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


static_files = StaticFiles()
