"""The response cache and compliance logging, through the running gateway."""

from datetime import timedelta

import httpx
import orjson
import pytest
from django.utils import timezone
from openai import OpenAI

from billing import settlement
from billing.models import CallLog, LedgerEntry, UsageRecord
from core.redis import client as redis_client
from livestate.keys import response_cache_pattern
from modelgroups import services as catalog
from tests.helpers.api import MASTER, client_with
from tests.helpers.tenants import GatewayTenant
from tests.helpers.waiting import eventually

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "cache me"}], "max_tokens": 30}


def post(live, tenant, body=CHAT, headers=None) -> httpx.Response:
    return httpx.post(
        f"{live.url}/v1/chat/completions",
        json=body,
        headers={**tenant.headers(), **(headers or {})},
        timeout=30,
    )


def stream_text(live, tenant, body, headers=None) -> tuple[httpx.Response, list[dict]]:
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        json={**body, "stream": True},
        headers={**tenant.headers(), **(headers or {})},
        timeout=30,
    ) as response:
        raw = response.read()
    chunks = [
        orjson.loads(line[6:])
        for line in raw.split(b"\n")
        if line.startswith(b"data: ") and line != b"data: [DONE]"
    ]
    assert raw.rstrip().endswith(b"data: [DONE]")
    return response, chunks


def cache_entries(tenant) -> int:
    """Answers the gateway has stored for the tenant's team (written just after the answer
    was sent, so a moment after the client has it)."""
    pattern = response_cache_pattern(tenant.team.pk)
    return sum(1 for _ in redis_client().scan_iter(match=pattern))


