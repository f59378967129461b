"""`make run`'s demo tenant follows the server's PORT (its mock upstream is this server's /mock)."""

import io

import pytest
from django.core.management import call_command

from devtools.management.commands import seed_demo
from modelgroups.models import Upstream


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    """The demo key goes to a .env of the test's own, never the developer's."""
    path = tmp_path / ".env"
    monkeypatch.setattr(seed_demo, "ENV_FILE", path)
    return path


def seed(monkeypatch, port: str | None) -> Upstream:
    if port is None:
        monkeypatch.delenv("PORT", raising=False)
    else:
        monkeypatch.setenv("PORT", port)
    call_command("seed_demo", stdout=io.StringIO())
    return Upstream.objects.get(name="mock")


def test_the_demo_mock_upstream_is_at_the_port_make_run_serves(db, env_file, monkeypatch):
    upstream = seed(monkeypatch, "8100")

    assert upstream.base_url == "http://127.0.0.1:8100/mock/v1"
    assert "DEMO_API_KEY=" in env_file.read_text()


def test_without_port_the_demo_uses_8000(db, env_file, monkeypatch):
    assert seed(monkeypatch, None).base_url == "http://127.0.0.1:8000/mock/v1"


def test_a_later_run_on_another_port_moves_the_demo_upstream(db, env_file, monkeypatch):
    seed(monkeypatch, "8000")

    upstream = seed(monkeypatch, "8100")

    assert upstream.base_url == "http://127.0.0.1:8100/mock/v1"
    assert Upstream.objects.count() == 1


def test_a_mock_upstream_address_set_by_hand_is_left_alone(db, env_file, monkeypatch):
    seed(monkeypatch, "8000")
    Upstream.objects.filter(name="mock").update(base_url="http://mock.internal:9000/v1")

    assert seed(monkeypatch, "8100").base_url == "http://mock.internal:9000/v1"


def test_the_demo_key_calls_the_media_models_as_demo_info_shows(live, env_file, monkeypatch):
    # given: the demo seeded on this server, as `make run` does
    import re

    import httpx

    seed(monkeypatch, str(live.port))
    key = re.search(r"^DEMO_API_KEY=(.*)$", env_file.read_text(), re.M).group(1)
    headers = {"Authorization": f"Bearer {key}"}
    v1 = live.url + "/v1"
    # when: the calls of demo_info's curl lines
    image = httpx.post(
        f"{v1}/images/generations",
        headers=headers,
        json={"model": "mock-image", "prompt": "a lighthouse"},
    )
    speech = httpx.post(
        f"{v1}/audio/speech",
        headers=headers,
        json={"model": "mock-tts", "voice": "alloy", "input": "Hello!", "response_format": "wav"},
    )
    transcript = httpx.post(
        f"{v1}/audio/transcriptions",
        headers=headers,
        data={"model": "mock-whisper"},
        files={"file": ("speech.wav", speech.content, "audio/wav")},
    )
    moderation = httpx.post(
        f"{v1}/moderations", headers=headers, json={"model": "mock-moderation", "input": "hi"}
    )
    # then
    for r in (image, speech, transcript, moderation):
        assert r.status_code == 200, r.text
    assert len(image.json()["data"]) == 1
    assert speech.content[:4] == b"RIFF"
    assert transcript.json()["text"].startswith("Mock transcription of speech.wav")
    assert moderation.json()["results"][0]["flagged"] is False


def test_a_demo_seeded_before_the_media_models_gets_them(db, env_file, monkeypatch):
    # given: a demo team without the media group (seeded by an earlier release)
    from modelgroups.models import ModelGroup
    from teams.models import Team

    seed(monkeypatch, "8000")
    team = Team.objects.get(name="Demo Team")
    team.model_groups.remove(ModelGroup.objects.get(name="demo-media"))
    # when
    seed(monkeypatch, "8000")
    # then
    assert sorted(team.model_groups.values_list("name", flat=True)) == [
        "demo",
        "demo-embed",
        "demo-media",
    ]
