"""The gateway's copy of our state: published into Redis after each commit.

The gateway never reads Postgres. It loads these snapshots at start and follows the change
stream, so a revoke, a suspension or a new model group is live in every gateway process within
its poll interval (GATEWAY_REFRESH_SECONDS, 0.2 s by default). The names and the wire format
are in livestate/keys.py; this module is the only writer of the snapshots and of the settled
part of each account (`bal`, `pspend`, `ver`).
"""

import logging
import time
from collections.abc import Iterable
from datetime import timedelta

import orjson
import redis
from django.utils import timezone

from core.redis import client
from livestate import scripts
from livestate.keys import (
    CATALOG,
    CHANGES,
    CHANGES_MAXLEN,
    HEALTH,
    KEY_SNAPSHOTS,
    SHARD_RANGE,
    TEAM_SNAPSHOTS,
    acct_key,
    retired_keys_key,
    shard_of,
)
from livestate.snapshots import KeySnapshot, TeamPricing, TeamSnapshot

logger = logging.getLogger(__name__)


def _epoch(dt) -> float | None:
    return dt.timestamp() if dt else None


def key_snapshot(key) -> KeySnapshot:
    return KeySnapshot(
        id=key.pk,
        public_id=key.public_id,
        team=key.team_id,
        hash=key.key_hash,
        prev_hash=key.previous_key_hash,
        prev_until=_epoch(key.previous_valid_until),
        status=key.status,
        expires=_epoch(key.expires_at),
        groups=frozenset(g.public_id for g in key.model_groups.all()),
        rpm=key.rpm_limit,
        tpm=key.tpm_limit,
        budget=key.budget_limit_micros,
    )


def team_snapshot(team) -> TeamSnapshot:
    return TeamSnapshot(
        id=team.pk,
        public_id=team.public_id,
        org=team.organization_id,
        status=team.status,
        groups=frozenset(g.public_id for g in team.model_groups.all()),
        rpm=team.rpm_limit,
        tpm=team.tpm_limit,
        par=team.max_parallel_requests,
        budget=team.budget_limit_micros if team.budget_period != "none" else None,
        budget_mode=team.budget_mode,
        overdraft=team.account.overdraft_limit_micros,
        pricing=TeamPricing.from_wire(
            {
                "mode": team.pricing_mode,
                "per_usd": team.credits_per_usd_micros,
                "unit_tokens": team.tokens_per_unit,
                "unit_price": team.price_per_unit_micros,
                "job_price": team.job_price_micros,
                "job_prices": team.job_type_prices,
            }
        ),
        cache_ttl=team.cache_ttl_seconds,
        cache_hit_pct=team.cache_hit_price_percent,
        log=team.log_bodies,
        log_days=team.log_retention_days,
        log_patterns=tuple(team.log_redact_patterns) if team.log_bodies else (),
    )


def catalog_snapshot() -> dict:
    from modelgroups.models import Model, ModelGroup, Upstream

    return {
        "upstreams": {
            u.public_id: {
                "name": u.name,
                "kind": u.kind,
                "base_url": u.base_url.rstrip("/"),
                "api_key_enc": u.api_key_encrypted,
                "key_mode": u.key_mode,
                "api_version": u.resolved_api_version,
                "connect_timeout": u.connect_timeout_seconds,
                "read_timeout": u.read_timeout_seconds,
                "enabled": u.enabled,
            }
            for u in Upstream.objects.all()
        },
        "models": {
            m.public_id: {
                "name": m.name,
                "upstream": m.upstream.public_id,
                "upstream_model": m.upstream_model,
                "mode": m.mode,
                "in_price": m.input_price_micros,
                "out_price": m.output_price_micros,
                "in_cost": m.input_cost_micros,
                "out_cost": m.output_cost_micros,
                **_usage_kind_prices(m),
                "max_out": m.max_output_tokens,
                "enabled": m.enabled,
                "created": int(m.created_at.timestamp()),
            }
            for m in Model.objects.select_related("upstream")
        },
        "groups": {
            g.public_id: {
                "name": g.name,
                "cache_ttl": g.cache_ttl_seconds,
                "members": [
                    {"model": m.model.public_id, "priority": m.priority, "weight": m.weight}
                    for m in g.members.all()
                ],
                "created": int(g.created_at.timestamp()),
            }
            for g in ModelGroup.objects.prefetch_related("members__model")
        },
    }