def content_of(chunks: list[dict]) -> str:
    return "".join(
        (c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c["choices"]
    )


@pytest.fixture
def cached(mock_catalog, gw_org):
    g = mock_catalog["groups"]
    return GatewayTenant(
        "cached", gw_org, [g["chat"], g["other"]], 100_000_000, cache_ttl_seconds=60
    )


def test_an_identical_request_is_answered_from_the_cache_for_free(live, cached):
    # when
    first = post(live, cached)
    second = post(live, cached)
    settlement.settle_usage()
    # then: the same answer (the upstream's id included: it was not asked again)
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
    assert second.json() == first.json()
    hit = UsageRecord.objects.get(request_id=second.headers["x-request-id"])
    assert hit.cache_hit and hit.price_micros == 0 and hit.cost_micros == 0
    assert hit.input_tokens == first.json()["usage"]["prompt_tokens"]
    miss = UsageRecord.objects.get(request_id=first.headers["x-request-id"])
    assert not miss.cache_hit and miss.price_micros > 0
    assert LedgerEntry.objects.filter(account__team=cached.team, kind="usage").count() == 1


def test_cache_hits_can_be_charged_a_fraction_of_the_price(live, mock_catalog, gw_org):
    cached = GatewayTenant(
        "half price hits",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        100_000_000,
        cache_ttl_seconds=60,
        cache_hit_price_percent=50,
    )
    first = post(live, cached)
    second = post(live, cached)
    settlement.settle_usage()
    assert second.headers["x-cache"] == "hit"
    full = UsageRecord.objects.get(request_id=first.headers["x-request-id"]).price_micros
    half = UsageRecord.objects.get(request_id=second.headers["x-request-id"])
    assert half.price_micros == full * 50 // 100 and half.cache_hit
    # the hit is debited at its own price, in the entry that names it
    assert half.ledger_entry.kind == "usage"
    assert half.ledger_entry.calls.filter(cache_hit=True).get() == half
    assert half.ledger_entry.amount_micros == -(full + half.price_micros)


def test_different_requests_and_other_teams_do_not_share_entries(live, cached, gw_org):
    other = GatewayTenant(
        "cached too",
        gw_org,
        [cached.team.model_groups.get(name="chat")],
        100_000_000,
        cache_ttl_seconds=60,
    )
    post(live, cached)
    assert post(live, other).headers["x-cache"] == "miss"  # same request, other team
    assert post(live, cached, {**CHAT, "temperature": 0.5}).headers["x-cache"] == "miss"
    assert post(live, cached, {**CHAT, "model": "other"}).headers["x-cache"] == "miss"
    # fields that do not change the answer do not split the cache
    assert post(live, cached, {**CHAT, "user": "u1"}).headers["x-cache"] == "hit"


def test_streams_are_served_from_the_cache_too(live, cached):
    # given: a unary answer in the cache
    unary = post(live, cached).json()
    # when: the same request, streamed, with and without usage
    response, chunks = stream_text(live, cached, CHAT)
    with_usage, usage_chunks = stream_text(
        live, cached, {**CHAT, "stream_options": {"include_usage": True}}
    )
    # then
    assert response.headers["x-cache"] == "hit"
    assert content_of(chunks) == unary["choices"][0]["message"]["content"]
    assert not any(c.get("usage") for c in chunks)
    assert usage_chunks[-1]["usage"] == unary["usage"]
    assert with_usage.headers["x-cache"] == "hit"


def test_a_streamed_answer_is_cached_and_replayed(live, cached):
    body = {**CHAT, "messages": [{"role": "user", "content": "stream me"}]}
    first, first_chunks = stream_text(live, cached, body)
    second, second_chunks = stream_text(live, cached, body)
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
    assert content_of(second_chunks) == content_of(first_chunks) != ""
    assert [c["id"] for c in second_chunks] == [c["id"] for c in first_chunks]


def test_the_openai_sdk_reads_cached_streams(live, cached):
    client = OpenAI(base_url=f"{live.url}/v1", api_key=cached.secret, max_retries=0)
    unary = client.chat.completions.create(**CHAT)
    chunks = list(client.chat.completions.create(**CHAT, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    # the upstream was not asked again: every chunk carries the cached answer's id
    assert {c.id for c in chunks} == {unary.id}


def test_cache_control_headers_skip_the_cache(live, cached):
    post(live, cached, headers={"Cache-Control": "no-store"})
    assert post(live, cached, headers={"Cache-Control": "no-cache"}).headers["x-cache"] == "miss"
    assert post(live, cached).headers["x-cache"] == "hit"  # the no-cache answer was stored


def test_a_model_group_can_enable_the_cache_and_a_team_can_opt_out(live, mock_catalog, gw_org):
    group = mock_catalog["groups"]["other"]
    catalog.model_group_update(actor="test", group=group, data={"cache_ttl_seconds": 60})
    inherits = GatewayTenant("inherits", gw_org, [group], 100_000_000)
    opted_out = GatewayTenant("opted out", gw_org, [group], 100_000_000, cache_ttl_seconds=0)
    body = {**CHAT, "model": "other"}
    # the group's new TTL reaches the gateway through the change feed: until it has, calls are
    # not cached (no x-cache header); the first call after it is a miss, stored once answered
    eventually(lambda: post(live, inherits, body).headers.get("x-cache") == "miss")
    eventually(lambda: cache_entries(inherits) == 1)
    assert post(live, inherits, body).headers["x-cache"] == "hit"
    # the team that opted out is never cached, though its group is (and the gateway knows it)
    post(live, opted_out, body)
    assert "x-cache" not in post(live, opted_out, body).headers
    assert cache_entries(opted_out) == 0


def test_no_cache_header_when_caching_is_off(live, gw_team):
    response = post(live, gw_team)
    assert response.status_code == 200 and "x-cache" not in response.headers


def test_cache_settings_are_validated(db):
    admin = client_with(MASTER)
    org = admin.post("/api/organizations/", {"name": "Cache Org"}, format="json").json()
    for fields in (
        {"cache_ttl_seconds": -1},
        {"cache_hit_price_percent": 101},
        {"cache_ttl_seconds": "soon"},
        {"log_redact_patterns": ["("]},
        {"log_redact_patterns": [".*"]},
        {"log_retention_days": 0},
    ):
        response = admin.post(
            "/api/teams/", {"organization": org["id"], "name": "t", **fields}, format="json"
        )
        assert response.status_code == 400, (fields, response.content)
        assert set(fields) <= set(response.json()["error"]["fields"])


# --- compliance logging ---------------------------------------------------------------------

SSN = r"\b\d{3}-\d{2}-\d{4}\b"


@pytest.fixture
def logged(mock_catalog, gw_org):
    return GatewayTenant(
        "logged",
        gw_org,
        [mock_catalog["groups"]["chat"], mock_catalog["groups"]["broken"]],
        100_000_000,
        log_bodies=True,
        log_retention_days=7,
        log_redact_patterns=[SSN],
    )


def test_logged_bodies_are_kept_with_credentials_and_patterns_redacted(live, logged):
    # given: a prompt holding an SSN and a secret key; the mock echoes the prompt back
    prompt = "my ssn is 123-45-6789 and my key sk-abcdefghijklmnop1234"
    body = {**CHAT, "messages": [{"role": "user", "content": prompt}]}
    # when
    response = post(live, logged, body)
    settlement.settle_usage()
    # then
    log = CallLog.objects.get(request_id=response.headers["x-request-id"])
    for text in (log.request_body, log.response_body):
        assert "123-45-6789" not in text and "sk-abcdefghijklmnop1234" not in text
    assert "[redacted]" in log.request_body and "my ssn is" in log.request_body
    assert orjson.loads(log.response_body)["choices"][0]["message"]["content"].startswith(
        "Mock reply to: my ssn is [redacted]"
    )
    assert log.expires_at - log.created_at == timedelta(days=7)
    assert "sk-upstream-provider-secret" not in log.request_body + log.response_body
    # and the admin API shows it with the call
    detail = client_with(MASTER).get(f"/api/calls/{log.request_id}/").json()
    assert detail["log"]["request_body"] == log.request_body
    assert detail["status"] == "ok"


def test_streams_and_failures_are_logged_too(live, logged):
    # when
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers=logged.headers(),
        timeout=30,
    ) as streamed:
        streamed.read()
    failed = post(live, logged, {**CHAT, "model": "broken"})
    settlement.settle_usage()
    # then
    stream_log = CallLog.objects.get(request_id=streamed.headers["x-request-id"])
    assert "chat.completion.chunk" in stream_log.response_body
    fail_log = CallLog.objects.get(request_id=failed.headers["x-request-id"])
    assert failed.status_code == 502
    assert orjson.loads(fail_log.response_body)["error"]["code"] == "upstream_error"


def test_nothing_is_logged_by_default(live, gw_team):
    response = post(live, gw_team)
    settlement.settle_usage()
    assert UsageRecord.objects.filter(request_id=response.headers["x-request-id"]).exists()
    assert not CallLog.objects.exists()
    detail = client_with(MASTER).get(f"/api/calls/{response.headers['x-request-id']}/").json()
    assert detail["log"] is None


def test_logs_past_their_retention_are_purged(live, logged):
    old, recent = post(live, logged), post(live, logged)
    settlement.settle_usage()
    CallLog.objects.filter(request_id=old.headers["x-request-id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert settlement.purge_call_logs(batch_size=1) == 1
    assert list(CallLog.objects.values_list("request_id", flat=True)) == [
        recent.headers["x-request-id"]
    ]
    # the call record itself stays (usage and billing keep their history)
    assert UsageRecord.objects.filter(request_id=old.headers["x-request-id"]).exists()
