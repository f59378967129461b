"""Images, audio and moderations on the gateway, without I/O: the multipart form, what each
reserves and charges, the Azure URL and headers."""

import orjson
import pytest

from livestate.snapshots import TeamPricing
from proxy import admission, pricing
from proxy.apis import ENDPOINTS, multipart
from proxy.apis.media import (
    AUDIO_TOKENS_PER_SECOND,
    IMAGES,
    MIN_AUDIO_BYTES_PER_SECOND,
    MODERATION,
    SPEECH,
    TRANSCRIPTION,
    cue_end_ms,
    transcript_usage,
)
from proxy.call import Call
from proxy.errors import GatewayError
from proxy.providers import provider
from proxy.tokens import reserve_input_tokens
from proxy.usage import Usage
from tests.helpers.gateway_state import (
    catalog_raw,
    key_snapshot,
    model,
    replica_with,
    team_snapshot,
)

BOUNDARY = "b0undary"
TABLE = {"1024x1024|hd": [40_000, 80_000], "1024x1024": [20_000, 40_000]}


def routes(**extra):
    raw = catalog_raw({"m": model("m", max_out=100, **extra)}, {})
    return [replica_with(raw).catalog.routes_by_name["m"]]


def call(api, request: dict, rts, body: bytes | None = None, pricing_=None) -> Call:
    return Call(
        rid="req_test",
        scope={"headers": [], "path": "/", "method": "POST"},
        receive=None,
        send=None,
        key=key_snapshot(),
        team=team_snapshot(pricing=pricing_ or TeamPricing()),
        request=request,
        body=body if body is not None else orjson.dumps(request),
        api=api,
        path="/",
        routes=rts,
        group=None,
    )


def form_body(*parts) -> bytes:
    """parts: (name, value) text fields or (name, filename, content type, data) files."""
    out = b""
    for part in parts:
        out += b"--" + BOUNDARY.encode() + b"\r\n"
        if len(part) == 2:
            out += b'Content-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (
                part[0].encode(),
                part[1].encode(),
            )
        else:
            name, filename, kind, data = part
            out += b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n' % (
                name.encode(),
                filename.encode(),
            )
            out += b"Content-Type: %s\r\n\r\n%s\r\n" % (kind.encode(), data)
        out += b""
    return out + b"--" + BOUNDARY.encode() + b"--\r\n"


def scope(content_type: str = f"multipart/form-data; boundary={BOUNDARY}") -> dict:
    return {"headers": [(b"content-type", content_type.encode())]}


AUDIO = b"RIFF" + bytes(range(256)) * 40 + b"\r\n--b0und"  # a boundary prefix inside the data


# --- the multipart form ---------------------------------------------------------------------


def test_a_form_gives_its_fields_and_its_file_as_views_into_the_body():
    body = form_body(
        ("model", "whisper"), ("file", "a.wav", "audio/wav", AUDIO), ("language", "en")
    )
    form = TRANSCRIPTION.parse(scope(), body)
    assert form["model"] == "whisper" and form["language"] == "en"
    upload = form["file"]
    assert (upload.filename, upload.content_type, upload.size) == ("a.wav", "audio/wav", len(AUDIO))
    assert b"".join(upload.pieces) == AUDIO
    assert upload.head(4) == b"RIFF"


def test_a_form_is_encoded_again_with_the_upstream_model_and_every_repeated_field():
    body = form_body(
        ("model", "public"),
        ("timestamp_granularities[]", "word"),
        ("file", "a.wav", "audio/wav", AUDIO),
        ("timestamp_granularities[]", "segment"),
    )
    form = TRANSCRIPTION.parse(scope(), body)
    again = form.encode("other", {"model": "upstream-id"})
    reparsed = multipart.parse(scope("multipart/form-data; boundary=other"), again)
    assert reparsed["model"] == "upstream-id"
    assert [p.value for p in reparsed.parts if p.name == "timestamp_granularities[]"] == [
        "word",
        "segment",
    ]
    assert b"".join(reparsed["file"].pieces) == AUDIO
    assert reparsed["file"].filename == "a.wav"


