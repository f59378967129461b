"""Which endpoint, which models: the route table (proxy/apis), model resolution and fallback
order, and GET /v1/models."""

import orjson

from livestate.snapshots import KeySnapshot, TeamSnapshot
from proxy.apis import ENDPOINTS
from proxy.apis.base import Api
from proxy.errors import GatewayError
from proxy.replica import Catalog, Group, Replica, Route


def method_not_allowed(method: str, path: str) -> GatewayError:
    return GatewayError(
        405, f"Use {method} for {path}.", "invalid_request_error", "method_not_allowed"
    )


def endpoint(path: str, method: str) -> Api:
    """The API served on this path, or the 404/405 for this request."""
    found = ENDPOINTS.get(path)
    if found is None:
        raise GatewayError(
            404, f"Unknown endpoint {method} {path}.", "invalid_request_error", "unknown_url"
        )
    if method != found.method:
        raise method_not_allowed(found.method, path)
    return found


def allowed_groups(key: KeySnapshot, team: TeamSnapshot) -> frozenset[str]:
    return key.groups & team.groups if key.groups else team.groups


def resolve(
    replica: Replica, request: dict, key: KeySnapshot, team: TeamSnapshot, api: Api
) -> tuple[list[Route], Group | None]:
    """The routes to try in order, and the model group named (None for a model)."""
    name = request.get("model")
    if not isinstance(name, str) or not name:
        raise GatewayError(
            400,
            "You must provide a model parameter.",
            "invalid_request_error",
            "missing_required_parameter",
            "model",
        )
    catalog = replica.catalog
    allowed = allowed_groups(key, team)
    group = catalog.groups_by_name.get(name)
    if group is not None:
        if group.id not in allowed:
            raise not_allowed(name, allowed)
        routes = group.ordered()
    else:
        route = catalog.routes_by_name.get(name)
        if route is None:
            raise GatewayError(
                404,
                f"The model '{name}' does not exist.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        groups = catalog.groups_by_id
        if not any(g in groups and route.id in groups[g].model_ids for g in allowed):
            raise not_allowed(name, allowed)
        routes = [route]
    mode = api.mode
    served = [r for r in routes if r.mode == mode and api.exchange(r) is not None]
    if not served:
        if any(r.mode == mode for r in routes):
            raise GatewayError(
                400,
                f"'{name}' has no model whose upstream can serve {api.name} requests; "
                "use another endpoint or model.",
                "invalid_request_error",
                "model_api_mismatch",
                "model",
            )
        raise GatewayError(
            400,
            f"'{name}' has no {mode} model enabled; check the endpoint you called.",
            "invalid_request_error",
            "model_mode_mismatch",
            "model",
        )
    routes = served
    if len(routes) > 1:
        routes = replica.breaker.order(routes)  # models marked down go last
    return routes, group


def not_allowed(name: str, allowed: frozenset) -> GatewayError:
    # The size of the allowed list, never its contents: no probing of the catalog.
    return GatewayError(
        403,
        f"This key may not use '{name}'; it has access to "
        f"{len(allowed)} model group(s). See GET /v1/models.",
        "permission_error",
        "model_not_allowed",
        "model",
    )


def _model_item(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "tollgate"}


def listed_models(catalog: Catalog, allowed: frozenset[str]) -> dict[str, dict]:
    """Name -> OpenAI model object for every group the caller may use and the models in it."""
    items: dict[str, dict] = {}
    for gid in sorted(allowed):
        group = catalog.groups_by_id.get(gid)
        if group is None:
            continue
        items[group.name] = _model_item(group.name, group.created)
        for routes, _ in group.tiers:
            for r in routes:
                if r.name not in items:
                    items[r.name] = _model_item(r.name, r.created)
    return items


async def models_body(
    replica: Replica, key: KeySnapshot, team: TeamSnapshot, model_id: str
) -> bytes:
    """GET /v1/models (model_id empty) or /v1/models/{model_id}."""
    if not allowed_groups(key, team) <= replica.catalog.groups_by_id.keys():
        await replica.apply_changes()  # a group created a moment ago
    items = listed_models(replica.catalog, allowed_groups(key, team))
    if not model_id:
        return orjson.dumps({"object": "list", "data": list(items.values())})
    if model_id not in items:
        raise GatewayError(
            404,
            f"The model '{model_id}' does not exist.",
            "invalid_request_error",
            "model_not_found",
            "model",
        )
    return orjson.dumps(items[model_id])
