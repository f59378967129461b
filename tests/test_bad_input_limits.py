"""Bad input outside the gateway's own checks: bodies over the admin API's and the panel's
limit, encoded slashes under /api/, OpenAI paths without /v1, and /mock when it is off."""

import asyncio
import logging

import httpx
import pytest
from django.test import Client

from tests.helpers.api import MASTER, assert_api_error
from tests.helpers.panel import logged_in, make_user
from tests.helpers.tenants import db_state

LIMIT = 64 * 1024


@pytest.fixture
def small_bodies(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT


@pytest.fixture
def as_admin(db) -> Client:
    return logged_in(make_user("alice", "admin"))


def big_json(size: int) -> str:
    return '{"name": "' + "x" * size + '"}'


def assert_openai_error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "not_found")
    return error


def test_an_api_body_over_the_limit_is_413_in_the_envelope_and_changes_nothing(
    api, small_bodies, caplog
):
    before = db_state()

    r = api.post("/api/organizations/", data=big_json(LIMIT), content_type="application/json")

    error = assert_api_error(r, 413, "request_too_large")
    assert str(LIMIT) in error["message"]
    assert db_state() == before
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_an_api_body_under_the_limit_still_works(api, small_bodies):
    r = api.post("/api/organizations/", data=big_json(100), content_type="application/json")

    assert r.status_code == 201, r.content


def test_a_chunked_api_body_over_the_limit_is_413(live, small_bodies, caplog):
    # No Content-Length to check up front: Django's own check (RequestDataTooBig, raised
    # while DRF reads the body) maps to the same 413.
    def chunks():
        body = big_json(LIMIT).encode()
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    r = httpx.post(
        live.url + "/api/organizations/",
        content=chunks(),
        headers={"X-Admin-Key": MASTER, "Content-Type": "application/json"},
    )

    assert r.status_code == 413, r.text
    assert r.json()["error"]["type"] == "request_too_large"
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_a_cut_body_s_rest_is_dropped_and_only_the_disconnect_reaches_django():
    # The rest of a chunked body can still be arriving when Django, holding its cut body,
    # listens for the disconnect: an `http.request` then is an assertion in Django (a 500).
    from saas.asgi import BODY_TOO_LARGE, bounded_receive

    arriving = [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive():
        return arriving.pop(0)

    async def django_reads():
        wrapped = bounded_receive(scope, receive, 1000)
        return [await wrapped(), await wrapped(), await wrapped()]

    scope = {}
    seen = asyncio.run(django_reads())

    assert seen == [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]
    assert scope[BODY_TOO_LARGE] is True


def test_the_api_body_limit_comes_from_the_settings(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200

    r = api.post("/api/organizations/", data=big_json(300), content_type="application/json")

    assert_api_error(r, 413, "request_too_large")


def test_a_panel_form_post_over_the_limit_is_a_413_page(as_admin, small_bodies, caplog):
    before = db_state()

    r = as_admin.post("/organizations/new/", {"name": "x" * LIMIT, "external_id": "e"})

    assert r.status_code == 413
    assert r["Content-Type"].startswith("text/html")
    assert b"Too much data" in r.content
    assert db_state() == before
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_a_panel_multipart_post_over_the_limit_is_a_413_page(as_admin, small_bodies):
    upload = ("big.txt", b"x" * LIMIT)

    r = as_admin.post("/organizations/new/", {"name": "Acme", "file": upload})

    assert r.status_code == 413


def test_a_login_post_over_the_limit_is_a_413_page(db, small_bodies):
    r = Client().post("/login/", {"username": "a", "password": "x" * LIMIT})

    assert r.status_code == 413


@pytest.mark.parametrize(
    "path",
    ["/api/teams/%2F..%2F", "/api/teams/%2F", "/api/teams/..%2F..%2Flogin%2F", "/api/%2e%2e/"],
)
def test_encoded_slashes_under_api_are_a_json_404(live, path):
    for method in ("GET", "POST"):
        r = httpx.request(method, live.url + path, headers={"X-Admin-Key": "x"})

        assert r.status_code == 404, (method, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/chat/completions", "/v1/chat/completions"),
        ("/completions", "/v1/completions"),
        ("/embeddings/", "/v1/embeddings"),
        ("/models", "/v1/models"),
    ],
)
def test_openai_paths_without_v1_are_a_json_404_naming_the_v1_path(live, path, endpoint):
    r = httpx.post(live.url + path, json={"model": "x", "messages": []})

    error = assert_openai_error(r, 404)
    assert endpoint in error["message"]
    assert_openai_error(httpx.get(live.url + path), 404)


def test_the_panel_models_page_keeps_its_address(live):
    r = httpx.get(live.url + "/models/")

    assert r.status_code == 302  # to the login page: the panel's, not a JSON 404
    assert "/login/" in r.headers["location"]


def test_the_mock_upstream_is_served_when_enabled(live):
    r = httpx.get(live.mock_url + "/models")

    assert r.status_code == 200
    assert r.json()["object"] == "list"


def test_the_mock_upstream_is_a_json_404_when_disabled(live, settings):
    settings.MOCK_UPSTREAM_ENABLED = False

    r = httpx.get(live.mock_url + "/models")

    assert "MOCK_UPSTREAM_ENABLED" in assert_openai_error(r, 404)["message"]
