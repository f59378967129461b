"""Jobs with their calls, tokens, cost and price; a team's alerts; webhook endpoints managed
through the alerts services (the secret shown once) with their delivery log."""

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, WebhookEndpoint
from alerts.services import alerts_evaluate, webhook_endpoint_create
from billing.models import Job, LedgerEntry, UsageRecord
from billing.services import UsageCharge, credits_grant, ledger_post_usage_batch
from core.secrets import decrypt
from orgs.models import AuditEvent
from teams.services import team_update
from tests.helpers.tenants import db_state


def job(tenant, job_type="summarize", status="open", charged=0, calls=()):
    """A job as the settler writes it from the gateway's stream, with calls (tokens, cost,
    price) of its own."""
    row = Job.objects.create(
        organization=tenant.org,
        team=tenant.team,
        key=tenant.key,
        job_type=job_type,
        status=status,
        charged_micros=charged,
        fee_micros=charged,
        created_at=timezone.now(),
        closed_at=timezone.now() if status != "open" else None,
    )
    for n, (tokens_in, tokens_out, cost, price) in enumerate(calls):
        UsageRecord.objects.create(
            request_id=f"req_{row.public_id}_{n}",
            organization=tenant.org,
            team=tenant.team,
            key=tenant.key,
            job=row,
            model="gpt-a",
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_micros=cost,
            price_micros=price,
            status="ok",
            created_at=timezone.now(),
        )
    return row


def test_a_teams_jobs_list_their_calls_tokens_cost_and_price(as_admin, tenant_a, tenant_b):
    # given two jobs of team A (one closed with two calls and a flat price) and one of team B
    done = job(
        tenant_a,
        status="completed",
        charged=500_000,
        calls=[(10, 20, 300, 1_000), (5, 5, 100, 400)],
    )
    open_job = job(tenant_a, job_type="translate")
    job(tenant_b, calls=[(1, 1, 1, 1)])
    url = reverse("panel:team_jobs", args=[tenant_a.team.public_id])
    # when
    rows = as_admin.get(url).context["page"].rows
    # then newest first, only team A's, each with its totals
    assert [r.public_id for r in rows] == [open_job.public_id, done.public_id]
    assert rows[1].totals == {
        "calls": 2,
        "failed_calls": 0,
        "input_tokens": 15,
        "output_tokens": 25,
        "cost_micros": 400,
        "price_micros": 1_400 + 500_000,
    }
    assert rows[0].totals["calls"] == 0
    # and the filters narrow them
    assert [
        r.public_id for r in as_admin.get(url, {"status": "completed"}).context["page"].rows
    ] == [done.public_id]
    assert [r.public_id for r in as_admin.get(url, {"type": "translate"}).context["page"].rows] == [
        open_job.public_id
    ]
    assert not as_admin.get(url, {"type": "nothing", "status": "\x00"}).context["page"].rows
    # and the team page links to them
    team_page = as_admin.get(reverse("panel:team_detail", args=[tenant_a.team.public_id]))
    assert url.encode() in team_page.content


def test_a_page_of_jobs_costs_the_same_however_many_jobs_the_team_has(as_admin, tenant_a):
    # given 120 jobs with a call each
    for _ in range(120):
        job(tenant_a, calls=[(1, 1, 1, 1)])
    url = reverse("panel:team_jobs", args=[tenant_a.team.public_id])
    # when the first and the last page are read
    with CaptureQueriesContext(connection) as first_queries:
        first = as_admin.get(url)
    cursor = first.context["page"].next_cursor
    second = as_admin.get(url, {"cursor": cursor}).context["page"]
    with CaptureQueriesContext(connection) as last_queries:
        last = as_admin.get(url, {"cursor": second.next_cursor}).context["page"]
    # then: 50, 50 and 20 jobs, from keyset queries with the same number of queries
    assert len(first.context["page"].rows) == len(second.rows) == 50
    assert len(last.rows) == 20 and last.next_cursor is None
    assert all(j.totals["calls"] == 1 for j in last.rows)
    assert len(first_queries) == len(last_queries)
    assert "OFFSET" not in " ".join(q["sql"] for q in last_queries).upper()


def test_a_job_page_shows_its_calls_and_its_flat_charge(as_admin, tenant_a):
    # given a completed flat-priced job, settled into the ledger as the settler does
    credits_grant(
        team=tenant_a.team, amount_micros=5_000_000, reason="t", actor="t", idempotency_key="g"
    )
    row = job(tenant_a, status="completed", charged=500_000, calls=[(10, 20, 300, 1_000)])
    ledger_post_usage_batch(
        account_id=tenant_a.team.account.pk,
        charges=[
            UsageCharge(
                idempotency_key=f"job:{row.public_id}",
                amount_micros=500_000,
                cost_micros=300,
                metadata={"job_id": row.public_id},
                kind=LedgerEntry.Kind.JOB,
            )
        ],
    )
    # when
    response = as_admin.get(reverse("panel:job_detail", args=[row.public_id]))
    # then
    assert response.status_code == 200
    assert response.context["totals"]["price_micros"] == 501_000
    assert response.context["charge"].amount_micros == -500_000
    assert [c.request_id for c in response.context["page"].rows] == [f"req_{row.public_id}_0"]
    page = response.content.decode()
    assert "0.501 credits" in page and "10 / 20" in page and "balance after 4.50 credits" in page


