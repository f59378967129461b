"""Jobs at the gateway: `POST /v1/jobs`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/complete`.

A job groups the calls made for one business operation (sent with an `x-job-id` header or
`metadata.job_id`). Its live state is a Redis hash that admission checks atomically (no call
is admitted into a closed job or another team's job); opening and closing append records to
the usage stream, from which the settler writes the durable Job row and, for flat-priced jobs,
the ledger entry. With per_job pricing, opening reserves the job's price; closing releases it
and charges it only if the job completed with no failed call.
"""

import asyncio
import re
import time

import orjson
from django.conf import settings

from core.bounds import JOB_TYPE_RE
from core.ids import new_public_id
from core.money import format_micros
from livestate.keys import job_key
from livestate.scripts import GatewayScripts, JobCloseResult
from livestate.snapshots import KeySnapshot, TeamSnapshot
from proxy import control
from proxy.admission import refusal
from proxy.errors import GatewayError
from proxy.pricing import job_fee
from proxy.responses import json_object, read_body, send_json
from proxy.routing import method_not_allowed

JOB_ID_RE = re.compile(r"^job_[a-z0-9]{20}$")
CLOSING_STATUSES = ("completed", "failed", "cancelled")
MAX_METADATA_BYTES = 16 * 1024


def _payload(job_id, job_type, status, metadata, created_at, closed_at, totals, fee) -> dict:
    """A job as the customer sees it. `totals` as billing.selectors.job_totals gives them."""
    return {
        "id": job_id,
        "object": "job",
        "type": job_type,
        "status": status,
        "metadata": metadata,
        "created_at": created_at,
        "closed_at": closed_at,
        "calls": totals["calls"],
        "failed_calls": totals["failed_calls"],
        "input_tokens": totals["input_tokens"],
        "output_tokens": totals["output_tokens"],
        "cost": format_micros(totals["cost_micros"]),
        "price": format_micros(totals["price_micros"]),
        "job_price": format_micros(fee),
    }


def job_view(job_id: str, h: dict) -> dict:
    """The live job, from its Redis hash (bytes keys and values)."""

    def num(name):
        return int(h.get(name, b"0"))

    closed = h.get(b"closed")
    totals = {
        "calls": num(b"calls"),
        "failed_calls": num(b"failed"),
        "input_tokens": num(b"in"),
        "output_tokens": num(b"out"),
        "cost_micros": num(b"cost"),
        "price_micros": num(b"price") + num(b"charged"),
    }
    return _payload(
        job_id,
        h[b"type"].decode(),
        h[b"status"].decode(),
        orjson.loads(h.get(b"meta", b"{}")),
        num(b"created") // 1000,
        int(closed) // 1000 if closed else None,
        totals,
        num(b"fee"),
    )


