"""A cheaper end for transactional tests, with the same result as Django's flush.

Django ends a TransactionTestCase (pytest-django's `transactional_db`, so every `live` test)
with `manage.py flush`: TRUNCATE of every table (about 2.5 ms each on Postgres, 37 tables),
then post_migrate, which recreates the content types and permissions, and drops the panel's
role groups that a migration made (later tests then saw no groups, earlier ones did).

Here the tables that migrations fill (content types, permissions, groups) are checksummed when
the test database is ready, and each transactional test ends by truncating only the tables
that have rows, leaving those four alone while their checksum is unchanged. A test that did
change one gets Django's own flush, then the migrated groups back. Either way the next test
starts from the database as migrations left it.
"""

from django.db import connections, transaction
from django.test import TransactionTestCase

MIGRATED_TABLES = ("django_content_type", "auth_permission", "auth_group", "auth_group_permissions")


def _checksums(connection) -> dict[str, str]:
    # Identifiers here and below are Django's own table names, never input.
    quote = connection.ops.quote_name
    sql = " UNION ALL ".join(
        f"SELECT '{t}', md5(coalesce(string_agg(x::text, ',' ORDER BY x.id), '')) "  # noqa: S608
        f"FROM {quote(t)} x"
        for t in MIGRATED_TABLES
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return dict(cursor.fetchall())


class FastFlush:
    def __init__(self, connection):
        self.alias = connection.alias
        tables = connection.introspection.django_table_names(only_existing=True)
        self.tables = sorted(set(tables) - set(MIGRATED_TABLES))
        self.checksums = _checksums(connection)
        self.groups = self._groups()
        with connection.cursor() as cursor:
            # Tables with a trigger of our own that fires on DELETE.
            cursor.execute(
                "SELECT DISTINCT c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid"
                " WHERE NOT g.tgisinternal AND g.tgtype & 8 = 8"
            )
            self.guarded = {row[0] for row in cursor.fetchall()}

    @staticmethod
    def _groups() -> list[tuple[str, list[tuple[str, str]]]]:
        from django.contrib.auth.models import Group

        return [
            (g.name, list(g.permissions.values_list("content_type__app_label", "codename")))
            for g in Group.objects.order_by("pk").prefetch_related("permissions")
        ]

    def flush(self, test_case: TransactionTestCase, original) -> None:
        connection = connections[self.alias]
        quote = connection.ops.quote_name
        with transaction.atomic(using=self.alias):
            if _checksums(connection) == self.checksums:
                probe = " UNION ALL ".join(
                    f"(SELECT '{t}' FROM {quote(t)} LIMIT 1)"  # noqa: S608
                    for t in self.tables
                )
                with connection.cursor() as cursor:
                    cursor.execute(probe)
                    dirty = [row[0] for row in cursor.fetchall()]
                    # A table whose trigger refuses DELETE (the append-only ledger) is
                    # truncated; CASCADE empties whatever references it too.
                    guarded = [t for t in dirty if t in self.guarded]
                    if guarded:
                        cursor.execute(f"TRUNCATE {', '.join(map(quote, guarded))} CASCADE")
                    # DELETE, not TRUNCATE, for the rest: a few rows each, so much cheaper, and
                    # foreign keys are checked at commit (Django makes them deferrable), when
                    # every referencing table is empty too.
                    for table in dirty:
                        if table not in self.guarded:
                            cursor.execute(f"DELETE FROM {quote(table)}")  # noqa: S608
                return
        original(test_case)
        self._restore_groups()
        self.checksums = _checksums(connection)

    def _restore_groups(self) -> None:
        from django.contrib.auth.models import Group, Permission

        for name, permissions in self.groups:
            group = Group.objects.create(name=name)
            for app_label, codename in permissions:
                group.permissions.add(
                    Permission.objects.get(content_type__app_label=app_label, codename=codename)
                )


def install(connection):
    """Make TransactionTestCase end with FastFlush on `connection`; returns the undo."""
    fast = FastFlush(connection)
    original = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self):
        plain = (
            self.available_apps is None
            and not self.serialized_rollback
            and list(self._databases_names(include_mirrors=False)) == [fast.alias]
        )
        if plain:
            fast.flush(self, original)
        else:
            original(self)

    TransactionTestCase._fixture_teardown = _fixture_teardown

    def undo():
        TransactionTestCase._fixture_teardown = original

    return undo