def test_creating_a_webhook_endpoint_shows_its_secret_once(as_admin, tenant_a):
    url = reverse("panel:webhook_create")
    data = {
        "organization": tenant_a.org.public_id,
        "url": "https://hooks.example/tollgate",
        "description": "ops",
        "enabled": "on",
        "form_token": "wh-1",
    }
    # when
    response = as_admin.post(url, data)
    # then the page holds the secret, which is what is stored (encrypted)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    endpoint = WebhookEndpoint.objects.get()
    assert decrypt(endpoint.secret_encrypted) == secret
    assert secret.encode() in response.content and b"will not be shown again" in response.content
    assert (endpoint.organization, endpoint.url, endpoint.enabled) == (
        tenant_a.org,
        "https://hooks.example/tollgate",
        True,
    )
    assert AuditEvent.objects.get(action="webhook.create").actor == "user:alice"
    # and never again: not on its page, not by sending the same form twice
    detail = as_admin.get(reverse("panel:webhook_detail", args=[endpoint.public_id]))
    assert secret.encode() not in detail.content
    again = as_admin.post(url, data)
    assert again.status_code == 302 and WebhookEndpoint.objects.count() == 1
    org_page = as_admin.get(reverse("panel:org_detail", args=[tenant_a.org.public_id]))
    assert b"https://hooks.example/tollgate" in org_page.content


def test_a_bad_webhook_is_refused_next_to_its_fields(as_admin, tenant_a):
    before = db_state()
    response = as_admin.post(
        reverse("panel:webhook_create"),
        {"organization": "org_nope", "url": "ftp://hooks.example/x", "form_token": "wh-2"},
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors["organization"] == ["No organization with id org_nope."]
    assert errors["url"] == ["Enter a valid URL."]
    assert db_state() == before


def test_an_endpoint_is_edited_disabled_rotated_and_deleted_as_the_user(as_admin, tenant_a):
    endpoint, old_secret = webhook_endpoint_create(
        actor="test", organization=tenant_a.org, url="https://hooks.example/a"
    )
    detail = reverse("panel:webhook_detail", args=[endpoint.public_id])
    # edit: only what changed is recorded
    response = as_admin.post(
        detail, {"url": "https://hooks.example/b", "description": "", "enabled": "on"}
    )
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="webhook.update").changes == {
        "url": ["https://hooks.example/a", "https://hooks.example/b"]
    }
    # disable, then enable
    toggle = reverse("panel:webhook_toggle", args=[endpoint.public_id])
    as_admin.post(toggle, {"enabled": "off"})
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    as_admin.post(toggle, {"enabled": "on"})
    endpoint.refresh_from_db()
    assert endpoint.enabled is True
    # rotate: a new secret, shown once
    rotated = as_admin.post(
        reverse("panel:webhook_rotate", args=[endpoint.public_id]), {"form_token": "r-1"}
    )
    endpoint.refresh_from_db()
    new_secret = rotated.context["secret"]
    assert new_secret != old_secret and decrypt(endpoint.secret_encrypted) == new_secret
    assert rotated["Cache-Control"] == "no-store"
    # delete
    gone = as_admin.post(reverse("panel:webhook_delete", args=[endpoint.public_id]))
    assert gone["Location"] == reverse("panel:org_detail", args=[tenant_a.org.public_id])
    assert not WebhookEndpoint.objects.exists()
    actions = AuditEvent.objects.filter(object_id=endpoint.public_id).order_by("pk")
    assert [(e.action, e.actor) for e in actions if e.actor == "user:alice"] == [
        ("webhook.update", "user:alice"),
        ("webhook.update", "user:alice"),
        ("webhook.update", "user:alice"),
        ("webhook.rotate_secret", "user:alice"),
        ("webhook.delete", "user:alice"),
    ]


def test_a_teams_alerts_and_the_endpoints_delivery_log(as_admin, tenant_a, tenant_b):
    # given an endpoint of org A, and team A's balance (0) below its low balance line
    endpoint, _ = webhook_endpoint_create(
        actor="test", organization=tenant_a.org, url="https://hooks.example/a"
    )
    team_update(actor="test", team=tenant_a.team, data={"low_balance_alert_micros": 2_500_000})
    assert alerts_evaluate() == 1
    alert = Alert.objects.get()
    # when
    alerts_page = as_admin.get(reverse("panel:team_alerts", args=[tenant_a.team.public_id]))
    log = as_admin.get(reverse("panel:webhook_detail", args=[endpoint.public_id]))
    # then the alert is listed with its delivery
    assert [a.public_id for a in alerts_page.context["page"].rows] == [alert.public_id]
    text = alerts_page.content.decode()
    assert "below 2.50" in text and "pending" in text and "https://hooks.example/a" in text
    assert [d.event_type for d in log.context["page"].rows] == ["balance.low"]
    assert b"pending" in log.content and alert.public_id.encode() in log.content
    # and the filters narrow them; team B has none
    url = reverse("panel:team_alerts", args=[tenant_a.team.public_id])
    assert not as_admin.get(url, {"kind": "budget_threshold"}).context["page"].rows
    assert (
        not as_admin.get(
            reverse("panel:webhook_detail", args=[endpoint.public_id]), {"status": "failed"}
        )
        .context["page"]
        .rows
    )
    other = as_admin.get(reverse("panel:team_alerts", args=[tenant_b.team.public_id]))
    assert not other.context["page"].rows and b"No alerts" in other.content
    listed = as_admin.get(reverse("panel:webhook_list"), {"organization": tenant_b.org.public_id})
    assert not listed.context["page"].rows