class JobHandler:
    """The /v1/jobs endpoints, with the gateway's Redis and scripts."""

    __slots__ = ("max_body", "redis", "scripts")

    def __init__(self, redis, scripts: GatewayScripts, max_body: int):
        self.redis, self.scripts, self.max_body = redis, scripts, max_body

    async def handle(self, scope, receive, send, rid, key, team, rest: str) -> None:
        method = scope["method"]
        if rest == "":
            if method != "POST":
                raise GatewayError(
                    405,
                    "Use POST /v1/jobs to open a job.",
                    "invalid_request_error",
                    "method_not_allowed",
                )
            return await self._open(receive, send, rid, key, team)
        job_id, _, action = rest.partition("/")
        if action == "" and method == "GET":
            return await self._get(send, rid, team, job_id)
        if action == "complete" and method == "POST":
            return await self._complete(receive, send, rid, key, team, job_id)
        if action in ("", "complete"):
            raise method_not_allowed("GET" if action == "" else "POST", scope["path"])
        raise GatewayError(
            404,
            f"Unknown endpoint {method} {scope['path']}.",
            "invalid_request_error",
            "unknown_url",
        )

    async def _json_body(self, receive, *, optional: bool = False) -> dict:
        body = await read_body(receive, self.max_body)
        if optional and not body.strip():
            return {}
        return json_object(body)

    async def _open(self, receive, send, rid, key: KeySnapshot, team: TeamSnapshot):
        data = await self._json_body(receive)
        job_type = data.get("type")
        if not isinstance(job_type, str) or not JOB_TYPE_RE.match(job_type):
            raise GatewayError(
                400,
                "'type' is required: up to 100 letters, digits and _ . : - naming the kind of "
                "job (for example 'summarize_document').",
                "invalid_request_error",
                "invalid_job_type",
                "type",
            )
        metadata = data.get("metadata", {})
        if metadata is None:
            metadata = {}
        meta_raw = orjson.dumps(metadata) if isinstance(metadata, dict) else None
        if meta_raw is None or len(meta_raw) > MAX_METADATA_BYTES:
            raise GatewayError(
                400,
                f"'metadata' must be a JSON object of at most {MAX_METADATA_BYTES} bytes.",
                "invalid_request_error",
                "invalid_metadata",
                "metadata",
            )
        job_id = new_public_id("job")
        fee = job_fee(team.pricing, job_type)
        now_ms = int(time.time() * 1000)
        record = orjson.dumps(
            {
                "kind": "job_open",
                "job": job_id,
                "org": team.org,
                "team": team.id,
                "key": key.id,
                "type": job_type,
                "meta": metadata,
                "fee": fee,
                "ts": now_ms / 1000,
            }
        )
        refused = await self.scripts.job_open(
            key=key,
            team=team,
            now_ms=now_ms,
            job_id=job_id,
            job_type=job_type,
            fee=fee,
            metadata=meta_raw,
            record=record,
        )
        if refused is not None:
            raise refusal(refused)
        h = await self.redis.hgetall(job_key(team.id, job_id))
        await send_json(send, 201, orjson.dumps(job_view(job_id, h)), rid)

    async def _get(self, send, rid, team: TeamSnapshot, job_id: str):
        h = await self._job_hash(team, job_id)
        if h is None:
            view = await asyncio.to_thread(_job_from_db, team.id, job_id)
            if view is None:
                raise _job_not_found(job_id)
        else:
            view = job_view(job_id, h)
        await send_json(send, 200, orjson.dumps(view), rid)

    async def _job_hash(self, team: TeamSnapshot, job_id: str) -> dict | None:
        if not JOB_ID_RE.match(job_id):
            raise _job_not_found(job_id)
        h = await self.redis.hgetall(job_key(team.id, job_id))
        if not h:
            return None
        if h.get(b"team") != str(team.id).encode():
            raise _job_not_found(job_id)  # another team's job: as if it did not exist
        return h

    async def _complete(self, receive, send, rid, key: KeySnapshot, team: TeamSnapshot, job_id):
        data = await self._json_body(receive, optional=True)
        status = data.get("status", "completed")
        if status not in CLOSING_STATUSES:
            raise GatewayError(
                400,
                "'status' must be one of completed, failed or cancelled.",
                "invalid_request_error",
                "invalid_job_status",
                "status",
            )
        if not JOB_ID_RE.match(job_id):
            raise _job_not_found(job_id)
        result = await self.scripts.job_close(
            key=key,
            team=team,
            now_ms=int(time.time() * 1000),
            job_id=job_id,
            status=status,
            retain_ms=settings.GATEWAY_JOB_RETAIN_SECONDS * 1000,
        )
        if result.status == "not_found":
            if await asyncio.to_thread(_job_from_db, team.id, job_id) is None:
                raise _job_not_found(job_id)
            result = JobCloseResult("closed", "closed")
        if result.status == "closed":
            raise GatewayError(
                409,
                f"Job {job_id} is already {result.detail}; a job is completed once.",
                "invalid_request_error",
                "job_closed",
            )
        h = await self.redis.hgetall(job_key(team.id, job_id))
        await send_json(send, 200, orjson.dumps(job_view(job_id, h)), rid)


def _job_not_found(job_id: str):
    return GatewayError(
        404,
        f"No job {job_id[:64]!r} for this team. Open one with POST /v1/jobs.",
        "invalid_request_error",
        "job_not_found",
    )


def _job_from_db(team_id: int, job_id: str) -> dict | None:
    """A job whose Redis copy has been retired: from its settled Postgres row."""
    row = control.settled_job(team_id, job_id)
    if row is None:
        return None
    return _payload(
        job_id,
        row["job_type"],
        row["status"],
        row["metadata"],
        row["created"],
        row["closed"],
        row["totals"],
        row["fee"],
    )
