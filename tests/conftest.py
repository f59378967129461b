"""Fixtures: real PostgreSQL (pytest-django test database) and Redis; state built via services."""

import os

import pytest
from cryptography.fernet import Fernet
from rest_framework.test import APIClient

from modelgroups import services as catalog
from orgs.services import admin_key_create, organization_create
from proxy import state as gateway_state
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
    gateway_state.client.cache_clear()
    gateway_state.client().flushdb()
    yield
    gateway_state.client.cache_clear()


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


@pytest.fixture
def tenant_a(catalog_objects) -> Tenant:
    return Tenant("A", catalog_objects["group"])


@pytest.fixture
def tenant_b(catalog_objects) -> Tenant:
    return Tenant("B", catalog_objects["group"])
