"""Anthropic's own API (and anything speaking it, like the built-in mock under /mock/v1): the
Messages API at <base>/v1/messages, the key as `x-api-key`, an `anthropic-version` header.

The base URL may be given with or without its trailing /v1 (https://api.anthropic.com and
https://api.anthropic.com/v1 are the same upstream). The version sent is the caller's own
`anthropic-version` when a Messages client sent one (its body is written in that version),
else the upstream's api_version, else DEFAULT_VERSION; a caller's `anthropic-beta` is
forwarded as is.
"""

from proxy.providers.openai import Provider

DEFAULT_VERSION = "2023-06-01"

PATHS = {
    "messages": "/v1/messages",
    "count_tokens": "/v1/messages/count_tokens",
}
FORWARDED = (b"anthropic-version", b"anthropic-beta")


def api_root(base_url: str) -> str:
    """The base URL without a trailing slash or /v1."""
    base = base_url.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


class AnthropicProvider(Provider):
    kind = "anthropic"

    def __init__(self):
        super().__init__(PATHS)
        self.formats = frozenset({"messages"})  # count_tokens is not a call: never routed

    def url(self, route, api: str) -> str:
        return api_root(route.url_base) + self.paths[api]

    def headers(self, route, call) -> dict[str, str]:
        return self.headers_for(route, call.rid, call.scope)

    def headers_for(self, route, rid: str, scope) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Request-Id": rid,
            "anthropic-version": route.api_version or DEFAULT_VERSION,
        }
        if route.auth_key:
            headers["x-api-key"] = route.auth_key
        for name, value in scope["headers"]:
            if name in FORWARDED and value:
                headers[name.decode()] = value.decode("latin-1")
        return headers


ANTHROPIC = AnthropicProvider()
