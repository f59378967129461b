"""Drain the gateway's usage stream (Redis) into Postgres: usage records and ledger entries.

Delivery is at-least-once (a consumer group; a message is acknowledged only after its rows
are committed), and posting is idempotent: a batch inserts its calls' records first (unique
request id and call timestamp, ON CONFLICT DO NOTHING) and posts, per team, one ledger entry
for the records it actually inserted, so a record delivered twice posts once. Messages left
unacknowledged by a crashed worker are claimed again after CLAIM_IDLE_MS.

Settlers of one busy team do not queue behind each other for the batch: the account row is
locked by one statement just before commit (billing.services.ledger_post_usage_total), as are
the roll-ups' pending marks (by the records' insert, the last write before the postings).
Accounts are locked in primary-key order, after every pending mark, so they cannot deadlock.
"""

import logging
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import redis
from django.db import DataError, IntegrityError, connection, transaction

from billing import metrics as usage_metrics
from billing.models import USAGE_COUNTS, CallLog, Job, LedgerEntry
from billing.services import (
    UsageCharge,
    UsageTotal,
    ledger_post_usage_batch,
    ledger_post_usage_total,
)
from core.redis import client as redis_client
from livestate import leases, scripts
from livestate.keys import (
    SETTLER_GROUP,
    SHARD_RANGE,
    TEAM_SNAPSHOTS,
    dead_letters,
    inflight_key,
    open_jobs_key,
    shard_job_key,
    shard_of,
    usage_stream,
)
from livestate.snapshots import TeamSnapshot
from teams.models import VirtualKey

logger = logging.getLogger(__name__)

