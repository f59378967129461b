"""Tenants and rows built through the real services, and snapshots of what a request may change."""

import uuid

from orgs.services import admin_key_create, organization_create
from teams.services import key_create, team_create
from tests.helpers.api import client_with


class Tenant:
    """An organization with one team, one key and an org-scoped admin client."""

    def __init__(self, name: str, group):
        self.org, _ = organization_create(actor="test", name=f"Org {name}")
        self.team = team_create(
            actor="test", organization=self.org, name=f"Team {name}", model_groups=[group]
        )
        self.key, self.key_secret = key_create(actor="test", team=self.team, name=f"key {name}")
        self.admin_key, self.admin_secret = admin_key_create(
            actor="test", name=f"admin {name}", organization=self.org
        )
        self.client = client_with(self.admin_secret)


class GatewayTenant:
    """A team with credits and a key, whose model groups route to the live mock upstream."""

    def __init__(self, name, organization, groups, credits_micros, **team_fields):
        from billing.services import credits_grant

        self.team = team_create(
            actor="test", organization=organization, name=name, model_groups=groups, **team_fields
        )
        if credits_micros:
            credits_grant(
                team=self.team,
                amount_micros=credits_micros,
                reason="test",
                actor="test",
                idempotency_key="initial",
            )
        self.key, self.secret = key_create(actor="test", team=self.team, name=f"{name} key")

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.secret}"}


def add_call_history(tenant) -> tuple:
    """A settled job with one call for the tenant's team: (job, usage record)."""
    from django.utils import timezone

    from billing.models import Job, UsageRecord

    now = timezone.now()
    job = Job.objects.create(
        organization=tenant.org, team=tenant.team, key=tenant.key, job_type="t", created_at=now
    )
    call = UsageRecord.objects.create(
        request_id=f"req_{tenant.team.public_id}",
        organization=tenant.org,
        team=tenant.team,
        key=tenant.key,
        job=job,
        model="m",
        created_at=now,
    )
    return job, call


def settle_usage(team, amount_micros: int, when) -> None:
    """A gateway call made at `when`, settled now through the settler's write path."""
    from billing.models import UsageRecord
    from billing.services import UsageCharge, ledger_post_usage_batch

    rid = f"req_{uuid.uuid4().hex}"
    UsageRecord.objects.create(
        request_id=rid,
        organization_id=team.organization_id,
        team=team,
        model="m",
        price_micros=amount_micros,
        created_at=when,
    )
    ledger_post_usage_batch(
        account_id=team.account.pk,
        charges=[
            UsageCharge(
                idempotency_key=f"usage:{rid}",
                amount_micros=amount_micros,
                cost_micros=0,
                metadata={"request_id": rid},
                occurred_at=when,
            )
        ],
    )


def db_state() -> dict:
    """Every row the admin API can write, to show that a refused request changed nothing."""
    from alerts.models import Alert, WebhookDelivery, WebhookEndpoint
    from billing.models import CreditAccount, LedgerEntry
    from modelgroups.models import Model, ModelGroup, ModelGroupMember, ModelHealth, Upstream
    from orgs.models import AdminKey, AuditEvent, Organization
    from teams.models import Team, VirtualKey

    tables = [
        Organization,
        AdminKey,
        AuditEvent,
        Team,
        Team.model_groups.through,
        VirtualKey,
        VirtualKey.model_groups.through,
        CreditAccount,
        LedgerEntry,
        Upstream,
        Model,
        ModelGroup,
        ModelGroupMember,
        ModelHealth,
        WebhookEndpoint,
        WebhookDelivery,
        Alert,
    ]
    state = {t._meta.db_table: list(t.objects.order_by("pk").values()) for t in tables}
    # Authentication stamps the caller's own key (at most once a minute): bookkeeping about
    # the caller, not a change the refused request made.
    for row in state[AdminKey._meta.db_table]:
        row.pop("last_used_at")
    return state
