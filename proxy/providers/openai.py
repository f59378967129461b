"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, a LiteLLM proxy, the built-in mock): the
base URL ends with /v1, the key goes as a Bearer token."""

# API name -> path below the upstream's base URL
PATHS = {
    "chat": "/chat/completions",
    "completion": "/completions",
    "embedding": "/embeddings",
    "image": "/images/generations",
    "transcription": "/audio/transcriptions",
    "speech": "/audio/speech",
    "moderation": "/moderations",
    # Claimed by every OpenAI-compatible kind; a server without it (Ollama, older vLLM)
    # answers 404 and its route is served translated through chat (proxy/apis/responses.py).
    "responses": "/responses",
}


class Provider:
    """The OpenAI shape of an upstream; other kinds override what differs."""

    kind = "openai"

    def __init__(self, paths: dict[str, str]):
        self.paths = paths
        self.formats = frozenset(paths)  # the APIs it speaks natively

    def url(self, route, api: str) -> str:
        return route.url_base + self.paths[api]

    def headers(self, route, call) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Request-Id": call.rid}
        auth = call.caller_auth if route.forward_key else route.auth
        if auth:
            headers["Authorization"] = auth
        if route.litellm:
            # LiteLLM keeps it as the spend log's litellm_call_id: reconciliation can tell
            # calls made through us from calls made to LiteLLM directly.
            headers["x-litellm-call-id"] = call.rid
        return headers


OPENAI = Provider(PATHS)
