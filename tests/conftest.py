"""Fixtures: real PostgreSQL (pytest-django test database) and Redis; state built via services."""

import os

import pytest
from cryptography.fernet import Fernet
from rest_framework.test import APIClient

from core.redis import client as redis_client
from modelgroups import services as catalog
from orgs.services import admin_key_create, organization_create
from teams.services import key_create, team_create

MASTER = "tgm-test-master-key"
ENCRYPTION_KEY = Fernet.generate_key().decode()


# Tests get their own Redis database, emptied before each test.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.MASTER_KEY = MASTER
    settings.SECRETS_ENCRYPTION_KEYS = [ENCRYPTION_KEY]
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.REDIS_URL = TEST_REDIS_URL
    redis_client.cache_clear()
    redis_client().flushdb()
    yield
    redis_client.cache_clear()


def client_with(secret: str | None) -> APIClient:
    client = APIClient()
    if secret is not None:
        client.credentials(HTTP_X_ADMIN_KEY=secret)
    return client


@pytest.fixture
def api(db) -> APIClient:
    """The platform admin, authenticated with the master key."""
    return client_with(MASTER)


@pytest.fixture
def catalog_objects(db):
    """An upstream, two chat models and a model group `fast` (primary + fallback)."""
    upstream = catalog.upstream_create(
        actor="test",
        name="prov",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-provider-secret-value",
    )
    primary = catalog.model_create(
        actor="test",
        name="gpt-a",
        upstream=upstream,
        upstream_model="a-2025",
        input_cost_micros=1_000_000,
        output_cost_micros=2_000_000,
    )
    fallback = catalog.model_create(
        actor="test", name="gpt-b", upstream=upstream, upstream_model="b-2025"
    )
    group = catalog.model_group_create(
        actor="test", name="fast", members=[{"model": primary}, {"model": fallback}]
    )
    return {"upstream": upstream, "primary": primary, "fallback": fallback, "group": group}


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


@pytest.fixture
def tenant_a(catalog_objects) -> Tenant:
    return Tenant("A", catalog_objects["group"])


@pytest.fixture
def tenant_b(catalog_objects) -> Tenant:
    return Tenant("B", catalog_objects["group"])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The real ASGI application (gateway + mock upstream + Django) in uvicorn on a free port."""

    def __init__(self):
        import threading

        import uvicorn

        from proxy.gateway import Gateway
        from saas.asgi import make_application

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mock_url = f"{self.url}/mock/v1"
        self.gateway = Gateway()
        config = uvicorn.Config(
            make_application(self.gateway),
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            lifespan="on",
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self):
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live(transactional_db, settings):
    """A started server; data created through services before or after start is visible
    (after-commit publishing plus the gateway's change feed)."""
    server = LiveServer()
    server.start()
    yield server
    server.stop()


class GatewayTenant:
    """A team with credits and a key, whose model group routes to the live mock upstream."""

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


@pytest.fixture
def mock_catalog(live):
    """Upstream = the live mock. Groups: `chat` (mock-a then mock-b), `flaky` (a model that
    always fails with 500, then mock-b), `broken` (only failing models), `embed`."""
    up = catalog.upstream_create(
        actor="test",
        name="mock",
        kind="mock",
        base_url=live.mock_url,
        api_key="sk-upstream-provider-secret-123456",
    )
    price = {
        "input_price_micros": 1_000_000,
        "output_price_micros": 2_000_000,
        "input_cost_micros": 500_000,
        "output_cost_micros": 1_000_000,
    }

    def model(name, upstream_model, **extra):
        return catalog.model_create(
            actor="test", name=name, upstream=up, upstream_model=upstream_model, **price, **extra
        )

    a = model("mock-a", "mock-a", max_output_tokens=50)
    b = model("mock-b", "mock-b", max_output_tokens=50)
    bad = model("mock-bad", "mock-fail-500", max_output_tokens=50)
    bad2 = model("mock-bad-503", "mock-fail-503", max_output_tokens=50)
    emb = model("mock-embed", "mock-embed", mode="embedding")
    groups = {
        "chat": catalog.model_group_create(
            actor="test", name="chat", members=[{"model": a}, {"model": b}]
        ),
        "flaky": catalog.model_group_create(
            actor="test", name="flaky", members=[{"model": bad}, {"model": b}]
        ),
        "broken": catalog.model_group_create(
            actor="test", name="broken", members=[{"model": bad}, {"model": bad2}]
        ),
        "embed": catalog.model_group_create(actor="test", name="embed", members=[{"model": emb}]),
        "other": catalog.model_group_create(actor="test", name="other", members=[{"model": b}]),
    }
    return {"upstream": up, "groups": groups, "models": {"a": a, "b": b, "bad": bad}}


@pytest.fixture
def gw_org(transactional_db):
    org, _ = organization_create(actor="test", name="Gateway Org")
    return org


@pytest.fixture
def gw_team(mock_catalog, gw_org):
    g = mock_catalog["groups"]
    return GatewayTenant(
        "gw team",
        gw_org,
        [g["chat"], g["flaky"], g["broken"], g["embed"]],
        credits_micros=100_000_000,
    )


def settle_usage(team, amount_micros: int, when) -> None:
    """A gateway call made at `when`, settled now through the settler's write path."""
    import uuid

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


@pytest.fixture
def litellm(settings):
    """The LiteLLM admin-API contract fake (tests/litellm_fake.py), running, with the
    integration switched on against it."""
    from tests.litellm_fake import FakeLiteLLM

    fake = FakeLiteLLM().start()
    settings.LITELLM_BASE_URL = fake.url
    settings.LITELLM_MASTER_KEY = fake.master_key
    settings.LITELLM_TIMEOUT_SECONDS = 1.0
    settings.LITELLM_CONNECT_TIMEOUT_SECONDS = 0.5
    yield fake
    fake.stop()
