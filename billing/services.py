"""Every change to a credit balance goes through ledger_post: one locked, idempotent write path.

Credits given or taken by a person or a period (grants, adjustments, a reset's expiry and
allowance) are posted by credits_post, which audits them; usage by ledger_post_usage_batch
(per charge: jobs, LiteLLM's direct calls) or, for the settler's calls, ledger_post_usage_total
(a batch's calls of one team as one entry, the account row not held across the batch's
inserts). All of them tell the mirrors through mirrors.changes.account_moved, which states
when LiteLLM's budget follows."""

from dataclasses import dataclass
from datetime import datetime

import orjson
from django.db import connection, transaction

from billing.models import CreditAccount, LedgerEntry
from core.errors import InsufficientCredits, ValidationFailed
from core.money import MAX_MICROS
from mirrors.changes import account_moved
from orgs.services import audit_record


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
        if new_balance > MAX_MICROS:
            raise ValidationFailed(
                f"The balance would exceed the maximum of {MAX_MICROS // 1_000_000} credits.",
                fields={"amount": ["Too large for this account."]},
            )
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
        account.balance_micros = new_balance
        account.version += 1
        fields = {"balance_micros": new_balance, "version": account.version}
        if kind == LedgerEntry.Kind.USAGE:
            account.period_spend_micros -= amount_micros
            fields["period_spend_micros"] = account.period_spend_micros
        CreditAccount.objects.filter(pk=account.pk).update(**fields)
        account_moved(account, by_usage=kind == LedgerEntry.Kind.USAGE)
    return PostResult(entry, created=True)


def credits_post(
    *,
    team,
    kind: str,
    amount_micros: int,
    idempotency_key: str,
    actor: str,
    reason: str,
    metadata: dict | None = None,
) -> PostResult:
    """Post a credit movement to a team's ledger and audit it: grants, adjustments, resets.

    The one "post and audit": ledger_post moves the balance exactly once per idempotency key
    and tells both mirrors (mirrors.changes.account_moved: the gateway after commit, LiteLLM's
    budget at once, wherever the movement comes from). Runs inside the caller's transaction."""
    result = ledger_post(
        account_id=team.account.pk,
        kind=kind,
        amount_micros=amount_micros,
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        metadata=metadata,
    )
    if result.created:
        after = result.entry.balance_after_micros
        audit_record(
            actor=actor,
            action=f"credits.{kind}",
            obj=team,
            organization_id=team.organization_id,
            changes={"balance_micros": [after - amount_micros, after]},
        )
    return result


def credits_grant(*, team, amount_micros: int, reason: str, actor: str, idempotency_key: str):
    """Add prepaid credits to a team."""
    if amount_micros <= 0:
        raise ValidationFailed(
            "A grant must be positive; use adjust to remove credits.",
            fields={"amount": ["Must be greater than zero."]},
        )
    return _credits_give(
        team, LedgerEntry.Kind.GRANT, amount_micros, reason, actor, idempotency_key
    )


def credits_adjust(*, team, amount_micros: int, reason: str, actor: str, idempotency_key: str):
    """Correct a team's balance up or down (refunds, goodwill, mistakes), with a reason."""
    if amount_micros == 0:
        raise ValidationFailed(
            "An adjustment of zero changes nothing.", fields={"amount": ["Must not be zero."]}
        )
    return _credits_give(
        team, LedgerEntry.Kind.ADJUSTMENT, amount_micros, reason, actor, idempotency_key
    )


def _credits_give(team, kind, amount_micros, reason, actor, idempotency_key) -> PostResult:
    """A person's grant or adjustment: with a reason, in its own transaction, and under an
    idempotency key scoped to the kind and the team (the caller's key is theirs to choose)."""
    if not reason.strip():
        raise ValidationFailed("Say why: a reason is required.", fields={"reason": ["Required."]})
    with transaction.atomic(durable=True):
        return credits_post(
            team=team,
            kind=kind,
            amount_micros=amount_micros,
            idempotency_key=f"{kind}:{team.public_id}:{idempotency_key}",
            actor=actor,
            reason=reason,
        )


def _in_current_period(account: CreditAccount, occurred_at: datetime | None) -> bool:
    started = account.period_started_at
    return occurred_at is None or started is None or occurred_at >= started


@dataclass(frozen=True)
class UsageCharge:
    idempotency_key: str  # "usage:<request id>" or "job:<job id>"
    amount_micros: int  # micro-credits to debit (>= 0), as capped by the gateway
    cost_micros: int  # micro-USD the provider charged
    metadata: dict
    kind: str = LedgerEntry.Kind.USAGE
    # Post a zero-amount entry too (a free job still shows what it cost us).
    allow_zero: bool = False
    # When the call was made. Usage counts toward the budget period the call was made in: a
    # call from before a reset that settles after it is not charged to the new period.
    occurred_at: datetime | None = None


