"""Plain builders for the gateway's unit tests: a catalog, snapshots and a Call, no I/O."""

from livestate.snapshots import KeySnapshot, TeamPricing, TeamSnapshot
from proxy.apis.openai import CHAT, COMPLETION, EMBEDDING
from proxy.breaker import Breaker
from proxy.call import Call
from proxy.replica import Replica, build_catalog


def model(name, *, mode="chat", in_price=1_000_000, out_price=2_000_000, max_out=1000, **extra):
    return {
        "name": name,
        "upstream": "up_1",
        "upstream_model": f"{name}-upstream",
        "mode": mode,
        "in_price": in_price,
        "out_price": out_price,
        "in_cost": in_price // 2,
        "out_cost": out_price // 2,
        "max_out": max_out,
        "enabled": True,
        "created": 1,
        **extra,
    }


def catalog_raw(models: dict, groups: dict) -> dict:
    """models: public id -> model(); groups: public id -> (name, [(model id, priority, weight)])."""
    return {
        "upstreams": {
            "up_1": {
                "name": "up",
                "kind": "openai",
                "base_url": "http://upstream.invalid/v1",
                "api_key_enc": "",
                "key_mode": "own",
                "connect_timeout": 5,
                "read_timeout": 60,
                "enabled": True,
            }
        },
        "models": models,
        "groups": {
            gid: {
                "name": name,
                "cache_ttl": None,
                "created": 2,
                "members": [{"model": m, "priority": p, "weight": w} for m, p, w in members],
            }
            for gid, (name, members) in groups.items()
        },
    }


def replica_with(raw: dict, breaker: Breaker | None = None) -> Replica:
    replica = Replica(redis=None, breaker=breaker or Breaker())
    replica.catalog = build_catalog(raw)
    return replica


def key_snapshot(**fields) -> KeySnapshot:
    values = {
        "id": 7,
        "public_id": "key_1",
        "team": 3,
        "hash": "ab" * 32,
        "prev_hash": None,
        "prev_until": None,
        "status": "active",
        "expires": None,
        "groups": frozenset(),
        "rpm": None,
        "tpm": None,
        "budget": None,
    }
    return KeySnapshot(**{**values, **fields})


def team_snapshot(**fields) -> TeamSnapshot:
    values = {
        "id": 3,
        "public_id": "team_1",
        "org": 1,
        "status": "active",
        "groups": frozenset({"grp_a"}),
        "rpm": None,
        "tpm": None,
        "par": None,
        "budget": None,
        "budget_mode": "soft",
        "overdraft": 0,
        "pricing": TeamPricing(),
        "cache_ttl": None,
        "cache_hit_pct": 100,
        "log": False,
        "log_days": None,
        "log_patterns": (),
    }
    return TeamSnapshot(**{**values, **fields})


APIS = {"chat": CHAT, "completion": COMPLETION, "embedding": EMBEDDING}


def call_for(request: dict, routes, *, mode="chat", team=None, key=None, headers=()) -> Call:
    body = b"{}"
    return Call(
        rid="req_test",
        scope={"headers": list(headers), "path": "/v1/chat/completions", "method": "POST"},
        receive=None,
        send=None,
        key=key or key_snapshot(),
        team=team or team_snapshot(),
        request=request,
        body=body,
        api=APIS[mode],
        path="/v1/chat/completions",
        routes=routes,
        group=None,
    )
