"""Budget periods on real Postgres and Redis: resets at calendar boundaries, exactly once."""

from datetime import UTC, datetime

import pytest

from billing import resets
from billing.models import CreditAccount, LedgerEntry
from billing.services import credits_adjust, credits_grant
from billing.tasks import reset_budget_periods
from orgs.models import AuditEvent
from teams.services import team_update
from tests.helpers.gateway import redis_account
from tests.helpers.tenants import settle_usage
from tests.helpers.threads import race

CREDIT = 1_000_000


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def account(team) -> CreditAccount:
    return CreditAccount.objects.get(team=team)


def entries(team, kind) -> list[int]:
    return list(
        LedgerEntry.objects.filter(account__team=team, kind=kind)
        .order_by("id")
        .values_list("amount_micros", flat=True)
    )


def with_allowance(team, *, period="daily", allowance=10 * CREDIT, rollover=False, **extra):
    return team_update(
        actor="test",
        team=team,
        data={
            "budget_period": period,
            "allowance_micros": allowance,
            "allowance_rollover": rollover,
            **extra,
        },
    )


@pytest.mark.django_db
def test_a_reset_across_a_boundary_expires_unused_allowance_and_credits_the_new_one(
    tenant_a, django_capture_on_commit_callbacks
):
    # given: a daily allowance of 10, its first period started, 3 of it spent
    team = with_allowance(tenant_a.team)
    first = resets.budget_period_reset(account_id=team.account.pk, now=at(2026, 3, 4, 10, 30))
    assert first == resets.ResetResult(at(2026, 3, 4), 0, 10 * CREDIT, 0)
    settle_usage(team, 3 * CREDIT, at(2026, 3, 4, 15))
    assert account(team).period_spend_micros == 3 * CREDIT
    # when: the sweep runs just after midnight
    with django_capture_on_commit_callbacks(execute=True):
        assert resets.budget_periods_reset_due(now=at(2026, 3, 5, 0, 0, 1)) == 1
    # then
    acct = account(team)
    assert acct.period_started_at == at(2026, 3, 5)
    assert acct.period_spend_micros == 0
    assert entries(team, "expiry") == [-7 * CREDIT]
    assert entries(team, "allowance") == [10 * CREDIT, 10 * CREDIT]
    assert acct.balance_micros == 10 * CREDIT
    keys = set(LedgerEntry.objects.filter(account=acct).values_list("idempotency_key", flat=True))
    assert {
        f"allowance:{team.public_id}:2026-03-05",
        f"expiry:{team.public_id}:2026-03-05",
    } <= keys
    actions = list(
        AuditEvent.objects.filter(object_id=team.public_id, actor="system:budget_reset")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "budget.reset",
        "credits.allowance",
        "budget.reset",
        "credits.expiry",
        "credits.allowance",
    ]
    reset = AuditEvent.objects.filter(action="budget.reset").latest("id")
    assert reset.changes == {
        "period_started_at": ["2026-03-04T00:00:00+00:00", "2026-03-05T00:00:00+00:00"],
        "period_spend_micros": [3 * CREDIT, 0],
    }
    # the gateway sees the new period
    published = redis_account(team)
    assert (published["bal"], published["pspend"], published["ver"]) == (
        10 * CREDIT,
        0,
        acct.version,
    )
    # and the same minute again changes nothing
    assert resets.budget_periods_reset_due(now=at(2026, 3, 5, 0, 0, 2)) == 0
    assert LedgerEntry.objects.filter(account=acct).count() == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("period", "inside", "boundary"),
    [
        ("daily", at(2026, 3, 4, 23, 59, 59), at(2026, 3, 5)),
        ("weekly", at(2026, 3, 8, 23, 59), at(2026, 3, 9)),  # Sunday -> Monday
        ("monthly", at(2026, 2, 28, 23, 59), at(2026, 3, 1)),
    ],
)
def test_each_period_resets_at_its_calendar_boundary(period, inside, boundary, tenant_a):
    # given
    team = with_allowance(tenant_a.team, period=period, allowance=CREDIT, rollover=True)
    resets.budget_periods_reset_due(now=inside)
    # when: still inside the period, then just past its end
    before_boundary = resets.budget_periods_reset_due(now=inside)
    at_boundary = resets.budget_periods_reset_due(now=boundary)
    # then
    assert (before_boundary, at_boundary) == (0, 1)
    assert account(team).period_started_at == boundary
    assert entries(team, "allowance") == [CREDIT, CREDIT]