def ledger_post_usage_batch(*, account_id: int, charges: list[UsageCharge]) -> int:
    """Debit many usage charges from one account under one lock; returns how many posted.

    Already-posted idempotency keys are skipped. A charge is never allowed to break the
    balance constraint: what does not fit is recorded as uncollected instead of failing the
    batch (the gateway's admission makes this an edge case, not a path)."""
    with transaction.atomic():
        account = CreditAccount.objects.select_for_update(no_key=True).get(pk=account_id)
        seen = set(
            LedgerEntry.objects.filter(
                idempotency_key__in=[c.idempotency_key for c in charges]
            ).values_list("idempotency_key", flat=True)
        )
        balance, spend = account.balance_micros, account.period_spend_micros
        entries = []
        for charge in charges:
            if charge.idempotency_key in seen or charge.amount_micros < 0:
                continue
            if charge.amount_micros == 0 and not charge.allow_zero:
                continue
            seen.add(charge.idempotency_key)
            amount = min(charge.amount_micros, balance + account.overdraft_limit_micros)
            amount = max(amount, 0)
            metadata = dict(charge.metadata)
            if amount < charge.amount_micros:
                metadata["uncollected_micros"] = charge.amount_micros - amount
            balance -= amount
            if _in_current_period(account, charge.occurred_at):
                spend += amount
            entries.append(
                LedgerEntry(
                    account=account,
                    kind=charge.kind,
                    amount_micros=-amount,
                    balance_after_micros=balance,
                    cost_micros=charge.cost_micros,
                    idempotency_key=charge.idempotency_key,
                    actor="gateway",
                    reason=charge.kind,
                    metadata=metadata,
                )
            )
        if not entries:
            return 0
        LedgerEntry.objects.bulk_create(entries)
        account.balance_micros, account.period_spend_micros = balance, spend
        account.version += 1
        CreditAccount.objects.filter(pk=account.pk).update(
            balance_micros=balance, period_spend_micros=spend, version=account.version
        )
        account_moved(account, by_usage=True)
    return len(entries)


@dataclass(frozen=True)
class UsageTotal:
    """The calls of one team that a settlement batch newly recorded, as one ledger entry.

    Its idempotency is carried by the calls' usage records (unique request id): only records
    the batch actually inserted are summed here, so a redelivered call is never in a total
    twice. The idempotency key only has to be unique, and is: it names the first of these
    records, and a record is inserted once."""

    entry_id: int  # the entry's id, drawn ahead so the calls' records can name it
    idempotency_key: str
    amounts: list[int]  # micro-credits charged per call (>= 0), as capped by the gateway
    occurred: list[datetime]  # when each call was made (for the budget period it counts in)
    cost_micros: int  # micro-USD the provider charged for all of them
    metadata: dict


# One statement, so the account row is locked only from here to the commit that follows:
# lock the row, cap the debit at what the balance and overdraft allow (what does not fit is
# recorded as uncollected rather than failing the batch, as in ledger_post_usage_batch), move
# balance, period spend (only calls made in the current period) and version, and append the
# entry with the balance right after it.
POST_USAGE_TOTAL = """
WITH cur AS (
    SELECT id, balance_micros AS b, overdraft_limit_micros AS o, period_started_at AS p
    FROM billing_creditaccount WHERE id = %(account)s FOR NO KEY UPDATE
), calls AS (
    SELECT coalesce(sum(c.a), 0) AS total,
           coalesce(sum(c.a) FILTER (WHERE cur.p IS NULL OR c.t >= cur.p), 0) AS in_period
    FROM cur, unnest(%(amounts)s::bigint[], %(occurred)s::timestamptz[]) AS c(a, t)
), debit AS (
    SELECT cur.id, calls.total, calls.in_period,
           LEAST(calls.total, GREATEST(cur.b + cur.o, 0)) AS amount
    FROM cur, calls
), moved AS (
    UPDATE billing_creditaccount a
    SET balance_micros = a.balance_micros - debit.amount,
        period_spend_micros = a.period_spend_micros + LEAST(debit.amount, debit.in_period),
        version = a.version + 1,
        updated_at = now()
    FROM debit WHERE a.id = debit.id
    RETURNING a.id, a.team_id, a.balance_micros, a.period_spend_micros, a.version,
              debit.amount, debit.total
)
INSERT INTO billing_ledgerentry (id, account_id, kind, amount_micros, balance_after_micros,
    cost_micros, idempotency_key, actor, reason, metadata, created_at)
SELECT %(entry)s, moved.id, 'usage', -moved.amount, moved.balance_micros, %(cost)s, %(key)s,
    'gateway', 'usage', %(metadata)s::jsonb || CASE WHEN moved.total > moved.amount
        THEN jsonb_build_object('uncollected_micros', moved.total - moved.amount + %(owed)s)
        ELSE '{}'::jsonb END,
    now()
FROM moved
RETURNING account_id, (SELECT team_id FROM moved), balance_after_micros,
    (SELECT period_spend_micros FROM moved), (SELECT version FROM moved)
"""


def ledger_post_usage_total(*, account_id: int, total: UsageTotal) -> CreditAccount:
    """Debit a batch's new calls of one team as one usage entry; returns the moved account.

    Unlike ledger_post_usage_batch, nothing is read under the lock: the caller has already
    made the calls' records (their unique keys decide what is new), so concurrent settlers of
    one busy team overlap in everything but this one statement and their commits."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            POST_USAGE_TOTAL,
            {
                "account": account_id,
                "entry": total.entry_id,
                "amounts": total.amounts,
                "occurred": total.occurred,
                "cost": total.cost_micros,
                "key": total.idempotency_key,
                "metadata": orjson.dumps(total.metadata).decode(),
                # Kept from being charged already (admission's cap), added to what the
                # balance could not take.
                "owed": total.metadata.get("uncollected_micros", 0),
            },
        )
        pk, team_id, balance, spend, version = cursor.fetchone()
        account = CreditAccount(
            pk=pk,
            team_id=team_id,
            balance_micros=balance,
            period_spend_micros=spend,
            version=version,
        )
        account_moved(account, by_usage=True)
    return account
