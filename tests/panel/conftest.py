"""Panel fixtures: the three actors (a platform admin, a viewer, anyone else)."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.helpers.panel import logged_in, make_user


@pytest.fixture
def panel_admin(db) -> User:
    """A platform admin through the `admin` group (not a superuser)."""
    return make_user("alice", "admin")


@pytest.fixture
def viewer(db) -> User:
    return make_user("victor", "viewer")


@pytest.fixture
def as_admin(panel_admin) -> Client:
    return logged_in(panel_admin)


@pytest.fixture
def as_viewer(viewer) -> Client:
    return logged_in(viewer)
