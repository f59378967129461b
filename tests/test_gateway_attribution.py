"""End users and request tags: recorded on every call, bounded, grouped by in the usage API."""

import httpx
import pytest

from billing.models import UsageRecord
from billing.settlement import settle_usage
from proxy import attribution
from proxy.errors import GatewayError
from tests.helpers.gateway import redis_account

HI = [{"role": "user", "content": "hi"}]


def post(live, tenant, path, body, headers=None):
    return httpx.post(
        f"{live.url}{path}", headers={**tenant.headers(), **(headers or {})}, json=body, timeout=10
    )


def test_the_user_field_and_tags_from_metadata_and_the_header_are_recorded(live, gw_team, api):
    body = {"model": "chat", "messages": HI, "user": "alice", "metadata": {"tags": ["a", "b"]}}
    r = post(live, gw_team, "/v1/chat/completions", body, {"x-tollgate-tags": "b, c"})
    assert r.status_code == 200, r.text
    settle_usage()
    record = UsageRecord.objects.get(request_id=r.headers["x-request-id"])
    assert (record.end_user, record.tags) == ("alice", ["a", "b", "c"])
    # the calls API shows both and filters by each
    path = f"/api/teams/{gw_team.team.public_id}/calls/"
    (call,) = api.get(path, {"tag": "c"}).json()["results"]
    assert (call["end_user"], call["tags"]) == ("alice", ["a", "b", "c"])
    assert api.get(path, {"end_user": "alice"}).json()["results"] == [call]
    assert api.get(path, {"tag": "zzz"}).json()["results"] == []


def test_messages_take_the_end_user_from_metadata_user_id(live, gw_team):
    body = {"model": "chat", "max_tokens": 20, "messages": HI, "metadata": {"user_id": "bob"}}
    r = post(live, gw_team, "/v1/messages", body, {"anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    settle_usage()
    assert UsageRecord.objects.get(request_id=r.headers["x-request-id"]).end_user == "bob"


@pytest.mark.parametrize(
    ("path", "body", "headers", "param"),
    [
        ("/v1/chat/completions", {"user": 7}, {}, "user"),
        ("/v1/chat/completions", {"user": "x" * 257}, {}, "user"),
        ("/v1/chat/completions", {"metadata": {"tags": "a"}}, {}, "metadata.tags"),
        (
            "/v1/chat/completions",
            {"metadata": {"tags": [f"t{i}" for i in range(11)]}},
            {},
            "metadata.tags",
        ),
        ("/v1/chat/completions", {}, {"x-tollgate-tags": "has space"}, "x-tollgate-tags"),
        ("/v1/chat/completions", {}, {"x-tollgate-tags": "t" * 65}, "x-tollgate-tags"),
    ],
)
def test_past_a_bound_the_call_is_a_400_naming_the_field_and_reserves_nothing(
    live, gw_team, path, body, headers, param
):
    before = redis_account(gw_team.team)
    r = post(live, gw_team, path, {"model": "chat", "messages": HI, **body}, headers)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_attribution",
        param,
    )
    assert redis_account(gw_team.team) == before


def test_on_messages_the_refusal_is_in_anthropics_shape(live, gw_team):
    body = {"model": "chat", "max_tokens": 20, "messages": HI, "metadata": {"user_id": 5}}
    r = post(live, gw_team, "/v1/messages", body, {"anthropic-version": "2023-06-01"})
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_tags_are_taken_out_of_the_request_forwarded():
    request = {"metadata": {"tags": ["a"], "job_id": "j"}}
    assert attribution.tags({"headers": []}, request) == ("a",)
    assert request == {"metadata": {"job_id": "j"}}
    request = {"metadata": {"tags": ["a"]}}
    attribution.tags({"headers": []}, request)
    assert "metadata" not in request  # nothing of ours is sent upstream


def test_a_repeated_tag_counts_once_toward_the_bound():
    tags = [f"t{i}" for i in range(10)]
    headers = [(b"x-tollgate-tags", ",".join(tags).encode())]
    assert attribution.tags({"headers": headers}, {"metadata": {"tags": tags}}) == tuple(tags)
    with pytest.raises(GatewayError):
        attribution.tags({"headers": [(b"x-tollgate-tags", b"t10")]}, {"metadata": {"tags": tags}})
