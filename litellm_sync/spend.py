"""Reconcile LiteLLM's spend logs with our metering.

spend_pull reads /spend/logs/v2 incrementally: from the cursor minus an overlap (LiteLLM writes
rows in batches and filters on the request's start, so a row can appear well after its time)
to now minus a lag, oldest first, page by page. Rows are stored once per LiteLLM request_id,
whatever the overlaps, page shifts (its paging is OFFSET-based on startTime alone) or
re-deliveries. direct_calls_charge then charges calls that reached LiteLLM directly with one of
our keys, exactly once each (the ledger's idempotency key `litellm:<request_id>`); calls our
gateway made carry our request id as LiteLLM's call id and are matched, never charged twice.
"""

import hashlib
import logging
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import UsageRecord
from billing.services import UsageCharge, ledger_post_usage_batch
from litellm_sync.client import LiteLLMClient, SpendRow
from litellm_sync.desired import credits_per_usd
from litellm_sync.models import DIRECT_RECORD_PREFIX, GATEWAY_ID_PREFIX, SpendCursor, SpendLog
from modelgroups.models import Model, Upstream
from teams.models import Team, VirtualKey

logger = logging.getLogger(__name__)

CURSOR = "spend_logs"
PAGE_SIZE = 1000
FIRST_PULL = timedelta(days=1)  # how far back the very first pull reaches
MAX_WALKS = 3  # re-reads of a window too short to split whose pages shifted under us
# A row carrying what looks like our request id but matching no usage record of the team:
# given this long for the gateway's record to settle, then charged as a direct call (so a
# client cannot dodge charges by sending x-litellm-call-id: req_… itself).
GATEWAY_RECORD_GRACE = timedelta(hours=1)


def spend_pull(*, now=None) -> dict:
    """Pull new spend-log rows, store them once, charge direct calls; advance the cursor only
    after everything up to it is stored."""
    now = now or timezone.now()
    until = now - timedelta(seconds=settings.LITELLM_SPEND_LAG_SECONDS)
    cursor = SpendCursor.objects.filter(name=CURSOR).first()
    since = cursor.pulled_until if cursor else until - FIRST_PULL
    start = since - timedelta(seconds=settings.LITELLM_SPEND_OVERLAP_SECONDS)
    rows: dict[str, SpendRow] = {}
    with LiteLLMClient() as client:
        _read_window(client, start, until, rows)
    stored = _store(list(rows.values()))
    if until > since:
        SpendCursor.objects.update_or_create(name=CURSOR, defaults={"pulled_until": until})
    charged = direct_calls_charge(now=now)
    return {"read": len(rows), "new": stored, "charged": charged}


def _read_window(client: LiteLLMClient, start, end, rows: dict) -> None:
    """Every row of [start, end] into rows (by request_id). LiteLLM's count is capped, and its
    OFFSET paging on startTime alone lets rows of equal start shift between pages: either way
    the window is split in halves until each half reads whole (prefer windows of one page)."""
    for _ in range(MAX_WALKS):
        seen: set[str] = set()
        page = 1
        while True:
            result = client.spend_logs(start=start, end=end, page=page, page_size=PAGE_SIZE)
            for row in result.rows:
                rows[row.request_id] = row
                seen.add(row.request_id)
            if result.capped or page >= result.total_pages:
                break
            page += 1
        if not result.capped and len(seen) >= result.total:
            return
        if end - start > timedelta(seconds=2):
            middle = start + (end - start) / 2
            _read_window(client, start, middle, rows)
            _read_window(client, middle, end, rows)
            return
        # Too many rows within two seconds to split further: walk again, keeping the union.
    logger.warning("LiteLLM spend log pages kept shifting; the next overlap re-reads them")


