"""OpenAI's images, audio and moderations endpoints: passed to OpenAI-compatible upstreams
with the public model name swapped for the upstream's, metered by what each one sells.

Images (/v1/images/generations, mode image): per image returned (at most the `n` asked), at
the model's price for the size and quality asked (its `img_table` entry "<size>|<quality>",
else "<size>", else the per-image price; a size or quality the caller left out or set to
"auto" is priced as the answer reports it, gpt-image-style), plus the token usage when the
upstream reports it (gpt-image's {input_tokens, output_tokens}). Reserved: n images at the
dearest price the asked size and quality can fall on, plus, when the call's prices count
tokens, the body's input estimate and max_output_tokens per image.

Transcriptions (/v1/audio/transcriptions, mode transcription, multipart/form-data): per
second of audio, from the answer's usage {"type": "duration", "seconds"} (or verbose_json's
`duration`), in milliseconds; tokens when it reports {"type": "tokens", input_tokens,
output_tokens, input_token_details.audio_tokens}. Reserved: the longest the upload can play,
its size at MIN_AUDIO_BYTES_PER_SECOND (6 kbit/s, below every format OpenAI accepts; a 25 MiB
upload bounds it at 9.7 h), plus, when the call's prices count tokens,
AUDIO_TOKENS_PER_SECOND input tokens per second of that bound and max_output_tokens.
`response_format` text is asked upstream as json (the transcript is answered as text/plain,
charged by the usage that comes with json); srt and vtt are passed through as they come and
charged up to the end of their last cue; an answer whose duration cannot be read is charged
the reserved bound.

Speech (/v1/audio/speech, mode speech): per 1M characters of `input`, known before the call
(the reservation is the charge); the audio is relayed as the upstream sends it, with its
content type (a binary StreamCodec, never buffered whole). An upstream that breaks off, or a
client that leaves, is still charged the whole input: the upstream has been paid for it.

Moderations (/v1/moderations, mode moderation): per input token at the model's input price,
estimated locally (the upstream reports none; proxy/tokens.estimate_prompt_tokens: 4 bytes of
UTF-8 per token, rounded up, per input string), recorded as estimated.

Streaming variants the gateway does not relay (images `stream`, transcriptions `stream`,
speech `stream_format: "sse"`) are refused with a 400 naming the parameter.
"""

import math
import re

import orjson
from django.conf import settings

from livestate.snapshots import PER_TOKENS
from proxy import usage as usages
from proxy.apis import multipart
from proxy.apis.base import Api, Exchange, StreamCodec, invalid, missing, positive_int
from proxy.errors import GatewayError
from proxy.pricing import Demand
from proxy.tokens import reserve_input_tokens
from proxy.usage import Usage

MAX_IMAGES = 10  # OpenAI's bound on `n`
MAX_SPEECH_CHARS = 4096  # OpenAI's bound on `input`
# The lowest bitrate of the formats OpenAI accepts (Opus voice, 6 kbit/s): no upload plays
# longer than its size at this rate, so the reservation covers its duration.
MIN_AUDIO_BYTES_PER_SECOND = 750
# A generous bound of the audio input tokens per second of token-billed transcription models.
AUDIO_TOKENS_PER_SECOND = 20
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
_CUE_END = re.compile(rb"-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{3})")
IMAGE_TEXT_FIELDS = (
    "size",
    "quality",
    "style",
    "response_format",
    "background",
    "output_format",
    "moderation",
    "user",
)
TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]


def prices_tokens(call) -> bool:
    """Whether a token could cost this call anything: a token-priced team, or a route with a
    token price or cost (else the token part of a reservation is left out: it would only hold
    rate-limit room)."""
    if call.team.pricing.mode == PER_TOKENS:
        return True
    return any(
        r.prices.max_input or r.prices.max_output or r.costs.max_input or r.costs.max_output
        for r in call.routes
    )


def output_bound(call) -> int:
    return max(r.max_out for r in call.routes)


