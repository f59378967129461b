"""Security headers: a Content-Security-Policy, nosniff and frame denial on every page and API
answer, HSTS behind TLS; and templates that the policy cannot break (no inline scripts)."""

import re

from django.conf import settings
from django.test import Client

from tests.helpers.api import client_with

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}


def csp_directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_a_panel_page_allows_only_its_own_scripts(db):
    response = Client().get("/login/")

    assert response.status_code == 200
    directives = csp_directives(response)
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    for name, value in SECURITY_HEADERS.items():
        assert response[name] == value


def test_an_api_answer_may_load_nothing(api):
    response = api.get("/api/organizations/")

    assert response.status_code == 200
    assert csp_directives(response) == {"default-src": "'none'", "frame-ancestors": "'none'"}
    for name, value in SECURITY_HEADERS.items():
        assert response[name] == value


def test_an_api_error_carries_the_headers_too(db):
    response = client_with(None).get("/api/organizations/")

    assert response.status_code == 401
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in response


def test_hsts_is_sent_over_tls_when_https_is_on(api, settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True

    over_tls = client_with(settings.MASTER_KEY).get("/api/organizations/", secure=True)
    plain = client_with(settings.MASTER_KEY).get("/api/organizations/")

    assert over_tls["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Strict-Transport-Security" not in plain


def test_no_template_holds_an_inline_script():
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|javascript:", re.I)
    found = [
        f"{path.relative_to(settings.BASE_DIR)}: {match.group(0)}"
        for path in sorted((settings.BASE_DIR / "templates").rglob("*.html"))
        for match in inline.finditer(path.read_text())
    ]

    assert found == []
