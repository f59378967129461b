"""LiteLLM as an upstream: what its error answers mean for the gateway's caller.

LiteLLM answers in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, but its
status codes have moved between versions (budget_exceeded: 400, then 429, 422 since 1.104), so
the decision is made on `error.type`, never on the status:

- budget_exceeded: with the caller's own key (key_mode caller) it is the team's or key's
  LiteLLM budget, which mirrors their Tollgate credits: the caller gets the gateway's 429
  budget_exceeded, uncharged, with no fallback (every model behind LiteLLM would say the same).
  With the upstream's own key it is the operator's budget: our configuration, so fall back.
- LiteLLM's own rate limiter (throttling_error, "Rate limit exceeded for …"): with the caller's
  key these are the team's or key's synced limits: the caller gets the gateway's 429
  rate_limit_exceeded with LiteLLM's retry-after. A provider's 429 (same type, another
  message) falls back like any overloaded upstream.
- The key refused (token_not_found_in_db, expired_key, auth_error for a blocked key or team,
  no_db_connection) or the model refused (key_/team_model_access_denied): the gateway has
  already authorized the call, so LiteLLM's copy is behind (a sync pending) or the upstream is
  misconfigured: never the caller's fault, so fall back, with the reason in the final error.
- Anything else keeps the gateway's generic handling (5xx and 429 fall back, other 4xx are the
  caller's own mistake, passed on).
"""

import orjson

from proxy.errors import GatewayError

KEY_REFUSED = frozenset(
    {
        "token_not_found_in_db",
        "expired_key",
        "auth_error",
        "no_db_connection",
        "key_model_access_denied",
        "team_model_access_denied",
    }
)
LIMITER_PREFIX = "Rate limit exceeded for"


def _error(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def classify(status: int, raw: bytes, headers, *, caller_key: bool) -> GatewayError | str | None:
    """For an error answer from LiteLLM: a GatewayError to answer the caller with now, a
    reason (str) to try the next model, or None for the gateway's generic handling."""
    error = _error(raw)
    type_ = error.get("type") or ""
    message = str(error.get("message") or "")
    if type_ == "budget_exceeded":
        if not caller_key:
            return "LiteLLM: the budget of the upstream's key is exhausted"
        return GatewayError(
            429,
            "This request would exceed the budget of this key or team (enforced by LiteLLM).",
            "budget_exceeded",
            "budget_exceeded",
        )
    if type_ in KEY_REFUSED:
        who = "this key (its LiteLLM copy is not in sync yet)" if caller_key else "its key"
        return f"LiteLLM refused {who}: {type_}"
    if status == 429 and caller_key and message.startswith(LIMITER_PREFIX):
        retry = (headers.get("retry-after") or "").strip()
        retry = retry if retry.isdigit() else "1"
        return GatewayError(
            429,
            f"Rate limit reached for this key or team (enforced by LiteLLM). Retry in {retry}s.",
            "rate_limit_error",
            "rate_limit_exceeded",
            headers=[(b"retry-after", retry.encode())],
        )
    return None