def text_field(request: dict, field: str) -> str | None:
    value = request.get(field)
    if value is not None and not isinstance(value, str):
        raise invalid(field, f"'{field}' must be a string.")
    return value


def refuse_true(request: dict, field: str, what: str) -> None:
    value = request.get(field)
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        raise invalid(
            field,
            f"{what} is not supported by the gateway; leave out '{field}'.",
            "unsupported_parameter",
        )


def unspecified(value: str | None) -> str:
    """A size or quality left to the upstream prices as unknown."""
    return "" if value in (None, "", "auto") else value


class SwappedJson(Exchange):
    """The JSON body as the client sent it, with the upstream model name."""

    def __init__(self, api: str):
        self.upstream = api

    def body(self, call, route) -> bytes:
        request = call.request
        request["model"] = route.upstream_model
        return orjson.dumps(request)


# --- images ---------------------------------------------------------------------------------


class ImagesExchange(SwappedJson):
    def unary(self, call, route, payload):
        request = call.request
        asked = request.get("n") or 1
        data = payload.get("data") if isinstance(payload, dict) else None
        returned = len(data) if isinstance(data, list) else 0
        reported = payload.get("usage") if isinstance(payload, dict) else None
        used = usages.from_responses(reported) or Usage()
        used.images = min(returned, asked)
        # What the caller named is what was reserved for; what they left open, as answered.
        size, quality = unspecified(request.get("size")), unspecified(request.get("quality"))
        if isinstance(payload, dict):
            if not size and isinstance(payload.get("size"), str):
                size = unspecified(payload["size"])
            if not quality and isinstance(payload.get("quality"), str):
                quality = unspecified(payload["quality"])
        used.image_size, used.image_quality = size, quality
        return orjson.dumps(payload), used, lambda: 0


class Images(Api):
    name = mode = "image"

    def __init__(self):
        self.native = ImagesExchange(self.name)

    def check(self, request: dict) -> None:
        prompt = request.get("prompt")
        if prompt in (None, ""):
            raise missing("prompt")
        if not isinstance(prompt, str):
            raise invalid("prompt", "'prompt' must be a string.")
        positive_int(request, "n", limit=MAX_IMAGES)
        for field in IMAGE_TEXT_FIELDS:
            text_field(request, field)
        refuse_true(request, "stream", "Streaming image generation")

    def streams(self, request: dict) -> bool:
        return False

    def demand(self, call) -> Demand:
        request = call.request
        n = request.get("n") or 1
        tokens = prices_tokens(call)
        return Demand(
            input=reserve_input_tokens(len(call.body)) if tokens else 0,
            output=output_bound(call) if tokens else 0,
            answers=n,
            images=n,
            image_size=unspecified(request.get("size")),
            image_quality=unspecified(request.get("quality")),
        )

    def exchange(self, route) -> Exchange | None:
        return self.native if self.name in route.provider.formats else None


# --- transcriptions -------------------------------------------------------------------------


