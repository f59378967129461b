"""Error pages, the JSON API left as it was, lists at 100,000 rows, and static files."""

import asyncio
import gzip

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.static import StaticFiles
from orgs.models import Organization
from panel import selectors


@pytest.fixture
def debug_on(settings):
    # make run's .env says DEBUG=true: the panel must not show stack traces even then
    settings.DEBUG = True


def test_an_unknown_object_is_a_friendly_404_page(as_admin, debug_on):
    response = as_admin.get("/teams/team_doesnotexist/")
    assert response.status_code == 404
    assert b"Page not found" in response.content
    assert b"Traceback" not in response.content


def test_an_unknown_address_is_a_friendly_404_page(as_admin, debug_on):
    response = as_admin.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Page not found" in response.content
    assert b"URLconf" not in response.content  # Django's technical 404 lists the URLconf


def test_a_crash_is_a_friendly_500_page(as_admin, debug_on, monkeypatch):
    # given a bug somewhere below a view
    def broken(**kwargs):
        raise RuntimeError("boom: secret internals")

    monkeypatch.setattr(selectors, "dashboard", broken)
    # when
    response = as_admin.get(reverse("panel:dashboard"))
    # then
    assert response.status_code == 500
    assert b"Something went wrong" in response.content
    assert b"secret internals" not in response.content
    assert b"Traceback" not in response.content


def test_the_json_api_keeps_its_own_errors(client, db, debug_on):
    missing = client.get("/api/teams/", HTTP_X_ADMIN_KEY="wrong")
    assert missing.status_code == 401
    assert missing["Content-Type"] == "application/json"
    assert missing.json()["error"]["type"] == "authentication_error"


def test_lists_cost_the_same_on_any_page_at_100000_rows(as_admin, db):
    # given 100,000 organizations (bulk-inserted: the list only reads them)
    Organization.objects.bulk_create(
        (Organization(public_id=f"org_bulk{n}", name=f"Customer {n}") for n in range(1, 100001)),
        batch_size=10000,
    )
    url = reverse("panel:org_list")
    # when the first page and a page deep into the list are read
    with CaptureQueriesContext(connection) as first_queries:
        first = as_admin.get(url)
    cursor = first.context["page"].next_cursor
    for _ in range(3):
        cursor = as_admin.get(url, {"cursor": cursor}).context["page"].next_cursor
    with CaptureQueriesContext(connection) as deep_queries:
        deep = as_admin.get(url, {"cursor": cursor})
    # then each page is 50 rows, newest first, from a keyset query: no OFFSET, no COUNT
    assert [o.name for o in first.context["page"].rows][:2] == ["Customer 100000", "Customer 99999"]
    assert deep.context["page"].rows[0].name == "Customer 99800"
    assert len(deep.context["page"].rows) == 50
    assert len(deep_queries) == len(first_queries)
    sql = " ".join(q["sql"] for q in deep_queries).upper()
    assert "OFFSET" not in sql and "COUNT(" not in sql
    # and the search finds one customer among them
    found = as_admin.get(url, {"q": "Customer 4242"}).context["page"].rows
    assert {o.name for o in found} >= {"Customer 4242"}
    assert Organization.objects.count() == 100000


def _get(app: StaticFiles, path: str, headers=(), query=b"") -> tuple[int, dict, bytes]:
    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": list(headers),
    }
    asyncio.run(app(scope, None, send))
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


def test_static_files_are_served_with_validators_and_compression(db):
    app = StaticFiles()
    # a file from the finders
    status, headers, body = _get(app, "/static/panel/vendor/htmx-2.0.11.min.js")
    assert status == 200
    assert b"javascript" in headers[b"content-type"]
    assert headers[b"cache-control"] == b"no-cache"
    etag = headers[b"etag"]
    # revalidation costs nothing
    css_etag = _get(app, "/static/panel/panel.css")[1][b"etag"]
    status, headers, _ = _get(app, "/static/panel/panel.css", [(b"if-none-match", css_etag)])
    assert status == 304
    # a hashed URL is cached for good; gzip when asked
    version = app.version("panel/vendor/htmx-2.0.11.min.js")
    status, headers, zipped = _get(
        app,
        "/static/panel/vendor/htmx-2.0.11.min.js",
        [(b"accept-encoding", b"gzip, br")],
        query=f"v={version}".encode(),
    )
    assert headers[b"cache-control"] == b"public, max-age=31536000, immutable"
    assert headers[b"content-encoding"] == b"gzip"
    assert gzip.decompress(zipped) == body
    assert etag == f'"{version}"'.encode()
    # nothing outside the finders' files, however the path is spelled
    for path in (
        "/static/../saas/settings.py",
        "/static/panel/../../manage.py",
        "/static/nope.css",
    ):
        assert _get(app, path)[0] == 404


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("org_list", {"q": "a\x00b"}),
        ("team_list", {"q": "a\x00b", "status": "\x00"}),
        ("key_list", {"q": "\x00", "team": "team_\x00", "status": "\x00", "last_used": "\x00"}),
        ("audit", {"actor": "\x00", "action": "\x00", "object_id": "\x00", "organization": "\x00"}),
        ("usage", {"team": "team_\x00", "model": "\x00"}),
    ],
)
def test_junk_in_a_filter_is_never_a_server_error(as_admin, name, params):
    response = as_admin.get(reverse(f"panel:{name}"), params)
    assert response.status_code in (200, 400)