@pytest.mark.parametrize(
    "content_type, body, code",
    [
        ("application/json", b'{"model": "m"}', "invalid_content_type"),
        ("multipart/form-data", b"--x\r\n", "invalid_content_type"),  # no boundary
        (f"multipart/form-data; boundary={BOUNDARY}", b"garbage", "invalid_multipart"),
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            form_body(("model", "m"))[:-8],  # cut before the closing boundary
            "invalid_multipart",
        ),
    ],
)
def test_a_body_that_is_not_a_whole_multipart_form_is_a_400(content_type, body, code):
    with pytest.raises(GatewayError) as caught:
        TRANSCRIPTION.parse(scope(content_type), body)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert orjson.loads(caught.value.body())["error"]["type"] == "invalid_request_error"


def test_a_form_without_a_file_or_with_the_model_as_a_file_is_a_400_naming_it():
    form = TRANSCRIPTION.parse(scope(), form_body(("model", "m")))
    with pytest.raises(GatewayError) as caught:
        TRANSCRIPTION.check(form)
    assert (caught.value.param, caught.value.code) == ("file", "missing_required_parameter")
    with pytest.raises(GatewayError) as caught:
        TRANSCRIPTION.parse(scope(), form_body(("model", "m.txt", "text/plain", b"m")))
    assert caught.value.param == "model"
    form = TRANSCRIPTION.parse(
        scope(), form_body(("model", "m"), ("file", "a", "audio/wav", AUDIO), ("stream", "true"))
    )
    with pytest.raises(GatewayError) as caught:
        TRANSCRIPTION.check(form)
    assert (caught.value.param, caught.value.code) == ("stream", "unsupported_parameter")


def test_uploads_are_bounded_by_their_own_setting(settings):
    settings.GATEWAY_MAX_UPLOAD_BYTES = 1234
    assert TRANSCRIPTION.max_body == 1234
    assert ENDPOINTS["/v1/audio/transcriptions"] is TRANSCRIPTION


# --- transcriptions -------------------------------------------------------------------------


