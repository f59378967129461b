"""The test infrastructure's own promises: a `live` test gets a gateway of its own, a
transactional test ends with the database as migrations left it, and shared helpers come from
tests/helpers/, never from a conftest."""

import ast
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection

from billing.models import LedgerEntry
from billing.services import credits_grant
from orgs.models import Organization
from orgs.services import organization_create
from teams.services import key_create, team_create
from tests.helpers import db as test_db
from tests.helpers.panel import make_user


@pytest.mark.parametrize("run", [1, 2])
def test_each_live_test_starts_a_gateway_of_its_own(live, settings, run):
    # given: what this test's settings say, nothing from an earlier test
    gateway = live.gateway
    assert gateway.max_body == settings.GATEWAY_MAX_BODY_BYTES
    assert gateway.replica.breaker.threshold == settings.GATEWAY_BREAKER_FAILURES
    assert (gateway.replica.keys, gateway.replica.teams) == ({}, {})
    assert not gateway.replica.catalog.groups_by_name
    assert not gateway.replica.breaker._failures and not gateway.replica.breaker._open_until
    # when: this test leaves state behind (the other run checks it did not survive)
    gateway.replica.breaker.failed("a-model-id")
    gateway.replica.keys["a-hash"] = {"id": run}


def test_a_transactional_test_ends_with_the_migrated_database(transactional_db):
    # given: rows in many tables, the append-only ledger and a user in a role group among them
    org, _ = organization_create(actor="test", name="Flushed Org")
    team = team_create(actor="test", organization=org, name="Flushed Team")
    credits_grant(team=team, amount_micros=5, reason="t", actor="t", idempotency_key="k")
    key_create(actor="test", team=team, name="k")
    make_user("flushed", "admin")
    groups = sorted(Group.objects.values_list("name", flat=True))
    counts = ContentType.objects.count(), Permission.objects.count()
    fast = test_db.FastFlush(connection)
    # when
    fast.flush(None, original=None)
    # then: every table empty but those migrations fill, which are as they were
    assert not Organization.objects.exists() and not LedgerEntry.objects.exists()
    assert not User.objects.exists()
    assert sorted(Group.objects.values_list("name", flat=True)) == groups == ["admin", "viewer"]
    assert (ContentType.objects.count(), Permission.objects.count()) == counts
    with connection.cursor() as cursor:
        for table in fast.tables:
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608
            assert cursor.fetchone() == (0,), table


def test_a_test_that_changed_the_migrated_rows_gets_djangos_flush_and_the_groups_back(
    transactional_db,
):
    # given: a test that renamed a role group and made one of its own
    fast = test_db.FastFlush(connection)
    Group.objects.filter(name="viewer").update(name="renamed")
    Group.objects.create(name="extra")
    flushed = []

    def django_flush(test_case):
        flushed.append(test_case)
        call_command("flush", verbosity=0, interactive=False)

    # when
    fast.flush("the test case", original=django_flush)
    # then: Django's flush ran, and the groups are the migrated ones again
    assert flushed == ["the test case"]
    assert sorted(Group.objects.values_list("name", flat=True)) == ["admin", "viewer"]
    assert ContentType.objects.filter(app_label="teams", model="team").exists()
    assert fast.checksums == test_db._checksums(connection)


def test_no_test_module_imports_a_conftest():
    # pytest loads conftest files itself; importing one runs it a second time as another module
    tests = Path(__file__).parent
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [f"{path.relative_to(tests)}: {n}" for n in names if "conftest" in n]
    assert offenders == []
