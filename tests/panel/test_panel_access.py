"""Who may do what in the panel: anonymous visitors log in first, viewers read everything and
change nothing, platform admins change things; every POST needs its CSRF token."""

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from alerts.services import alerts_evaluate, webhook_endpoint_create
from panel.urls import urlpatterns
from teams.services import team_update
from tests.helpers.panel import PASSWORD, logged_in, make_user
from tests.helpers.tenants import add_call_history, db_state

# Pages: url name -> which fixture object's public id goes in the URL.
PAGES = {
    "dashboard": None,
    "password_change": None,
    "org_list": None,
    "org_create": None,
    "org_detail": "org",
    "team_list": None,
    "team_create": None,
    "team_detail": "team",
    "team_edit": "team",
    "team_ledger": "team",
    "team_key_create": "team",
    "key_list": None,
    "key_detail": "key",
    "group_list": None,
    "group_create": None,
    "group_edit": "group",
    "model_list": None,
    "model_create": None,
    "model_edit": "model",
    "upstream_list": None,
    "upstream_create": None,
    "upstream_edit": "upstream",
    "usage": None,
    "logs": None,
    "call_detail": "call",
    "audit": None,
    "team_jobs": "team",
    "job_detail": "job",
    "team_alerts": "team",
    "playground": None,
    "playground_call": "call",
    "webhook_list": None,
    "webhook_create": None,
    "webhook_detail": "webhook",
    "litellm": None,
}

# Every change the panel can make: (url name, URL args, a body that would change something).
CHANGES = [
    ("org_create", [], {"name": "Intruder Org"}),
    ("org_detail", ["org"], {"name": "Renamed", "status": "active"}),
    ("org_delete", ["org"], {}),
    ("team_create", [], lambda w: {"organization": w["org"], "name": "Intruders"}),
    ("team_edit", ["team"], {"name": "Renamed", "budget_period": "none", "budget_mode": "hard"}),
    ("team_status", ["team", "suspend"], {}),
    ("team_status", ["team", "pause"], {}),
    ("team_status", ["team", "resume"], {}),
    (
        "team_credits",
        ["team"],
        {"kind": "grant", "amount": "100", "reason": "free money", "idempotency_key": "k1"},
    ),
    ("team_key_create", ["team"], {"name": "backdoor", "form_token": "t1"}),
    ("key_rotate", ["key"], {"grace_period_seconds": "0", "form_token": "t2"}),
    ("key_revoke", ["key"], {}),
    (
        "group_create",
        [],
        lambda w: {
            "name": "slow",
            "members-TOTAL_FORMS": "1",
            "members-INITIAL_FORMS": "0",
            "members-0-model": w["model_pk"],
        },
    ),
    (
        "group_edit",
        ["group"],
        lambda w: {
            "name": "hijacked",
            "members-TOTAL_FORMS": "1",
            "members-INITIAL_FORMS": "0",
            "members-0-model": w["model_pk"],
        },
    ),
    ("group_delete", ["group"], {}),
    (
        "model_create",
        [],
        lambda w: {
            "name": "m-new",
            "upstream": w["upstream_pk"],
            "upstream_model": "x",
            "mode": "chat",
            "max_output_tokens": "10",
        },
    ),
    (
        "model_edit",
        ["model"],
        lambda w: {
            "name": "gpt-a",
            "upstream": w["upstream_pk"],
            "upstream_model": "evil",
            "mode": "chat",
            "max_output_tokens": "10",
        },
    ),
    ("model_delete", ["model"], {}),
    ("model_check", ["model"], {}),  # probes the upstream and records its health
    (
        "upstream_create",
        [],
        {
            "name": "evil",
            "kind": "openai",
            "base_url": "http://evil.example/v1",
            "connect_timeout_seconds": "5",
            "read_timeout_seconds": "5",
        },
    ),
    (
        "upstream_edit",
        ["upstream"],
        {
            "name": "prov",
            "kind": "openai",
            "base_url": "http://evil.example/v1",
            "connect_timeout_seconds": "5",
            "read_timeout_seconds": "5",
        },
    ),
    ("upstream_test", ["upstream"], {}),  # changes nothing, but calls out with the secret
    ("upstream_delete", ["upstream"], {}),
    (
        "playground_send",  # mints a key and spends the team's credits
        [],
        lambda w: {
            "team": w["team"],
            "model_group": w["group_pk"],
            "prompt": "hello",
            "max_tokens": "10",
        },
    ),
    (
        "webhook_create",
        [],
        lambda w: {"organization": w["org"], "url": "https://evil.example/h", "form_token": "t3"},
    ),
    ("webhook_detail", ["webhook"], {"url": "https://evil.example/hook", "enabled": "on"}),
    ("webhook_toggle", ["webhook"], {"enabled": "off"}),
    ("webhook_rotate", ["webhook"], {"form_token": "t4"}),
    ("webhook_delete", ["webhook"], {}),
    ("webhook_delivery_resend", ["delivery"], {}),
]

