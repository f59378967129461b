"""Settlement: each admitted call finished exactly once, before the client sees its end.

One atomic SETTLE releases the reservation, charges the price (capped at what admission
allowed) and appends the usage record to the usage stream, from which workers post the
ledger (billing/settlement.py). Running it before the last byte goes out means a crash after
that point cannot lose the record.
"""

import time
from collections.abc import Callable

import orjson
from django.conf import settings

from core.redaction import REDACTED
from livestate.scripts import GatewayScripts
from livestate.snapshots import TeamSnapshot
from proxy import pricing
from proxy.call import Call
from proxy.replica import Route
from proxy.tokens import estimate_prompt_tokens
from proxy.upstream import redact


def reported_tokens(usage) -> tuple[int, int] | None:
    """(input, output) tokens from an upstream's `usage`, or None when it gave none."""
    if isinstance(usage, dict) and "prompt_tokens" in usage:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return None


class Settlement:
    """Finishes one admitted call exactly once: price, release, record."""

    __slots__ = ("asked", "call", "done", "est_tokens", "hit_price", "reserve", "scripts", "tokens")

    def __init__(self, scripts: GatewayScripts, call: Call, reserve: int, est_tokens: int):
        self.scripts, self.call = scripts, call
        self.reserve, self.est_tokens = reserve, est_tokens
        self.asked = call.request.get("model", "")  # before the upstream id is substituted
        self.hit_price: int | None = None  # set when the answer comes from the cache
        self.tokens = (0, 0)
        self.done = False

    async def finish_reported(
        self,
        route: Route,
        usage,
        estimate_output: Callable[[], int],
        *,
        status: str = "ok",
        failed: bool = False,
        response: bytes | None = None,
    ) -> None:
        """Finish with the upstream's usage, or local estimates when it reported none."""
        if self.done:
            return
        reported = reported_tokens(usage)
        if reported is not None:
            in_t, out_t = reported
        else:
            in_t, out_t = estimate_prompt_tokens(self.call.request), estimate_output()
        await self.finish(
            route,
            in_t,
            out_t,
            status,
            estimated=reported is None,
            failed=failed,
            response=response,
        )

    async def finish(
        self,
        route: Route | None,
        in_t: int,
        out_t: int,
        status: str,
        *,
        estimated: bool = False,
        failed: bool = False,
        response: bytes | None = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        self.tokens = (in_t, out_t)
        call = self.call
        team, key, job_id = call.team, call.key, call.job_id
        price = cost = 0
        if route is not None:
            if self.hit_price is not None:
                price = self.hit_price  # no provider call, so no cost
            else:
                price = pricing.price(team.pricing, route, in_t, out_t)
                cost = pricing.call_cost(route, in_t, out_t)
        now = time.time()
        rec = {
            "rid": call.rid,
            "ts": now,
            "org": team.org,
            "team": team.id,
            "key": key.id,
            "model": route.name if route else "",
            "group": self.asked,
            "in": in_t,
            "out": out_t,
            "cost": cost,
            "price": price,
            "status": status,
            "lat": int((now - call.started) * 1000),
            "est": estimated,
        }
        if job_id:
            rec["job"] = job_id
        if self.hit_price is not None:
            rec["cache"] = True
        if team.log:
            # Any route will do when none answered: they all redact every key of the catalog.
            redacting = route or (call.routes[0] if call.routes else None)
            rec["req"], rec["resp"], rec["cut"] = logged_bodies(
                call.body, response, redacting, team
            )
            rec["keep_days"] = team.log_days or 30
        await self.scripts.settle(
            key=key,
            team=team,
            rid=call.rid,
            now_ms=int(now * 1000),
            admitted_ms=int(call.started * 1000),
            reserve=self.reserve,
            price=price,
            token_correction=in_t + out_t - self.est_tokens,
            record=orjson.dumps(rec),
            job_id=job_id,
            failed=failed,
            in_tokens=in_t,
            out_tokens=out_t,
            cost=cost,
        )


def logged_bodies(request_body: bytes, response: bytes | None, route, team: TeamSnapshot):
    """Request and response text for compliance logging: secrets and the team's patterns
    redacted, each cut at GATEWAY_LOG_MAX_BYTES."""
    cap = settings.GATEWAY_LOG_MAX_BYTES
    cut = False
    texts = []
    for raw in (request_body, response or b""):
        if len(raw) > cap:
            raw, cut = raw[:cap], True
        text = redact(raw.decode(errors="replace"), route)
        if team.redact is not None:
            text = team.redact.sub(REDACTED, text)
        texts.append(text)
    return texts[0], texts[1], cut
