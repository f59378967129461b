"""Images, audio and moderations through the running gateway to the mock upstream, with the
official openai SDK: what the client gets, and that each call is charged its documented price
to the micro-credit (proxy/apis/media.py)."""

import io
import struct

import httpx
import openai
import pytest
from django.db.models import Sum

from billing.models import LedgerEntry, UsageRecord
from billing.settlement import settle_usage
from modelgroups import services as catalog
from tests.helpers.gateway import assert_error, concurrently, redis_account
from tests.helpers.ledger import posted_calls
from tests.helpers.tenants import GatewayTenant
from tests.test_gateway_sdk import money_state, sdk

# Per image, by size and quality: (cost, price) in micro-units.
IMAGE_TABLE = {
    "1024x1024|hd": {"cost": 40_000, "price": 80_000},
    "1024x1024|standard": {"cost": 20_000, "price": 40_000},
    "1792x1024|hd": {"cost": 60_000, "price": 120_000},
}
SECOND_PRICE = 100  # micro-credits per second of audio
CHARACTER_PRICE = 15_000_000  # micro-credits per 1M characters
MODERATION_PRICE = 1_000_000  # micro-credits per 1M input tokens
FREE = {"input_price_micros": 0, "output_price_micros": 0, "input_cost_micros": 0}


def wav(seconds: float, rate: int = 8_000) -> bytes:
    """A silent 16-bit mono WAV of `seconds`."""
    pcm = bytes(2 * int(rate * seconds))
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


@pytest.fixture
def media(mock_catalog):
    """A model of each media mode on the live mock, in the group `media`."""
    up = mock_catalog["upstream"]

    def model(name, upstream_model, mode, **prices):
        return catalog.model_create(
            actor="test",
            name=name,
            upstream=up,
            upstream_model=upstream_model,
            mode=mode,
            **{**FREE, "output_cost_micros": 0, **prices},
        )

    models = [
        model(
            "painter",
            "dall-e-3",
            "image",
            image_price_micros=30_000,
            image_cost_micros=15_000,
            image_prices=IMAGE_TABLE,
        ),
        model(
            "gpt-painter",
            "gpt-image-1",
            "image",
            image_price_micros=30_000,
            image_cost_micros=15_000,
            input_price_micros=5_000_000,
            output_price_micros=40_000_000,
            max_output_tokens=5_000,
        ),
        model(
            "scribe",
            "whisper-1",
            "transcription",
            audio_second_price_micros=SECOND_PRICE,
            audio_second_cost_micros=SECOND_PRICE // 2,
        ),
        model(
            "voice",
            "tts-1",
            "speech",
            character_price_micros=CHARACTER_PRICE,
            character_cost_micros=CHARACTER_PRICE // 2,
        ),
        model(
            "moderator",
            "omni-moderation-latest",
            "moderation",
            input_price_micros=MODERATION_PRICE,
            input_cost_micros=MODERATION_PRICE // 2,
        ),
    ]
    return catalog.model_group_create(
        actor="test", name="media", members=[{"model": m} for m in models]
    )


@pytest.fixture
def artist(media, gw_org):
    return GatewayTenant("artist", gw_org, [media], credits_micros=100_000_000)


@pytest.fixture
def client(live, artist) -> openai.OpenAI:
    return sdk(live, artist.secret)


def charged(rid: str) -> UsageRecord:
    """The call's settled record, checked to be debited at its price."""
    settle_usage()
    record = UsageRecord.objects.get(request_id=rid)
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.USAGE, calls__request_id=rid)
    assert -entry.amount_micros == entry.calls.aggregate(s=Sum("price_micros"))["s"]
    return record


def nothing_moved(tenant, before: dict) -> None:
    settle_usage()
    assert money_state(tenant) == before
    assert not UsageRecord.objects.filter(team=tenant.team).exists()


# --- images ---------------------------------------------------------------------------------


def test_images_are_charged_per_image_returned_at_the_tables_price(client):
    # when
    raw = client.images.with_raw_response.generate(
        model="painter", prompt="a lighthouse", n=2, size="1024x1024", quality="hd"
    )
    # then
    images = raw.parse()
    assert len(images.data) == 2 and images.data[0].url.startswith("data:image/png;base64,")
    record = charged(raw.headers["x-request-id"])
    assert record.price_micros == 2 * 80_000
    assert record.cost_micros == 2 * 40_000
    assert (record.image_count, record.input_tokens, record.output_tokens) == (2, 0, 0)


