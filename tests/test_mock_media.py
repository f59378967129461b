"""The mock upstream's images, audio and moderations, and its Azure OpenAI deployment routes."""

import base64
import io
import struct
import wave
from collections.abc import Iterator

import httpx
import openai
import pytest

from devtools.mock.media import SPEECH_MS_PER_CHAR, SPEECH_SAMPLE_RATE, wav_seconds
from devtools.mock_upstream import MESSAGE_OVERHEAD_TOKENS, app, count_tokens
from tests.helpers.mock_server import serving

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
API_VERSION = "2024-10-21"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def client(base_url) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-mock", max_retries=0) as c:
        yield c


@pytest.fixture
def azure(base_url) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(
        azure_endpoint=base_url, api_key="azure-key", api_version=API_VERSION, max_retries=0
    ) as c:
        yield c


@pytest.fixture
def http(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(2 * int(rate * seconds)))
    return buffer.getvalue()


def test_images_answer_n_valid_pngs_as_base64(client):
    # when
    result = client.images.generate(
        model="dall-e-3", prompt="a cat", n=2, size="1024x1024", response_format="b64_json"
    )
    # then
    assert len(result.data) == 2
    for image in result.data:
        png = base64.b64decode(image.b64_json)
        assert png.startswith(PNG_SIGNATURE)
        assert struct.unpack(">II", png[16:24]) == (1, 1)  # IHDR width, height


def test_images_as_url_are_self_contained_data_urls(client):
    # when
    [image] = client.images.generate(prompt="a cat", response_format="url").data
    # then
    prefix = "data:image/png;base64,"
    assert image.url.startswith(prefix)
    assert base64.b64decode(image.url[len(prefix) :]).startswith(PNG_SIGNATURE)


def test_gpt_image_answers_token_usage_by_quality(client):
    # when
    result = client.images.generate(model="gpt-image-1", prompt="a red cat", n=3, quality="low")
    # then
    assert result.data[0].b64_json
    assert result.usage.input_tokens == count_tokens("a red cat")
    assert result.usage.output_tokens == 3 * 272
    assert result.usage.total_tokens == 3 + 3 * 272


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 1}, "prompt"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "size": "big"}, "size"),
        ({"prompt": "x", "response_format": "jpeg"}, "response_format"),
    ],
)
def test_bad_image_requests_are_400s(http, body, param):
    response = http.post("/v1/images/generations", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_wav_seconds_reads_the_header():
    assert wav_seconds(wav(2.5)) == 2.5
    assert wav_seconds(b"not a wav file at all") is None


def test_transcription_of_a_wav_reports_its_duration(client):
    # when
    result = client.audio.transcriptions.create(model="whisper-1", file=("talk.wav", wav(2.5)))
    # then
    assert result.text == "Mock transcription of talk.wav, 2.50 seconds."
    assert result.usage.type == "duration"
    assert result.usage.seconds == 3  # whole seconds, rounded up


def test_transcription_of_other_audio_counts_16000_bytes_a_second(client):
    # when
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("talk.mp3", b"\xff" * 40_000)
    )
    # then
    assert result.usage.seconds == 3  # 2.5 s


def test_transcription_as_text_and_verbose_json(client):
    # when
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav(1)), response_format="text"
    )
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav(1)), response_format="verbose_json", language="fr"
    )
    # then
    assert text.strip() == "Mock transcription of a.wav, 1.00 seconds."
    assert verbose.duration == 1.0
    assert verbose.language == "fr"
    assert verbose.segments[0].text == verbose.text


def test_a_large_upload_is_parsed_as_it_streams(client):
    # when: a 20 MB WAV, of which the mock keeps only the head
    result = client.audio.transcriptions.create(model="whisper-1", file=("big.wav", wav(1250)))
    # then
    assert result.usage.seconds == 1250


def test_transcription_without_a_file_is_a_400(http):
    # when
    response = http.post("/v1/audio/transcriptions", files={"model": (None, "whisper-1")})
    no_form = http.post("/v1/audio/transcriptions", json={"model": "whisper-1"})
    # then
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"
    assert no_form.status_code == 400
    assert "multipart/form-data" in no_form.json()["error"]["message"]


def test_transcription_without_a_model_is_a_400(http):
    response = http.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav(1))})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_model_knobs_apply_to_multipart_requests(http):
    response = http.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-fail-429"},
        files={"file": ("a.wav", wav(1))},
    )
    assert response.status_code == 429