def test_a_transcription_reserves_the_longest_its_upload_can_play():
    rts = routes(in_price=0, out_price=0, in_cost=0, out_cost=0, sec_price=100, sec_cost=50)
    body = form_body(("model", "m"), ("file", "a.wav", "audio/wav", AUDIO))
    form = TRANSCRIPTION.parse(scope(), body)
    reserve, est = admission.reservation(call(TRANSCRIPTION, form, rts, body), None)
    seconds = -(-len(AUDIO) // MIN_AUDIO_BYTES_PER_SECOND)
    assert reserve == seconds * 100
    assert est == 0  # no token price: no token room held


def test_a_token_priced_transcription_also_reserves_audio_tokens_and_the_output_cap():
    rts = routes(sec_price=0)
    body = form_body(("model", "m"), ("file", "a.wav", "audio/wav", AUDIO))
    form = TRANSCRIPTION.parse(scope(), body)
    _, est = admission.reservation(call(TRANSCRIPTION, form, rts, body), None)
    seconds = -(-len(AUDIO) // MIN_AUDIO_BYTES_PER_SECOND)
    assert est == seconds * AUDIO_TOKENS_PER_SECOND + reserve_input_tokens(0) + 100


def test_transcript_usage_in_every_shape():
    assert transcript_usage({"text": "x", "usage": {"type": "duration", "seconds": 3}}) == Usage(
        audio_ms=3000
    )
    assert transcript_usage({"usage": {"type": "duration", "seconds": 9.2}}).audio_ms == 9200
    tokens = transcript_usage(
        {
            "usage": {
                "type": "tokens",
                "input_tokens": 70,
                "output_tokens": 9,
                "input_token_details": {"audio_tokens": 60, "text_tokens": 10},
            }
        }
    )
    assert (tokens.input, tokens.output, tokens.audio_in, tokens.audio_ms) == (70, 9, 60, 0)
    assert transcript_usage({"text": "x", "duration": 1.5}).audio_ms == 1500
    assert transcript_usage({"text": "x"}) is None
    assert transcript_usage({"usage": {"type": "duration", "seconds": "3"}}) is None


def test_subtitles_are_charged_to_the_end_of_their_last_cue():
    srt = b"1\n00:00:00,000 --> 00:00:02,500\nHello\n\n2\n00:00:02,500 --> 01:00:04,250\nBye\n"
    vtt = b"WEBVTT\n\n00:01.000 --> 00:03.120\nHello\n"
    assert cue_end_ms(srt) == 3_604_250
    assert cue_end_ms(vtt) == 3_120
    assert cue_end_ms(b"no cues") is None


def test_a_text_transcript_is_asked_as_json_and_answered_as_text():
    rts = routes(sec_price=100)
    body = form_body(
        ("model", "m"), ("file", "a.wav", "audio/wav", AUDIO), ("response_format", "text")
    )
    form = TRANSCRIPTION.parse(scope(), body)
    c = call(TRANSCRIPTION, form, rts, body)
    exchange = TRANSCRIPTION.exchange(rts[0])
    sent = exchange.body(c, rts[0])
    upstream = multipart.parse(
        {"headers": [(b"content-type", exchange.content_type(c).encode())]}, sent
    )
    assert (upstream["model"], upstream["response_format"]) == ("m-upstream", "json")
    answer = exchange.decode(b'{"text": "Hello.", "usage": {"type": "duration", "seconds": 2}}')
    out, used, _ = exchange.unary(c, rts[0], answer)
    assert out == b"Hello.\n"
    assert used.audio_ms == 2000
    assert exchange.answer_headers(c)[0][1].startswith(b"text/plain")


def test_an_unreadable_transcript_is_charged_its_reserved_bound():
    rts = routes(sec_price=100)
    body = form_body(
        ("model", "m"), ("file", "a.wav", "audio/wav", AUDIO), ("response_format", "srt")
    )
    form = TRANSCRIPTION.parse(scope(), body)
    c = call(TRANSCRIPTION, form, rts, body)
    exchange = TRANSCRIPTION.exchange(rts[0])
    out, used, _ = exchange.unary(c, rts[0], exchange.decode(b"not subtitles"))
    assert out == b"not subtitles"
    assert used.audio_ms == -(-len(AUDIO) // MIN_AUDIO_BYTES_PER_SECOND) * 1000


# --- images ---------------------------------------------------------------------------------


def test_images_reserve_n_times_the_asked_size_and_quality():
    rts = routes(in_price=0, out_price=0, in_cost=0, out_cost=0, img_price=1, img_table=TABLE)
    request = {"model": "m", "prompt": "a cat", "n": 3, "size": "1024x1024", "quality": "hd"}
    IMAGES.check(request)
    reserve, _ = admission.reservation(call(IMAGES, request, rts), None)
    assert reserve == 3 * 80_000


def test_images_left_to_the_upstream_reserve_the_dearest_entry():
    rts = routes(in_price=0, out_price=0, in_cost=0, out_cost=0, img_price=1, img_table=TABLE)
    request = {"model": "m", "prompt": "a cat", "quality": "auto"}
    reserve, _ = admission.reservation(call(IMAGES, request, rts), None)
    assert reserve == 80_000


def test_images_are_charged_per_image_returned_and_at_most_n():
    rts = routes(in_price=0, out_price=0, in_cost=0, out_cost=0, img_price=1, img_table=TABLE)
    request = {"model": "m", "prompt": "a cat", "n": 2, "size": "1024x1024"}
    c = call(IMAGES, request, rts)
    exchange = IMAGES.exchange(rts[0])
    _, used, _ = exchange.unary(c, rts[0], {"data": [{"url": "u"}] * 3})
    assert (used.images, used.image_size, used.image_quality) == (2, "1024x1024", "")
    assert pricing.price(TeamPricing(), rts[0], used) == 2 * 40_000
    # gpt-image: the answer says what it drew when the caller left it open, and its tokens
    c = call(IMAGES, {"model": "m", "prompt": "a cat"}, rts)
    answer = {
        "data": [{"b64_json": "x"}],
        "size": "1024x1024",
        "quality": "hd",
        "usage": {"input_tokens": 5, "output_tokens": 1056},
    }
    _, used, _ = exchange.unary(c, rts[0], answer)
    assert (used.images, used.image_size, used.image_quality) == (1, "1024x1024", "hd")
    assert (used.input, used.output) == (5, 1056)


@pytest.mark.parametrize(
    "request_, param",
    [
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": 3}, "prompt"),
        ({"model": "m", "prompt": "p", "n": 11}, "n"),
        ({"model": "m", "prompt": "p", "n": "2"}, "n"),
        ({"model": "m", "prompt": "p", "size": 1024}, "size"),
        ({"model": "m", "prompt": "p", "quality": ["hd"]}, "quality"),
        ({"model": "m", "prompt": "p", "stream": True}, "stream"),
    ],
)
def test_bad_image_requests_are_a_400_naming_the_field(request_, param):
    with pytest.raises(GatewayError) as caught:
        IMAGES.check(request_)
    assert (caught.value.status, caught.value.param) == (400, param)


# --- speech and moderations -----------------------------------------------------------------


def test_speech_reserves_exactly_its_characters():
    rts = routes(in_price=0, out_price=0, in_cost=0, out_cost=0, chr_price=15_000_000)
    request = {"model": "m", "input": "Héllo wörld", "voice": "alloy"}
    SPEECH.check(request)
    reserve, _ = admission.reservation(call(SPEECH, request, rts), None)
    codec = SPEECH.exchange(rts[0]).codec(call(SPEECH, request, rts), rts[0])
    assert codec.binary and codec.usage.characters == 11
    assert reserve == pricing.price(TeamPricing(), rts[0], codec.usage) == 165


@pytest.mark.parametrize(
    "request_, param",
    [
        ({"model": "m", "voice": "alloy"}, "input"),
        ({"model": "m", "input": "x" * 4097, "voice": "alloy"}, "input"),
        ({"model": "m", "input": "hi"}, "voice"),
        ({"model": "m", "input": "hi", "voice": "alloy", "speed": "fast"}, "speed"),
        ({"model": "m", "input": "hi", "voice": "alloy", "stream_format": "sse"}, "stream_format"),
    ],
)
def test_bad_speech_requests_are_a_400_naming_the_field(request_, param):
    with pytest.raises(GatewayError) as caught:
        SPEECH.check(request_)
    assert (caught.value.status, caught.value.param) == (400, param)


@pytest.mark.parametrize("value", [None, 3, [1, 2], ["a", {"type": "text"}]])
def test_bad_moderation_input_is_a_400_naming_it(value):
    with pytest.raises(GatewayError) as caught:
        MODERATION.check({"model": "m", "input": value})
    assert caught.value.param == "input"


def test_moderations_report_no_usage_so_the_input_is_estimated():
    rts = routes()
    request = {"model": "m", "input": ["first", "second"]}
    c = call(MODERATION, request, rts)
    exchange = MODERATION.exchange(rts[0])
    assert orjson.loads(exchange.body(c, rts[0]))["model"] == "m-upstream"
    out, used, _ = exchange.unary(c, rts[0], {"id": "modr", "model": "m-upstream", "results": []})
    assert used is None and orjson.loads(out)["model"] == "m"


# --- Azure ----------------------------------------------------------------------------------


def test_azure_routes_go_to_the_deployment_with_the_api_version_and_an_api_key():
    raw = catalog_raw({"m": model("m")}, {})
    raw["upstreams"]["up_1"].update(
        kind="azure_openai", base_url="https://res.openai.azure.com", api_version="2024-10-21"
    )
    route = replica_with(raw).catalog.routes_by_name["m"]
    route.auth_key, route.auth = "azkey", "Bearer azkey"  # as a stored key decrypts
    azure = provider("azure_openai")
    assert azure is route.provider
    assert azure.url(route, "chat") == (
        "https://res.openai.azure.com/openai/deployments/m-upstream/chat/completions"
        "?api-version=2024-10-21"
    )
    assert azure.url(route, "transcription").endswith(
        "/audio/transcriptions?api-version=2024-10-21"
    )
    headers = azure.headers(route, call(IMAGES, {}, [route]))
    assert headers["api-key"] == "azkey" and "Authorization" not in headers
    assert IMAGES.exchange(route) is not None and MODERATION.exchange(route) is None
