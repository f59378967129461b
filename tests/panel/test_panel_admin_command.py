"""`make run` gives a fresh install its first panel admin, and only once."""

import re
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command


def run(**options) -> str:
    out = StringIO()
    call_command("panel_admin", stdout=out, **options)
    return out.getvalue()


def test_the_first_admin_is_created_once_with_a_password_shown_once(db):
    # when
    first = run(port=8123)
    # then the printed password logs in, and only its hash is stored
    password = re.search(r"password (\S+)", first).group(1)
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    assert password not in admin.password
    assert "http://127.0.0.1:8123/" in first
    # when run again, nothing new is made and no password is shown
    second = run(port=8123)
    assert User.objects.count() == 1
    assert password not in second and "changepassword" in second


def test_an_existing_admin_group_member_counts_as_the_first_admin(db):
    from tests.helpers.panel import make_user

    make_user("carol", "admin")
    output = run()
    assert not User.objects.filter(username="admin").exists()
    assert "password" not in output.split("(")[0]


def test_the_first_admin_takes_admin_password_and_never_prints_it(db, monkeypatch):
    # given
    monkeypatch.setenv("ADMIN_PASSWORD", "a-long-operator-chosen-phrase")
    # when
    output = run()
    # then
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("a-long-operator-chosen-phrase")
    assert "a-long-operator-chosen-phrase" not in output and "ADMIN_PASSWORD" in output


def test_a_weak_admin_password_is_refused_and_no_admin_is_made(db, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "short")
    with pytest.raises(CommandError, match="ADMIN_PASSWORD"):
        run()
    assert not User.objects.exists()