@pytest.mark.django_db
def test_a_missed_boundary_is_caught_up_once_into_the_current_period(tenant_a):
    # given: a daily allowance started on the 4th, then workers down until the 9th
    team = with_allowance(tenant_a.team)
    resets.budget_periods_reset_due(now=at(2026, 3, 4, 8))
    settle_usage(team, 2 * CREDIT, at(2026, 3, 4, 9))
    # when: they come back, and keep running
    caught_up = [resets.budget_periods_reset_due(now=at(2026, 3, 9, 14, m)) for m in range(3)]
    # then: one reset into the 9th, not one per missed day
    assert caught_up == [1, 0, 0]
    assert account(team).period_started_at == at(2026, 3, 9)
    assert entries(team, "allowance") == [10 * CREDIT, 10 * CREDIT]
    assert entries(team, "expiry") == [-8 * CREDIT]
    assert AuditEvent.objects.filter(action="budget.reset", object_id=team.public_id).count() == 2


@pytest.mark.django_db
def test_with_rollover_unused_allowance_is_kept(tenant_a):
    team = with_allowance(tenant_a.team, rollover=True)
    resets.budget_periods_reset_due(now=at(2026, 3, 4, 8))
    settle_usage(team, 3 * CREDIT, at(2026, 3, 4, 9))
    # when
    resets.budget_periods_reset_due(now=at(2026, 3, 5, 0, 1))
    # then
    assert entries(team, "expiry") == []
    assert account(team).balance_micros == 17 * CREDIT


@pytest.mark.django_db
def test_expiry_takes_only_what_is_left_of_the_allowance_never_paid_credits(tenant_a):
    # given: allowance 10 plus 5 paid credits; 12 spent (the allowance first, then 2 paid)
    team = with_allowance(tenant_a.team)
    resets.budget_periods_reset_due(now=at(2026, 3, 4, 8))
    credits_grant(team=team, amount_micros=5 * CREDIT, reason="t", actor="t", idempotency_key="p")
    settle_usage(team, 12 * CREDIT, at(2026, 3, 4, 9))
    # when
    resets.budget_periods_reset_due(now=at(2026, 3, 5, 0, 1))
    # then: nothing of the allowance was left; the 3 paid credits stay
    assert entries(team, "expiry") == []
    assert account(team).balance_micros == 13 * CREDIT


@pytest.mark.django_db
def test_expiry_never_takes_the_balance_below_zero(tenant_a):
    # given: 2 of the allowance spent, then 5 taken back by an adjustment (balance 3)
    team = with_allowance(tenant_a.team)
    resets.budget_periods_reset_due(now=at(2026, 3, 4, 8))
    settle_usage(team, 2 * CREDIT, at(2026, 3, 4, 9))
    credits_adjust(team=team, amount_micros=-5 * CREDIT, reason="t", actor="t", idempotency_key="a")
    # when
    resets.budget_periods_reset_due(now=at(2026, 3, 5, 0, 1))
    # then: only what the balance holds expires
    assert entries(team, "expiry") == [-3 * CREDIT]
    assert account(team).balance_micros == 10 * CREDIT


@pytest.mark.django_db
def test_usage_counts_toward_the_period_its_call_was_made_in(
    tenant_a, django_capture_on_commit_callbacks
):
    # given: a daily budget started on the 4th
    team = with_allowance(tenant_a.team, allowance=None, budget_limit_micros=50 * CREDIT)
    credits_grant(team=team, amount_micros=100 * CREDIT, reason="t", actor="t", idempotency_key="g")
    resets.budget_periods_reset_due(now=at(2026, 3, 4, 8))
    settle_usage(team, 4 * CREDIT, at(2026, 3, 4, 20))
    # a call made just after midnight settles before the reset runs
    settle_usage(team, 1 * CREDIT, at(2026, 3, 5, 0, 0, 0, 200_000))
    # when
    resets.budget_periods_reset_due(now=at(2026, 3, 5, 0, 0, 1))
    # and a call made before midnight settles after the reset
    with django_capture_on_commit_callbacks(execute=True):
        settle_usage(team, 2 * CREDIT, at(2026, 3, 4, 23, 59, 59))
    # then: the new period holds only its own call; the balance pays for all three
    acct = account(team)
    assert acct.period_spend_micros == 1 * CREDIT
    assert acct.balance_micros == 93 * CREDIT
    assert redis_account(team)["pspend"] == 1 * CREDIT


