"""Rate-limit headers on every answer of an admitted call (issue 13), as the official SDKs see
them: OpenAI's x-ratelimit-* for the tighter of the key and the team, Anthropic's
anthropic-ratelimit-* as well on /v1/messages, none for a limit that is not set.

The remaining counts come from the ADMIT that admitted the call: the requests counted this
minute (the calls of a test run within seconds, so the previous minute's share, if the test
straddles a minute, stays under one request), and the tokens as admission counted them (the
call's estimate, corrected to what the upstream reported by its settlement), so that two
identical calls in a row differ by exactly the first one's reported tokens.
"""

import re
import time
from datetime import datetime

import anthropic
import httpx
import openai
import pytest

from modelgroups import services as catalog
from teams.services import key_create
from tests.helpers.tenants import GatewayTenant

HI = [{"role": "user", "content": "hi"}]
OPENAI_NAMES = {
    f"x-ratelimit-{what}-{unit}"
    for what in ("limit", "remaining", "reset")
    for unit in ("requests", "tokens")
}
# A limit is whole again at the end of the minute after the call's: in 61 s to 2 min.
OPENAI_RESET = re.compile(r"^1m([1-9]|[1-5][0-9])s$|^2m0s$")


def sdk(live, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=secret, max_retries=0, timeout=10)


def messages_sdk(live, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live.url, api_key=secret, max_retries=0, timeout=10)


def ratelimit_headers(headers) -> dict:
    return {k: v for k, v in headers.items() if "ratelimit" in k}


def chat(client: openai.OpenAI):
    """A unary chat call: (its headers, the tokens it reported)."""
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=HI)
    return raw.headers, raw.parse().usage.total_tokens


def streamed_chat(client: openai.OpenAI):
    """A streamed chat call, read to its end: (its headers, the tokens it reported)."""
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    usage = [chunk.usage for chunk in raw.parse() if chunk.usage is not None]
    return raw.headers, usage[-1].total_tokens


def limited(gw_org, mock_catalog, name, team_limits: dict, key_limits: dict):
    tenant = GatewayTenant(
        name, gw_org, [mock_catalog["groups"]["chat"]], 100_000_000, **team_limits
    )
    # A key minted with its limits (a limit changed later reaches the gateway on its poll).
    tenant.key, tenant.secret = key_create(
        actor="test", team=tenant.team, name=f"{name} limited", **key_limits
    )
    return tenant


def assert_told(headers, *, rpm: int, requests_left: int, tpm: int):
    assert headers["x-ratelimit-limit-requests"] == str(rpm)
    assert headers["x-ratelimit-remaining-requests"] == str(requests_left)
    assert OPENAI_RESET.match(headers["x-ratelimit-reset-requests"])
    assert headers["x-ratelimit-limit-tokens"] == str(tpm)
    assert 0 <= int(headers["x-ratelimit-remaining-tokens"]) < tpm
    assert OPENAI_RESET.match(headers["x-ratelimit-reset-tokens"])


