"""What the panel shows of the LiteLLM integration: whether the sync keeps up (when it last
pushed, what failed, how many teams and keys LiteLLM has an old copy of) and, on its own page,
the drift between our metering and LiteLLM's spend log (litellm_sync.selectors.drift_report,
as GET /api/litellm/drift/ serves it). Nothing here while LITELLM_BASE_URL is unset."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.utils import timezone

from litellm_sync import selectors
from litellm_sync.models import KeySync, SyncState, TeamSync

FAILURES_SHOWN = 20


def integration_on() -> bool:
    return bool(settings.LITELLM_BASE_URL)


def _out_of_sync():
    return ~Q(state=SyncState.SYNCED)


def overview() -> dict | None:
    """For the dashboard: None while the integration is off."""
    if not integration_on():
        return None
    counts = selectors.sync_summary()
    synced = [model.objects.aggregate(at=Max("synced_at"))["at"] for model in (TeamSync, KeySync)]
    return {
        "counts": counts,
        "last_synced_at": max((at for at in synced if at), default=None),
        "failed": counts["teams"]["failed"] + counts["keys"]["failed"],
        "drifted_teams": counts["teams"]["pending"] + counts["teams"]["failed"],
        "drifted_keys": counts["keys"]["pending"] + counts["keys"]["failed"],
    }


def team_state(team) -> dict | None:
    """For a team's page: its own sync record and its keys' that are not in sync."""
    if not integration_on():
        return None
    keys = KeySync.objects.filter(key__team=team)
    return {
        "team": TeamSync.objects.filter(team=team).first(),
        "keys_drifted": list(
            keys.filter(_out_of_sync()).select_related("key").order_by("-updated_at")[:20]
        ),
        "keys_total": keys.count(),
        "last_synced_at": keys.aggregate(at=Max("synced_at"))["at"],
    }


def details(*, now=None) -> dict:
    """For the LiteLLM page: the overview, the records that failed or wait, and the drift of
    the last day (the same default window as the API: ending the spend log's lag ago)."""
    now = now or timezone.now()
    settled = settings.LITELLM_SPEND_LAG_SECONDS + settings.LITELLM_SPEND_OVERLAP_SECONDS
    end = now - timedelta(seconds=settled)
    return {
        "overview": overview(),
        "teams": TeamSync.objects.filter(_out_of_sync())
        .select_related("team__organization")
        .order_by("-updated_at")[:FAILURES_SHOWN],
        "keys": KeySync.objects.filter(_out_of_sync())
        .select_related("key__team")
        .order_by("-updated_at")[:FAILURES_SHOWN],
        "drift": selectors.drift_report(start=end - timedelta(days=1), end=end),
    }