@pytest.mark.django_db
def test_teams_without_a_budget_period_are_never_reset(tenant_a):
    assert tenant_a.team.budget_period == "none"
    assert resets.budget_periods_reset_due(now=at(2026, 3, 4)) == 0
    assert account(tenant_a.team).period_started_at is None


@pytest.mark.django_db
def test_the_reset_task_runs_the_sweep(tenant_a):
    team = with_allowance(tenant_a.team)
    reset_budget_periods.apply()
    assert account(team).period_started_at is not None
    assert entries(team, "allowance") == [10 * CREDIT]


@pytest.mark.django_db(transaction=True)
def test_workers_racing_on_the_same_reset_apply_it_once(tenant_a, tenant_b):
    # given: two teams past a boundary, eight workers (each its own connection) sweeping at once
    teams = [with_allowance(tenant_a.team), with_allowance(tenant_b.team, period="weekly")]
    for team in teams:
        resets.budget_periods_reset_due(now=at(2026, 3, 4, 8))
        settle_usage(team, 1 * CREDIT, at(2026, 3, 4, 9))

    def worker(i):
        if i % 2:
            return resets.budget_periods_reset_due(now=at(2026, 3, 9, 0, 0, 5))
        return sum(
            resets.budget_period_reset(account_id=t.account.pk, now=at(2026, 3, 9, 0, 0, 5))
            is not None
            for t in teams
        )

    # when
    done = race(worker, 8)
    # then: each team's period was reset by exactly one worker
    assert sum(done) == 2
    for team in teams:
        assert account(team).period_started_at == at(2026, 3, 9)
        assert entries(team, "allowance") == [10 * CREDIT, 10 * CREDIT]
        assert entries(team, "expiry") == [-9 * CREDIT]
        resets_audited = AuditEvent.objects.filter(action="budget.reset", object_id=team.public_id)
        assert resets_audited.count() == 2


@pytest.mark.django_db
def test_the_credits_api_shows_the_period_and_the_next_reset(api, tenant_a):
    # given
    team = with_allowance(tenant_a.team, period="monthly")
    resets.budget_periods_reset_due(now=at(2026, 3, 4, 8))
    # when
    body = api.get(f"/api/teams/{team.public_id}/credits/").json()
    # then
    assert body["period_started_at"] == "2026-03-01T00:00:00Z"
    assert body["next_reset_at"] == "2026-04-01T00:00:00Z"
    assert body["balance"] == "10.000000"


def test_the_gateways_hard_budget_starts_over_once_the_period_resets(live, mock_catalog, gw_org):
    import httpx

    from billing import settlement
    from billing.periods import next_period_start
    from tests.helpers.tenants import GatewayTenant

    # given: a hard daily budget for about two calls, spent today
    tenant = GatewayTenant(
        "daily",
        gw_org,
        [mock_catalog["groups"]["chat"]],
        10 * CREDIT,
        budget_period="daily",
        budget_limit_micros=300,
        budget_mode="hard",
    )
    resets.budget_periods_reset_due()

    def call() -> httpx.Response:
        return httpx.post(
            f"{live.url}/v1/chat/completions",
            headers=tenant.headers(),
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        )

    statuses = []
    while 429 not in statuses and len(statuses) < 50:
        statuses.append(call().status_code)
    assert statuses[0] == 200 and statuses[-1] == 429
    # when: the next day's reset runs while today's calls are still unsettled
    tomorrow = next_period_start(datetime.now(UTC), "daily")
    assert resets.budget_periods_reset_due(now=tomorrow) == 1
    # then: their pending charges still count (stricter for a moment, never looser)
    refused = call()
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "budget_exceeded"
    # and once they settle (into the balance, not into the new period) the budget is free again
    settlement.settle_usage()
    published = redis_account(tenant.team)
    assert published["pspend"] == 0 and published["pend"] == 0
    assert account(tenant.team).period_spend_micros == 0
    assert call().status_code == 200
