"""Fixtures: real PostgreSQL (pytest-django test database) and Redis; state built via services.

Each test session (each xdist worker) runs its own redis-server and one live server; every test
starts from an empty Redis and, when it asks for `live`, a gateway started for it alone.
Plain helpers are in tests/helpers/.
"""

import os

import pytest
from cryptography.fernet import Fernet
from rest_framework.test import APIClient

from core.redis import client as redis_client
from modelgroups import services as catalog
from orgs.services import organization_create
from tests.helpers import db as test_db
from tests.helpers.api import MASTER, client_with
from tests.helpers.servers import LiveServer, RedisServer
from tests.helpers.tenants import GatewayTenant, Tenant

ENCRYPTION_KEY = Fernet.generate_key().decode()


# Modules whose tests all run on one xdist worker: each starts something slow once, in a
# module-scoped fixture (a real LiteLLM proxy).
ONE_WORKER_MODULES = frozenset({"tests/test_litellm_upstream.py"})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With `-n` and the default `--dist load`: tests go to whichever worker is free, one by
    one, except that each of ONE_WORKER_MODULES goes to one worker whole. (xdist's own
    `--dist loadgroup` does this by renaming tests, which pytest 9.2 no longer allows.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class Scheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return Scheduling(config, log)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """This session's own Redis: a throwaway redis-server, so nothing else uses or flushes
    it. With TEST_REDIS_URL set, or without redis-server on PATH, that Redis instead (default
    db 15 on localhost), one db number lower for each further xdist worker (gw1: 14, ...)."""
    url = os.environ.get("TEST_REDIS_URL")
    if url is None and RedisServer.available():
        server = RedisServer().start()
        _point_celery_at(server.url)
        yield server.url
        server.stop()
        return
    url = url or "redis://127.0.0.1:6379/15"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
    base, _, db = url.rpartition("/")
    url = f"{base}/{int(db or 0) - int(worker.removeprefix('gw'))}"
    _point_celery_at(url)
    yield url


def _point_celery_at(url: str) -> None:
    # Celery read its broker from the settings once; a task sent without eager mode must land
    # in the tests' Redis, never in the developer's queue.
    from saas.celery import app

    app.conf.broker_url = url


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, and transactional tests ending with tests/helpers/db.py's
    flush (the database as migrations left it, like Django's flush, for a fraction of the cost)."""
    from django.db import connection

    with django_db_blocker.unblock():
        undo = test_db.install(connection)
    yield
    undo()


@pytest.fixture(autouse=True)
def _settings(settings, redis_url):
    settings.MASTER_KEY = MASTER
    settings.SECRETS_ENCRYPTION_KEYS = [ENCRYPTION_KEY]
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.MOCK_UPSTREAM_ENABLED = True  # the live tests' upstream
    settings.REDIS_URL = redis_url
    settings.CELERY_BROKER_URL = redis_url
    redis_client.cache_clear()
    redis_client().flushdb()
    yield
    redis_client.cache_clear()


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


@pytest.fixture
def tenant_a(catalog_objects) -> Tenant:
    return Tenant("A", catalog_objects["group"])


@pytest.fixture
def tenant_b(catalog_objects) -> Tenant:
    return Tenant("B", catalog_objects["group"])


@pytest.fixture(scope="session")
def session_server(django_db_setup) -> LiveServer:
    """One uvicorn for the session; `live` gives each test a gateway of its own on it.
    After django_db_setup, so it stops before the test database is dropped."""
    server = LiveServer().start()
    yield server
    server.stop()


@pytest.fixture
def live(transactional_db, settings, session_server) -> LiveServer:
    """A started server; data created through services before or after start is visible
    (after-commit publishing plus the gateway's change feed). Its gateway is new: built from
    this test's settings, started after this test's Redis flush (so it republishes what
    Postgres holds, as at any start), and shut down when the test ends."""
    session_server.start_gateway()
    yield session_server
    session_server.stop_gateway()


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
