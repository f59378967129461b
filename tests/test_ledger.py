"""The credit ledger on real Postgres: one locked write path, idempotent, append-only."""

import contextlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum

from billing.models import CreditAccount, LedgerEntry
from billing.services import credits_adjust, credits_grant, ledger_post
from core.errors import InsufficientCredits, ValidationFailed
from core.money import MoneyError, format_micros, parse_micros
from tests.helpers.threads import on_own_connection, race


@pytest.mark.django_db(transaction=True)
def test_concurrent_grants_and_debits_keep_balance_equal_to_the_sum_of_entries(tenant_a):
    # given
    team = tenant_a.team
    credits_grant(
        team=team, amount_micros=1_000_000, reason="start", actor="test", idempotency_key="start"
    )
    account_id = team.account.pk

    @on_own_connection
    def work(i):
        if i % 3 == 0:
            ledger_post(
                account_id=account_id,
                kind="grant",
                amount_micros=7_000,
                idempotency_key=f"g-{i}",
                actor="test",
            )
        else:
            with contextlib.suppress(InsufficientCredits):
                ledger_post(
                    account_id=account_id,
                    kind="usage",
                    amount_micros=-11_000,
                    idempotency_key=f"u-{i}",
                    actor="test",
                )

    # when: 16 threads, 300 postings against one account
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(work, range(300)))
    # then
    account = CreditAccount.objects.get(pk=account_id)
    total = LedgerEntry.objects.filter(account_id=account_id).aggregate(s=Sum("amount_micros"))
    assert account.balance_micros == total["s"]
    assert account.balance_micros >= 0
    # each entry's balance_after is the running sum in posting order: no lost update
    running = 0
    for entry in LedgerEntry.objects.filter(account_id=account_id).order_by("id"):
        running += entry.amount_micros
        assert entry.balance_after_micros == running


@pytest.mark.django_db(transaction=True)
def test_the_same_idempotency_key_from_many_threads_posts_once(tenant_a):
    team = tenant_a.team

    def grant(_):
        return credits_grant(
            team=team,
            amount_micros=5_000_000,
            reason="invoice 42",
            actor="test",
            idempotency_key="invoice-42",
        ).created

    created = race(grant, 12)
    assert created.count(True) == 1
    team.account.refresh_from_db()
    assert team.account.balance_micros == 5_000_000
    assert LedgerEntry.objects.filter(account__team=team).count() == 1


@pytest.mark.django_db
def test_an_idempotency_key_reused_with_another_amount_is_refused(tenant_a):
    credits_grant(
        team=tenant_a.team, amount_micros=1_000, reason="x", actor="t", idempotency_key="k"
    )
    with pytest.raises(ValidationFailed):
        credits_grant(
            team=tenant_a.team, amount_micros=2_000, reason="x", actor="t", idempotency_key="k"
        )
    tenant_a.team.account.refresh_from_db()
    assert tenant_a.team.account.balance_micros == 1_000


@pytest.mark.django_db
def test_a_debit_past_the_overdraft_limit_is_refused_and_writes_nothing(tenant_a):
    team = tenant_a.team
    CreditAccount.objects.filter(team=team).update(overdraft_limit_micros=500)
    with pytest.raises(InsufficientCredits):
        credits_adjust(
            team=team, amount_micros=-501, reason="too much", actor="t", idempotency_key="a1"
        )
    credits_adjust(
        team=team, amount_micros=-500, reason="invoiced", actor="t", idempotency_key="a2"
    )
    team.account.refresh_from_db()
    assert team.account.balance_micros == -500
    assert LedgerEntry.objects.filter(account__team=team).count() == 1


@pytest.mark.django_db
def test_the_database_refuses_a_balance_below_the_overdraft_limit(tenant_a):
    # The CHECK constraint holds even for code that bypasses the service.
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditAccount.objects.filter(team=tenant_a.team).update(balance_micros=-1)


@pytest.mark.django_db
def test_ledger_entries_cannot_be_updated_or_deleted(tenant_a):
    result = credits_grant(
        team=tenant_a.team, amount_micros=1_000, reason="x", actor="t", idempotency_key="k"
    )
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=result.entry.pk).update(amount_micros=1_000_000)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=result.entry.pk).delete()
    assert LedgerEntry.objects.get(pk=result.entry.pk).amount_micros == 1_000


@pytest.mark.parametrize(
    ("text", "micros"),
    [("12.5", 12_500_000), ("0.000001", 1), ("100", 100_000_000), ("-3.25", -3_250_000)],
)
def test_money_parses_exact_decimal_strings(text, micros):
    assert parse_micros(text, allow_negative=True) == micros
    assert parse_micros(format_micros(micros), allow_negative=True) == micros


@pytest.mark.parametrize("bad", ["1.0000001", "abc", "NaN", "Infinity", "1e30", 1.5])
def test_money_refuses_what_it_cannot_represent_exactly(bad):
    with pytest.raises(MoneyError):
        parse_micros(bad, allow_negative=True)


@pytest.mark.django_db
def test_a_balance_cannot_grow_past_the_maximum(tenant_a):
    # given: a balance at the ceiling (which keeps the gateway's Lua arithmetic exact)
    from core.money import MAX_MICROS

    credits_grant(
        team=tenant_a.team, amount_micros=MAX_MICROS, reason="x", actor="t", idempotency_key="max"
    )
    # when / then
    with pytest.raises(ValidationFailed, match="maximum"):
        credits_grant(
            team=tenant_a.team, amount_micros=1, reason="x", actor="t", idempotency_key="one-more"
        )
    tenant_a.team.account.refresh_from_db()
    assert tenant_a.team.account.balance_micros == MAX_MICROS
