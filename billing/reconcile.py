"""Keep the gateway's Redis account state honest against the Postgres ledger.

What the gateway enforces with, per team (proxy/scripts.py): `bal`, `pspend` and `ver` copied from
Postgres, `pend` (charged, not yet settled) and `resv` (reserved by calls in flight and open
flat-priced jobs); per key: `spent` and `resv`. The periodic reconcile:

1. rebuilds everything when Redis lost it (flushed, or restarted empty): the catalog, keys and
   teams are republished, and each team's account is built from Postgres together with its
   keys' spend (settled in Postgres plus still unsettled), in one atomic step. Until that step
   admission fails closed for the team, with a 503 `account_not_ready`;
2. moves `bal`/`pspend` forward to the ledger's version, and repairs a copy that differs from
   Postgres at the same version;
3. recomputes `pend` and `resv` from the usage stream, the in-flight calls and the open jobs,
   atomically, and repairs any drift.

Every repair is an audit event (actor `system:reconcile`) with the amounts before and after.
"""

import logging
from dataclasses import dataclass

from billing.models import CreditAccount
from core.redis import client as redis_client
from livestate import scripts
from livestate.keys import CATALOG, SHARD_RANGE, acct_key, shard_of
from mirrors import gateway as gateway_state
from orgs.services import audit_record
from teams.models import Team, VirtualKey

logger = logging.getLogger(__name__)

ACTOR = "system:reconcile"
CHUNK = 2000


@dataclass(frozen=True)
class Repair:
    kind: str  # "team" or "key"
    id: int
    field: str
    before: int
    after: int


def reconcile_gateway_state() -> list[Repair]:
    client = redis_client()
    if not client.exists(CATALOG):
        logger.warning("gateway state missing from Redis (flushed or restarted): republishing")
        gateway_state.publish_all()  # builds every account through rebuild_account
    repairs = _reconcile_settled(client) + _reconcile_live(client)
    _audit(repairs)
    return repairs


def _reconcile_settled(client) -> list[Repair]:
    repairs = []
    for account in CreditAccount.objects.order_by("pk").iterator(chunk_size=CHUNK):
        key = acct_key(account.team_id)
        moved = scripts.account_set(
            client, key, account.balance_micros, account.period_spend_micros, account.version
        )
        if moved == -1:
            gateway_state.rebuild_account(account)
            continue
        if moved == 1:
            continue  # behind (a publish was lost), now current: not drift
        # Same version: the copy must equal Postgres.
        bal, pspend, ver = client.hmget(key, "bal", "pspend", "ver")
        if int(ver) != account.version:
            continue  # a newer version arrived meanwhile
        for field, have, want in (
            ("bal", int(bal), account.balance_micros),
            ("pspend", int(pspend or 0), account.period_spend_micros),
        ):
            if have != want:
                client.hset(key, field, want)
                repairs.append(Repair("team", account.team_id, field, have, want))
    return repairs


def _reconcile_live(client) -> list[Repair]:
    repairs = []
    teams: dict[int, dict[int, list[int]]] = {shard: {} for shard in SHARD_RANGE}
    for team_id in Team.objects.order_by("pk").values_list("pk", flat=True):
        teams[shard_of(team_id)][team_id] = []
    live_keys = VirtualKey.objects.filter(retired_at__isnull=True).order_by("pk")
    for key_id, team_id in live_keys.values_list("pk", "team_id"):
        teams[shard_of(team_id)].setdefault(team_id, []).append(key_id)
    for shard in SHARD_RANGE:
        shard_teams = list(teams[shard].items())
        for start in range(0, max(len(shard_teams), 1), CHUNK):
            chunk = dict(shard_teams[start : start + CHUNK])
            result = scripts.reconcile_live(client, shard, chunk)
            if result and result[0] == b"too_long":
                logger.error(
                    "usage stream of shard %s holds %s unsettled records: settlement is "
                    "behind; its pending and reserved amounts not reconciled this round",
                    shard,
                    result[1],
                )
                break
            for i in range(0, len(result), 5):
                kind, id_, field, before, after = result[i : i + 5]
                field = field.decode()
                if kind == b"key":
                    field = "resv"  # the key's reserved field in its team's account
                repairs.append(Repair(kind.decode(), int(id_), field, int(before), int(after)))
    return repairs


def _audit(repairs: list[Repair]) -> None:
    if not repairs:
        return
    teams = Team.objects.in_bulk({r.id for r in repairs if r.kind == "team"})
    keys = VirtualKey.objects.select_related("team").in_bulk(
        {r.id for r in repairs if r.kind == "key"}
    )
    for r in repairs:
        obj = teams.get(r.id) if r.kind == "team" else keys.get(r.id)
        if obj is None:
            continue
        org_id = obj.organization_id if r.kind == "team" else obj.team.organization_id
        logger.warning(
            "reconcile repaired %s %s %s: %s -> %s",
            r.kind,
            obj.public_id,
            r.field,
            r.before,
            r.after,
        )
        audit_record(
            actor=ACTOR,
            action="gateway_state.repair",
            obj=obj,
            organization_id=org_id,
            changes={f"{r.field}_micros": [r.before, r.after]},
        )
