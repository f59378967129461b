"""Settlement: each admitted call finished exactly once, before the client sees its end.

One atomic SETTLE releases the reservation, charges the price (capped at what admission
allowed) and appends the usage record to the usage stream, from which workers post the
ledger (billing/settlement.py). Running it before the last byte goes out means a crash after
that point cannot lose the record.

A SETTLE Redis does not take (down, restarting, or it lost the team's account) is retried with
backoff for up to GATEWAY_SETTLE_RETRY_SECONDS while the client's answer waits; after that the
record is handed to proxy/recovery.py, which writes it when Redis answers, and the client gets
an error instead of a clean end (SettlementUnavailable). `done` means written, never before.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import orjson
from django.conf import settings
from redis.exceptions import RedisError

from core.redaction import REDACTED
from livestate.scripts import GatewayScripts
from livestate.snapshots import TeamSnapshot
from proxy import pricing
from proxy.call import Call
from proxy.errors import GatewayError
from proxy.recovery import Deferred, Recovery
from proxy.replica import Route
from proxy.tokens import estimate_prompt_tokens
from proxy.upstream import redact
from proxy.usage import Usage

NO_USAGE = Usage()

logger = logging.getLogger(__name__)

RETRY_FIRST_DELAY, RETRY_MAX_DELAY = 0.05, 1.0
# Unanswered admissions kept for release, at most (a long outage refuses calls by the thousand;
# beyond this, a reservation one of them may hold waits for the reaper).
MAX_ABANDONED = 10_000


class SettlementUnavailable(GatewayError):
    """The call's usage could not be written yet; the gateway keeps it and writes it later."""

    def __init__(self, rid: str):
        super().__init__(
            503,
            f"The gateway could not record this call's usage (request id {rid}); it will be "
            "recorded when its state store answers again. Retry in a few seconds.",
            "service_unavailable",
            "state_unavailable",
            headers=[(b"retry-after", b"2")],
        )


