"""An OpenAI-compatible upstream that speaks chat completions but has no /v1/responses, as
Ollama and older vLLM servers: the built-in mock behind a door that answers Ollama's plain-text
404 for any /responses path. Runs in uvicorn on a thread of its own, for the session."""

import threading
import time

from tests.helpers.servers import free_port


class ChatOnly:
    """ASGI: the mock, minus the Responses API (and counting who asked for it)."""

    def __init__(self, app):
        self.app = app
        self.responses_asked = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "/responses" in scope["path"]:
            self.responses_asked += 1
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"404 page not found"})
            return
        await self.app(scope, receive, send)


class ChatOnlyServer:
    def __init__(self):
        import uvicorn

        from devtools.mock_upstream import MockUpstream

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.app = ChatOnly(MockUpstream())
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",  # not a process-wide uvloop policy for the tests around it
            lifespan="off",
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ChatOnlyServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the chat-only upstream did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
