"""Redaction as the README promises it: every provider key Tollgate stores (all upstreams,
compared exactly, whatever it looks like), every Tollgate key and the team's patterns are out of
logged bodies, upstream errors that reach clients, API answers and log lines."""

import logging
import secrets

import httpx
import pytest

from billing import settlement
from billing.models import CallLog
from core.redaction import REDACTED
from modelgroups import services as catalog
from modelgroups.models import stored_secrets_redactor
from tests.helpers.api import MASTER, client_with
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

PRICE = {"input_price_micros": 1_000_000, "output_price_micros": 2_000_000}


@pytest.fixture
def other_key() -> str:
    """A second upstream's provider key that looks like no key: 40 random characters."""
    return secrets.token_hex(20)


@pytest.fixture
def second_upstream(db, other_key):
    return catalog.upstream_create(
        actor="test",
        name="second",
        kind="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key=other_key,
    )


@pytest.fixture
def logged(live, mock_catalog, gw_org, second_upstream):
    echo_error = catalog.model_create(
        actor="test",
        name="mock-echo-error",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-echo-error",
        max_output_tokens=50,
        **PRICE,
    )
    group = catalog.model_group_create(
        actor="test", name="echo-error", members=[{"model": echo_error}]
    )
    tenant = GatewayTenant(
        "logged",
        gw_org,
        [mock_catalog["groups"]["chat"], group],
        100_000_000,
        log_bodies=True,
        log_retention_days=7,
        log_redact_patterns=[r"\bconfidential-\w+"],
    )
    # The gateway follows catalog changes within its poll interval; a call to an existing group
    # does not wait for it. Start once it holds the catalog with the second upstream's key.
    eventually(lambda: "echo-error" in live.gateway.replica.catalog.groups_by_name)
    return tenant


def chat(live, tenant, model: str, prompt: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 30}
    return httpx.post(
        f"{live.url}/v1/chat/completions", json=body, headers=tenant.headers(), timeout=30
    )


def test_stored_secrets_are_redacted_exactly_and_tollgate_keys_by_pattern(
    mock_catalog, second_upstream, other_key
):
    # given: a third upstream with a placeholder key, as local upstreams get
    catalog.upstream_create(
        actor="test", name="local", kind="openai", base_url="http://127.0.0.1:9/v1", api_key="none"
    )
    text = (
        f"a={other_key} b=sk-upstream-provider-secret-123456 c=tga-abcdefghijkl "
        f"d=x{other_key}y e=none"
    )
    # when
    redacted = stored_secrets_redactor()(text)
    # then: every stored key, whatever its look and wherever it sits, and Tollgate's formats
    assert other_key not in redacted and "provider-secret" not in redacted
    assert "tga-" not in redacted
    assert redacted.count(REDACTED) == 4
    assert redacted.endswith("e=none")  # a placeholder is no secret: the text keeps its words


def test_another_upstreams_key_is_in_no_logged_body_api_answer_or_log_line(
    live, logged, other_key, caplog
):
    caplog.set_level(logging.DEBUG)
    # given: a prompt that starts with the second upstream's key; the mock echoes it back
    prompt = f"{other_key} is confidential-ABC"
    # when
    response = chat(live, logged, "chat", prompt)
    settlement.settle_usage()
    # then: the client has its own answer ...
    assert response.status_code == 200
    # ... and neither the log nor the admin API keep the key or the team's pattern
    log = CallLog.objects.get(request_id=response.headers["x-request-id"])
    assert "Mock reply to: [redacted]" in log.response_body
    detail = client_with(MASTER).get(f"/api/calls/{log.request_id}/")
    for text in (log.request_body, log.response_body, detail.content.decode(), caplog.text):
        assert other_key not in text and "confidential-ABC" not in text
    assert REDACTED in log.request_body


def test_another_upstreams_key_quoted_in_an_upstream_error_never_reaches_the_client(
    live, logged, other_key, caplog
):
    caplog.set_level(logging.DEBUG)
    # when: the upstream refuses the message and quotes it, key and all
    response = chat(live, logged, "echo-error", f"please use {other_key}")
    settlement.settle_usage()
    # then
    assert response.status_code == 400
    assert "Could not process the message: please use [redacted]" in response.text
    log = CallLog.objects.get(request_id=response.headers["x-request-id"])
    detail = client_with(MASTER).get(f"/api/calls/{log.request_id}/")
    for text in (response.text, log.response_body, detail.content.decode(), caplog.text):
        assert other_key not in text


def test_call_logs_are_redacted_again_for_keys_stored_after_they_were_logged(
    live, mock_catalog, gw_org, caplog
):
    # given: a logged call whose prompt holds a key Tollgate did not know yet
    tenant = GatewayTenant(
        "late", gw_org, [mock_catalog["groups"]["chat"]], 100_000_000, log_bodies=True
    )
    late_key = secrets.token_hex(20)
    response = chat(live, tenant, "chat", f"{late_key} arrives later")
    settlement.settle_usage()
    # when: an upstream is then given that key
    catalog.upstream_create(
        actor="test", name="late", kind="openai", base_url="http://127.0.0.1:9/v1", api_key=late_key
    )
    # then: the admin API no longer shows it
    detail = client_with(MASTER).get(f"/api/calls/{response.headers['x-request-id']}/")
    assert detail.status_code == 200
    assert late_key not in detail.content.decode()
    assert "[redacted] arrives later" in detail.json()["log"]["request_body"]
