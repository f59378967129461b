"""The fake upstream every system calls: fixed OpenAI-shaped answers, as fast as possible.

nginx (one worker, access log off) answers from memory at ~100k req/s on this hardware, so it
is never the bottleneck. It cannot branch on the request body, so streaming has its own path:
  POST /v1/chat/completions          a chat.completion with usage
  POST /stream/v1/chat/completions   an SSE stream: role, 3 content chunks, finish, usage, [DONE]
Systems that should stream get a model whose upstream base_url ends in /stream/v1.

Without nginx, `python -m bench.upstream --port N` serves the same bytes from a raw asyncio
protocol (uvloop + httptools); several times slower than nginx, still far above the gateways.
"""

import argparse
import asyncio
import json
import os
from pathlib import Path

CHAT_PATH = "/v1/chat/completions"
STREAM_PATH = "/stream/v1/chat/completions"
CREATED = 1_700_000_000
USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


CHAT_BODY = _dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": "bench-chat",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    frame = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "bench-stream",
        "choices": choices,
    }
    if usage:
        frame["usage"] = usage
    return f"data: {_dumps(frame)}\n\n"


STREAM_BODY = "".join(
    [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hello"}),
        _chunk({"content": " from the"}),
        _chunk({"content": " bench upstream."}),
        _chunk({}, finish="stop"),
        _chunk({}, usage=USAGE),
        "data: [DONE]\n\n",
    ]
)


def _nginx_string(text: str) -> str:
    """A single-quoted nginx string. `return` interpolates variables, so no `$` may appear."""
    assert "$" not in text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_config(workdir: Path, port: int) -> str:
    # A root master would hand workers to `nobody`, who cannot enter our 0700 temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {CHAT_PATH} {{
            default_type application/json;
            return 200 {_nginx_string(CHAT_BODY)};
        }}
        location = {STREAM_PATH} {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            return 200 {_nginx_string(STREAM_BODY)};
        }}
        location / {{ return 404; }}
    }}
}}
"""


def nginx_argv(nginx: str, workdir: Path, port: int) -> list[str]:
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, port))
    # -e: the startup error log too stays in workdir (never /var/log/nginx).
    return [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "nginx-error.log")]


# ---- pure-Python fallback ----


def _response(status: str, content_type: str, body: str) -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + data


RESPONSES = {
    CHAT_PATH.encode(): _response("200 OK", "application/json", CHAT_BODY),
    STREAM_PATH.encode(): _response("200 OK", "text/event-stream", STREAM_BODY),
}
NOT_FOUND = _response("404 Not Found", "application/json", '{"error":"not found"}')


class _Server(asyncio.Protocol):
    def __init__(self):
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.transport.write(RESPONSES.get(self.url, NOT_FOUND))
        self.url = b""


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.port))
    else:
        uvloop.run(_serve(args.port))


if __name__ == "__main__":
    main()
