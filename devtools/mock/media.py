"""Images generations, audio transcriptions (multipart) and speech, moderations.

The rules (image tokens, audio duration, speech length, the flagged words) are in the
docstring of devtools.mock_upstream, "Images, audio, moderations". A transcription upload is
parsed as it arrives with python-multipart's streaming parser: only the first bytes of the
file (enough for a WAV header) are kept, however large the upload.
"""

from __future__ import annotations

import base64
import math
import re
import struct
import time
import zlib
from typing import Any

import orjson
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from devtools.mock.core import (
    MAX_BODY_BYTES,
    ClientGone,
    Receive,
    Request,
    RequestError,
    Scope,
    count_tokens,
    new_id,
    require_string,
    send_json,
)

MAX_IMAGES = 10
# gpt-image-1's documented output tokens for one 1024x1024 image, by quality.
IMAGE_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
_IMAGE_QUALITIES = ("standard", "hd", "low", "medium", "high", "auto")
_SIZE_RE = re.compile(r"^(auto|\d{2,5}x\d{2,5})$")
FALLBACK_BYTES_PER_SECOND = 16_000
FILE_HEAD_BYTES = 64 * 1024
SPEECH_SAMPLE_RATE = 24_000  # 16-bit mono, as OpenAI's pcm format
SPEECH_MS_PER_CHAR = 20
MAX_SPEECH_CHARS = 4096
SPEECH_CHUNK_BYTES = 16 * 1024
SPEECH_TYPES = {
    "mp3": b"audio/mpeg",
    "opus": b"audio/opus",
    "aac": b"audio/aac",
    "flac": b"audio/flac",
    "wav": b"audio/wav",
    "pcm": b"audio/pcm",
}
# word -> moderation categories it flags (matched as whole words, case-insensitively)
FLAGGED_WORDS = {
    "kill": ("violence",),
    "murder": ("violence",),
    "bomb": ("illicit", "illicit/violent", "violence"),
    "hate": ("hate",),
    "harass": ("harassment",),
    "suicide": ("self-harm", "self-harm/intent"),
}
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_WORD_RE = re.compile(r"\w+")


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    pixels = zlib.compress(b"\x00\x80\x80\x80\xff")  # filter byte + one grey pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = _png_1x1()
PNG_B64 = base64.b64encode(PNG).decode()


def _choice(payload: dict, param: str, allowed: tuple, default: Any) -> Any:
    value = payload.get(param, default)
    if value is None:
        return default
    if value not in allowed:
        options = ", ".join(map(repr, allowed))
        raise RequestError(
            400,
            f"Invalid '{param}': {value!r} is not one of {options}.",
            param=param,
            code="invalid_value",
        )
    return value


async def images(req: Request) -> None:
    payload = req.payload
    prompt = require_string(payload, "prompt")
    model = payload.get("model") or "dall-e-2"
    n = payload.get("n", 1)
    if type(n) is not int or not 1 <= n <= MAX_IMAGES:
        raise RequestError(
            400,
            f"Invalid 'n': expected an integer from 1 to {MAX_IMAGES}.",
            param="n",
            code="invalid_value",
        )
    size = payload.get("size") or "1024x1024"
    if not isinstance(size, str) or not _SIZE_RE.match(size):
        raise RequestError(400, "Invalid 'size': expected 'auto' or 'WIDTHxHEIGHT'.", param="size")
    quality = _choice(payload, "quality", _IMAGE_QUALITIES, "auto")
    response_format = _choice(payload, "response_format", ("url", "b64_json"), "url")
    token_billed = "gpt-image" in model
    if token_billed:
        response_format = "b64_json"  # gpt-image models always answer base64
    if response_format == "b64_json":
        item = {"b64_json": PNG_B64, "revised_prompt": prompt}
    else:
        # A data URL: self-contained, so the mock needs no file server.
        item = {"url": "data:image/png;base64," + PNG_B64, "revised_prompt": prompt}
    body: dict[str, Any] = {"created": int(time.time()), "data": [item] * n}
    if token_billed:
        text_tokens = count_tokens(prompt)
        output = n * IMAGE_OUTPUT_TOKENS.get(quality, IMAGE_OUTPUT_TOKENS["auto"])
        body.update(
            size=size,
            quality=quality,
            output_format="png",
            usage={
                "input_tokens": text_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
                "output_tokens": output,
                "total_tokens": text_tokens + output,
            },
        )
    await send_json(req.send, 200, orjson.dumps(body))