def worst_seconds(upload: multipart.Upload) -> int:
    return max(1, -(-upload.size // MIN_AUDIO_BYTES_PER_SECOND))


def cue_end_ms(text: bytes) -> int | None:
    """The end of the last cue of an srt or vtt transcript, in ms."""
    ends = [
        ((int(h or 0) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)
        for h, m, s, ms in _CUE_END.findall(text)
    ]
    return max(ends) if ends else None


def transcript_usage(payload) -> Usage | None:
    """What a JSON transcript reports: duration usage, token usage, or verbose `duration`."""
    if not isinstance(payload, dict):
        return None
    reported = payload.get("usage")
    if isinstance(reported, dict):
        if reported.get("type") == "tokens" or "input_tokens" in reported:
            u = Usage(
                usages.count(reported.get("input_tokens")),
                usages.count(reported.get("output_tokens")),
            )
            details = reported.get("input_token_details")
            if isinstance(details, dict):
                u.audio_in = min(usages.count(details.get("audio_tokens")), u.input)
            seconds = reported.get("seconds")  # some upstreams report both
            if _seconds(seconds) is not None:
                u.audio_ms = _seconds(seconds)
            return u
        if _seconds(reported.get("seconds")) is not None:
            return Usage(audio_ms=_seconds(reported["seconds"]))
    if _seconds(payload.get("duration")) is not None:
        return Usage(audio_ms=_seconds(payload["duration"]))
    return None


def _seconds(value) -> int | None:
    """Reported seconds as milliseconds (a float to the ms), None when not a duration."""
    if type(value) in (int, float) and value >= 0 and math.isfinite(value):
        return round(value * 1000)
    return None


class TranscriptionExchange(Exchange):
    upstream = "transcription"

    def content_type(self, call) -> str:
        return "multipart/form-data; boundary=" + self._boundary(call)

    @staticmethod
    def _boundary(call) -> str:
        # Unknown to the client before its upload was read, so no file can hold it.
        return "tollgate-" + call.rid

    def body(self, call, route) -> bytes:
        form = call.request
        replace = {"model": route.upstream_model}
        if form.get("response_format") == "text":
            replace["response_format"] = "json"  # to read the usage; answered as text
        return form.encode(self._boundary(call), replace)

    def decode(self, raw: bytes):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw  # srt, vtt: passed through as text

    def answer_headers(self, call):
        fmt = call.request.get("response_format")
        return TEXT_HEADERS if fmt in ("text", "srt", "vtt") else None

    def unary(self, call, route, payload):
        form = call.request
        fmt = form.get("response_format") or "json"
        used = None
        if isinstance(payload, bytes):
            body = payload
            end = cue_end_ms(payload)
            if end is not None:
                used = Usage(audio_ms=end)
        else:
            used = transcript_usage(payload)
            if fmt == "text" and isinstance(payload, dict) and isinstance(payload.get("text"), str):
                body = payload["text"].encode() + b"\n"
            else:
                body = orjson.dumps(payload)
        if used is None:
            # Unreadable: the reserved bound (documented in the module docstring).
            used = Usage(audio_ms=worst_seconds(form["file"]) * 1000)
        return body, used, lambda: 0


class Transcription(Api):
    name = mode = "transcription"

    def __init__(self):
        self.native = TranscriptionExchange()

    @property
    def max_body(self) -> int:  # the whole multipart body, file and fields
        return settings.GATEWAY_MAX_UPLOAD_BYTES

    def parse(self, scope, body: bytes) -> dict:
        form = multipart.parse(scope, body)
        for name, value in form.items():
            if name != "file" and isinstance(value, multipart.Upload):
                raise invalid(name, f"'{name}' must be a form field, not a file.")
        return form

    def check(self, request: dict) -> None:
        upload = request.get("file")
        if upload is None:
            raise missing("file")
        if not isinstance(upload, multipart.Upload):
            raise invalid("file", "'file' must be a file part (the audio), not a text field.")
        if upload.size == 0:
            raise invalid("file", "'file' is empty.", "invalid_value")
        fmt = request.get("response_format")
        if fmt is not None and fmt not in TRANSCRIPT_FORMATS:
            raise invalid(
                "response_format",
                f"'response_format' must be one of {', '.join(TRANSCRIPT_FORMATS)}.",
                "invalid_value",
            )
        temperature = request.get("temperature")
        if temperature is not None:
            try:
                float(temperature)
            except ValueError:
                raise invalid("temperature", "'temperature' must be a number.") from None
        refuse_true(request, "stream", "Streaming transcription")

    def streams(self, request: dict) -> bool:
        return False

    def demand(self, call) -> Demand:
        seconds = worst_seconds(call.request["file"])
        tokens = prices_tokens(call)
        prompt = call.request.get("prompt") or ""
        return Demand(
            input=seconds * AUDIO_TOKENS_PER_SECOND + reserve_input_tokens(len(prompt.encode()))
            if tokens
            else 0,
            output=output_bound(call) if tokens else 0,
            audio_ms=seconds * 1000,
        )

    def exchange(self, route) -> Exchange | None:
        return self.native if self.name in route.provider.formats else None


# --- speech ---------------------------------------------------------------------------------


class SpeechStream(StreamCodec):
    """The audio as the upstream sends it; the charge (the input's characters) is known."""

    __slots__ = ("content",)
    binary = True

    def __init__(self, public: str, characters: int):
        super().__init__(public)
        self.usage = Usage(characters=characters)
        self.content = b"audio/mpeg"

    def opened(self, headers) -> None:
        self.content = headers.get("Content-Type", "audio/mpeg").encode("latin-1")

    def headers(self):
        return [(b"content-type", self.content)]

    def frame(self, frame: bytes) -> bytes | None:
        return frame

    def is_end(self, frame: bytes) -> bool:
        return False

    def closing(self) -> bytes:
        return b""

    def error_frame(self, error: GatewayError) -> bytes:
        return b""  # audio has no error event (proxy/streaming.py cuts the body off)


class SpeechExchange(SwappedJson):
    def codec(self, call, route) -> StreamCodec:
        return SpeechStream(route.name, len(call.request["input"]))


class Speech(Api):
    name = mode = "speech"

    def __init__(self):
        self.native = SpeechExchange(self.name)

    def check(self, request: dict) -> None:
        text = request.get("input")
        if text in (None, ""):
            raise missing("input")
        if not isinstance(text, str):
            raise invalid("input", "'input' must be a string.")
        if len(text) > MAX_SPEECH_CHARS:
            raise invalid(
                "input",
                f"'input' must be at most {MAX_SPEECH_CHARS} characters.",
                "string_above_max_length",
            )
        voice = request.get("voice")
        if voice in (None, ""):
            raise missing("voice")
        if not isinstance(voice, str | dict):
            raise invalid("voice", "'voice' must be a voice name or a voice object.")
        for field in ("response_format", "instructions", "stream_format"):
            text_field(request, field)
        speed = request.get("speed")
        if speed is not None and (type(speed) not in (int, float)):
            raise invalid("speed", "'speed' must be a number.")
        if request.get("stream_format") == "sse":
            raise invalid(
                "stream_format",
                "Speech as server-sent events is not supported by the gateway; use "
                "stream_format 'audio' (the audio is streamed as it is generated).",
                "unsupported_parameter",
            )

    def streams(self, request: dict) -> bool:
        return True  # always relayed as it comes: audio is never buffered whole

    def demand(self, call) -> Demand:
        return Demand(characters=len(call.request["input"]))

    def exchange(self, route) -> Exchange | None:
        return self.native if self.name in route.provider.formats else None


# --- moderations ----------------------------------------------------------------------------


class ModerationExchange(SwappedJson):
    def unary(self, call, route, payload):
        if isinstance(payload, dict) and "model" in payload:
            payload["model"] = route.name
        # No usage reported: the settlement estimates the input (recorded as estimated).
        return orjson.dumps(payload), None, lambda: 0


class Moderation(Api):
    name = mode = "moderation"

    def __init__(self):
        self.native = ModerationExchange(self.name)

    def check(self, request: dict) -> None:
        value = request.get("input")
        if value in (None, "", []):
            raise missing("input")
        ok = isinstance(value, str) or (
            isinstance(value, list)
            and (all(isinstance(v, str) for v in value) or all(isinstance(v, dict) for v in value))
        )
        if not ok:
            raise invalid(
                "input", "'input' must be a string, an array of strings or of content parts."
            )

    def streams(self, request: dict) -> bool:
        return False

    def demand(self, call) -> Demand:
        return Demand(input=reserve_input_tokens(len(call.body)))

    def exchange(self, route) -> Exchange | None:
        return self.native if self.name in route.provider.formats else None


IMAGES = Images()
TRANSCRIPTION = Transcription()
SPEECH = Speech()
MODERATION = Moderation()