# Open to anyone, or about the user's own session: tested on their own below.
AUTH_ROUTES = {"login", "logout"}


@pytest.fixture
def world(tenant_a, catalog_objects) -> dict:
    """Public ids (and form values) of one object of each kind."""
    # A job with a call, a webhook endpoint, and an alert delivered to it (its balance of 0
    # is below the low-balance line).
    job, call = add_call_history(tenant_a)
    endpoint, _ = webhook_endpoint_create(
        actor="test", organization=tenant_a.org, url="https://hooks.example/tollgate"
    )
    team_update(actor="test", team=tenant_a.team, data={"low_balance_alert_micros": 1_000_000})
    assert alerts_evaluate() == 1
    return {
        "org": tenant_a.org.public_id,
        "team": tenant_a.team.public_id,
        "key": tenant_a.key.public_id,
        "group": catalog_objects["group"].public_id,
        "group_pk": catalog_objects["group"].pk,
        "model": catalog_objects["primary"].public_id,
        "model_pk": catalog_objects["fallback"].pk,
        "upstream": catalog_objects["upstream"].public_id,
        "upstream_pk": catalog_objects["upstream"].pk,
        "job": job.public_id,
        "call": call.request_id,
        "webhook": endpoint.public_id,
        "delivery": endpoint.deliveries.get().public_id,
    }


def page_url(name: str, world: dict) -> str:
    kind = PAGES[name]
    return reverse(f"panel:{name}", args=[world[kind]] if kind else [])


def change(name: str, args: list, body, world: dict) -> tuple[str, dict]:
    url = reverse(f"panel:{name}", args=[world.get(a, a) for a in args])
    return url, body(world) if callable(body) else body


def test_every_panel_route_is_covered_here():
    # given every named route of the panel
    names = {p.name for p in urlpatterns}
    # then each is a page, a change or an auth route tested here (a new one must be added)
    assert names == set(PAGES) | {c[0] for c in CHANGES} | AUTH_ROUTES


@pytest.mark.parametrize("name", sorted(PAGES))
def test_anonymous_visitors_are_sent_to_the_login_page(client, world, name):
    url = page_url(name, world)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('panel:login')}?next={url}"


@pytest.mark.parametrize(("name", "args", "body"), CHANGES, ids=lambda v: str(v)[:20])
def test_anonymous_posts_change_nothing(client, world, name, args, body):
    # given
    before = db_state()
    url, data = change(name, args, body, world)
    # when
    response = client.post(url, data)
    # then
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("panel:login"))
    assert db_state() == before


@pytest.mark.parametrize("name", sorted(PAGES))
def test_viewers_see_every_page(as_viewer, world, name):
    response = as_viewer.get(page_url(name, world))
    assert response.status_code == 200
    assert b"Read-only access" in response.content


