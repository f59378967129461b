"""`make run` gives a fresh install its first panel admin, and only once."""

import re
from io import StringIO

from django.contrib.auth.models import User
from django.core.management import call_command


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
