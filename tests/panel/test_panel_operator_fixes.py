"""What an operator hit in the panel (issue 13): the billing email, pickers instead of typed
ids, the next reset of a new team, re-sending a failed webhook delivery, LiteLLM's state."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from alerts.models import Alert, WebhookDelivery
from alerts.services import alerts_evaluate, webhook_endpoint_create
from billing.periods import next_reset, period_start
from orgs.models import AuditEvent, Organization
from teams.services import team_update
from tests.helpers.tenants import db_state


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- 1. billing_email -------------------------------------------------------------------


def test_the_billing_email_is_set_on_the_organization_page_and_audited(as_admin, tenant_a):
    org = tenant_a.org
    detail = reverse("panel:org_detail", args=[org.public_id])
    # when
    response = as_admin.post(
        detail, {"name": org.name, "status": org.status, "billing_email": "ap@acme.example"}
    )
    # then
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.billing_email == "ap@acme.example"
    event = AuditEvent.objects.get(action="organization.update", object_id=org.public_id)
    assert event.actor == "user:alice"
    assert event.changes == {"billing_email": ["", "ap@acme.example"]}
    page = as_admin.get(detail).content.decode()
    assert 'value="ap@acme.example"' in page and "mailto:ap@acme.example" in page


def test_a_billing_email_that_is_no_address_is_refused_next_to_the_field(as_admin, tenant_a):
    before = db_state()
    response = as_admin.post(
        reverse("panel:org_detail", args=[tenant_a.org.public_id]),
        {"name": tenant_a.org.name, "status": "active", "billing_email": "not an address"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["billing_email"] == ["Enter a valid email address."]
    assert b'id="id_billing_email_error"' in response.content
    assert db_state() == before


def test_the_organization_service_refuses_a_billing_email_that_is_no_address(db):
    from core.errors import ValidationFailed
    from orgs.services import organization_create, organization_update

    with pytest.raises(ValidationFailed) as refused:
        organization_create(actor="test", name="Acme", billing_email="nope")
    assert "billing_email" in refused.value.fields
    org, _ = organization_create(actor="test", name="Acme", billing_email=" ap@acme.example ")
    assert org.billing_email == "ap@acme.example"
    with pytest.raises(ValidationFailed):
        organization_update(actor="test", org=org, data={"billing_email": "@"})
    organization_update(actor="test", org=org, data={"billing_email": ""})
    assert Organization.objects.get(pk=org.pk).billing_email == ""


# --- 4. the next reset -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        ("daily", at(2026, 3, 5)),
        ("weekly", at(2026, 3, 9)),
        ("monthly", at(2026, 4, 1)),
    ],
)
def test_a_period_not_started_yet_resets_at_the_next_boundary_not_a_past_one(period, expected):
    now = at(2026, 3, 4, 8, 30)
    assert next_reset(started_at=None, now=now, period=period) == expected
    # and once the first reset ran, the same date
    started = period_start(now, period)
    assert next_reset(started_at=started, now=now, period=period) == expected


def test_no_period_has_no_reset():
    assert next_reset(started_at=None, now=at(2026, 3, 4), period="none") is None


def test_a_new_teams_next_reset_is_in_the_future(as_admin, tenant_a):
    # given a team that just got a monthly period: its first reset has not run yet
    from django.utils import timezone

    team = tenant_a.team
    team_update(
        actor="test",
        team=team,
        data={"budget_period": "monthly", "budget_limit_micros": 10_000_000},
    )
    team.account.refresh_from_db()
    assert team.account.period_started_at is None
    # when
    response = as_admin.get(reverse("panel:team_detail", args=[team.public_id]))
    # then
    shown = response.context["summary"]["next_reset_at"]
    assert shown > timezone.now()
    assert shown.day == 1 and shown.hour == 0


# --- 7. re-sending a failed webhook delivery ---------------------------------------------


@pytest.fixture
def delivery(tenant_a) -> WebhookDelivery:
    webhook_endpoint_create(actor="test", organization=tenant_a.org, url="https://hooks.example/a")
    team_update(actor="test", team=tenant_a.team, data={"low_balance_alert_micros": 2_500_000})
    assert alerts_evaluate() == 1
    return WebhookDelivery.objects.select_related("endpoint").get(alert=Alert.objects.get())


def resend(client, delivery):
    return client.post(reverse("panel:webhook_delivery_resend", args=[delivery.public_id]))


def test_a_failed_delivery_is_sent_again_from_the_panel(
    as_admin, delivery, django_capture_on_commit_callbacks
):
    # given a delivery that gave up
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status="failed", attempts=8, last_error="Connection refused"
    )
    detail = reverse("panel:webhook_detail", args=[delivery.endpoint.public_id])
    assert b"Send again" in as_admin.get(detail).content
    # when
    with django_capture_on_commit_callbacks() as queued:
        response = resend(as_admin, delivery)
    # then it is pending again with a fresh run of attempts, queued, and audited
    assert response.status_code == 302 and response["Location"] == detail
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert delivery.next_attempt_at is not None and delivery.lease_until is None
    assert len(queued) == 1
    event = AuditEvent.objects.get(action="webhook.redeliver", object_id=delivery.public_id)
    assert event.actor == "user:alice"
    assert event.changes == {"status": ["failed", "pending"], "attempts": [8, 0]}
    assert b"queued to be sent again" in as_admin.get(detail).content


@pytest.mark.parametrize(("status", "reason"), [("succeeded", "succeeded"), ("pending", "retried")])
def test_a_delivery_that_did_not_fail_is_not_sent_again(
    as_admin, delivery, status, reason, django_capture_on_commit_callbacks
):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=status)
    detail = reverse("panel:webhook_detail", args=[delivery.endpoint.public_id])
    assert b"Send again" not in as_admin.get(detail).content
    before = db_state()
    # when
    with django_capture_on_commit_callbacks() as queued:
        response = resend(as_admin, delivery)
    # then nothing changed, nothing queued, and the page says why
    assert response.status_code == 302
    assert db_state() == before and not queued
    assert reason in as_admin.get(detail).content.decode()


def test_an_unknown_delivery_is_a_404_page(as_admin, db):
    response = as_admin.post(reverse("panel:webhook_delivery_resend", args=["whd_nope"]))
    assert response.status_code == 404


# --- 2. pickers instead of typed ids -----------------------------------------------------


def test_a_new_team_picks_its_organization_by_name(as_admin, tenant_a, tenant_b):
    page = as_admin.get(reverse("panel:team_create"), {"org": tenant_b.org.public_id})
    html = page.content.decode()
    assert '<select name="organization"' in html
    assert f'<option value="{tenant_a.org.public_id}">{tenant_a.org.name}</option>' in html
    assert f'<option value="{tenant_b.org.public_id}" selected>{tenant_b.org.name}' in html
    assert "org_…" not in html
    # and a forged value is still refused by the server
    before = db_state()
    refused = as_admin.post(
        reverse("panel:team_create"), {"organization": "org_forged", "name": "X"}
    )
    assert refused.context["form"].errors["organization"] == ["No organization with id org_forged."]
    assert db_state() == before


def test_the_usage_filters_pick_teams_grouped_by_organization(as_admin, tenant_a, tenant_b):
    html = as_admin.get(reverse("panel:usage")).content.decode()
    for tenant in (tenant_a, tenant_b):
        assert (
            f'<optgroup label="{tenant.org.name}"><option value="{tenant.team.public_id}"' in html
        )
    assert '<select name="key"' in html and f'value="{tenant_a.key.public_id}"' in html


def test_the_usage_filters_refuse_a_team_of_another_organization(as_admin, tenant_a, tenant_b):
    response = as_admin.get(
        reverse("panel:usage"),
        {"organization": tenant_a.org.public_id, "team": tenant_b.team.public_id},
    )
    errors = response.context["form"].errors
    assert errors["team"] == [f"{tenant_b.team.name} is not a team of {tenant_a.org.name}."]
    key_elsewhere = as_admin.get(
        reverse("panel:usage"),
        {"team": tenant_a.team.public_id, "key": tenant_b.key.public_id},
    )
    assert "key" in key_elsewhere.context["form"].errors


def test_a_long_list_is_an_input_with_a_datalist(as_admin, tenant_a, tenant_b, monkeypatch):
    from panel.forms import pickers

    monkeypatch.setattr(pickers, "PICKER_SELECT_MAX", 1)
    html = as_admin.get(reverse("panel:key_list"), {"team": tenant_a.team.public_id})
    html = html.content.decode()
    assert '<input type="text" name="team"' in html and 'list="team_choices"' in html
    assert f'value="{tenant_a.team.public_id}"' in html
    assert f'<option value="{tenant_b.team.public_id}">{tenant_b.team.name} · ' in html
    # and the list still narrows by what was picked
    assert [
        k.public_id
        for k in as_admin.get(reverse("panel:key_list"), {"team": tenant_a.team.public_id})
        .context["page"]
        .rows
    ] == [tenant_a.key.public_id]


def test_the_list_filters_pick_instead_of_typing(as_admin, tenant_a):
    pages = {
        "webhook_list": "organization",
        "audit": "organization",
        "key_list": "team",
        "playground": "team",
    }
    for page, field in pages.items():
        html = as_admin.get(reverse(f"panel:{page}")).content.decode()
        assert f'<select name="{field}"' in html, page
        assert f'name="{field}" value=' not in html, page


# --- 6. LiteLLM's sync state and drift ---------------------------------------------------


def test_without_litellm_the_dashboard_and_team_page_say_nothing_of_it(
    as_admin, tenant_a, settings
):
    settings.LITELLM_BASE_URL = ""
    assert b'id="litellm"' not in as_admin.get(reverse("panel:dashboard")).content
    team_page = as_admin.get(reverse("panel:team_detail", args=[tenant_a.team.public_id]))
    assert b'id="litellm"' not in team_page.content
    off = as_admin.get(reverse("panel:litellm"))
    assert off.status_code == 200 and b"The LiteLLM integration is off" in off.content


def test_the_dashboard_and_team_page_show_litellms_sync_state(
    as_admin, tenant_a, tenant_b, settings
):
    from django.utils import timezone

    from litellm_sync.models import KeySync, TeamSync

    settings.LITELLM_BASE_URL = "http://litellm.example:4000"
    synced_at = timezone.now().replace(microsecond=0)
    TeamSync.objects.create(
        team=tenant_a.team,
        litellm_team_id="lt-a",
        state="failed",
        attempts=3,
        last_error="LiteLLM answered 500: database is locked",
    )
    TeamSync.objects.create(
        team=tenant_b.team,
        litellm_team_id="lt-b",
        state="synced",
        synced_version=1,
        synced_at=synced_at,
    )
    KeySync.objects.create(key=tenant_a.key, state="pending")
    # when
    dashboard = as_admin.get(reverse("panel:dashboard"))
    team_page = as_admin.get(reverse("panel:team_detail", args=[tenant_a.team.public_id]))
    details = as_admin.get(reverse("panel:litellm"))
    # then the dashboard: last sync, failures, teams and keys out of sync, a link to details
    overview = dashboard.context["litellm"]
    assert overview["last_synced_at"] == synced_at
    assert (overview["failed"], overview["drifted_teams"], overview["drifted_keys"]) == (1, 1, 1)
    text = dashboard.content.decode()
    assert "1 failed" in text and reverse("panel:litellm") in text
    # the team page: its own state with the error, and its key waiting
    text = team_page.content.decode()
    assert "database is locked" in text and "failed" in text
    assert team_page.context["litellm"]["keys_drifted"][0].key == tenant_a.key
    # the details page lists what is not in sync and the drift report
    assert details.status_code == 200
    text = details.content.decode()
    assert tenant_a.team.name in text and tenant_a.key.name in text
    assert tenant_b.team.name not in text.split("Not in sync")[1].split("Metering drift")[0]
    assert details.context["drift"]["gateway_calls"] == 0


# --- 3. one number format ----------------------------------------------------------------


def test_the_number_filters():
    from panel.templatetags.panel import count, credits, pct, percent, usd

    assert credits(12_500_000) == "12.50 credits"
    assert credits(1_234_567_890_000) == "1,234,567.89 credits"
    assert credits(-500_000) == "-0.50 credits"
    assert usd(4_200) == "$0.0042" and usd(-1_000_000) == "-$1.00"
    assert count(1234567) == "1,234,567" and count(0) == "0"
    assert pct(80) == "80%" and percent(1, 8) == "12%"
    assert credits(None) == usd(None) == count(None) == pct(None) == "—"


def test_pages_show_credits_with_their_unit_usd_with_a_dollar_and_grouped_tokens(
    as_admin, tenant_a
):
    from billing.models import UsageRecord
    from tests.helpers.panel import record_usage

    record = record_usage(tenant_a.team, tenant_a.key, price=12_500_000, cost=4_200)
    UsageRecord.objects.filter(pk=record.pk).update(input_tokens=12345, output_tokens=2_000_000)
    team_url = reverse("panel:team_detail", args=[tenant_a.team.public_id])
    pages = {
        "dashboard": as_admin.get(reverse("panel:dashboard")).content.decode(),
        "team": as_admin.get(team_url).content.decode(),
        "usage": as_admin.get(reverse("panel:usage")).content.decode(),
    }
    assert "12.50 credits" in pages["dashboard"] and "cost $0.0042" in pages["dashboard"]
    assert "12,345 / 2,000,000" in pages["team"] and "12.50 credits" in pages["team"]
    assert "$0.0042" in pages["usage"] and "12,345 / 2,000,000" in pages["usage"]
    for name, html in pages.items():
        assert " USD<" not in html and "0.004200" not in html, name