# The wire names of a model's per-kind prices: per 1M tokens, per image, per audio second
# and per 1M characters (modelgroups.models.Model).
KIND_PRICES = {
    "cr_cost": "cache_read_cost_micros",
    "cr_price": "cache_read_price_micros",
    "cw_cost": "cache_write_cost_micros",
    "cw_price": "cache_write_price_micros",
    "rs_cost": "reasoning_cost_micros",
    "rs_price": "reasoning_price_micros",
    "ai_cost": "audio_input_cost_micros",
    "ai_price": "audio_input_price_micros",
    "ao_cost": "audio_output_cost_micros",
    "ao_price": "audio_output_price_micros",
    "img_cost": "image_cost_micros",
    "img_price": "image_price_micros",
    "sec_cost": "audio_second_cost_micros",
    "sec_price": "audio_second_price_micros",
    "chr_cost": "character_cost_micros",
    "chr_price": "character_price_micros",
}


def _usage_kind_prices(m) -> dict:
    """A model's prices beyond input and output, defaults resolved here (a null token price is
    its input or output side's), so the gateway never sees a null; `img_table` only when set."""
    from modelgroups.models import resolved_price

    prices = {wire: resolved_price(m, field) for wire, field in KIND_PRICES.items()}
    if m.image_prices:
        prices["img_table"] = {k: [v["cost"], v["price"]] for k, v in m.image_prices.items()}
    return prices


def health_snapshot(health) -> dict:
    return {"status": health.status, "checked": _epoch(health.checked_at)}


def _health_rows(**filters) -> dict[str, bytes]:
    from modelgroups.models import ModelHealth

    rows = ModelHealth.objects.filter(**filters).select_related("model")
    return {h.model.public_id: orjson.dumps(health_snapshot(h)) for h in rows}


def _announce(pipe, kind: str, id_: str = "", hashes: str = "") -> None:
    pipe.xadd(
        CHANGES,
        {"kind": kind, "id": id_, "hashes": hashes},
        maxlen=CHANGES_MAXLEN,
        approximate=True,
    )