class _Upload:
    """The form fields of a multipart body and, for file parts, their head and size."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._file: dict | None = None
        self._data: list[bytes] = []

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name, self._file, self._data = {}, None, None, []

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        self._name = name.decode(errors="replace") if name is not None else None
        if b"filename" in options:
            self._file = {
                "filename": options[b"filename"].decode(errors="replace"),
                "content_type": self._headers.get(b"content-type", b"").decode(errors="replace"),
                "size": 0,
                "head": b"",
            }

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None:
            self._data.append(data[start:end])
            return
        self._file["size"] += end - start
        room = FILE_HEAD_BYTES - len(self._file["head"])
        if room > 0:
            self._file["head"] += data[start : min(end, start + room)]

    def _part_end(self) -> None:
        if self._name is None:
            return
        if self._file is not None:
            self.fields[self._name] = self._file
        else:
            self.fields[self._name] = b"".join(self._data).decode(errors="replace")


async def parse_multipart(scope: Scope, receive: Receive) -> dict[str, Any]:
    """The form of a multipart/form-data body, parsed as it streams in."""
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise RequestError(
            400,
            "Invalid Content-Type header: expected multipart/form-data with a boundary.",
        )
    upload = _Upload()
    parser = MultipartParser(boundary, upload.callbacks(), max_size=MAX_BODY_BYTES)
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            parser.write(message.get("body", b""))
            if not message.get("more_body", False):
                break
        parser.finalize()
    except MultipartParseError as exc:
        raise RequestError(400, f"Could not parse the multipart form: {exc}.") from None
    return upload.fields


def wav_seconds(head: bytes) -> float | None:
    """The duration a RIFF/WAVE header announces (data bytes / byte rate), else None."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset = 12
    byte_rate = None
    while offset + 8 <= len(head):
        kind = head[offset : offset + 4]
        (size,) = struct.unpack("<I", head[offset + 4 : offset + 8])
        if kind == b"fmt " and offset + 20 <= len(head):
            (byte_rate,) = struct.unpack("<I", head[offset + 16 : offset + 20])
        elif kind == b"data":
            return size / byte_rate if byte_rate else None
        offset += 8 + size + (size & 1)
    return None


def audio_seconds(upload: dict) -> float:
    seconds = wav_seconds(upload["head"])
    return seconds if seconds is not None else upload["size"] / FALLBACK_BYTES_PER_SECOND


async def transcriptions(req: Request) -> None:
    form = req.payload
    upload = form.get("file")
    if not isinstance(upload, dict):
        raise RequestError(
            400,
            "Missing required parameter: 'file' (a multipart file part).",
            param="file",
            code="missing_required_parameter",
        )
    model = form.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    response_format = _choice(form, "response_format", ("json", "text", "verbose_json"), "json")
    seconds = audio_seconds(upload)
    text = f"Mock transcription of {upload['filename'] or 'audio'}, {seconds:.2f} seconds."
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if response_format == "text":
        body = (text + "\n").encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        await req.send({"type": "http.response.start", "status": 200, "headers": headers})
        await req.send({"type": "http.response.body", "body": body})
        return
    answer: dict[str, Any] = {"text": text, "usage": usage}
    if response_format == "verbose_json":
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": round(seconds, 2),
            "text": text,
            "tokens": list(range(count_tokens(text))),
            "temperature": 0.0,
            "avg_logprob": -0.1,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.0,
        }
        answer = {
            "task": "transcribe",
            "language": form.get("language") or "english",
            "duration": round(seconds, 2),
            "text": text,
            "segments": [segment],
            "usage": usage,
        }
    await send_json(req.send, 200, orjson.dumps(answer))


def speech_bytes(characters: int, response_format: str) -> bytes:
    """Silence lasting SPEECH_MS_PER_CHAR per character: a WAV, or raw PCM for "pcm"."""
    samples = SPEECH_SAMPLE_RATE * SPEECH_MS_PER_CHAR * characters // 1000
    pcm = bytes(2 * samples)
    if response_format == "pcm":
        return pcm
    rate = SPEECH_SAMPLE_RATE
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


async def speech(req: Request) -> None:
    payload = req.payload
    require_string(payload, "model")
    text = require_string(payload, "input")
    require_string(payload, "voice")
    if len(text) > MAX_SPEECH_CHARS:
        raise RequestError(
            400,
            f"Invalid 'input': at most {MAX_SPEECH_CHARS} characters.",
            param="input",
            code="string_above_max_length",
        )
    response_format = _choice(payload, "response_format", tuple(SPEECH_TYPES), "mp3")
    audio = speech_bytes(len(text), response_format)
    headers = [(b"content-type", SPEECH_TYPES[response_format])]
    await req.send({"type": "http.response.start", "status": 200, "headers": headers})
    for start in range(0, len(audio), SPEECH_CHUNK_BYTES):
        chunk = audio[start : start + SPEECH_CHUNK_BYTES]
        await req.send({"type": "http.response.body", "body": chunk, "more_body": True})
    await req.send({"type": "http.response.body", "body": b"", "more_body": False})


def _moderation_texts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(item, str) for item in raw):
            return raw
        if all(isinstance(item, dict) for item in raw):
            # Multimodal input: one result for all the parts, as omni-moderation answers.
            return [" ".join(p.get("text", "") for p in raw if p.get("type") == "text")]
    raise RequestError(
        400,
        "Invalid 'input': expected a string, an array of strings or of content parts.",
        param="input",
        code="invalid_value",
    )


def moderation_result(text: str) -> dict:
    flagged_categories: set[str] = set()
    for word in _WORD_RE.findall(text.lower()):
        flagged_categories.update(FLAGGED_WORDS.get(word, ()))
    categories = {c: c in flagged_categories for c in MODERATION_CATEGORIES}
    scores = {c: 0.99 if c in flagged_categories else 0.0001 for c in MODERATION_CATEGORIES}
    return {
        "flagged": bool(flagged_categories),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
    }


async def moderations(req: Request) -> None:
    payload = req.payload
    texts = _moderation_texts(payload.get("input"))
    body = {
        "id": new_id("modr"),
        "model": payload.get("model") or "omni-moderation-latest",
        "results": [moderation_result(t) for t in texts],
    }
    await send_json(req.send, 200, orjson.dumps(body))