def test_speech_streams_a_wav_of_silence_whose_length_follows_the_input(client):
    # given
    text = "Hello there, this is a test." * 40  # 1120 characters: several chunks
    # when
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="wav"
    ) as response:
        chunks = list(response.iter_bytes())
        content_type = response.headers["content-type"]
    # then
    audio = b"".join(chunks)
    assert content_type == "audio/wav"
    assert len(chunks) > 1
    with wave.open(io.BytesIO(audio)) as read:
        assert read.getframerate() == SPEECH_SAMPLE_RATE
        assert read.getnframes() == SPEECH_SAMPLE_RATE * SPEECH_MS_PER_CHAR * len(text) // 1000


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("mp3", "audio/mpeg"), ("opus", "audio/opus"), ("pcm", "audio/pcm")]
)
def test_speech_content_type_follows_the_format(client, fmt, content_type):
    # when
    response = client.audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input="Hi", response_format=fmt
    )
    # then
    assert response.headers["content-type"] == content_type
    if fmt == "pcm":
        assert len(response.content) == 2 * SPEECH_SAMPLE_RATE * SPEECH_MS_PER_CHAR * 2 // 1000


def test_speech_without_a_voice_is_a_400(http):
    response = http.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "voice"


def test_moderations_flag_the_listed_words(client):
    # when
    result = client.moderations.create(input=["I will KILL the process", "a kind word"])
    # then
    flagged, clean = result.results
    assert result.id.startswith("modr-")
    assert result.model == "omni-moderation-latest"
    assert flagged.flagged is True
    assert flagged.categories.violence is True
    assert flagged.categories.hate is False
    assert flagged.category_scores.violence == 0.99
    assert clean.flagged is False
    assert not any(clean.categories.model_dump().values())


def test_moderation_of_a_string_and_of_content_parts(client):
    # when
    one = client.moderations.create(model="omni-moderation-latest", input="pure hate")
    parts = client.moderations.create(
        input=[
            {"type": "text", "text": "a bomb"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]
    )
    # then
    assert [r.categories.hate for r in one.results] == [True]
    [result] = parts.results
    assert result.categories.illicit_violent is True


def test_moderation_without_input_is_a_400(http):
    response = http.post("/v1/moderations", json={})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


def test_azure_chat_answers_on_the_deployment_url(azure):
    # when
    completion = azure.chat.completions.create(
        model="my-gpt", messages=[{"role": "user", "content": "Hello, world!"}]
    )
    # then
    assert completion.model == "my-gpt"
    assert completion.usage.prompt_tokens == 4 + MESSAGE_OVERHEAD_TOKENS


def test_azure_embeddings_and_transcriptions(azure):
    # when
    embedding = azure.embeddings.create(model="my-embedding", input="hi")
    transcript = azure.audio.transcriptions.create(model="my-whisper", file=("a.wav", wav(2)))
    # then
    assert embedding.model == "my-embedding"
    assert transcript.usage.seconds == 2


def test_azure_model_defaults_to_the_deployment_and_its_knobs(http):
    # given
    path = f"/openai/deployments/dep-reasoning-3/chat/completions?api-version={API_VERSION}"
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    # when
    response = http.post(path, json=body, headers={"api-key": "k"})
    failing = http.post(
        f"/openai/deployments/dep-fail-429/embeddings?api-version={API_VERSION}",
        json={"input": "hi"},
        headers={"api-key": "k"},
    )
    # then
    assert response.status_code == 200
    assert response.json()["model"] == "dep-reasoning-3"
    assert response.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    assert failing.status_code == 429


def test_azure_without_api_version_is_a_400_in_azure_shape(http):
    # when
    response = http.post(
        "/openai/deployments/d/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}]},
        headers={"api-key": "k"},
    )
    # then
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "MissingApiVersionParameter"
    assert "api-version" in error["message"]


def test_azure_without_a_key_is_a_401_in_azure_shape(http):
    # when
    response = http.post(
        f"/openai/deployments/d/chat/completions?api-version={API_VERSION}",
        json={"messages": [{"role": "user", "content": "Hi"}]},
    )
    bearer = http.post(
        f"/openai/deployments/d/chat/completions?api-version={API_VERSION}",
        json={"messages": [{"role": "user", "content": "Hi"}]},
        headers={"authorization": "Bearer entra-token"},
    )
    # then
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "401"
    assert bearer.status_code == 200


def test_an_unknown_azure_operation_is_a_404(http):
    response = http.post(
        f"/openai/deployments/d/nope?api-version={API_VERSION}", json={}, headers={"api-key": "k"}
    )
    assert response.status_code == 404