def _safely(fn):
    """Publishing runs after commit: a Redis outage must not fail the (committed) write.
    The periodic full publish repairs whatever was missed."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except redis.RedisError:
            logger.exception(
                "could not publish %s to Redis; the next full publish repairs it", fn.__name__
            )

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_safely
def publish_key(key_pk: int, retired_hashes: Iterable[str] = ()) -> None:
    """Publish a key under its current hashes; `retired_hashes` (a secret that stopped working:
    rotated without grace, or its grace ended) are removed, so no stale snapshot answers them."""
    from teams.models import VirtualKey

    key = VirtualKey.objects.prefetch_related("model_groups").get(pk=key_pk)
    if key.retired_at:
        unpublish_key(key.pk, [key.key_hash, key.previous_key_hash, *retired_hashes])
        return
    snap = key_snapshot(key).to_json()
    hashes = [h for h in (key.key_hash, key.previous_key_hash) if h]
    retired = [h for h in retired_hashes if h and h not in hashes]
    pipe = client().pipeline()
    pipe.hset(KEY_SNAPSHOTS, mapping=dict.fromkeys(hashes, snap))
    if retired:
        pipe.hdel(KEY_SNAPSHOTS, *retired)
    _announce(pipe, "key", str(key.pk), ",".join(hashes + retired))
    pipe.execute()


@_safely
def publish_team(team_pk: int) -> None:
    from teams.models import Team

    team = Team.objects.select_related("account").prefetch_related("model_groups").get(pk=team_pk)
    pipe = client().pipeline()
    pipe.hset(TEAM_SNAPSHOTS, str(team.pk), team_snapshot(team).to_json())
    _announce(pipe, "team", str(team.pk))
    pipe.execute()
    publish_account(team.account)


@_safely
def publish_catalog() -> None:
    pipe = client().pipeline()
    pipe.set(CATALOG, orjson.dumps(catalog_snapshot()))
    _announce(pipe, "catalog")
    pipe.execute()


@_safely
def publish_health(model_pks: Iterable[int]) -> None:
    """Publish models' health; announce only the models whose status changed, so a round of
    unchanged verdicts costs the gateways nothing. Compared with what Redis holds (not with
    the database's previous value), so an announcement lost to a Redis hiccup is made by the
    next round."""
    snaps = _health_rows(pk__in=list(model_pks))
    if not snaps:
        return
    ids = sorted(snaps)
    r = client()
    before = r.hmget(HEALTH, ids)
    changed = [
        mid
        for mid, old in zip(ids, before, strict=True)
        if old is None or orjson.loads(old)["status"] != orjson.loads(snaps[mid])["status"]
    ]
    pipe = r.pipeline()
    pipe.hset(HEALTH, mapping=snaps)
    if changed:
        _announce(pipe, "health", ",".join(changed))
    pipe.execute()


@_safely
def publish_account(account) -> None:
    """Move the gateway's copy of the settled balance forward (never backward); build it,
    with the keys' spend, when Redis has none (a new team, or Redis was flushed)."""
    moved = scripts.account_set(
        client(),
        acct_key(account.team_id),
        account.balance_micros,
        account.period_spend_micros,
        account.version,
    )
    if moved == -1:
        rebuild_account(account)


@_safely
def publish_all() -> None:
    """Rebuild every snapshot from Postgres: at start-up, periodically, and after a Redis flush."""
    from teams.models import Team, VirtualKey

    keys = {}
    live_keys = VirtualKey.objects.filter(retired_at__isnull=True)
    for key in live_keys.prefetch_related("model_groups").iterator(chunk_size=2000):
        snap = key_snapshot(key).to_json()
        keys[key.key_hash] = snap
        if key.previous_key_hash:
            keys[key.previous_key_hash] = snap
    teams = {}
    accounts = []
    for team in Team.objects.select_related("account").prefetch_related("model_groups"):
        teams[str(team.pk)] = team_snapshot(team).to_json()
        accounts.append(team.account)
    health = _health_rows()
    pipe = client().pipeline(transaction=True)
    pipe.delete(KEY_SNAPSHOTS, TEAM_SNAPSHOTS, HEALTH)
    if keys:
        pipe.hset(KEY_SNAPSHOTS, mapping=keys)
    if teams:
        pipe.hset(TEAM_SNAPSHOTS, mapping=teams)
    if health:
        pipe.hset(HEALTH, mapping=health)
    pipe.set(CATALOG, orjson.dumps(catalog_snapshot()))
    _announce(pipe, "all")
    pipe.execute()
    for account in accounts:
        publish_account(account)
    # A key account a Redis outage kept from being queued at its key's retirement is queued
    # again here (the keys retired in the last day; dropping an absent one costs nothing).
    recent = VirtualKey.objects.filter(retired_at__gte=timezone.now() - timedelta(days=1))
    for pk, team_id in recent.values_list("pk", "team_id"):
        client().zadd(retired_keys_key(shard_of(team_id)), {str(pk): time.time()})
    drop_retired_key_accounts()


@_safely
def unpublish_key(key_pk: int, hashes: Iterable[str]) -> None:
    """A key retired (revoked or expired, past its grace): its snapshots go and every gateway
    forgets them, so its secrets answer as unknown; its key account is queued for dropping."""
    from teams.models import VirtualKey

    hashes = sorted({h for h in hashes if h})
    team_id = VirtualKey.objects.filter(pk=key_pk).values_list("team_id", flat=True).first()
    pipe = client().pipeline()
    if hashes:
        pipe.hdel(KEY_SNAPSHOTS, *hashes)
    _announce(pipe, "key", str(key_pk), ",".join(hashes))
    pipe.execute()
    if team_id is not None:  # its account fields: in its team's shard
        client().zadd(retired_keys_key(shard_of(team_id)), {str(key_pk): time.time()})
        drop_retired_key_accounts([shard_of(team_id)])


@_safely
def drop_retired_key_accounts(shards=SHARD_RANGE) -> list[int]:
    """Delete the key accounts of queued retired keys with nothing in flight or unsettled; return
    the ids dropped. Their spend is settled in Postgres, and a rebuild skips retired keys."""
    from teams.models import VirtualKey

    dropped = []
    for shard in shards:
        queued = [int(k) for k in client().zrange(retired_keys_key(shard), 0, -1)]
        if not queued:
            continue
        teams = dict(VirtualKey.objects.filter(pk__in=queued).values_list("pk", "team_id"))
        gone = [k for k in queued if k not in teams]
        if gone:  # deleted with their team, and their account with it
            client().zrem(retired_keys_key(shard), *gone)
        result = scripts.key_accounts_drop(client(), shard, teams)
        if result and result[0] == b"too_long":
            logger.warning(
                "usage stream of shard %s holds %s records: retired keys' accounts kept",
                shard,
                result[1],
            )
            continue
        dropped += [int(k) for k in result]
    return dropped


@_safely
def unpublish_team(team_pk: int) -> None:
    # The account is in the team's shard, the snapshots are not: two steps in a cluster.
    client().delete(acct_key(team_pk))
    pipe = client().pipeline()
    pipe.hdel(TEAM_SNAPSHOTS, str(team_pk))
    _announce(pipe, "team", str(team_pk))
    pipe.execute()


def rebuild_account(account) -> bool:
    """Build a team's Redis account (and its keys' spend) from Postgres, if Redis has none."""
    from billing.models import key_settled_spend
    from teams.models import VirtualKey

    spend = key_settled_spend(account.team_id)
    # Retired keys get no account: they can make no call, and their spend is in Postgres.
    key_ids = VirtualKey.objects.filter(
        team_id=account.team_id, retired_at__isnull=True
    ).values_list("pk", flat=True)
    built = scripts.account_rebuild(
        client(),
        team_id=account.team_id,
        balance=account.balance_micros,
        period_spend=account.period_spend_micros,
        version=account.version,
        key_spend={key_id: spend.get(key_id, 0) for key_id in key_ids},
    )
    return bool(built)
