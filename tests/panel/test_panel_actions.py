"""What an admin does in the panel goes through the services, shows field errors next to the
field, and is audited as the user."""

from datetime import timedelta

import pytest
from django.urls import reverse

from billing.models import LedgerEntry
from core.redis import client as redis_client
from core.secrets import decrypt, hashes_match
from livestate.keys import SETTLER_GROUP, dead_letters, usage_stream
from modelgroups.models import Model, ModelGroup, Upstream
from orgs.models import AuditEvent, Organization
from teams.models import Team, VirtualKey
from tests.helpers.panel import record_usage
from tests.helpers.tenants import db_state


def post(client, name, args=(), data=None, **kwargs):
    return client.post(reverse(f"panel:{name}", args=args), data or {}, **kwargs)


def test_creating_an_organization_is_audited_as_the_user(as_admin):
    # when
    response = post(as_admin, "org_create", data={"name": "Acme", "external_id": "crm-1"})
    # then
    org = Organization.objects.get(name="Acme")
    assert response.status_code == 302
    assert response["Location"] == reverse("panel:org_detail", args=[org.public_id])
    event = AuditEvent.objects.get(action="organization.create", object_id=org.public_id)
    assert event.actor == "user:alice"


def test_a_refused_change_shows_the_error_next_to_the_field(as_admin, tenant_a):
    # given an organization named "Org A" already
    before = db_state()
    # when
    response = post(as_admin, "org_create", data={"name": "Org A"})
    # then
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors["name"] == ["Already used."]
    assert b'id="id_name_error"' in response.content
    assert b'aria-invalid="true"' in response.content
    assert db_state() == before


def test_creating_a_team_with_groups_limits_and_budget(as_admin, tenant_a, catalog_objects):
    # when
    response = post(
        as_admin,
        "team_create",
        data={
            "organization": tenant_a.org.public_id,
            "name": "Research",
            "model_groups": [catalog_objects["group"].pk],
            "rpm_limit": "60",
            "budget_period": "monthly",
            "budget_limit": "50.5",
            "budget_mode": "soft",
            "alert_thresholds": "50, 90",
            "overdraft_limit": "10",
        },
    )
    # then
    team = Team.objects.get(name="Research")
    assert response["Location"] == reverse("panel:team_detail", args=[team.public_id])
    assert list(team.model_groups.all()) == [catalog_objects["group"]]
    assert (team.rpm_limit, team.budget_limit_micros, team.budget_mode) == (60, 50_500_000, "soft")
    assert team.alert_thresholds == [50, 90]
    assert team.account.overdraft_limit_micros == 10_000_000
    assert AuditEvent.objects.get(action="team.create", object_id=team.public_id).actor == (
        "user:alice"
    )


def test_a_service_rule_is_shown_on_its_field(as_admin, tenant_a):
    # when an allowance is set without a period to recur on (a rule of team_create)
    response = post(
        as_admin,
        "team_create",
        data={
            "organization": tenant_a.org.public_id,
            "name": "Nope",
            "budget_period": "none",
            "budget_mode": "hard",
            "allowance": "5",
        },
    )
    # then
    assert response.status_code == 200
    assert response.context["form"].errors["allowance"] == [
        "Set budget_period to daily, weekly or monthly."
    ]
    assert not Team.objects.filter(name="Nope").exists()


def test_editing_a_team_changes_and_audits_only_what_changed(as_admin, tenant_a):
    # given the edit form as rendered
    team = tenant_a.team
    form = as_admin.get(reverse("panel:team_edit", args=[team.public_id])).context["form"]
    data = {k: v for k, v in form.initial.items() if v is not None}
    data["model_groups"] = [g.pk for g in data["model_groups"]]
    data["overdraft_limit"] = "0"
    data["alert_thresholds"] = "80, 100"
    data["rpm_limit"] = "30"
    data.pop("allowance_rollover")
    # when
    response = post(as_admin, "team_edit", [team.public_id], data)
    # then
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="team.update")
    assert event.changes == {"rpm_limit": [None, 30]}
    assert event.actor == "user:alice"


@pytest.mark.parametrize(
    ("action", "status"), [("suspend", "suspended"), ("pause", "paused"), ("resume", "active")]
)
def test_team_status_actions(as_admin, tenant_a, action, status):
    if action == "resume":
        post(as_admin, "team_status", [tenant_a.team.public_id, "pause"])
    response = post(as_admin, "team_status", [tenant_a.team.public_id, action])
    assert response.status_code == 302
    assert Team.objects.get(pk=tenant_a.team.pk).status == status
    assert AuditEvent.objects.filter(action=f"team.{status}", actor="user:alice").exists()


