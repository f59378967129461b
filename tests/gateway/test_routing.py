"""Routing: which models a call tries, in which order, and why a model is refused."""

import random
from collections import Counter

import pytest

from proxy import routing
from proxy.apis.openai import EMBEDDING
from proxy.breaker import Breaker
from proxy.errors import GatewayError
from tests.helpers.gateway_state import (
    APIS,
    catalog_raw,
    key_snapshot,
    model,
    replica_with,
    team_snapshot,
)

MODELS = {
    "m_p1": model("primary"),
    "m_p2a": model("second-a"),
    "m_p2b": model("second-b"),
    "m_emb": model("embedder", mode="embedding"),
    "m_other": model("other"),
}
GROUPS = {
    "grp_a": ("smart", [("m_p2a", 2, 3), ("m_p1", 1, 1), ("m_p2b", 2, 1), ("m_emb", 1, 1)]),
    "grp_b": ("elsewhere", [("m_other", 1, 1)]),
}


def resolve(name, *, mode="chat", key=None, team=None, breaker=None):
    replica = replica_with(catalog_raw(MODELS, GROUPS), breaker)
    return routing.resolve(
        replica, {"model": name}, key or key_snapshot(), team or team_snapshot(), APIS[mode]
    )


def names(routes):
    return [r.name for r in routes]


def test_a_group_falls_back_by_priority_then_by_weight_within_a_priority():
    # given
    random.seed(1)
    orders = Counter(tuple(names(resolve("smart")[0])) for _ in range(4000))
    # then: priority 1 first, always; within priority 2, second-a (weight 3) leads ~3/4 of calls
    assert set(orders) == {
        ("primary", "second-a", "second-b"),
        ("primary", "second-b", "second-a"),
    }
    share = orders[("primary", "second-a", "second-b")] / 4000
    assert 0.70 < share < 0.80


def test_only_models_of_the_endpoints_mode_are_tried():
    routes, group = resolve("smart", mode="embedding")
    assert names(routes) == ["embedder"]
    assert group.name == "smart"


def test_a_model_named_directly_routes_to_it_alone_when_a_group_allows_it():
    routes, group = resolve("second-b")
    assert names(routes) == ["second-b"]
    assert group is None


def test_a_model_the_breaker_opened_is_tried_last():
    breaker = Breaker(threshold=1, cooldown=60)
    breaker.failed("m_p1")
    routes, _ = resolve("smart", breaker=breaker)
    assert names(routes)[-1] == "primary"
    assert len(routes) == 3


@pytest.mark.parametrize(
    ("name", "mode", "status", "code"),
    [
        (None, "chat", 400, "missing_required_parameter"),
        ("", "chat", 400, "missing_required_parameter"),
        ("nope", "chat", 404, "model_not_found"),
        ("elsewhere", "chat", 403, "model_not_allowed"),  # a group the team does not have
        ("other", "chat", 403, "model_not_allowed"),  # a model only in such a group
        ("embedder", "chat", 400, "model_mode_mismatch"),
    ],
)
def test_resolve_errors(name, mode, status, code):
    with pytest.raises(GatewayError) as caught:
        resolve(name, mode=mode)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_a_key_limited_to_some_groups_gets_only_those_of_its_team():
    team = team_snapshot(groups=frozenset({"grp_a", "grp_b"}))
    assert names(resolve("other", team=team)[0]) == ["other"]
    key = key_snapshot(groups=frozenset({"grp_a"}))
    with pytest.raises(GatewayError) as caught:
        resolve("other", team=team, key=key)
    # the size of the allowed list, never its contents
    assert "1 model group(s)" in caught.value.message
    assert routing.allowed_groups(key, team) == {"grp_a"}
    assert routing.allowed_groups(key_snapshot(), team) == {"grp_a", "grp_b"}


def test_the_models_list_holds_the_groups_and_their_models_once():
    replica = replica_with(catalog_raw(MODELS, GROUPS))
    items = routing.listed_models(replica.catalog, frozenset({"grp_a", "grp_b", "grp_gone"}))
    # by group id, then by priority: each model once, missing groups skipped
    assert list(items) == [
        "smart", "primary", "embedder", "second-a", "second-b", "elsewhere", "other",
    ]  # fmt: skip
    assert items["smart"] == {
        "id": "smart",
        "object": "model",
        "created": 2,
        "owned_by": "tollgate",
    }


@pytest.mark.parametrize(
    ("request_body", "mode", "code"),
    [
        ({}, "chat", "missing_required_parameter"),
        ({"messages": []}, "chat", "missing_required_parameter"),
        ({"messages": "hi"}, "chat", "invalid_type"),
        ({"prompt": ""}, "completion", "missing_required_parameter"),
        ({"input": None}, "embedding", "missing_required_parameter"),
    ],
)
def test_body_checks(request_body, mode, code):
    with pytest.raises(GatewayError) as caught:
        APIS[mode].check(request_body)
    assert caught.value.code == code


def test_unknown_endpoints_and_methods():
    assert routing.endpoint("/v1/embeddings", "POST") is EMBEDDING
    with pytest.raises(GatewayError) as caught:
        routing.endpoint("/v1/nope", "POST")
    assert caught.value.status == 404
    with pytest.raises(GatewayError) as caught:
        routing.endpoint("/v1/completions", "GET")
    assert caught.value.status == 405