def test_every_answer_tells_the_key_s_limits_when_the_key_is_the_tighter(
    live, mock_catalog, gw_org
):
    # given: the key allows fewer requests and tokens than its team
    tenant = limited(
        gw_org,
        mock_catalog,
        "key tighter",
        {"rpm_limit": 100, "tpm_limit": 1_000_000},
        {"rpm_limit": 5, "tpm_limit": 100_000},
    )
    client = sdk(live, tenant.secret)
    # when: unary, streamed, unary
    answers = [chat(client), streamed_chat(client), chat(client), streamed_chat(client)]
    # then: the key's limits, one request fewer left after each call
    for n, (headers, _) in enumerate(answers, start=1):
        assert_told(headers, rpm=5, requests_left=5 - n, tpm=100_000)
    # and between two calls of the same shape (the same estimate) the tokens left fall by
    # what the calls between reported
    left = [int(h["x-ratelimit-remaining-tokens"]) for h, _ in answers]
    reported = [tokens for _, tokens in answers]
    assert left[0] - left[2] == reported[0] + reported[1]
    assert left[1] - left[3] == reported[1] + reported[2]
    # and the fifth call takes the last request; the sixth is refused, with the 429's headers
    assert chat(client)[0]["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as refused:
        chat(client)
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_the_team_s_limits_are_told_when_the_team_is_the_tighter(live, mock_catalog, gw_org):
    # given: a team allowing fewer requests than each of its two keys, and fewer tokens
    tenant = limited(
        gw_org,
        mock_catalog,
        "team tighter",
        {"rpm_limit": 4, "tpm_limit": 200_000},
        {"rpm_limit": 50, "tpm_limit": 1_000_000},
    )
    _, other_secret = key_create(
        actor="test", team=tenant.team, name="second key", rpm_limit=50, tpm_limit=1_000_000
    )
    first, second = sdk(live, tenant.secret), sdk(live, other_secret)
    # when: the keys take turns
    answers = [chat(first), streamed_chat(second), chat(first)]
    # then: what the team has left, counting both keys' calls
    for n, (headers, _) in enumerate(answers, start=1):
        assert_told(headers, rpm=4, requests_left=4 - n, tpm=200_000)
    left = [int(h["x-ratelimit-remaining-tokens"]) for h, _ in answers]
    assert left[0] - left[2] == answers[0][1] + answers[1][1]


def test_each_dimension_tells_its_own_tighter_scope(live, mock_catalog, gw_org):
    # given: the key is tighter on requests, the team on tokens
    tenant = limited(
        gw_org,
        mock_catalog,
        "mixed",
        {"rpm_limit": 100, "tpm_limit": 50_000},
        {"rpm_limit": 7, "tpm_limit": 1_000_000},
    )
    # when
    headers, _ = chat(sdk(live, tenant.secret))
    # then
    assert_told(headers, rpm=7, requests_left=6, tpm=50_000)


def test_no_header_for_a_limit_that_is_not_set(live, mock_catalog, gw_org, gw_team):
    # given: a team and key without limits; a key with only a requests limit
    rpm_only = limited(gw_org, mock_catalog, "rpm only", {}, {"rpm_limit": 9})
    # when
    unlimited = [chat(sdk(live, gw_team.secret))[0], streamed_chat(sdk(live, gw_team.secret))[0]]
    client = sdk(live, rpm_only.secret)
    requests_only = [chat(client)[0], streamed_chat(client)[0]]
    # then
    for headers in unlimited:
        assert ratelimit_headers(headers) == {}
    for n, headers in enumerate(requests_only, start=1):
        assert set(ratelimit_headers(headers)) == {
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        }
        assert headers["x-ratelimit-remaining-requests"] == str(9 - n)


def test_messages_tell_anthropic_s_names_as_well(live, mock_catalog, gw_org):
    # given
    tenant = limited(
        gw_org,
        mock_catalog,
        "claude limited",
        {"rpm_limit": 30, "tpm_limit": 900_000},
        {"rpm_limit": 6, "tpm_limit": 80_000},
    )
    client = messages_sdk(live, tenant.secret)
    before = time.time()
    # when: unary, then streamed
    unary = client.messages.with_raw_response.create(model="chat", max_tokens=10, messages=HI)
    unary.parse()
    with client.messages.with_streaming_response.create(
        model="chat", max_tokens=10, messages=HI, stream=True
    ) as streamed:
        for _ in streamed.iter_lines():
            pass
    # then: Anthropic's names, the reset an RFC 3339 time at the end of the next minute
    for n, headers in enumerate([unary.headers, streamed.headers], start=1):
        assert headers["anthropic-ratelimit-requests-limit"] == "6"
        assert headers["anthropic-ratelimit-requests-remaining"] == str(6 - n)
        assert headers["anthropic-ratelimit-tokens-limit"] == "80000"
        assert 0 <= int(headers["anthropic-ratelimit-tokens-remaining"]) < 80_000
        assert (
            headers["anthropic-ratelimit-tokens-remaining"]
            == headers["x-ratelimit-remaining-tokens"]
        )
        for unit in ("requests", "tokens"):
            reset = datetime.fromisoformat(headers[f"anthropic-ratelimit-{unit}-reset"])
            assert reset.tzinfo is not None and reset.second == 0
            assert before + 60 < reset.timestamp() <= time.time() + 120
        # and OpenAI's, which the OpenAI-shaped clients on this route read
        assert headers["x-ratelimit-remaining-requests"] == str(6 - n)
    # and not on OpenAI's routes
    headers, _ = chat(sdk(live, tenant.secret))
    assert not any(k.startswith("anthropic-ratelimit") for k in headers)


def test_cached_answers_and_passed_on_refusals_tell_the_limits(live, mock_catalog, gw_org):
    # given: a cached team with limits, and a model whose upstream refuses the input (400)
    refusing = catalog.model_create(
        actor="test",
        name="refuses",
        upstream=mock_catalog["upstream"],
        upstream_model="mock-echo-error",
        max_output_tokens=50,
        input_price_micros=1_000_000,
        output_price_micros=2_000_000,
    )
    group = catalog.model_group_create(actor="test", name="refusing", members=[{"model": refusing}])
    tenant = GatewayTenant(
        "cached limited",
        gw_org,
        [mock_catalog["groups"]["chat"], group],
        100_000_000,
        rpm_limit=10,
        tpm_limit=500_000,
        cache_ttl_seconds=60,
    )
    client = sdk(live, tenant.secret)
    # when: a miss, a hit (unary), a streamed hit, a refusal passed on
    miss = client.chat.completions.with_raw_response.create(model="chat", messages=HI)
    hit = client.chat.completions.with_raw_response.create(model="chat", messages=HI)
    stream_hit = client.chat.completions.with_raw_response.create(
        model="chat", messages=HI, stream=True
    )
    list(stream_hit.parse())
    refused = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers=tenant.headers(),
        json={"model": "refuses", "messages": HI},
    )
    # then
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert stream_hit.headers["x-cache"] == "hit"
    assert refused.status_code == 400, refused.text
    for n, headers in enumerate(
        [miss.headers, hit.headers, stream_hit.headers, refused.headers], start=1
    ):
        assert_told(headers, rpm=10, requests_left=10 - n, tpm=500_000)
    # a hit counts exactly the cached answer's tokens (what the miss reported)
    reported = miss.parse().usage.total_tokens
    assert int(hit.headers["x-ratelimit-remaining-tokens"]) == 500_000 - 2 * reported
    assert int(stream_hit.headers["x-ratelimit-remaining-tokens"]) == 500_000 - 3 * reported


def test_the_reset_is_the_end_of_the_next_minute(live, mock_catalog, gw_org):
    # given
    tenant = limited(gw_org, mock_catalog, "reset", {}, {"rpm_limit": 3})
    # when
    before = time.time()
    headers, _ = chat(sdk(live, tenant.secret))
    after = time.time()
    # then: "XmYs" in whole seconds, rounded up, to the end of the minute after the call's
    minutes, seconds = re.match(r"^(\d+)m(\d+)s$", headers["x-ratelimit-reset-requests"]).groups()
    told = int(minutes) * 60 + int(seconds)
    ends = {(int(t) // 60 + 2) * 60 for t in (before, after)}
    assert any(end - after <= told <= end - before + 1 for end in ends), (told, before, after)