def test_a_credit_grant_posts_once_however_often_the_form_is_sent(as_admin, tenant_a):
    # given the form as rendered, with its hidden idempotency key
    team = tenant_a.team
    page = as_admin.get(reverse("panel:team_detail", args=[team.public_id]))
    key = page.context["credit_form"].initial["idempotency_key"]
    data = {"kind": "grant", "amount": "25.00", "reason": "invoice 17", "idempotency_key": key}
    # when it is sent twice (a double click, a retry after a timeout)
    first = post(as_admin, "team_credits", [team.public_id], data)
    second = post(as_admin, "team_credits", [team.public_id], data, follow=True)
    # then
    assert first.status_code == 302
    entries = LedgerEntry.objects.filter(account__team=team)
    assert [(e.kind, e.amount_micros, e.actor) for e in entries] == [
        ("grant", 25_000_000, "user:alice")
    ]
    assert b"already submitted" in second.content
    assert b"invoice 17" in second.content  # the grant shows in the ledger on the team page
    team.account.refresh_from_db()
    assert team.account.balance_micros == 25_000_000


def test_a_new_form_render_gets_a_new_idempotency_key(as_admin, tenant_a):
    url = reverse("panel:team_detail", args=[tenant_a.team.public_id])
    first = as_admin.get(url).context["credit_form"].initial["idempotency_key"]
    second = as_admin.get(url).context["credit_form"].initial["idempotency_key"]
    assert first != second


def test_an_adjustment_may_be_negative_and_needs_a_reason(as_admin, tenant_a):
    team = tenant_a.team
    post(
        as_admin,
        "team_credits",
        [team.public_id],
        {"kind": "grant", "amount": "10", "reason": "start", "idempotency_key": "a"},
    )
    # when a reason is missing
    refused = post(
        as_admin,
        "team_credits",
        [team.public_id],
        {"kind": "adjustment", "amount": "-2.5", "reason": "", "idempotency_key": "b"},
    )
    # then the form comes back with the error next to the field, and nothing posts
    assert refused.status_code == 400
    assert refused.context["credit_form"].errors["reason"] == ["This field is required."]
    # when it is given
    post(
        as_admin,
        "team_credits",
        [team.public_id],
        {"kind": "adjustment", "amount": "-2.5", "reason": "refund", "idempotency_key": "b"},
    )
    team.account.refresh_from_db()
    assert team.account.balance_micros == 7_500_000


def test_a_grant_must_be_positive(as_admin, tenant_a):
    response = post(
        as_admin,
        "team_credits",
        [tenant_a.team.public_id],
        {"kind": "grant", "amount": "-5", "reason": "oops", "idempotency_key": "c"},
    )
    assert response.status_code == 400
    assert response.context["credit_form"].errors["amount"] == ["Must be greater than zero."]
    assert not LedgerEntry.objects.exists()


def test_minting_a_key_shows_its_secret_once(as_admin, tenant_a, catalog_objects):
    # when
    response = post(
        as_admin,
        "team_key_create",
        [tenant_a.team.public_id],
        {"name": "backend", "form_token": "tok-1", "model_groups": [catalog_objects["group"].pk]},
    )
    # then the page holds the secret, which matches the stored hash
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    key = VirtualKey.objects.get(name="backend")
    assert secret.startswith("sk-") and secret.encode() in response.content
    assert hashes_match(secret, key.key_hash)
    assert b"will not be shown again" in response.content
    # and it is never shown anywhere after
    detail = as_admin.get(reverse("panel:key_detail", args=[key.public_id]))
    assert secret.encode() not in detail.content
    # and the same form sent again mints nothing more
    again = post(
        as_admin,
        "team_key_create",
        [tenant_a.team.public_id],
        {"name": "backend", "form_token": "tok-1"},
    )
    assert again.status_code == 302
    assert VirtualKey.objects.filter(name="backend").count() == 1
    assert (
        AuditEvent.objects.get(action="key.create", object_id=key.public_id).actor == "user:alice"
    )


def test_rotating_a_key_keeps_the_old_secret_for_the_grace_period(as_admin, tenant_a):
    key = tenant_a.key
    old_hash = key.key_hash
    response = post(
        as_admin, "key_rotate", [key.public_id], {"grace_period_seconds": "3600", "form_token": "r"}
    )
    assert response.status_code == 200
    key.refresh_from_db()
    assert hashes_match(response.context["secret"], key.key_hash)
    assert key.previous_key_hash == old_hash
    assert key.previous_valid_until is not None
    assert b"keeps working until" in response.content


def test_revoking_a_key(as_admin, tenant_a):
    response = post(as_admin, "key_revoke", [tenant_a.key.public_id])
    assert response.status_code == 302
    tenant_a.key.refresh_from_db()
    assert tenant_a.key.status == "revoked"
    assert AuditEvent.objects.get(action="key.revoke").actor == "user:alice"