def _store(rows: list[SpendRow]) -> int:
    if not rows:
        return 0
    hashes = {r.key_hash for r in rows if r.key_hash}
    keys = {}
    for key in VirtualKey.objects.filter(
        Q(key_hash__in=hashes) | Q(previous_key_hash__in=hashes)
    ).select_related("team"):
        keys[key.key_hash] = key
        if key.previous_key_hash:
            keys[key.previous_key_hash] = key
    teams = {t.public_id: t for t in Team.objects.filter(public_id__in={r.team_id for r in rows})}
    objects = []
    for r in rows:
        key = keys.get(r.key_hash)
        # LiteLLM's team_id is our team's public id; the key's team where it has none.
        team = teams.get(r.team_id) or (key.team if key else None)
        objects.append(
            SpendLog(
                request_id=r.request_id[:255],
                call_id=r.call_id[:255],
                key_hash=r.key_hash[:64],
                team=team,
                key=key if key and team and key.team_id == team.pk else None,
                model=r.model_group or r.model,
                spend_micros=_micros(r.spend),
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                status=r.status[:32],
                started_at=r.started_at or timezone.now(),
            )
        )
    before = SpendLog.objects.count()
    SpendLog.objects.bulk_create(objects, ignore_conflicts=True, batch_size=1000)
    return SpendLog.objects.count() - before


def _micros(usd: float) -> int:
    return max(int((Decimal(str(usd)) * 1_000_000).to_integral_value(ROUND_HALF_UP)), 0)


def direct_calls_charge(*, now=None, limit: int = 5000) -> int:
    """Match stored rows to our gateway calls, and charge the others to their team, once."""
    now = now or timezone.now()
    pending = SpendLog.objects.filter(
        via_gateway=False, charged_micros__isnull=True, team__isnull=False
    ).order_by("pk")
    charged = 0
    for pk in list(pending.values_list("pk", flat=True)[:limit]):
        charged += _charge_one(pk, now)
    return charged


def _charge_one(pk: int, now) -> int:
    with transaction.atomic(durable=True):
        row = (
            SpendLog.objects.filter(pk=pk, via_gateway=False, charged_micros__isnull=True)
            .select_related("team__organization")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if row is None:
            return 0  # another worker has it, or it is done
        if UsageRecord.objects.filter(request_id=row.call_id, team_id=row.team_id).exists():
            SpendLog.objects.filter(pk=pk).update(via_gateway=True)
            return 0
        if row.call_id.startswith(GATEWAY_ID_PREFIX) and row.started_at > now - (
            GATEWAY_RECORD_GRACE
        ):
            return 0  # maybe ours, not settled yet: decided on a later pull
        team = row.team
        amount = int(
            (Decimal(row.spend_micros) * credits_per_usd(team)).to_integral_value(ROUND_HALF_UP)
        )
        if amount > 0:
            _post_direct_call(row, team, amount)
        SpendLog.objects.filter(pk=pk).update(charged_micros=amount)
    return 1 if amount > 0 else 0


def _post_direct_call(row: SpendLog, team: Team, amount: int) -> None:
    """A usage record (so usage reports and key budgets see it) and its ledger debit."""
    digest = hashlib.sha256(row.request_id.encode()).hexdigest()
    record, _ = UsageRecord.objects.get_or_create(
        request_id=f"{DIRECT_RECORD_PREFIX}{digest[:40]}",
        defaults={
            "organization_id": team.organization_id,
            "team": team,
            "key": row.key,
            "model": _our_model_name(row.model),
            "input_tokens": row.prompt_tokens,
            "output_tokens": row.completion_tokens,
            "cost_micros": row.spend_micros,
            "price_micros": amount,
            "created_at": row.started_at,
        },
    )
    ledger_post_usage_batch(
        account_id=team.account.pk,
        charges=[
            UsageCharge(
                idempotency_key=f"litellm:{digest}",
                amount_micros=amount,
                cost_micros=row.spend_micros,
                metadata={
                    "source": "litellm_direct",
                    "litellm_request_id": row.request_id,
                    "usage_record": record.request_id,
                },
                occurred_at=row.started_at,
            )
        ],
    )


def _our_model_name(litellm_model: str) -> str:
    name = (
        Model.objects.filter(upstream__kind=Upstream.Kind.LITELLM, upstream_model=litellm_model)
        .values_list("name", flat=True)
        .first()
    )
    return name or litellm_model
