"""The panel's actors (users in the role groups, logged-in clients) and the rows it reads."""

import itertools
from datetime import timedelta

from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

PASSWORD = "correct horse battery staple"
_request_ids = itertools.count(1)


def make_user(username: str, group: str | None = None, **extra) -> User:
    user = User.objects.create_user(username, password=PASSWORD, **extra)
    if group:
        # get_or_create: the groups a migration made, unless a test removed them
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def logged_in(user: User, **client_kwargs) -> Client:
    client = Client(**client_kwargs)
    client.force_login(user)
    return client


def record_usage(team, key=None, *, model="gpt-a", price=1000, cost=500, status="ok", ago=None):
    """A metered call as the gateway's settler records it; the panel only reads these rows."""
    from billing.models import UsageRecord

    return UsageRecord.objects.create(
        request_id=f"req-{next(_request_ids)}",
        organization_id=team.organization_id,
        team=team,
        key=key,
        model=model,
        model_group="fast",
        input_tokens=10,
        output_tokens=20,
        cost_micros=cost,
        price_micros=price,
        status=status,
        latency_ms=42,
        created_at=timezone.now() - (ago or timedelta(seconds=1)),
    )
