"""Admission: the call's worst-case reservation, one atomic ADMIT, and refusals as errors.

The reservation is the highest price over every route the call may fall back to of the worst
case the call's API names (proxy/apis: for chat, the input estimated from the body size and
the output the caller capped, else each model's maximum, times the answers asked with `n`); a
cached answer reserves exactly what it will be charged.

ADMIT's reply also says what the call leaves of its rate limits (livestate.scripts.Headroom):
admission turns it into the headers every answer of the call carries (`call.rate_headers`,
named by the API: Api.rate_headers), with no Redis command of its own.
"""

import time

import orjson

from livestate.scripts import GatewayScripts, Headroom, Refusal
from proxy import pricing
from proxy.call import Call
from proxy.errors import GatewayError
from proxy.leases import Instance
from proxy.usage import Usage


def job_id_of(scope, request: dict | None) -> str | None:
    """The job a call belongs to: the `x-job-id` header, else `metadata.job_id`."""
    for name, value in scope["headers"]:
        if name == b"x-job-id":
            return value.decode("latin-1").strip()
    if request is not None:
        metadata = request.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("job_id"), str):
            return metadata["job_id"].strip()
    return None


def require_job(call: Call) -> None:
    """The job the call belongs to (None for none); per-job pricing refuses calls outside one."""
    job_id = job_id_of(call.scope, call.request)
    if not job_id and call.team.pricing.per_job:
        raise GatewayError(
            400,
            "This team is priced per job: open one with POST /v1/jobs and send its id in "
            "the 'x-job-id' header.",
            "invalid_request_error",
            "job_required",
        )
    call.job_id = job_id or None


def reservation(call: Call, hit) -> tuple[int, int]:
    """(reserve in micro-credits, estimated tokens) for the call, or for its cached answer."""
    team_pricing = call.team.pricing
    if hit is not None:
        route, entry = hit
        price = pricing.price(team_pricing, route, Usage(entry["in"], entry["out"]))
        return price * call.team.cache_hit_pct // 100, entry["in"] + entry["out"]
    demand = call.api.demand(call)
    # Worst case over the routes the call may fall back to.
    reserve = max(pricing.worst_price(team_pricing, r, demand) for r in call.routes)
    return reserve, demand.tokens


async def admit(
    scripts: GatewayScripts,
    call: Call,
    reserve: int,
    est_tokens: int,
    instance: Instance,
    recovery=None,
) -> None:
    """Reserve the call's slot and credit atomically, or raise the refusal. The in-flight
    record is the call's lease, held by this gateway instance (livestate/leases.py). An account
    Redis lost (not_ready) is rebuilt from Postgres on demand (`recovery`), then asked again."""
    verdict, lease = await _admit(scripts, call, reserve, est_tokens, instance)
    if type(verdict) is Refusal and verdict.status == "not_ready" and recovery is not None:
        await recovery.rebuild(call.team.id)
        verdict, lease = await _admit(scripts, call, reserve, est_tokens, instance)
    if verdict is not None:
        if type(verdict) is Refusal:
            raise refusal(verdict, call.job_id)
        call.rate_headers = call.api.rate_headers(verdict, lease["ts"])
    if call.stream:
        call.lease = instance.lease(call, lease, reserve)


async def _admit(
    scripts: GatewayScripts, call: Call, reserve: int, est_tokens: int, instance: Instance
):
    call.started = started = time.time()
    now_ms = int(started * 1000)
    team, key = call.team, call.key
    lease = {
        "team": team.id,
        "org": team.org,
        "key": key.id,
        "reserve": reserve,
        "ts": now_ms,
        "inst": instance.id,
    }
    verdict: Refusal | Headroom | None = await scripts.admit(
        key=key,
        team=team,
        rid=call.rid,
        now_ms=now_ms,
        est_tokens=est_tokens,
        reserve=reserve,
        inflight=orjson.dumps(lease),
        job_id=call.job_id,
    )
    return verdict, lease


def refusal(refused: Refusal, job_id: str | None = None) -> GatewayError:
    """The caller's answer for a verdict of ADMIT or JOB_OPEN."""
    status, detail = refused.status, refused.detail
    retry, limit, remaining = refused.retry, refused.limit, refused.remaining
    if status == "job_not_found":
        return GatewayError(
            404,
            f"No open job {str(job_id)[:64]!r} for this team. Open one with POST /v1/jobs.",
            "invalid_request_error",
            "job_not_found",
        )
    if status == "job_closed":
        return GatewayError(
            409,
            f"Job {job_id} is already {detail}; open a new job for more calls.",
            "invalid_request_error",
            "job_closed",
        )
    if status == "rate_limited":
        unit = "tokens" if detail.endswith("tpm") else "requests"
        scope = "key" if detail.startswith("key") else "team"
        return GatewayError(
            429,
            f"Rate limit reached for this {scope}: {limit} {unit} per minute. Retry in {retry}s.",
            "rate_limit_error",
            "rate_limit_exceeded",
            headers=[
                (b"retry-after", str(retry).encode()),
                (f"x-ratelimit-limit-{unit}".encode(), str(limit).encode()),
                (f"x-ratelimit-remaining-{unit}".encode(), str(remaining).encode()),
                (f"x-ratelimit-reset-{unit}".encode(), f"{retry}s".encode()),
            ],
        )
    if status == "parallel_limited":
        return GatewayError(
            429,
            f"Too many requests in flight for this team (limit {limit}); wait for one to finish.",
            "rate_limit_error",
            "too_many_parallel_requests",
            headers=[(b"retry-after", b"1")],
        )
    if status == "insufficient_quota":
        return GatewayError(
            429,
            "You exceeded your current quota: the team's credits do "
            "not cover this request. Add credits to continue.",
            "insufficient_quota",
            "insufficient_quota",
        )
    if status == "budget_exceeded":
        what = "key's" if detail == "key_budget" else "team's period"
        return GatewayError(
            429,
            f"This request would exceed the {what} budget.",
            "budget_exceeded",
            "budget_exceeded",
        )
    return GatewayError(
        503,
        "Account state is being rebuilt; retry in a few seconds.",
        "service_unavailable",
        "account_not_ready",
        headers=[(b"retry-after", b"2")],
    )