CLAIM_IDLE_MS = 60_000
MAX_LATENCY_MS = 2**31 - 1
MAX_END_USER = 256  # the column; the gateway already bounds it (proxy/attribution.py)


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def ensure_group(client, shards=SHARD_RANGE) -> None:
    """The settlers' consumer group on each shard's usage stream."""
    for shard in shards:
        try:
            # From id 0: records written before the group existed are settled too.
            client.xgroup_create(usage_stream(shard), SETTLER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _is_cluster(client) -> bool:
    return isinstance(client, redis.RedisCluster)


def settle_usage(*, batch_size: int = 1000, max_batches: int = 20) -> int:
    """Settle what is waiting in every shard's stream, in batches; returns how many records
    were processed."""
    client = redis_client()
    ensure_group(client)
    consumer = _consumer()
    total = 0
    touched = set()
    # On one Redis, one XREADGROUP reads every shard's stream; in a cluster a command may only
    # name keys of one slot, so each shard is read on its own.
    groups = [[s] for s in SHARD_RANGE] if _is_cluster(client) else [list(SHARD_RANGE)]
    # Records this settler took and did not acknowledge (its last run was cut short, e.g. by a
    # Redis outage between its read and its acknowledgement): again now, not after
    # CLAIM_IDLE_MS; posting is idempotent, so one it did post costs nothing.
    for shards in groups:
        own = client.xreadgroup(
            SETTLER_GROUP, consumer, {usage_stream(s): "0" for s in shards}, count=batch_size
        )
        for stream, messages in own or []:
            if messages:
                shard = {usage_stream(s): s for s in shards}[_text(stream)]
                total += _settle_isolating_failures(client, messages, shard)
                touched.add(shard)
    for shard in SHARD_RANGE:
        # Records a crashed settler took but never acknowledged.
        _, claimed, *_ = client.xautoclaim(
            usage_stream(shard),
            SETTLER_GROUP,
            consumer,
            min_idle_time=CLAIM_IDLE_MS,
            count=batch_size,
        )
        if claimed:
            total += _settle_isolating_failures(client, claimed, shard)
            touched.add(shard)
    for shards in groups:
        streams = {usage_stream(s): ">" for s in shards}
        shard_of_stream = {usage_stream(s): s for s in shards}
        for _ in range(max_batches):
            result = client.xreadgroup(SETTLER_GROUP, consumer, streams, count=batch_size)
            got = 0
            for stream, messages in result or []:
                if messages:
                    shard = shard_of_stream[_text(stream)]
                    got += _settle_isolating_failures(client, messages, shard)
                    touched.add(shard)
            total += got
            if not got:
                break
    for shard in sorted(touched):
        trim_settled(client, shard)
    return total


def trim_settled(client, shard: int) -> None:
    """Drop stream entries every settler has acknowledged; unacknowledged ones always stay."""
    stream = usage_stream(shard)
    pending = client.xpending(stream, SETTLER_GROUP)
    if pending["pending"]:
        floor = pending["min"]
    else:
        groups = {g["name"]: g for g in client.xinfo_groups(stream)}
        floor = groups[SETTLER_GROUP.encode()]["last-delivered-id"]
    client.xtrim(stream, minid=floor, approximate=False)


@dataclass(frozen=True)
class Backlog:
    """What the gateway has handed off that Postgres has not settled yet (normally settled
    within a second or two), read from the usage stream."""

    length: int  # entries in the stream (acknowledged ones are trimmed after each batch)
    pending: int  # delivered to a settler, not acknowledged yet
    undelivered: int  # not read by any settler yet (Redis 7 reports a group's lag)
    oldest_unsettled_seconds: float | None  # age of the oldest of those; None: none found
    dead_letters: int  # records that could not be settled, for a person to look at

    @property
    def waiting(self) -> int:
        return self.pending + self.undelivered


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value  # bytes unless decode_responses


def _settler_group(client, stream: str) -> dict | None:
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # no stream yet: nothing was ever handed off
        return None
    return next((g for g in groups if _text(g["name"]) == SETTLER_GROUP), None)


def backlog(client, *, now: float | None = None) -> Backlog:
    """The settlement backlog over every shard, for /metrics and the dashboard. Raises
    redis.RedisError."""
    now = time.time() if now is None else now
    length = pending = undelivered = dead = 0
    oldest_ids = []
    for shard in SHARD_RANGE:
        stream = usage_stream(shard)
        dead += client.xlen(dead_letters(shard))
        shard_length = client.xlen(stream)
        if not shard_length:
            continue  # nothing waits here (acknowledged entries are trimmed)
        length += shard_length
        group = _settler_group(client, stream)
        if group is None:  # no settler ran yet: everything in the stream waits
            undelivered += shard_length
            first = client.xrange(stream, count=1)
            oldest_ids += [first[0][0]] if first else []
            continue
        pending += group["pending"]
        undelivered += group.get("lag") or 0
        if group["pending"]:
            oldest_ids.append(client.xpending(stream, SETTLER_GROUP)["min"])
        last = _text(group["last-delivered-id"])
        after = client.xrange(stream, min=f"({last}", count=1)
        oldest_ids += [after[0][0]] if after else []
    ages = [max(now - int(_text(i).split("-", 1)[0]) / 1000, 0.0) for i in oldest_ids]
    return Backlog(
        length=length,
        pending=pending,
        undelivered=undelivered,
        oldest_unsettled_seconds=max(ages, default=None),
        dead_letters=dead,
    )


def _settle_isolating_failures(client, messages, shard: int) -> int:
    """One malformed record must not stall settlement for everyone: on a data error the batch
    is retried record by record, and a record that still fails goes to the shard's dead
    letters."""
    try:
        return settle_messages(client, messages, shard=shard)
    except (DataError, IntegrityError, ValueError, KeyError):
        logger.exception("a usage batch failed; settling its %d records one by one", len(messages))
    settled = 0
    for message in messages:
        try:
            settled += settle_messages(client, [message], shard=shard)
        except (DataError, IntegrityError, ValueError, KeyError) as exc:
            msg_id, fields = message
            logger.exception("usage record %s moved to %s", msg_id, dead_letters(shard))
            # Its `pend` stays counted against the team until a person (or the reconcile)
            # deals with it: failing safe, never free.
            client.xadd(
                dead_letters(shard),
                {**fields, b"error": str(exc)[:500].encode(), b"msg_id": msg_id},
            )
            client.xack(usage_stream(shard), SETTLER_GROUP, msg_id)
    return settled


def settle_messages(client, messages, *, shard: int | None = None) -> int:
    """Settle messages read from one shard's usage stream (`shard`; None: the shard of the
    records' teams)."""
    records = []
    for msg_id, fields in messages:
        if not fields:  # trimmed or deleted entry
            if shard is not None:
                client.xack(usage_stream(shard), SETTLER_GROUP, msg_id)
            continue
        rec = orjson.loads(fields[b"rec"])
        rec["charged"] = int(fields[b"charged"])
        rec["msg_id"] = msg_id
        records.append(rec)
    if not records:
        return 0
    # A team has its account from creation to deletion (one-to-one, protected): the accounts
    # name the teams that still exist. Each also gets the id its usage entry will have, so
    # the calls' records can name it (an id left unused when nothing is charged is a gap).
    with connection.cursor() as cursor:
        cursor.execute(ACCOUNTS_AND_ENTRY_IDS, [list({r["team"] for r in records})])
        accounts, entry_ids = {}, {}
        for team_id, account_id, entry_id in cursor.fetchall():
            accounts[team_id], entry_ids[team_id] = account_id, entry_id
    orphans = [r for r in records if r["team"] not in accounts]
    for r in orphans:
        logger.error("usage %s belongs to deleted team %s; not billable", r.get("rid"), r["team"])
    records = [r for r in records if r["team"] in accounts]
    keys = set(
        VirtualKey.objects.filter(pk__in={r["key"] for r in records}).values_list("pk", flat=True)
    )
    calls = [r for r in records if "kind" not in r]
    opened = [r for r in records if r.get("kind") == "job_open"]
    closed = [r for r in records if r.get("kind") == "job_close"]

    with transaction.atomic():
        named = {r["job"] for r in calls + closed if r.get("job")}
        jobs = _settle_job_openings(opened, keys, named) if opened or named else {}
        _store_call_logs([r for r in calls if "req" in r])
        job_charges = defaultdict(list)
        for r in closed:
            _close_job(r)
            # A flat-priced job posts its price, and its cost even when free (margins).
            if r["charged"] > 0 or r["fee"] > 0:
                job_charges[r["team"]].append(_job_charge(r))
        # The records last before the postings: their insert marks the team-hours pending
        # for the roll-ups (a trigger), which holds those rows until commit.
        new = _insert_usage_records(calls, keys, jobs, entry_ids)
        totals = _usage_totals(new, entry_ids)
        # Accounts in primary-key order: concurrent settlers cannot deadlock.
        for team_id in sorted({*job_charges, *totals}, key=lambda t: accounts[t]):
            if team_id in job_charges:
                ledger_post_usage_batch(account_id=accounts[team_id], charges=job_charges[team_id])
            if team_id in totals:
                ledger_post_usage_total(account_id=accounts[team_id], total=totals[team_id])
    _touch_keys(calls, keys)

    try:
        # Only records posted by this delivery: a redelivered one is not counted again.
        usage_metrics.record_settled(client, new)
    except redis.RedisError:
        logger.warning("could not count %d settled calls in the metrics", len(calls))
    # After commit: acknowledge and release `pend` together (see scripts.ACK_SETTLED).
    acks = defaultdict(list)
    for r in [*records, *orphans]:
        acks[shard_of(r["team"]) if shard is None else shard].append(
            (r["msg_id"], r["team"], r["charged"])
        )
    for ack_shard, shard_acks in acks.items():
        scripts.ack_settled(client, ack_shard, shard_acks)
    return len(records) + len(orphans)


ACCOUNTS_AND_ENTRY_IDS = """
SELECT team_id, id, nextval(pg_get_serial_sequence('billing_ledgerentry', 'id'))
FROM billing_creditaccount WHERE team_id = ANY(%s)
"""

# One statement for a batch's call records (columns as arrays: a few parameters, not one per
# field). The unique (request_id, created_at) key decides what is new: created_at is the
# gateway's own timestamp of the call, the same on every delivery of its record, so a
# redelivered record conflicts and is skipped; one racing in another settler's open
# transaction is waited for, then skipped. RETURNING names only the records this statement
# inserted, the ones whose charges are still to be posted.
#
# A second record of one call with another timestamp (a call settled as it was reaped) is
# skipped when the first is committed or in the same batch; two settlers inserting the two at
# the same instant would both succeed (no unique key spans partitions) and the call would be
# charged for both: two records of one call a batch apart in the stream, settled concurrently.
INSERT_USAGE_RECORDS = """
INSERT INTO billing_usagerecord (request_id, organization_id, team_id, key_id, model,
    model_group, input_tokens, output_tokens, cost_micros, price_micros, status, latency_ms,
    cache_hit, job_id, ledger_entry_id, created_at, cache_read_tokens, cache_write_tokens,
    reasoning_tokens, audio_input_tokens, audio_output_tokens, image_count, audio_ms,
    characters, end_user, tags)
-- Tags travel joined by commas (a tag has none: proxy/attribution.py), one string per record:
-- unnest flattens an array of arrays.
SELECT x.request_id, x.organization_id, x.team_id, x.key_id, x.model, x.model_group,
    x.input_tokens, x.output_tokens, x.cost_micros, x.price_micros, x.status, x.latency_ms,
    x.cache_hit, x.job_id, x.ledger_entry_id, x.created_at, x.cache_read_tokens,
    x.cache_write_tokens, x.reasoning_tokens, x.audio_input_tokens, x.audio_output_tokens,
    x.image_count, x.audio_ms, x.characters, x.end_user,
    coalesce(string_to_array(nullif(x.tags, ''), ','), '{}')
FROM unnest(%s::varchar[], %s::bigint[], %s::bigint[], %s::bigint[], %s::varchar[],
    %s::varchar[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::varchar[],
    %s::integer[], %s::boolean[], %s::bigint[], %s::bigint[], %s::timestamptz[],
    %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
    %s::bigint[], %s::bigint[], %s::varchar[], %s::varchar[])
    AS x(request_id, organization_id, team_id, key_id, model, model_group, input_tokens,
         output_tokens, cost_micros, price_micros, status, latency_ms, cache_hit, job_id,
         ledger_entry_id, created_at, cache_read_tokens, cache_write_tokens, reasoning_tokens,
         audio_input_tokens, audio_output_tokens, image_count, audio_ms, characters, end_user,
         tags)
-- Another record of the same call, with a timestamp of its own: the lease sweep's or the
-- reaper's next to the gateway's late one. The first recorded wins. Within a day of it, so
-- only the one or two months around it are probed. A LATERAL probe with LIMIT 1, not NOT
-- EXISTS: the planner turns a NOT EXISTS over a batch of 1,000 into a hash anti join that
-- reads the whole month (197 ms a batch at 463k rows, growing with the month); this is one
-- index lookup per record on (request_id, created_at), whatever the month holds.
LEFT JOIN LATERAL (
    SELECT 1 AS found FROM billing_usagerecord u
    WHERE u.request_id = x.request_id
      AND u.created_at BETWEEN x.created_at - interval '1 day' AND x.created_at + interval '1 day'
    LIMIT 1
) AS earlier ON true
WHERE earlier.found IS NULL
ON CONFLICT (request_id, created_at) DO NOTHING
RETURNING request_id
"""


def _insert_usage_records(calls: list[dict], keys: set, jobs: dict, entry_ids: dict) -> list[dict]:
    """Record the calls; returns those recorded now (not by an earlier delivery)."""
    if not calls:
        return []
    columns: list[list] = [[] for _ in range(16)]
    first = {}
    for r in calls:
        first.setdefault(r["rid"], r)  # two records of one call in one batch: the first counts
    for r in first.values():
        row = (
            r["rid"],
            r["org"],
            r["team"],
            r["key"] if r["key"] in keys else None,
            r["model"],
            r["group"] if r["group"] != r["model"] else "",
            r["in"],
            r["out"],
            r["cost"],
            r["charged"],
            r["status"],
            min(max(r["lat"], 0), MAX_LATENCY_MS),
            r.get("cache", False),
            jobs.get(r.get("job")),
            entry_ids[r["team"]] if r["charged"] > 0 else None,
            datetime.fromtimestamp(r["ts"], tz=UTC),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    # The counts of each kind: optional keys, left out by the gateway when 0 (and by its
    # releases before them). A column at a time, the cheaper loop.
    columns += [[r.get(key, 0) for r in first.values()] for key in USAGE_COUNTS]
    columns.append([r.get("eu", "")[:MAX_END_USER] for r in first.values()])
    columns.append([",".join(r.get("tags", ())) for r in first.values()])
    with connection.cursor() as cursor:
        cursor.execute(INSERT_USAGE_RECORDS, columns)
        inserted = {rid for (rid,) in cursor.fetchall()}
    return [r for r in first.values() if r["rid"] in inserted]


def _usage_totals(new: list[dict], entry_ids: dict) -> dict[int, UsageTotal]:
    """Per team, the newly recorded calls that charged something, as one ledger entry."""
    by_team = defaultdict(list)
    for r in new:
        if r["charged"] > 0:
            by_team[r["team"]].append(r)
    return {
        team_id: UsageTotal(
            entry_id=entry_ids[team_id],
            # Unique: a record is inserted once, so it is the first of one total only.
            idempotency_key=f"usage:{rs[0]['rid']}",
            amounts=[r["charged"] for r in rs],
            occurred=[datetime.fromtimestamp(r["ts"], tz=UTC) for r in rs],
            cost_micros=sum(r["cost"] for r in rs),
            metadata={
                "calls": len(rs),
                "first_request_id": rs[0]["rid"],
                "last_request_id": rs[-1]["rid"],
                **_counted(rs),
                **_uncollected(sum(r["price"] for r in rs), sum(r["charged"] for r in rs)),
            },
        )
        for team_id, rs in by_team.items()
    }


# What a usage entry says it charged for: the calls' sums, by record key and metadata name.
ENTRY_COUNTS = {"in": "input_tokens", "out": "output_tokens", **USAGE_COUNTS}


def _counted(rs: list[dict]) -> dict:
    """The sums of the calls' counts (tokens, images, audio, characters), those above 0."""
    sums = {name: sum(r.get(key, 0) for r in rs) for key, name in ENTRY_COUNTS.items()}
    return {name: total for name, total in sums.items() if total > 0}


def _touch_keys(calls: list[dict], keys: set) -> None:
    """Move each key's last use forward. After the batch's commit, in its own statements:
    informational, and a key row held to the commit would serialise a busy key's settlers."""
    last_used: dict[int, float] = {}
    for r in calls:
        if r["key"] in keys:
            last_used[r["key"]] = max(last_used.get(r["key"], 0), r["ts"])
    for key_id, ts in sorted(last_used.items()):
        when = datetime.fromtimestamp(ts, tz=UTC)
        VirtualKey.objects.filter(pk=key_id).exclude(last_used_at__gte=when).update(
            last_used_at=when
        )


def _uncollected(owed: int, charged: int) -> dict:
    """What admission's cap kept from being charged (micro-credits), recorded when above 0."""
    return {"uncollected_micros": owed - charged} if owed > charged else {}


def _job_charge(r: dict) -> UsageCharge:
    return UsageCharge(
        idempotency_key=f"job:{r['job']}",
        amount_micros=r["charged"],
        cost_micros=r["cost"],
        occurred_at=datetime.fromtimestamp(r["ts"], tz=UTC),  # when the job closed
        kind=LedgerEntry.Kind.JOB,
        allow_zero=True,
        metadata={
            "job_id": r["job"],
            "status": r["status"],
            "calls": r["calls"],
            "failed_calls": r["failed"],
            # Only a completed job owes its fee; any other closing is free.
            **(_uncollected(r["fee"], r["charged"]) if r["status"] == Job.Status.COMPLETED else {}),
        },
    )


def _owners(r: dict, keys: set) -> dict:
    """Who a record belongs to; a key deleted since the call (not in `keys`) is none."""
    return {
        "organization_id": r["org"],
        "team_id": r["team"],
        "key_id": r["key"] if r["key"] in keys else None,
    }


def _settle_job_openings(opened: list[dict], keys: set, referenced: set) -> dict:
    """Create the Job rows opened in this batch; map public id -> pk for every job named."""
    Job.objects.bulk_create(
        [
            Job(
                public_id=r["job"],
                **_owners(r, keys),
                job_type=r["type"],
                metadata=r["meta"],
                fee_micros=r["fee"],
                created_at=datetime.fromtimestamp(r["ts"], tz=UTC),
            )
            for r in opened
        ],
        ignore_conflicts=True,  # a redelivered opening
    )
    wanted = referenced | {r["job"] for r in opened}
    return dict(Job.objects.filter(public_id__in=wanted).values_list("public_id", "pk"))


def _close_job(r: dict) -> None:
    # Only an open job closes: a redelivered closing changes nothing.
    Job.objects.filter(public_id=r["job"], status=Job.Status.OPEN).update(
        status=r["status"],
        charged_micros=r["charged"],
        closed_at=datetime.fromtimestamp(r["ts"], tz=UTC),
    )


def _store_call_logs(logged: list[dict]) -> None:
    CallLog.objects.bulk_create(
        [
            CallLog(
                request_id=r["rid"],
                team_id=r["team"],
                request_body=_pg_text(r["req"]),
                response_body=_pg_text(r["resp"]),
                truncated=r.get("cut", False),
                created_at=datetime.fromtimestamp(r["ts"], tz=UTC),
                expires_at=datetime.fromtimestamp(r["ts"], tz=UTC)
                + timedelta(days=r.get("keep_days", 30)),
            )
            for r in logged
        ],
        ignore_conflicts=True,
    )


def _pg_text(text: str) -> str:
    return text.replace("\x00", "\\u0000")  # Postgres text cannot hold NUL


def reap_leases() -> int | None:
    """Release the calls of dead gateway instances (livestate/leases.py), charged for what they
    had streamed; None when another process holds the sweep's lock (it is sweeping)."""
    from django.conf import settings

    client = redis_client()
    name, owner, px = leases.lock_call(f"worker:{_consumer()}", settings.GATEWAY_HEARTBEAT_SECONDS)
    if not client.set(name, owner, nx=True, px=px):
        return None
    reaped = leases.sweep(client, ttl_ms=int(settings.GATEWAY_LEASE_TTL_SECONDS * 1000))
    if reaped:
        logger.warning("released %d calls of dead gateway instances", reaped)
    return reaped


def reap_abandoned(*, older_than_ms: int = scripts.REAP_AFTER_MS) -> int:
    """Release reservations whose gateway died mid-call, recording each as an error call: the
    backstop for records that name no gateway instance (leases are reaped by reap_leases)."""
    client = redis_client()
    now_ms = int(time.time() * 1000)
    reaped = 0
    for shard in SHARD_RANGE:
        reaped += _reap_shard(client, shard, now_ms, older_than_ms)
    return reaped


def _reap_shard(client, shard: int, now_ms: int, older_than_ms: int) -> int:
    reaped = 0
    for rid, raw in client.hscan_iter(inflight_key(shard), count=1000):
        entry = orjson.loads(raw)
        if entry.get("inst") or now_ms - entry["ts"] < older_than_ms:
            continue
        record = orjson.dumps(
            {
                "rid": rid.decode(),
                "ts": now_ms / 1000,
                "org": entry.get("org"),
                "team": entry["team"],
                "key": entry["key"],
                "model": "",
                "group": "",
                "in": 0,
                "out": 0,
                "cost": 0,
                "price": 0,
                "status": "error",
                "lat": now_ms - entry["ts"],
                "est": True,
                "abandoned": True,
            }
        )
        if scripts.reap(client, rid=rid.decode(), team_id=entry["team"], record=record):
            logger.warning("released the reservation of abandoned call %s", rid.decode())
            reaped += 1
    return reaped


def expire_jobs(*, older_than_s: int | None = None) -> int:
    """Close jobs left open past GATEWAY_JOB_TTL_SECONDS as `expired` (see scripts.JOB_CLOSE)."""
    from django.conf import settings

    client = redis_client()
    ttl = settings.GATEWAY_JOB_TTL_SECONDS if older_than_s is None else older_than_s
    now_ms = int(time.time() * 1000)
    closed = 0
    for shard in SHARD_RANGE:
        opened = open_jobs_key(shard)
        stale = client.zrangebyscore(opened, "-inf", now_ms - ttl * 1000, start=0, num=1000)
        for raw_id in stale:
            closed += _expire_job(client, shard, raw_id.decode(), now_ms, ttl)
    return closed


def _expire_job(client, shard: int, job_id: str, now_ms: int, ttl: int) -> int:
    from django.conf import settings

    team_id = client.hget(shard_job_key(shard, job_id), "team")
    snapshot = client.hget(TEAM_SNAPSHOTS, team_id) if team_id else None
    if snapshot is None:
        # Team gone, or the job hash vanished: nothing to charge; forget the entry.
        client.zrem(open_jobs_key(shard), job_id)
        return 0
    keys, args = scripts.job_close_call(
        job_id=job_id,
        status="expired",
        now_ms=now_ms,
        team=TeamSnapshot.from_json(snapshot),
        key_budget=-1,
        retain_ms=settings.GATEWAY_JOB_RETAIN_SECONDS * 1000,
    )
    result = client.eval(scripts.JOB_CLOSE, len(keys), *keys, *args)
    if result[0] != b"ok":
        return 0
    logger.info("job %s expired after %ss open", job_id, ttl)
    return 1


def purge_call_logs(*, batch_size: int = 1000, max_batches: int = 100) -> int:
    """Delete logged bodies past their retention, in batches (short transactions)."""
    from django.utils import timezone

    purged = 0
    for _ in range(max_batches):
        ids = list(
            CallLog.objects.filter(expires_at__lte=timezone.now())
            .order_by("expires_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        purged += CallLog.objects.filter(pk__in=ids).delete()[0]
    return purged