class Settlement:
    """Finishes one admitted call exactly once: price, release, record."""

    __slots__ = (
        "asked",
        "call",
        "deferred",
        "done",
        "est_tokens",
        "hit_price",
        "recovery",
        "reserve",
        "scripts",
        "usage",
    )

    def __init__(
        self,
        scripts: GatewayScripts,
        call: Call,
        reserve: int,
        est_tokens: int,
        recovery: Recovery | None = None,
    ):
        self.scripts, self.call, self.recovery = scripts, call, recovery
        self.reserve, self.est_tokens = reserve, est_tokens
        self.asked = call.request.get("model", "")  # before the upstream id is substituted
        self.hit_price: int | None = None  # set when the answer comes from the cache
        self.usage = NO_USAGE  # what the call was charged for, once finished
        self.done = False  # SETTLE wrote the record
        self.deferred: Deferred | None = None  # handed to the recovery, written later

    @property
    def finished(self) -> bool:
        """Nothing more to do here: written, or kept by the recovery to be written."""
        return self.done or self.deferred is not None

    def waive(self) -> None:
        """The client got an error instead of the answer: the deferred record charges nothing
        (its cost stays recorded). Call at once after the SettlementUnavailable, before any
        await, so the recovery cannot have written it yet."""
        entry = self.deferred
        if entry is not None:
            rec = orjson.loads(entry.args["record"])
            rec.update(status="error", price=0, unsent=True)
            entry.args.update(price=0, failed=True, record=orjson.dumps(rec))

    async def finish_reported(
        self,
        route: Route,
        usage: Usage | None,
        estimate_output: Callable[[], int],
        *,
        status: str = "ok",
        failed: bool = False,
        response: bytes | None = None,
    ) -> None:
        """Finish with the upstream's usage, or local estimates when it reported none."""
        if self.finished:
            return
        estimated = usage is None
        if estimated:
            usage = Usage(estimate_prompt_tokens(self.call.request), estimate_output())
        await self.finish(
            route, usage, status, estimated=estimated, failed=failed, response=response
        )

    async def finish(
        self,
        route: Route | None,
        usage: Usage | None,
        status: str,
        *,
        estimated: bool = False,
        failed: bool = False,
        response: bytes | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        """Write the call's SETTLE (see the module docstring for what happens when Redis does
        not take it: SettlementUnavailable is raised once the record is kept)."""
        if self.finished:
            return
        self.usage = usage = usage or NO_USAGE
        in_t, out_t = usage.input, usage.output
        call = self.call
        team, key, job_id = call.team, call.key, call.job_id
        price = cost = 0
        if route is not None:
            if self.hit_price is not None:
                price = self.hit_price  # no provider call, so no cost
            else:
                price = pricing.price(team.pricing, route, usage)
                cost = pricing.call_cost(route, usage)
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
        breakdown = usage.record_fields()  # cached, reasoning, audio tokens, images…
        if breakdown:
            rec.update(breakdown)
        if job_id:
            rec["job"] = job_id
        if call.end_user:
            rec["eu"] = call.end_user
        if call.tags:
            rec["tags"] = call.tags
        if self.hit_price is not None:
            rec["cache"] = True
        if team.log:
            # Any route will do when none answered: they all redact every key of the catalog.
            redacting = route or (call.routes[0] if call.routes else None)
            rec["req"], rec["resp"], rec["cut"] = logged_bodies(
                call.body, response, redacting, team
            )
            rec["keep_days"] = team.log_days or 30
        args = {
            "key": key,
            "team": team,
            "rid": call.rid,
            "now_ms": int(now * 1000),
            "reserve": self.reserve,
            "price": price,
            "token_correction": in_t + out_t - self.est_tokens,
            "record": orjson.dumps(rec),
            "job_id": job_id,
            "failed": failed,
            "in_tokens": in_t,
            "out_tokens": out_t,
            "cost": cost,
            "admitted_ms": int(call.started * 1000),
        }
        if retry_seconds is None:
            retry_seconds = settings.GATEWAY_SETTLE_RETRY_SECONDS
        if retry_seconds < 0:  # not now: straight to the recovery (see abandon)
            return self._defer(args, "admission unanswered")
        await self._write(args, time.monotonic() + retry_seconds)

    async def abandon(self) -> None:
        """ADMIT's reply was lost (Redis failed mid-call): it may have reserved. Hand the
        recovery a no-charge SETTLE, which releases the reservation if there is one and
        records nothing otherwise (its in-flight guard)."""
        if self.recovery is not None and len(self.recovery.deferred) < MAX_ABANDONED:
            with contextlib.suppress(SettlementUnavailable):
                await self.finish(None, None, "error", retry_seconds=-1)

    async def _write(self, args: dict, deadline: float) -> None:
        team = self.call.team
        delay = RETRY_FIRST_DELAY
        problem = ""
        while True:
            try:
                charged = await self.scripts.settle(**args)
                if charged != -2:
                    break
                problem = "Redis lost the team's account"
                if self.recovery is not None:
                    await self.recovery.rebuild(team.id, wait=max(0.0, deadline - time.monotonic()))
            except RedisError as exc:
                problem = type(exc).__name__
            if time.monotonic() + delay > deadline:
                self._defer(args, problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
        self.done = True
        if charged >= 0 and self.recovery is not None:
            self.recovery.kept(team, args["record"], charged)

    def _defer(self, args: dict, problem: str):
        rid = self.call.rid
        log = logger.warning if args["price"] == 0 else logger.error  # no usage at stake
        log(
            "could not record the usage of %s (%s); kept to be written when Redis answers",
            rid,
            problem,
        )
        if self.recovery is None:
            raise SettlementUnavailable(rid)
        self.deferred = Deferred(rid, self.call.team.id, args)
        self.recovery.defer(self.deferred)
        raise SettlementUnavailable(rid)


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
