"""uvicorn's httptools protocol with deadlines for reading a request (slow clients).

uvicorn bounds only the idle time between requests (--timeout-keep-alive, and every byte
received resets it); nothing bounds how long a request's headers or body take, so a client
trickling a byte at a time holds its connection forever, and a few hundred of them hold the
server's file descriptors (slowloris). ASGI middleware cannot help: the application is called
only once the headers are complete. So, at the protocol:
- from the connection's start, and from the first byte of each further request, the headers
  must be complete within REQUEST_HEADER_TIMEOUT_SECONDS, or the server answers 408 and closes;
- from the end of the headers, the body must be complete within REQUEST_BODY_TIMEOUT_SECONDS,
  or the connection is closed (the application sees a disconnect).
Responses are not bounded: a long stream to a client that reads is a normal call.

Run it with `uvicorn saas.asgi:application --http saas.server:HttpToolsProtocolWithDeadlines`
(scripts/run.sh, the Dockerfile and the tests' live server all do).
"""

from asyncio import TimerHandle

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT_BODY = (
    b'{"error": {"type": "request_timeout", "message": "The request headers took too long."}}'
)
REQUEST_TIMEOUT_RESPONSE = b"".join(
    (
        b"HTTP/1.1 408 Request Timeout\r\n",
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(REQUEST_TIMEOUT_BODY),
        b"connection: close\r\n\r\n",
        REQUEST_TIMEOUT_BODY,
    )
)


class HttpToolsProtocolWithDeadlines(HttpToolsProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_deadline: TimerHandle | None = None

    def _arm(self, seconds: float, reading_headers: bool) -> None:
        self._disarm()
        self.read_deadline = self.loop.call_later(seconds, self._read_timed_out, reading_headers)

    def _disarm(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _read_timed_out(self, reading_headers: bool) -> None:
        self.read_deadline = None
        if self.transport.is_closing():
            return
        if reading_headers:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(settings.REQUEST_HEADER_TIMEOUT_SECONDS, reading_headers=True)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.read_deadline is None:  # a further request on a kept-alive connection
            self._arm(settings.REQUEST_HEADER_TIMEOUT_SECONDS, reading_headers=True)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(settings.REQUEST_BODY_TIMEOUT_SECONDS, reading_headers=False)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
