"""The client-facing APIs by path (see proxy/apis/base.py for what each provides)."""

from proxy.apis import translate_messages  # noqa: F401  (registers its translations)
from proxy.apis.base import Api
from proxy.apis.media import IMAGES, MODERATION, SPEECH, TRANSCRIPTION
from proxy.apis.messages import MESSAGES
from proxy.apis.openai import CHAT, COMPLETION, EMBEDDING
from proxy.apis.responses import RESPONSES

ENDPOINTS: dict[str, Api] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETION,
    "/v1/embeddings": EMBEDDING,
    "/v1/images/generations": IMAGES,
    "/v1/audio/transcriptions": TRANSCRIPTION,
    "/v1/audio/speech": SPEECH,
    "/v1/moderations": MODERATION,
    "/v1/messages": MESSAGES,
    "/v1/responses": RESPONSES,
}
# Paths served outside the call flow, and whose errors take an API's shape.
ERROR_SHAPES: dict[str, Api] = {"/v1/messages/count_tokens": MESSAGES}


def errors_for(path: str) -> Api:
    """The API whose error shape answers a request on `path` (OpenAI's when none matches)."""
    return ENDPOINTS.get(path) or ERROR_SHAPES.get(path, CHAT)
