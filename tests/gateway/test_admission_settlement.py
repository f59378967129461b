"""Admission's reservation and refusals, settlement's usage, the upstream's final error."""

import pytest

from livestate.scripts import Refusal
from livestate.snapshots import TeamPricing
from proxy import admission
from proxy.apis.openai import estimate_output
from proxy.errors import GatewayError
from proxy.settlement import logged_bodies
from proxy.tokens import reserve_input_tokens
from proxy.upstream import Attempt, error_message, exhausted, redact
from proxy.usage import Usage, from_openai
from tests.helpers.gateway_state import call_for, catalog_raw, model, replica_with, team_snapshot

CATALOG = replica_with(
    catalog_raw(
        {
            "cheap": model("cheap", in_price=1_000_000, out_price=1_000_000, max_out=100),
            "dear": model("dear", in_price=4_000_000, out_price=8_000_000, max_out=50),
        },
        {},
    )
).catalog
ROUTES = [CATALOG.routes_by_name["cheap"], CATALOG.routes_by_name["dear"]]


def test_the_reservation_is_the_worst_case_over_the_fallbacks():
    call = call_for({"model": "g", "max_tokens": 10}, ROUTES)
    reserve, est = admission.reservation(call, None)
    est_in = reserve_input_tokens(len(call.body))
    assert est == est_in + 10
    assert reserve == -(-est_in * 4 // 1) + 8 * 10  # the dear route, rounded up


def test_without_a_cap_each_models_maximum_output_is_reserved():
    call = call_for({"model": "g"}, ROUTES)
    _, est = admission.reservation(call, None)
    assert est == reserve_input_tokens(len(call.body)) + 100


def test_a_cached_answer_reserves_its_hit_price():
    team = team_snapshot(cache_hit_pct=50)
    call = call_for({"model": "g"}, ROUTES, team=team)
    reserve, est = admission.reservation(call, (ROUTES[1], {"in": 10, "out": 5}))
    assert (reserve, est) == ((40 + 40) // 2, 15)


def test_a_per_job_team_must_name_a_job():
    team = team_snapshot(pricing=TeamPricing(mode="per_job", job_price=5))
    with pytest.raises(GatewayError) as caught:
        admission.require_job(call_for({"model": "g"}, ROUTES, team=team))
    assert caught.value.code == "job_required"
    call = call_for({"model": "g"}, ROUTES, team=team, headers=[(b"x-job-id", b" job_1 ")])
    admission.require_job(call)
    assert call.job_id == "job_1"
    call = call_for({"model": "g", "metadata": {"job_id": ""}}, ROUTES)
    admission.require_job(call)
    assert call.job_id is None  # an empty id is no job


@pytest.mark.parametrize(
    ("verdict", "status", "code", "headers"),
    [
        (Refusal("rate_limited", "key_tpm", 7, 100, 3), 429, "rate_limit_exceeded",
         {b"retry-after": b"7", b"x-ratelimit-limit-tokens": b"100",
          b"x-ratelimit-remaining-tokens": b"3", b"x-ratelimit-reset-tokens": b"7s"}),
        (Refusal("parallel_limited", "team_parallel", 1, 4, 0), 429,
         "too_many_parallel_requests", {b"retry-after": b"1"}),
        (Refusal("insufficient_quota", "credit", 0, 0, 0), 429, "insufficient_quota", {}),
        (Refusal("budget_exceeded", "key_budget", 0, 0, 0), 429, "budget_exceeded", {}),
        (Refusal("job_not_found", "job", 0, 0, 0), 404, "job_not_found", {}),
        (Refusal("job_closed", "completed", 0, 0, 0), 409, "job_closed", {}),
        (Refusal("not_ready", "", 0, 0, 0), 503, "account_not_ready", {b"retry-after": b"2"}),
    ],
)  # fmt: skip
def test_script_verdicts_map_to_openai_errors(verdict, status, code, headers):
    error = admission.refusal(verdict, "job_1")
    assert (error.status, error.code) == (status, code)
    assert dict(error.headers) == headers


def test_refusal_messages_say_whose_limit():
    assert (
        "for this team: 60 requests"
        in admission.refusal(Refusal("rate_limited", "team_rpm", 1, 60, 0)).message
    )
    assert (
        "key's budget"
        in admission.refusal(Refusal("budget_exceeded", "key_budget", 0, 0, 0)).message
    )
    assert (
        "team's period budget"
        in admission.refusal(Refusal("budget_exceeded", "team_budget", 0, 0, 0)).message
    )


def test_refusals_decode_the_raw_script_answer():
    assert Refusal.of([b"rate_limited", b"key_rpm", 3, 10, 0]) == Refusal(
        "rate_limited", "key_rpm", 3, 10, 0
    )


def test_usage_is_read_only_when_the_upstream_reported_it():
    assert from_openai({"prompt_tokens": 3, "completion_tokens": None}) == Usage(3, 0)
    assert from_openai({"total_tokens": 3}) is None
    assert from_openai(None) is None
    payload = {"choices": [{"message": {"content": "12345678"}}, {"text": "abcd"}]}
    assert estimate_output(payload) == 3
    assert estimate_output([]) == 0


def test_logged_bodies_are_redacted_and_cut(settings):
    settings.GATEWAY_LOG_MAX_BYTES = 40
    team = team_snapshot(log=True, log_patterns=("[0-9]{3}-[0-9]{4}",))
    request, response, cut = logged_bodies(
        b'{"key": "sk-abcdefghijkl", "n": "555-1234"}', None, ROUTES[0], team
    )
    assert "sk-" not in request and "555-1234" not in request
    assert (response, cut) == ("", True)


def test_the_final_error_after_fallbacks():
    route = ROUTES[0]
    timeouts = [Attempt(route, "timed out", timeout=True)] * 2
    assert exhausted(timeouts).status == 504
    mixed = [*timeouts, Attempt(route, "HTTP 500: boom")]
    error = exhausted(mixed)
    assert (error.status, error.code) == (502, "upstream_error")
    assert "after 3 attempt(s)" in error.message and "cheap: HTTP 500: boom" in error.message
    assert exhausted([]).status == 502


def test_upstream_messages_lose_secrets():
    assert redact("key tga-12345678abc leaked") == "key [redacted] leaked"
    assert error_message(b'{"error": {"message": "bad"}}', 500) == "bad"
    assert error_message(b"", 502) == "HTTP 502"