def test_gpt_image_calls_add_their_token_usage_to_the_images(client):
    # when
    raw = client.images.with_raw_response.generate(
        model="gpt-painter", prompt="a red lighthouse", n=1, quality="high"
    )
    # then: the mock reports prompt tokens and 4160 output tokens for a high-quality image
    images = raw.parse()
    assert images.usage.output_tokens == 4160
    record = charged(raw.headers["x-request-id"])
    tokens_in, tokens_out = images.usage.input_tokens, images.usage.output_tokens
    assert (record.input_tokens, record.output_tokens, record.image_count) == (
        tokens_in,
        tokens_out,
        1,
    )
    exact = 30_000 * 1_000_000 + tokens_in * 5_000_000 + tokens_out * 40_000_000
    assert record.price_micros == (exact + 500_000) // 1_000_000


def test_hundreds_of_concurrent_image_calls_never_spend_more_than_the_credits(live, media, gw_org):
    # given: credits for a handful of images at 80,000 each
    granted = 500_000
    tenant = GatewayTenant("poor artist", gw_org, [media], granted)
    body = {"model": "painter", "prompt": "p", "size": "1024x1024", "quality": "hd", "n": 1}

    # when
    responses = concurrently(live.url, "/v1/images/generations", tenant.headers(), body, 200)
    settle_usage()
    # then
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == granted // 80_000
    assert {r.json()["error"]["type"] for r in refused} == {"insufficient_quota"}
    entries = LedgerEntry.objects.filter(account__team=tenant.team, kind=LedgerEntry.Kind.USAGE)
    spent = -entries.aggregate(s=Sum("amount_micros"))["s"]
    assert spent == len(ok) * 80_000 <= granted
    assert posted_calls(tenant.team) == len(ok)
    account = redis_account(tenant.team)
    assert account["resv"] == 0 and account["pend"] == 0


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "p", "n": 11}, "n"),
        ({"prompt": "p", "n": "2"}, "n"),
        ({"prompt": "p", "size": 1024}, "size"),
        ({"prompt": 7}, "prompt"),
        ({"prompt": "p", "stream": True}, "stream"),
    ],
)
def test_bad_image_requests_are_refused_naming_the_field_before_any_reservation(
    live, artist, body, param
):
    before = money_state(artist)
    r = httpx.post(
        f"{live.url}/v1/images/generations",
        headers=artist.headers(),
        json={"model": "painter", **body},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    nothing_moved(artist, before)


# --- transcriptions -------------------------------------------------------------------------


def test_a_transcription_is_charged_per_second_of_audio(client):
    # when: 2.5 s of audio; the mock reports ceil(duration) = 3 seconds
    raw = client.audio.transcriptions.with_raw_response.create(
        model="scribe", file=("hello.wav", io.BytesIO(wav(2.5)), "audio/wav")
    )
    # then
    transcript = raw.parse()
    assert transcript.text.startswith("Mock transcription of hello.wav")
    assert transcript.usage.seconds == 3
    record = charged(raw.headers["x-request-id"])
    assert record.audio_ms == 3_000
    assert record.price_micros == 3 * SECOND_PRICE
    assert record.cost_micros == 3 * SECOND_PRICE // 2
    assert raw.headers["x-tollgate-model"] == "scribe"


def test_a_text_transcript_is_answered_as_text_and_charged_by_the_usage(client):
    # when
    raw = client.audio.transcriptions.with_raw_response.create(
        model="scribe", file=("a.wav", io.BytesIO(wav(1.2)), "audio/wav"), response_format="text"
    )
    # then
    assert raw.headers["content-type"].startswith("text/plain")
    assert raw.text.startswith("Mock transcription of a.wav") and raw.text.endswith("\n")
    record = charged(raw.headers["x-request-id"])
    assert (record.audio_ms, record.price_micros) == (2_000, 2 * SECOND_PRICE)


def test_verbose_json_is_charged_by_its_reported_seconds(client):
    raw = client.audio.transcriptions.with_raw_response.create(
        model="scribe",
        file=("a.wav", io.BytesIO(wav(4)), "audio/wav"),
        response_format="verbose_json",
    )
    transcript = raw.parse()
    assert transcript.duration == 4.0
    assert charged(raw.headers["x-request-id"]).price_micros == 4 * SECOND_PRICE


def test_an_upload_past_the_limit_is_a_413_and_reserves_nothing(live, artist, settings):
    # given
    settings.GATEWAY_MAX_UPLOAD_BYTES = 64 * 1024
    before = money_state(artist)
    # when
    r = httpx.post(
        f"{live.url}/v1/audio/transcriptions",
        headers=artist.headers(),
        data={"model": "scribe"},
        files={"file": ("big.wav", wav(5), "audio/wav")},  # 80 kB
    )
    # then
    assert_error(r, 413, "invalid_request_error", "request_too_large")
    nothing_moved(artist, before)
    # and below the limit the same call goes through
    r = httpx.post(
        f"{live.url}/v1/audio/transcriptions",
        headers=artist.headers(),
        data={"model": "scribe"},
        files={"file": ("ok.wav", wav(1), "audio/wav")},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "request_, code, param",
    [
        ({"json": {"model": "scribe", "file": "x"}}, "invalid_content_type", None),
        (
            {"data": {"model": "scribe"}, "files": {"notes": ("a.txt", b"x", "text/plain")}},
            "invalid_type",
            "notes",
        ),
        (
            {"files": {"file": ("a.wav", wav(0.1), "audio/wav")}},
            "missing_required_parameter",
            "model",
        ),
        (
            {
                "data": {"model": "scribe", "response_format": "mp3"},
                "files": {"file": ("a.wav", wav(0.1), "audio/wav")},
            },
            "invalid_value",
            "response_format",
        ),
        (
            {
                "data": {"model": "scribe", "stream": "true"},
                "files": {"file": ("a.wav", wav(0.1), "audio/wav")},
            },
            "unsupported_parameter",
            "stream",
        ),
    ],
)
def test_bad_uploads_are_a_400_in_openais_shape_and_reserve_nothing(
    live, artist, request_, code, param
):
    before = money_state(artist)
    r = httpx.post(f"{live.url}/v1/audio/transcriptions", headers=artist.headers(), **request_)
    error = assert_error(r, 400, "invalid_request_error", code)
    assert error["param"] == param
    nothing_moved(artist, before)


MODEL_PART = b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nscribe\r\n'
FILE_HEAD = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


@pytest.mark.parametrize(
    "body, code, param",
    [
        (MODEL_PART + FILE_HEAD + b"RIFF", "invalid_multipart", None),  # cut short
        (MODEL_PART + b"--xyz--\r\n", "missing_required_parameter", "file"),
        (MODEL_PART + FILE_HEAD + b"\r\n--xyz--\r\n", "invalid_value", "file"),  # empty
    ],
)
def test_a_form_cut_short_or_without_audio_is_a_400(live, artist, body, code, param):
    before = money_state(artist)
    headers = {**artist.headers(), "Content-Type": "multipart/form-data; boundary=xyz"}
    r = httpx.post(f"{live.url}/v1/audio/transcriptions", headers=headers, content=body)
    assert assert_error(r, 400, "invalid_request_error", code)["param"] == param
    nothing_moved(artist, before)


# --- speech ---------------------------------------------------------------------------------


def test_speech_is_streamed_back_and_charged_per_character(client):
    text = "Héllo from the gateway!"
    # when
    with client.audio.speech.with_streaming_response.create(
        model="voice", voice="alloy", input=text, response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        assert "content-length" not in response.headers  # relayed as it comes, not buffered
        chunks = list(response.iter_bytes(4096))
        rid = response.headers["x-request-id"]
    # then: the mock's 20 ms of 24 kHz 16-bit silence per character, as a WAV
    audio = b"".join(chunks)
    assert audio[:4] == b"RIFF" and len(audio) == 44 + 2 * 24_000 * 20 * len(text) // 1000
    record = charged(rid)
    assert record.characters == len(text) == 23
    assert record.price_micros == (len(text) * CHARACTER_PRICE + 500_000) // 1_000_000


def test_bad_speech_requests_are_refused_naming_the_field(live, artist):
    before = money_state(artist)
    for body, param in (
        ({"input": "hi", "voice": "alloy", "stream_format": "sse"}, "stream_format"),
        ({"input": "x" * 4097, "voice": "alloy"}, "input"),
        ({"input": "hi"}, "voice"),
    ):
        r = httpx.post(
            f"{live.url}/v1/audio/speech",
            headers=artist.headers(),
            json={"model": "voice", **body},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    nothing_moved(artist, before)


# --- moderations ----------------------------------------------------------------------------


def test_moderations_are_charged_for_their_estimated_input_tokens(client):
    inputs = ["I will bomb the exam", "a perfectly fine sentence"]
    # when
    raw = client.moderations.with_raw_response.create(model="moderator", input=inputs)
    # then
    result = raw.parse()
    assert [r.flagged for r in result.results] == [True, False]
    assert result.model == "moderator"
    record = charged(raw.headers["x-request-id"])
    tokens = sum(-(-len(s.encode()) // 4) for s in inputs)  # proxy/tokens.py: 4 bytes a token
    assert (record.input_tokens, record.output_tokens) == (tokens, 0)
    assert record.price_micros == (tokens * MODERATION_PRICE + 500_000) // 1_000_000


def test_a_chat_model_is_not_a_moderation_model(live, artist, gw_team):
    r = httpx.post(
        f"{live.url}/v1/moderations",
        headers=gw_team.headers(),
        json={"model": "chat", "input": "hi"},
    )
    assert_error(r, 400, "invalid_request_error", "model_mode_mismatch")
