"""Budget periods: at each calendar boundary, reset period spend and credit the allowance.

A sweep (billing.tasks.reset_budget_periods, at second 0 of every minute) finds the accounts
whose period is behind the calendar and resets each in its own transaction:

1. Claim: lock the account row with SKIP LOCKED while re-checking that it is still behind. A
   second worker skips a row the first holds, and once the first commits the row is no longer
   behind: a period is reset once. Deterministic idempotency keys per (team, period start)
   make a replayed step a no-op even if that guard were bypassed.
2. Expire (allowance_rollover false) the unused part of the previous period's allowance.
   The allowance is spent first, so "unused" is what the period's spend left of it, capped by
   the balance: min(allowance - spend since it was credited, balance), never below zero. An
   expiry never takes paid credits and never pushes a balance below zero. Usage of the old
   period still unsettled at the reset is not known yet; it settles later against the balance.
3. Credit the team's allowance for the new period.
4. Set the period spend to the settled usage of calls made since the new period began (calls
   just after the boundary may have settled before the reset ran); usage of older calls that
   settles later is not counted in the new period (billing.services.UsageCharge.occurred_at).
5. Audit every step and tell both mirrors (mirrors.changes.account_moved): after commit the
   account is published to Redis, and LiteLLM's budget is pushed at once, as for a grant (one
   rule for every credit movement, wherever it is posted from). The gateway's hard budget
   compares `pspend + pend + resv` with the limit: `pspend` is the new period spend from here;
   `pend` (charged at the gateway, not yet settled) may for a few seconds still hold calls of
   the old period, which makes admission briefly stricter, never looser.

A boundary missed while workers were down is caught up once when they return: one reset into
the current period (one expiry of the last credited allowance, one allowance for the current
period), not one per missed period. An allowance is for spending within its period, and
nobody could spend in the periods that were missed.

Until the sweep has run (seconds after the boundary) the gateway still enforces the old
period's spend: a team at its limit waits those seconds past midnight.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q, QuerySet, Sum
from django.utils import timezone

from billing.models import CreditAccount, Job, LedgerEntry, UsageRecord
from billing.periods import PERIODS, period_start
from billing.services import credits_post
from mirrors.changes import account_moved
from orgs.services import audit_record

logger = logging.getLogger(__name__)

ACTOR = "system:budget_reset"


@dataclass(frozen=True)
class ResetResult:
    period_start: datetime
    expired_micros: int  # micro-credits of unused allowance expired (>= 0)
    allowance_micros: int  # micro-credits credited for the new period (>= 0)
    period_spend_micros: int  # micro-credits of settled usage already in the new period


def accounts_due(*, now: datetime) -> QuerySet[CreditAccount]:
    """Accounts of teams with a budget period whose current period has not been started."""
    behind = Q()
    for period in PERIODS:
        start = period_start(now, period)
        if start is not None:
            behind |= Q(team__budget_period=period) & (
                Q(period_started_at__isnull=True) | Q(period_started_at__lt=start)
            )
    return CreditAccount.objects.filter(behind)


def _day(dt: datetime) -> str:
    return dt.date().isoformat()  # every boundary is at 00:00 UTC


def allowance_key(team, start: datetime) -> str:
    return f"allowance:{team.public_id}:{_day(start)}"


def budget_period_reset(*, account_id: int, now: datetime | None = None) -> ResetResult | None:
    """Start the team's current budget period; None if it is current or another worker has it."""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        account = (
            accounts_due(now=now)
            .filter(pk=account_id)
            .select_related("team")
            .select_for_update(skip_locked=True, no_key=True, of=("self",))
            .first()
        )
        if account is None:
            return None
        team = account.team
        new_start = period_start(now, team.budget_period)
        new_spend = (
            UsageRecord.objects.filter(team=team, created_at__gte=new_start).aggregate(
                s=Sum("price_micros", default=0)
            )["s"]
            # Flat job prices (per_job pricing) count in the period the job closed in.
            + Job.objects.filter(team=team, closed_at__gte=new_start).aggregate(
                s=Sum("charged_micros", default=0)
            )["s"]
        )
        # The old counter also holds calls made after the boundary that settled before now.
        old_spend = max(account.period_spend_micros - new_spend, 0)
        previous = None
        if account.period_started_at is not None:
            previous = LedgerEntry.objects.filter(
                idempotency_key=allowance_key(team, account.period_started_at)
            ).first()
        CreditAccount.objects.filter(pk=account.pk).update(
            period_spend_micros=new_spend, period_started_at=new_start, version=F("version") + 1
        )
        audit_record(
            actor=ACTOR,
            action="budget.reset",
            obj=team,
            organization_id=team.organization_id,
            changes={
                "period_started_at": [
                    account.period_started_at and account.period_started_at.isoformat(),
                    new_start.isoformat(),
                ],
                "period_spend_micros": [account.period_spend_micros, new_spend],
            },
        )

        expired = 0
        if previous is not None and not team.allowance_rollover:
            expired = max(min(previous.amount_micros - old_spend, account.balance_micros), 0)
        if expired:
            credits_post(
                team=team,
                kind=LedgerEntry.Kind.EXPIRY,
                amount_micros=-expired,
                idempotency_key=f"expiry:{team.public_id}:{_day(new_start)}",
                actor=ACTOR,
                reason=(
                    f"Unused allowance of the period from {_day(account.period_started_at)} "
                    "expired."
                ),
                metadata={
                    "period_start": account.period_started_at.isoformat(),
                    "allowance_micros": previous.amount_micros,
                    "period_spend_micros": old_spend,
                },
            )
        allowance = team.allowance_micros or 0
        if allowance:
            credits_post(
                team=team,
                kind=LedgerEntry.Kind.ALLOWANCE,
                amount_micros=allowance,
                idempotency_key=allowance_key(team, new_start),
                actor=ACTOR,
                reason=f"{team.budget_period.capitalize()} allowance from {_day(new_start)}.",
                metadata={"period_start": new_start.isoformat()},
            )
        # Each posting tells the mirrors already; this covers a reset that posted nothing.
        account.refresh_from_db()
        account_moved(account)
    return ResetResult(new_start, expired, allowance, new_spend)


def budget_periods_reset_due(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Reset every account whose period is behind (up to `limit`); returns how many."""
    now = now or timezone.now()
    ids = list(accounts_due(now=now).order_by("pk").values_list("pk", flat=True)[:limit])
    done = 0
    for account_id in ids:
        try:
            if budget_period_reset(account_id=account_id, now=now) is not None:
                done += 1
        except Exception:
            # One account that cannot be reset (e.g. an allowance past the balance maximum)
            # must not hold up the others; it is retried, and logged, every sweep.
            logger.exception("budget period reset of account %s failed", account_id)
    return done