def members(*rows) -> dict:
    data = {"members-TOTAL_FORMS": str(len(rows)), "members-INITIAL_FORMS": "0"}
    for i, row in enumerate(rows):
        for field, value in row.items():
            data[f"members-{i}-{field}"] = value
    return data


def test_a_model_group_keeps_its_order_and_weights(as_admin, catalog_objects):
    a, b = catalog_objects["primary"], catalog_objects["fallback"]
    # when
    response = post(
        as_admin,
        "group_create",
        data={
            "name": "balanced",
            **members(
                {"model": b.pk, "priority": "1", "weight": "1"},
                {"model": a.pk, "priority": "0", "weight": "3"},
                {"model": ""},  # an empty row is ignored
            ),
        },
    )
    # then
    assert response.status_code == 302
    group = ModelGroup.objects.get(name="balanced")
    assert [(m.model.name, m.priority, m.weight) for m in group.members.all()] == [
        ("gpt-a", 0, 3),
        ("gpt-b", 1, 1),
    ]
    # when the same model is listed twice
    twice = post(
        as_admin,
        "group_edit",
        [group.public_id],
        {"name": "balanced", **members({"model": a.pk}, {"model": a.pk})},
    )
    # then
    assert twice.status_code == 200
    assert twice.context["formset"].non_form_errors() == ["gpt-a is listed twice."]
    # when a member is removed
    post(
        as_admin,
        "group_edit",
        [group.public_id],
        {"name": "balanced", **members({"model": a.pk}, {"model": b.pk, "DELETE": "on"})},
    )
    assert [m.model.name for m in group.members.all()] == ["gpt-a"]


