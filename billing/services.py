"""Every change to a credit balance goes through ledger_post: one locked, idempotent write path."""

from dataclasses import dataclass

from django.db import transaction

from billing.models import CreditAccount, LedgerEntry
from orgs.services import audit_record
from saas.errors import InsufficientCredits, ValidationFailed


@dataclass(frozen=True)
class PostResult:
    entry: LedgerEntry
    created: bool  # False: the idempotency key had already posted; nothing changed


def account_create(*, team) -> CreditAccount:
    """Open the credit account of a new team (called inside team_create's transaction)."""
    return CreditAccount.objects.create(team=team)


def ledger_post(
    *,
    account_id: int,
    kind: str,
    amount_micros: int,
    idempotency_key: str,
    actor: str,
    reason: str = "",
    cost_micros: int | None = None,
    metadata: dict | None = None,
) -> PostResult:
    """Append one entry and move the balance, exactly once per idempotency key."""
    if not idempotency_key:
        raise ValidationFailed("An idempotency key is required.")
    with transaction.atomic():
        # The account row lock serializes all posts to one account, so the idempotency check
        # below cannot race with a concurrent post of the same key (it sees committed rows).
        account = CreditAccount.objects.select_for_update(no_key=True).get(pk=account_id)
        existing = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            if existing.account_id != account_id or existing.amount_micros != amount_micros:
                raise ValidationFailed(
                    "This idempotency key was already used for a different posting.",
                    fields={"idempotency_key": ["Already used with other values."]},
                )
            return PostResult(existing, created=False)
        new_balance = account.balance_micros + amount_micros
        if amount_micros < 0 and new_balance < -account.overdraft_limit_micros:
            raise InsufficientCredits(
                "This debit would take the balance below what the account allows "
                f"(balance {account.balance_micros}, overdraft limit "
                f"{account.overdraft_limit_micros} micro-credits)."
            )
        entry = LedgerEntry.objects.create(
            account=account,
            kind=kind,
            amount_micros=amount_micros,
            balance_after_micros=new_balance,
            cost_micros=cost_micros,
            idempotency_key=idempotency_key,
            actor=actor,
            reason=reason,
            metadata=metadata or {},
        )
        fields = {"balance_micros": new_balance}
        if kind == LedgerEntry.Kind.USAGE:
            account.period_spend_micros -= amount_micros
            fields["period_spend_micros"] = account.period_spend_micros
        CreditAccount.objects.filter(pk=account.pk).update(**fields)
    return PostResult(entry, created=True)


def credits_grant(*, team, amount_micros: int, reason: str, actor: str, idempotency_key: str):
    """Add prepaid credits to a team."""
    if amount_micros <= 0:
        raise ValidationFailed(
            "A grant must be positive; use adjust to remove credits.",
            fields={"amount": ["Must be greater than zero."]},
        )
    return _post_with_audit(
        team, LedgerEntry.Kind.GRANT, amount_micros, reason, actor, idempotency_key
    )


def credits_adjust(*, team, amount_micros: int, reason: str, actor: str, idempotency_key: str):
    """Correct a team's balance up or down (refunds, goodwill, mistakes), with a reason."""
    if amount_micros == 0:
        raise ValidationFailed(
            "An adjustment of zero changes nothing.", fields={"amount": ["Must not be zero."]}
        )
    return _post_with_audit(
        team, LedgerEntry.Kind.ADJUSTMENT, amount_micros, reason, actor, idempotency_key
    )


def _post_with_audit(team, kind, amount_micros, reason, actor, idempotency_key):
    if not reason.strip():
        raise ValidationFailed("Say why: a reason is required.", fields={"reason": ["Required."]})
    with transaction.atomic(durable=True):
        result = ledger_post(
            account_id=team.account.pk,
            kind=kind,
            amount_micros=amount_micros,
            idempotency_key=f"{kind}:{team.public_id}:{idempotency_key}",
            actor=actor,
            reason=reason,
        )
        if result.created:
            audit_record(
                actor=actor,
                action=f"credits.{kind}",
                obj=team,
                organization_id=team.organization_id,
                changes={
                    "balance_micros": [
                        result.entry.balance_after_micros - amount_micros,
                        result.entry.balance_after_micros,
                    ]
                },
            )
    return result