@pytest.mark.parametrize("name", sorted(PAGES))
def test_admins_see_every_page(as_admin, world, name):
    response = as_admin.get(page_url(name, world))
    assert response.status_code == 200
    assert b"Read-only access" not in response.content


@pytest.mark.parametrize(("name", "args", "body"), CHANGES, ids=lambda v: str(v)[:20])
def test_viewers_cannot_change_anything(as_viewer, world, name, args, body):
    # given
    before = db_state()
    url, data = change(name, args, body, world)
    # when
    response = as_viewer.post(url, data)
    # then
    assert response.status_code == 403
    assert b"read-only access" in response.content
    assert db_state() == before


@pytest.mark.parametrize(("name", "args", "body"), CHANGES, ids=lambda v: str(v)[:20])
def test_a_post_without_its_csrf_token_is_refused(panel_admin, world, name, args, body):
    # given an admin whose browser does not send the form's token
    client = logged_in(panel_admin, enforce_csrf_checks=True)
    before = db_state()
    url, data = change(name, args, body, world)
    # when
    response = client.post(url, data)
    # then
    assert response.status_code == 403
    assert b"could not be accepted" in response.content
    assert db_state() == before


def test_a_post_with_its_csrf_token_goes_through(panel_admin):
    # given the token from the rendered form, as a browser sends it
    client = logged_in(panel_admin, enforce_csrf_checks=True)
    page = client.get(reverse("panel:org_create"))
    token = page.context["csrf_token"]
    # when
    response = client.post(
        reverse("panel:org_create"), {"name": "Acme", "csrfmiddlewaretoken": str(token)}
    )
    # then
    assert response.status_code == 302


def test_users_without_a_panel_role_are_refused(db, world):
    # given a Django user in neither group
    client = logged_in(make_user("mallory"))
    before = db_state()
    # when
    page = client.get(reverse("panel:dashboard"))
    post = client.post(reverse("panel:org_create"), {"name": "Sneaky"})
    # then
    assert page.status_code == post.status_code == 403
    assert b"no panel role" in page.content
    assert db_state() == before


def test_superusers_are_platform_admins(db):
    client = logged_in(make_user("root", is_superuser=True))
    response = client.post(reverse("panel:org_create"), {"name": "Made by root"})
    assert response.status_code == 302


def test_logging_in_and_out(db):
    # given
    make_user("victor", "viewer")
    client = Client(enforce_csrf_checks=False)
    # when a wrong password is tried
    wrong = client.post(reverse("panel:login"), {"username": "victor", "password": "nope"})
    # then the form says so and nobody is logged in
    assert wrong.status_code == 200
    assert b"correct username and password" in wrong.content
    assert client.get(reverse("panel:dashboard")).status_code == 302
    # when the right one is
    right = client.post(
        reverse("panel:login"), {"username": "victor", "password": PASSWORD, "next": "/teams/"}
    )
    assert right.status_code == 302
    assert right["Location"] == "/teams/"
    assert client.get(reverse("panel:dashboard")).status_code == 200
    # and the session ends after the configured idle time
    assert client.session.get_expiry_age() == settings.SESSION_COOKIE_AGE
    # when a viewer logs out (a POST that viewers may make)
    out = client.post(reverse("panel:logout"))
    # then
    assert out.status_code == 302
    assert client.get(reverse("panel:dashboard")).status_code == 302


def test_viewers_may_change_their_own_password(as_viewer, viewer):
    response = as_viewer.post(
        reverse("panel:password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
        },
    )
    assert response.status_code == 302
    assert User.objects.get(pk=viewer.pk).check_password("a brand new passphrase")


def test_an_expired_session_sends_htmx_to_the_login_page(client, db):
    # given a live search fired after the session ended
    response = client.get(reverse("panel:org_list"), {"q": "acme"}, HTTP_HX_REQUEST="true")
    # then htmx is told to load the login page rather than swap it into the list
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith(reverse("panel:login"))