def test_a_model_without_a_price_is_priced_at_cost_times_the_markup(
    as_admin, catalog_objects, settings
):
    settings.DEFAULT_PRICE_MARKUP = 1.5
    response = post(
        as_admin,
        "model_create",
        data={
            "name": "gpt-c",
            "upstream": catalog_objects["upstream"].pk,
            "upstream_model": "c-1",
            "mode": "chat",
            "input_cost": "2",
            "output_cost": "4",
            "max_output_tokens": "100",
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    model = Model.objects.get(name="gpt-c")
    assert (model.input_price_micros, model.output_price_micros) == (3_000_000, 6_000_000)


def test_upstream_keys_are_write_only(as_admin, catalog_objects):
    upstream = catalog_objects["upstream"]
    url = reverse("panel:upstream_edit", args=[upstream.public_id])
    base = {
        "name": "prov",
        "kind": "openai",
        "base_url": upstream.base_url,
        "connect_timeout_seconds": "5",
        "read_timeout_seconds": "120",
        "enabled": "on",
    }
    # the stored key never reaches the page
    page = as_admin.get(url)
    assert b"sk-provider-secret-value" not in page.content
    assert b"stored (encrypted)" in page.content
    # an empty key field keeps the key
    as_admin.post(url, {**base, "api_key": ""})
    upstream.refresh_from_db()
    assert decrypt(upstream.api_key_encrypted) == "sk-provider-secret-value"
    # a typed key replaces it, and is not echoed back
    response = as_admin.post(url, {**base, "api_key": "sk-new-one"}, follow=True)
    upstream.refresh_from_db()
    assert decrypt(upstream.api_key_encrypted) == "sk-new-one"
    assert b"sk-new-one" not in response.content
    # "remove" clears it
    as_admin.post(url, {**base, "clear_api_key": "on"})
    upstream.refresh_from_db()
    assert upstream.api_key_encrypted == ""
    assert AuditEvent.objects.filter(action="upstream.update", actor="user:alice").count() == 2


def test_deleting_something_in_use_explains_why_not(as_admin, catalog_objects):
    response = post(
        as_admin, "upstream_delete", [catalog_objects["upstream"].public_id], follow=True
    )
    assert response.status_code == 200
    assert b"still serves models" in response.content
    assert Upstream.objects.filter(pk=catalog_objects["upstream"].pk).exists()


def test_the_usage_explorer_totals_and_exports(as_admin, tenant_a, tenant_b):
    # given
    record_usage(tenant_a.team, tenant_a.key, price=1_500_000, cost=1_000_000)
    record_usage(tenant_a.team, tenant_a.key, model="gpt-b", price=500_000, status="error")
    record_usage(tenant_b.team, tenant_b.key, price=9_000_000)
    record_usage(tenant_a.team, tenant_a.key, price=7_000_000, ago=timedelta(days=400))
    url = reverse("panel:usage")
    # when filtered to team A
    response = as_admin.get(url, {"team": tenant_a.team.public_id})
    # then
    totals = response.context["totals"]
    assert (totals["requests"], totals["errors"], totals["price_micros"]) == (2, 1, 2_000_000)
    assert [row["model"] for row in response.context["by_model"]] == ["gpt-a", "gpt-b"]
    assert len(response.context["page"].rows) == 2
    # when exported
    export = as_admin.get(url, {"team": tenant_a.team.public_id, "format": "csv"})
    lines = b"".join(export.streaming_content).decode().splitlines()
    assert export["Content-Type"] == "text/csv; charset=utf-8"
    assert lines[0].startswith("created_at,request_id,organization,team,key,model")
    assert len(lines) == 3
    assert {line.split(",")[11] for line in lines[1:]} == {"1.500000", "0.500000"}


def test_the_usage_explorer_explains_a_bad_filter(as_admin, db):
    response = as_admin.get(reverse("panel:usage"), {"team": "team_nope"})
    assert response.status_code == 400
    assert response.context["form"].errors["team"] == ["No team with id team_nope."]


def test_the_audit_log_filters_by_actor_and_action(as_admin, tenant_a):
    post(as_admin, "org_create", data={"name": "Audited"})
    response = as_admin.get(
        reverse("panel:audit"), {"actor": "user:alice", "action": "organization."}
    )
    events = response.context["page"].rows
    assert [(e.action, e.actor) for e in events] == [("organization.create", "user:alice")]


def test_the_dashboard_shows_spend_and_teams_over_budget(as_admin, tenant_a, tenant_b):
    # given team A past its budget, team B well within it
    from teams.services import team_update

    for tenant in (tenant_a, tenant_b):
        team_update(
            actor="test",
            team=tenant.team,
            data={"budget_period": "monthly", "budget_limit_micros": 1_000_000},
        )
    from billing.models import CreditAccount

    CreditAccount.objects.filter(team=tenant_a.team).update(period_spend_micros=1_200_000)
    CreditAccount.objects.filter(team=tenant_b.team).update(period_spend_micros=100_000)
    record_usage(tenant_a.team, price=1_200_000, cost=800_000)
    record_usage(tenant_b.team, price=100_000, status="error")
    # when
    response = as_admin.get(reverse("panel:dashboard"))
    # then
    ctx = response.context
    assert ctx["today"]["price_micros"] == 1_300_000
    assert ctx["today"]["requests"] == 2 and ctx["today"]["errors"] == 1
    assert [row["team"].name for row in ctx["top_teams"]] == ["Team A", "Team B"]
    assert [(w["team"].name, w["budget_state"]) for w in ctx["budget_watch"]] == [
        ("Team A", "exceeded")
    ]
    assert b"<svg" in response.content


def test_the_dashboard_shows_usage_waiting_to_settle_and_dead_letters(as_admin, db):
    from billing import settlement

    client = redis_client()
    # given nothing handed off yet
    assert as_admin.get(reverse("panel:dashboard")).context["settlement"] == {
        "waiting": 0,
        "oldest_seconds": None,
        "dead_letters": 0,
    }
    # given two records the gateway handed off, one taken by a settler and not acknowledged,
    # and one record parked as a dead letter
    settlement.ensure_group(client)
    client.xadd(usage_stream(0), {"rec": "{}"})
    client.xadd(usage_stream(1), {"rec": "{}"})
    client.xreadgroup(SETTLER_GROUP, "crashed", {usage_stream(0): ">"}, count=1)
    client.xadd(dead_letters(2), {"error": "poison"})
    # when
    health = as_admin.get(reverse("panel:dashboard")).context["settlement"]
    # then
    assert health["waiting"] == 2
    assert 0 <= health["oldest_seconds"] < 60
    assert health["dead_letters"] == 1


def test_testing_an_upstream_makes_a_real_call_and_shows_the_answer(live, mock_catalog):
    # given an admin and the live mock upstream
    from tests.helpers.panel import logged_in, make_user

    client = logged_in(make_user("alice", "admin"))
    upstream = mock_catalog["upstream"]
    # when
    response = post(client, "upstream_test", [upstream.public_id])
    # then
    probe = response.context["probe"]
    assert probe.ok and probe.status == 200
    assert "mock-a" in probe.message or "model(s) served" in probe.message
    assert b"It works." in response.content
    assert b"sk-upstream-provider-secret-123456" not in response.content


def test_a_failed_upstream_test_says_why(as_admin, catalog_objects):
    # given an upstream nothing listens on (the discard port)
    response = post(as_admin, "upstream_test", [catalog_objects["upstream"].public_id])
    probe = response.context["probe"]
    assert not probe.ok and probe.status is None and probe.retryable
    assert probe.message.startswith("Could not connect")
    assert b"It failed." in response.content
    assert b"sk-provider-secret-value" not in response.content
