"""What LiteLLM should hold for a team or a key, computed from our database.

Budgets: LiteLLM counts spend in USD and blocks a team or key once `spend >= max_budget`.
We never use its budget windows (they reset on LiteLLM's own ~10-minute tick, behind our
back); instead each push sets max_budget = LiteLLM's current spend + what Tollgate still
allows, converted from credits to USD. Calls through our gateway raise both LiteLLM's spend
and our charges, so the allowance stays right between pushes; calls made to LiteLLM directly
raise only its spend, until reconciliation charges them here. Grants and adjustments push at
once; usage moves the account's version, which push.budgets_refresh follows at most every
LITELLM_BUDGET_REFRESH_SECONDS.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.utils import timezone

from modelgroups.models import ModelGroupMember, Upstream
from teams.models import Team, VirtualKey

# LiteLLM reads an empty `models` list as "every model": a team or key that may use none of
# LiteLLM's models gets this name instead, which matches no deployment.
NO_MODELS = ["no-default-models"]
MANAGED_BY = "tollgate"


def credits_per_usd(team: Team) -> Decimal:
    if team.pricing_mode == Team.PricingMode.COST_MARKUP and team.credits_per_usd_micros:
        return Decimal(team.credits_per_usd_micros) / 1_000_000
    return Decimal(str(settings.LITELLM_CREDITS_PER_USD))


def usd(micro_credits: int, team: Team) -> Decimal:
    """Micro-credits as USD of LiteLLM spend, rounded down to the micro-dollar."""
    value = Decimal(max(micro_credits, 0)) / 1_000_000 / credits_per_usd(team)
    return value.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


def max_budget(spend: float, remaining: Decimal) -> float:
    return float(Decimal(str(spend)).quantize(Decimal("0.000001")) + remaining)


def litellm_models(groups) -> list[str]:
    """LiteLLM's names (our upstream_model) for the LiteLLM-served models in these groups."""
    names = ModelGroupMember.objects.filter(
        group__in=groups,
        model__upstream__kind=Upstream.Kind.LITELLM,
        model__enabled=True,
        model__upstream__enabled=True,
    ).values_list("model__upstream_model", flat=True)
    return sorted(set(names))


def team_models(team: Team) -> list[str]:
    return litellm_models(team.model_groups.all()) or NO_MODELS


def key_models(key: VirtualKey) -> list[str]:
    """[] inherits the team's models (LiteLLM's rule too); a restricted key gets its own."""
    groups = list(key.model_groups.all())
    if not groups:
        return []
    return litellm_models(groups) or NO_MODELS


def team_remaining(team: Team) -> int:
    """Micro-credits the team may still spend: its credits, capped by a hard period budget."""
    account = team.account
    remaining = account.balance_micros + account.overdraft_limit_micros
    if (
        team.budget_period != Team.BudgetPeriod.NONE
        and team.budget_limit_micros is not None
        and team.budget_mode == Team.LimitMode.HARD
    ):
        remaining = min(remaining, team.budget_limit_micros - account.period_spend_micros)
    return remaining


def team_body(team: Team, *, spend: float) -> dict:
    """The whole LiteLLM team, for /team/new and /team/update alike."""
    return {
        "team_id": team.public_id,
        "team_alias": team.name,
        # LiteLLM's organizations are enterprise-only: ours travel in metadata.
        "metadata": {
            "managed_by": MANAGED_BY,
            "tollgate_team": team.public_id,
            "tollgate_org": team.organization.public_id,
        },
        "models": team_models(team),
        "rpm_limit": team.rpm_limit,
        "tpm_limit": team.tpm_limit,
        "max_parallel_requests": team.max_parallel_requests,
        "max_budget": max_budget(spend, usd(team_remaining(team), team)),
        "budget_duration": None,
        "blocked": team.status != Team.Status.ACTIVE,
    }


@dataclass(frozen=True)
class KeyCopy:
    """One LiteLLM key that should exist for a virtual key: its hash and its expiry."""

    key_hash: str
    expires_at: datetime | None


def key_copies(key: VirtualKey, *, now=None) -> list[KeyCopy]:
    """The current secret, plus the previous one while its grace period lasts; none for a
    revoked or expired key, or a deleted team."""
    now = now or timezone.now()
    if key.status != VirtualKey.Status.ACTIVE or (key.expires_at and key.expires_at <= now):
        return []
    copies = [KeyCopy(key.key_hash, key.expires_at)]
    if key.previous_key_hash and key.previous_valid_until and key.previous_valid_until > now:
        until = key.previous_valid_until
        if key.expires_at:
            until = min(until, key.expires_at)
        copies.append(KeyCopy(key.previous_key_hash, until))
    return copies


def key_alias(key: VirtualKey, key_hash: str) -> str:
    # LiteLLM wants aliases unique across all keys; two secrets of one key live side by
    # side during a rotation, so the alias carries the hash's start.
    return f"{key.public_id}.{key_hash[:8]}"


def key_body(key: VirtualKey, copy: KeyCopy, *, spend: float, key_spent: int, now=None) -> dict:
    """The whole LiteLLM key (without its secret), for /key/generate and /key/update."""
    now = now or timezone.now()
    team = key.team
    budget = None
    if key.budget_limit_micros is not None:
        budget = max_budget(spend, usd(key.budget_limit_micros - key_spent, team))
    duration = None
    if copy.expires_at is not None:
        # Exact: LiteLLM sets expires = now + duration on every push.
        duration = f"{max(int((copy.expires_at - now).total_seconds()), 1)}s"
    return {
        "key_alias": key_alias(key, copy.key_hash),
        "team_id": team.public_id,
        "models": key_models(key),
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "max_budget": budget,
        "duration": duration,
        "blocked": False,
        "metadata": {
            "managed_by": MANAGED_BY,
            "tollgate_key": key.public_id,
            "tollgate_team": team.public_id,
            "tollgate_org": team.organization.public_id,
        },
    }
