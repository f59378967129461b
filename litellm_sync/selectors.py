"""Reads for the LiteLLM integration."""

from collections import defaultdict

from django.conf import settings
from django.db.models import Count, Sum

from billing.models import UsageRecord
from litellm_sync.models import (
    DIRECT_RECORD_PREFIX,
    GATEWAY_ID_PREFIX,
    KeySync,
    SpendLog,
    SyncState,
    TeamSync,
)
from modelgroups.models import Model, Upstream

SAMPLE = 50  # examples listed per kind of drift


def drift_report(*, start, end) -> dict:
    """Our gateway's calls to LiteLLM upstreams against LiteLLM's spend log, in [start, end):
    calls missing on either side, and per team, model and day the cost difference beyond
    LITELLM_DRIFT_TOLERANCE_MICROS; plus the direct calls charged from the log."""
    litellm_models = set(
        Model.objects.filter(upstream__kind=Upstream.Kind.LITELLM).values_list("name", flat=True)
    )
    ours = (
        UsageRecord.objects.filter(
            created_at__gte=start,
            created_at__lt=end,
            model__in=litellm_models,
            status=UsageRecord.Status.OK,
        )
        .exclude(request_id__startswith=DIRECT_RECORD_PREFIX)
        .select_related("team")
        .only("request_id", "team__public_id", "model", "cost_micros", "created_at")
    )
    logs = SpendLog.objects.filter(started_at__gte=start, started_at__lt=end)
    theirs = {
        call_id: spend
        for call_id, spend in logs.filter(call_id__startswith=GATEWAY_ID_PREFIX).values_list(
            "call_id", "spend_micros"
        )
    }
    missing_in_litellm, matched = [], set()
    cells: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for record in ours.iterator(chunk_size=2000):
        cell = cells[(record.team.public_id, record.model, record.created_at.date().isoformat())]
        cell[0] += record.cost_micros
        cell[2] += 1
        if record.request_id in theirs:
            matched.add(record.request_id)
            cell[1] += theirs[record.request_id]
        else:
            missing_in_litellm.append(record.request_id)
    missing_in_tollgate = sorted(set(theirs) - matched)
    tolerance = settings.LITELLM_DRIFT_TOLERANCE_MICROS
    cost_drift = [
        {
            "team": team,
            "model": model,
            "day": day,
            "calls": calls,
            "our_cost_micros": our,
            "litellm_cost_micros": their,
            "difference_micros": their - our,
        }
        for (team, model, day), (our, their, calls) in sorted(cells.items())
        if abs(their - our) > tolerance
    ]
    direct = logs.filter(via_gateway=False, charged_micros__isnull=False).aggregate(
        calls=Count("id"), charged_micros=Sum("charged_micros", default=0)
    )
    return {
        "start": start,
        "end": end,
        "gateway_calls": len(matched) + len(missing_in_litellm),
        "matched": len(matched),
        "missing_in_litellm": {
            "count": len(missing_in_litellm),
            "request_ids": missing_in_litellm[:SAMPLE],
        },
        "missing_in_tollgate": {
            "count": len(missing_in_tollgate),
            "request_ids": missing_in_tollgate[:SAMPLE],
        },
        "cost_drift": cost_drift,
        "direct_calls": direct,
        "sync": sync_summary(),
    }


def sync_summary() -> dict:
    """How many teams and keys are synced, pending or failed."""
    out = {}
    for name, model in (("teams", TeamSync), ("keys", KeySync)):
        counts = dict(model.objects.values_list("state").annotate(n=Count("id")))
        out[name] = {state: counts.get(state, 0) for state in SyncState.values}
    return out
