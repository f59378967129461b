"""multipart/form-data request bodies (audio uploads): parsed to route and check the call,
re-framed for the upstream with the upstream model name.

The body arrives bounded (Api.max_body: GATEWAY_MAX_UPLOAD_BYTES, refused with a 413 as soon
as it passes the bound, before anything is reserved) and goes through python-multipart's
streaming parser. A part's data is kept as views into the body, not copies, so an upload
costs the body once plus the upstream's copy of it while the call runs. Text fields become the
request dict's values (the first of a repeated name; every one is forwarded); a file part is
an `Upload`.
"""

import os

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from proxy.errors import GatewayError

# Longer than this, a text field is not a form field we know (a prompt is short).
MAX_FIELD_BYTES = 64 * 1024


def bad_form(message: str, code: str = "invalid_multipart", param: str | None = None):
    return GatewayError(400, message, "invalid_request_error", code, param)


class Upload:
    """A file part: its name, declared type and data (views into the request body)."""

    __slots__ = ("content_type", "filename", "pieces", "size")

    def __init__(self, filename: str, content_type: str):
        self.filename, self.content_type = filename, content_type
        self.pieces: list = []
        self.size = 0

    def head(self, limit: int) -> bytes:
        """The first `limit` bytes of the file (to read a header)."""
        out, room = [], limit
        for piece in self.pieces:
            if room <= 0:
                break
            out.append(bytes(piece[:room]))
            room -= len(out[-1])
        return b"".join(out)


class Part:
    __slots__ = ("name", "upload", "value")

    def __init__(self, name: str, value: str | None, upload: Upload | None):
        self.name, self.value, self.upload = name, value, upload


class Form(dict):
    """The request as the stages see it (field name -> text, or Upload for a file), plus every
    part in order for the upstream."""

    def __init__(self):
        super().__init__()
        self.parts: list[Part] = []

    def encode(self, boundary: str, replace: dict[str, str]) -> bytes:
        """The form again, with `replace`'s fields set to their values (sent once each)."""
        dash = b"--" + boundary.encode()
        out: list = []
        sent = set()
        for part in self.parts:
            name = part.name
            if name in replace:
                if name in sent:
                    continue
                sent.add(name)
            out += [dash, b"\r\n", _disposition(part), b"\r\n"]
            if part.upload is not None:
                out += [b"Content-Type: ", _header_text(part.upload.content_type), b"\r\n\r\n"]
                out += part.upload.pieces
            else:
                value = replace.get(name, part.value) or ""
                out += [b"\r\n", value.encode()]
            out.append(b"\r\n")
        for name, value in replace.items():
            if name not in sent:
                out += [dash, b"\r\n", _disposition(Part(name, value, None)), b"\r\n\r\n"]
                out += [value.encode(), b"\r\n"]
        out += [dash, b"--\r\n"]
        return b"".join(out)


def _header_text(text: str) -> bytes:
    # Quotes and line breaks cannot be escaped portably in a multipart header: dropped.
    return text.replace('"', "").replace("\r", "").replace("\n", "").encode()


def _disposition(part: Part) -> bytes:
    line = b'Content-Disposition: form-data; name="' + _header_text(part.name) + b'"'
    if part.upload is not None:
        line += b'; filename="' + _header_text(part.upload.filename or "upload") + b'"'
    return line


def new_boundary() -> str:
    return "tollgate-" + os.urandom(16).hex()


class _Collector:
    """python-multipart's callbacks, building the Form."""

    def __init__(self, body: bytes):
        self.body, self.view = body, memoryview(body)
        self.form = Form()
        self.ended = False
        self._field = self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._upload: Upload | None = None
        self._data: list = []

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self):
        self._headers, self._name, self._upload, self._data = {}, None, None, []

    def header_field(self, data, start, end):
        self._field += data[start:end]

    def header_value(self, data, start, end):
        self._value += data[start:end]

    def header_end(self):
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def headers_finished(self):
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise bad_form("A multipart part has no name in its Content-Disposition header.")
        self._name = name.decode(errors="replace")
        if b"filename" in options:
            content_type = self._headers.get(b"content-type", b"application/octet-stream")
            self._upload = Upload(
                options[b"filename"].decode(errors="replace"), content_type.decode("latin-1")
            )

    def part_data(self, data, start, end):
        # The body's own bytes as views; a boundary look-behind comes from another buffer.
        piece = self.view[start:end] if data is self.body else bytes(data[start:end])
        upload = self._upload
        if upload is not None:
            upload.pieces.append(piece)
            upload.size += end - start
            return
        self._data.append(piece)
        if sum(len(p) for p in self._data) > MAX_FIELD_BYTES:
            raise bad_form(
                f"The form field '{self._name}' is longer than {MAX_FIELD_BYTES} bytes.",
                "invalid_value",
                self._name,
            )

    def part_end(self):
        name, upload = self._name, self._upload
        if upload is not None:
            part = Part(name, None, upload)
        else:
            value = b"".join(self._data).decode(errors="replace")
            part = Part(name, value, None)
        self.form.parts.append(part)
        self.form.setdefault(name, upload if upload is not None else part.value)

    def end(self):
        self.ended = True


def parse(scope, body: bytes) -> Form:
    """The multipart/form-data body as a Form, or the 400 that says what is wrong with it."""
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise bad_form(
            "The request must be multipart/form-data with a boundary (send the audio as a "
            "file part and the other parameters as form fields).",
            "invalid_content_type",
        )
    collector = _Collector(body)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise bad_form(f"The multipart body could not be parsed: {exc}.") from None
    if not collector.ended:
        raise bad_form("The multipart body ended before its closing boundary.")
    return collector.form
