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
