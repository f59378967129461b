"""Budget and low-balance alerts: once per period per threshold, by email and signed webhooks
delivered to a real local HTTP server, with retries, backoff and a delivery log."""

import json
import logging
import smtplib
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from alerts import services, tasks, webhooks
from alerts.models import Alert, WebhookDelivery, WebhookEndpoint
from billing import resets
from billing.services import credits_adjust, credits_grant
from core.secrets import decrypt
from orgs.models import AuditEvent
from orgs.services import organization_update
from teams.services import team_update
from tests.helpers.servers import Receiver, free_port
from tests.helpers.tenants import settle_usage
from tests.helpers.threads import race

CREDIT = 1_000_000
BILLING_EMAIL = "billing@a.example"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _webhook_settings(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True  # the receiver is on localhost
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    settings.WEBHOOK_MAX_ATTEMPTS = 8


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def budgeted(tenant, *, limit=10 * CREDIT, thresholds=(50, 100), **extra):
    """Tenant's team with a daily budget, 100 credits, its period started on March 4."""
    organization_update(actor="test", org=tenant.org, data={"billing_email": BILLING_EMAIL})
    team = team_update(
        actor="test",
        team=tenant.team,
        data={
            "budget_period": "daily",
            "budget_limit_micros": limit,
            "alert_thresholds": list(thresholds),
            **extra,
        },
    )
    credits_grant(team=team, amount_micros=100 * CREDIT, reason="t", actor="t", idempotency_key="g")
    resets.budget_periods_reset_due(now=at(2026, 3, 4, 8))
    team.account.refresh_from_db()
    return team


def endpoint_for(tenant, url, **fields):
    return services.webhook_endpoint_create(
        actor="test", organization=tenant.org, url=url, **fields
    )


def one_delivery_pending(tenant, receiver) -> tuple[WebhookDelivery, str]:
    """An alert with one delivery queued, its task not run yet (no after-commit here)."""
    endpoint, secret = endpoint_for(tenant, receiver.url)
    team = budgeted(tenant)
    settle_usage(team, 6 * CREDIT, at(2026, 3, 4, 9))
    assert services.alerts_evaluate() == 1
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    return delivery, secret


def log(delivery) -> tuple:
    d = WebhookDelivery.objects.get(pk=delivery.pk)
    return d.status, d.attempts, d.last_status_code


@pytest.mark.django_db
def test_crossing_a_budget_threshold_notifies_once_per_period(
    tenant_a, receiver, mailoutbox, django_capture_on_commit_callbacks
):
    # given: a daily budget of 10 with alerts at 50% and 100%, a webhook endpoint
    _, secret = endpoint_for(tenant_a, receiver.url)
    team = budgeted(tenant_a)
    settle_usage(team, 4 * CREDIT, at(2026, 3, 4, 9))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.alerts_evaluate() == 0  # 40%: nothing yet
    # when: the spend passes 50%, and the evaluator keeps running
    settle_usage(team, 2 * CREDIT, at(2026, 3, 4, 10))
    with django_capture_on_commit_callbacks(execute=True):
        created = [services.alerts_evaluate() for _ in range(3)]
    # then: one alert, one email, one webhook
    assert created == [1, 0, 0]
    alert = Alert.objects.get()
    assert (alert.kind, alert.threshold, alert.period_start) == (
        "budget_threshold",
        50,
        at(2026, 3, 4),
    )
    assert [m.to for m in mailoutbox] == [[BILLING_EMAIL]]
    assert "reached 50% of its daily budget" in mailoutbox[0].subject
    assert "6.000000 of its 10.000000 daily budget" in mailoutbox[0].body
    assert Alert.objects.get().emailed_at is not None
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    assert headers["x-tollgate-event"] == "budget.threshold_crossed"
    assert webhooks.verify(secret, headers["x-tollgate-signature"], body)
    payload = json.loads(body)
    assert payload["id"] == alert.public_id
    assert payload["team"] == {"id": team.public_id, "name": team.name}
    assert payload["data"]["threshold_percent"] == 50
    assert payload["data"]["period_spend"] == "6.000000"
    assert payload["data"]["budget_limit"] == "10.000000"
    assert log(WebhookDelivery.objects.get()) == ("succeeded", 1, 200)
    assert AuditEvent.objects.filter(action="alert.budget_threshold").count() == 1
    # when: 100% is crossed, then the next day's period starts and reaches 50% again
    settle_usage(team, 4 * CREDIT, at(2026, 3, 4, 11))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.alerts_evaluate() == 1
    resets.budget_periods_reset_due(now=at(2026, 3, 5, 0, 0, 1))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.alerts_evaluate() == 0  # a new period: nothing spent
    settle_usage(team, 5 * CREDIT, at(2026, 3, 5, 9))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.alerts_evaluate() == 1
    # then
    assert list(Alert.objects.order_by("id").values_list("threshold", "period_start")) == [
        (50, at(2026, 3, 4)),
        (100, at(2026, 3, 4)),
        (50, at(2026, 3, 5)),
    ]
    assert len(mailoutbox) == len(receiver.requests) == 3


@pytest.mark.django_db
def test_a_balance_below_the_low_balance_line_notifies_once(
    tenant_a, mailoutbox, django_capture_on_commit_callbacks
):
    # given: no budget period; alert below 5 credits; 8 credits
    organization_update(actor="test", org=tenant_a.org, data={"billing_email": BILLING_EMAIL})
    team = team_update(
        actor="test", team=tenant_a.team, data={"low_balance_alert_micros": 5 * CREDIT}
    )
    credits_grant(team=team, amount_micros=8 * CREDIT, reason="t", actor="t", idempotency_key="g")
    assert services.alerts_evaluate() == 0
    # when: the balance falls to 4
    credits_adjust(team=team, amount_micros=-4 * CREDIT, reason="t", actor="t", idempotency_key="a")
    with django_capture_on_commit_callbacks(execute=True):
        created = [services.alerts_evaluate(now=at(2026, 3, d)) for d in (4, 20, 31)]
    # then: once this month
    assert created == [1, 0, 0]
    alert = Alert.objects.get()
    assert (alert.kind, alert.threshold, alert.period_start) == (
        "low_balance",
        5 * CREDIT,
        at(2026, 3, 1),
    )
    assert [m.subject for m in mailoutbox] == [
        f"[Tollgate] {team.name}: balance below 5.000000 credits"
    ]
    assert "is 4.000000 credits" in mailoutbox[0].body
    # and again in the next month, if it is still low
    assert services.alerts_evaluate(now=at(2026, 4, 1)) == 1


@pytest.mark.django_db
def test_an_organization_without_a_billing_email_gets_no_email(tenant_a, mailoutbox):
    team = team_update(actor="test", team=tenant_a.team, data={"low_balance_alert_micros": 1})
    assert services.alerts_evaluate() == 1
    assert Alert.objects.get(team=team).email_to == ""
    tasks.send_alert_email.apply(args=[Alert.objects.get().pk])
    assert mailoutbox == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluators_notify_each_crossing_once(tenant_a, receiver, mailoutbox):
    # given: three crossings at once (50%, 100%, low balance), eight evaluators racing
    endpoint_for(tenant_a, receiver.url)
    team = budgeted(tenant_a, low_balance_alert_micros=200 * CREDIT)
    settle_usage(team, 12 * CREDIT, at(2026, 3, 4, 9))

    def evaluator(_):
        return services.alerts_evaluate()

    # when
    created = race(evaluator, 8)
    # then
    assert sum(created) == 3
    assert Alert.objects.count() == 3
    assert WebhookDelivery.objects.count() == 3
    assert len(mailoutbox) == 3
    assert sorted(json.loads(body)["type"] for _, body in receiver.requests) == [
        "balance.low",
        "budget.threshold_crossed",
        "budget.threshold_crossed",
    ]


@pytest.mark.django_db
def test_a_webhook_that_fails_twice_then_succeeds_is_retried_with_backoff(tenant_a, receiver, api):
    # given: the receiver answers 503, then 500, then 200
    receiver.statuses = [503, 500]
    delivery, secret = one_delivery_pending(tenant_a, receiver)
    # when: the first attempt
    started = timezone.now()
    first = services.webhook_delivery_attempt(delivery_id=delivery.pk)
    # then: a retry in 30 s, recorded in the log
    assert first == 30
    d = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (d.status, d.attempts, d.last_status_code) == ("pending", 1, 503)
    assert d.last_error.startswith("HTTP 503")
    assert (
        started + timedelta(seconds=29) < d.next_attempt_at < timezone.now() + timedelta(seconds=31)
    )
    assert d.lease_until is None
    # when: the second and third attempts
    second = services.webhook_delivery_attempt(delivery_id=delivery.pk)
    third = services.webhook_delivery_attempt(delivery_id=delivery.pk)
    # then: backoff doubled, then delivered
    assert (second, third) == (60, None)
    d = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (d.status, d.attempts, d.last_status_code, d.last_error) == ("succeeded", 3, 200, "")
    assert d.delivered_at is not None and d.next_attempt_at is None
    # every attempt was the same delivery, signed with the endpoint's secret
    assert len(receiver.requests) == 3
    for headers, body in receiver.requests:
        assert headers["x-tollgate-delivery"] == d.public_id
        assert headers["content-type"] == "application/json"
        assert webhooks.verify(secret, headers["x-tollgate-signature"], body)
        assert json.loads(body) == d.payload
    # and the log is visible in the API, to the organization and the platform
    for client in (tenant_a.client, api):
        listed = client.get(f"/api/webhooks/{d.endpoint.public_id}/deliveries/").json()
        row = listed["results"][0]
        assert (row["id"], row["status"], row["attempts"], row["last_status_code"]) == (
            d.public_id,
            "succeeded",
            3,
            200,
        )
        assert row["alert"] == d.alert.public_id


@pytest.mark.django_db
def test_the_delivery_task_retries_until_delivered(tenant_a, receiver):
    receiver.statuses = [500, 502]
    delivery, _ = one_delivery_pending(tenant_a, receiver)
    # when: the task runs (eagerly here: each retry runs at once instead of after its countdown)
    tasks.deliver_webhook.apply(args=[delivery.pk])
    # then
    assert log(delivery) == ("succeeded", 3, 200)
    assert len(receiver.requests) == 3


@pytest.mark.django_db
def test_a_client_error_is_not_retried(tenant_a, receiver):
    receiver.statuses = [410]
    delivery, _ = one_delivery_pending(tenant_a, receiver)
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk) is None
    assert log(delivery) == ("failed", 1, 410)
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk) is None
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_a_network_error_is_retried(tenant_a, receiver):
    delivery, _ = one_delivery_pending(tenant_a, receiver)
    WebhookEndpoint.objects.update(url=f"http://127.0.0.1:{free_port()}/nobody-home")
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk) == 30
    d = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (d.status, d.attempts, d.last_status_code) == ("pending", 1, None)
    assert d.last_error.startswith("connection failed")


@pytest.mark.django_db
def test_a_delivery_gives_up_after_the_last_attempt(tenant_a, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    receiver.statuses = [500, 500, 500]
    delivery, _ = one_delivery_pending(tenant_a, receiver)
    results = [services.webhook_delivery_attempt(delivery_id=delivery.pk) for _ in range(3)]
    assert results == [30, None, None]
    assert log(delivery) == ("failed", 2, 500)
    assert WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at is None


@pytest.mark.django_db
def test_an_attempt_in_flight_is_not_repeated_by_a_duplicate_task(tenant_a, receiver):
    delivery, _ = one_delivery_pending(tenant_a, receiver)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        lease_until=timezone.now() + timedelta(seconds=60)
    )
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk) is None
    assert log(delivery) == ("pending", 0, None)
    assert receiver.requests == []


@pytest.mark.django_db
def test_private_destinations_are_refused_when_not_allowed(tenant_a, receiver, settings):
    delivery, _ = one_delivery_pending(tenant_a, receiver)
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk) is None
    d = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (d.status, d.attempts) == ("failed", 1)
    assert "non-public address" in d.last_error
    assert receiver.requests == []


@pytest.mark.django_db
def test_disabled_endpoints_get_nothing(tenant_a, receiver):
    # given: a delivery queued while the endpoint was enabled, then the endpoint disabled
    delivery, _ = one_delivery_pending(tenant_a, receiver)
    services.webhook_endpoint_update(
        actor="test", endpoint=delivery.endpoint, data={"enabled": False}
    )
    # when / then: the queued delivery is dropped, and new alerts queue nothing
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk) is None
    assert log(delivery) == ("failed", 1, None)
    settle_usage(delivery.alert.team, 5 * CREDIT, at(2026, 3, 4, 12))
    assert services.alerts_evaluate() == 1
    assert WebhookDelivery.objects.count() == 1
    assert receiver.requests == []


@pytest.mark.django_db
def test_a_delivery_whose_task_was_lost_is_queued_again(tenant_a, receiver):
    # given: a pending delivery long past due (its queued task never ran)
    delivery, _ = one_delivery_pending(tenant_a, receiver)
    assert services.webhook_deliveries_stuck() == []
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=10)
    )
    # when
    tasks.redeliver_stuck_webhooks.apply()
    # then
    assert log(delivery) == ("succeeded", 1, 200)


@pytest.mark.django_db
def test_a_failing_mail_server_is_recorded_and_retried(tenant_a, settings, mailoutbox):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens
    organization_update(actor="test", org=tenant_a.org, data={"billing_email": BILLING_EMAIL})
    team_update(actor="test", team=tenant_a.team, data={"low_balance_alert_micros": 1})
    services.alerts_evaluate()
    alert = Alert.objects.get()
    # when: every try fails (eagerly, the retries run at once)
    result = tasks.send_alert_email.apply(args=[alert.pk])
    # then
    assert result.failed()
    alert.refresh_from_db()
    assert alert.emailed_at is None
    assert alert.email_error.startswith("ConnectionRefusedError")


def test_signatures_verify_only_for_the_same_secret_body_and_a_recent_time():
    secret, body, now = "whsec_test", b'{"a": 1}', int(time.time())
    header = webhooks.sign(secret, now, body)
    assert header.startswith(f"t={now},v1=")
    assert webhooks.verify(secret, header, body)
    assert not webhooks.verify("whsec_other", header, body)
    assert not webhooks.verify(secret, header, body + b" ")
    assert not webhooks.verify(secret, webhooks.sign(secret, now - 600, body), body)
    assert not webhooks.verify(secret, "garbage", body)


@pytest.mark.django_db
def test_the_webhook_secret_is_shown_once_and_never_again(
    tenant_a, receiver, api, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    # given: an endpoint created through the API
    created = tenant_a.client.post("/api/webhooks/", {"url": receiver.url}, format="json")
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    wh = created.json()["id"]
    endpoint = WebhookEndpoint.objects.get(public_id=wh)
    assert decrypt(endpoint.secret_encrypted) == secret
    # when: it is used, read, changed, its secret rotated, its deliveries listed
    team = budgeted(tenant_a)
    settle_usage(team, 6 * CREDIT, at(2026, 3, 4, 9))
    with django_capture_on_commit_callbacks(execute=True):
        services.alerts_evaluate()
    headers, body = receiver.requests[0]
    assert webhooks.verify(secret, headers["x-tollgate-signature"], body)
    responses = [
        created,
        tenant_a.client.get("/api/webhooks/"),
        tenant_a.client.get(f"/api/webhooks/{wh}/"),
        tenant_a.client.patch(f"/api/webhooks/{wh}/", {"description": "ops"}, format="json"),
        tenant_a.client.get(f"/api/webhooks/{wh}/deliveries/"),
        api.get("/api/audit-events/"),
    ]
    rotated = tenant_a.client.post(f"/api/webhooks/{wh}/rotate-secret/")
    new_secret = rotated.json()["secret"]
    # then: the secret is in its creation answer only, never stored or logged in clear
    assert new_secret != secret and new_secret.startswith("whsec_")
    for response in responses[1:]:
        assert response.status_code == 200
        assert secret not in response.content.decode()
        assert "secret" not in json.dumps(response.json().get("results", response.json()))
    for response in (*responses, api.get("/api/audit-events/")):
        assert new_secret not in response.content.decode()
    with connection.cursor() as cursor:
        for table in ("alerts_webhookendpoint", "alerts_webhookdelivery", "orgs_auditevent"):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - our own table names
            rows = repr(cursor.fetchall())
            assert secret not in rows and new_secret not in rows
    assert secret not in caplog.text and new_secret not in caplog.text
    audit = AuditEvent.objects.get(action="webhook.rotate_secret")
    assert audit.changes == {"secret_encrypted": ["[redacted]", "[redacted]"]}
    # and the new secret signs from now on
    WebhookDelivery.objects.update(status="pending", lease_until=None)
    services.webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.get().pk)
    headers, body = receiver.requests[-1]
    assert webhooks.verify(new_secret, headers["x-tollgate-signature"], body)
    assert not webhooks.verify(secret, headers["x-tollgate-signature"], body)


@pytest.mark.django_db
def test_webhook_endpoints_are_managed_through_the_api(tenant_a):
    client = tenant_a.client
    created = client.post(
        "/api/webhooks/", {"url": "https://a.example/h", "description": "ops"}, format="json"
    ).json()
    wh = created["id"]
    assert created["enabled"] is True and created["organization"] == tenant_a.org.public_id
    patched = client.patch(f"/api/webhooks/{wh}/", {"enabled": False}, format="json")
    assert patched.json()["enabled"] is False
    assert client.get("/api/webhooks/", {"enabled": "false"}).json()["results"][0]["id"] == wh
    assert client.delete(f"/api/webhooks/{wh}/").status_code == 204
    assert client.get(f"/api/webhooks/{wh}/").status_code == 404
    actions = AuditEvent.objects.filter(object_id=wh).values_list("action", "actor")
    actor = f"admin_key:{tenant_a.admin_key.public_id}"
    assert sorted(actions) == [
        ("webhook.create", actor),
        ("webhook.delete", actor),
        ("webhook.update", actor),
    ]


@pytest.mark.django_db
def test_a_teams_alerts_are_listed_in_the_api(tenant_a, api):
    team = budgeted(tenant_a, low_balance_alert_micros=500 * CREDIT)
    settle_usage(team, 6 * CREDIT, at(2026, 3, 4, 9))
    services.alerts_evaluate()
    body = tenant_a.client.get(f"/api/teams/{team.public_id}/alerts/").json()
    rows = {row["kind"]: row for row in body["results"]}
    assert rows["budget_threshold"]["threshold"] == "50"
    assert rows["budget_threshold"]["data"]["period_spend"] == "6.000000"
    assert rows["low_balance"]["threshold"] == "500.000000"
    assert rows["low_balance"]["email_to"] == BILLING_EMAIL
    assert rows["low_balance"]["period_start"] == "2026-03-04T00:00:00Z"
    only_low = api.get(f"/api/teams/{team.public_id}/alerts/", {"kind": "low_balance"})
    assert [r["kind"] for r in only_low.json()["results"]] == ["low_balance"]


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionRefusedError(), True),
        (smtplib.SMTPServerDisconnected(), True),
        (smtplib.SMTPResponseException(451, b"try again later"), True),
        (smtplib.SMTPResponseException(550, b"mailbox unavailable"), False),
        (smtplib.SMTPRecipientsRefused({"x@a.example": (550, b"no")}), False),
    ],
)
def test_only_temporary_mail_failures_are_retried(error, retried):
    assert tasks._email_retryable(error) is retried


@pytest.mark.django_db
def test_a_broker_down_at_commit_loses_no_alert_and_the_sweep_sends_its_email_later(
    tenant_a, tenant_b, mailoutbox, monkeypatch, django_capture_on_commit_callbacks
):
    # given: two teams past 50% of their budget
    for tenant in (tenant_a, tenant_b):
        settle_usage(budgeted(tenant, thresholds=(50,)), 6 * CREDIT, at(2026, 3, 4, 9))
    # when: the broker refuses every task at commit
    with monkeypatch.context() as patch:
        patch.setattr(tasks.send_alert_email, "delay", broker_down)
        with django_capture_on_commit_callbacks(execute=True):
            created = services.alerts_evaluate()
    # then: both alerts are recorded (the first failed send did not end the round), no email
    assert created == 2
    assert mailoutbox == []
    # when: the broker is back; the sweep runs before the emails count as lost
    tasks.redeliver_stuck_webhooks.apply()
    # then: nothing yet (their tasks may still be queued)
    assert mailoutbox == []
    # when: they are older than STUCK_AFTER
    Alert.objects.update(created_at=timezone.now() - services.STUCK_AFTER - timedelta(seconds=1))
    assert services.alert_emails_lost(now=timezone.now() + services.EMAIL_GIVE_UP_AFTER) == []
    tasks.redeliver_stuck_webhooks.apply()
    tasks.redeliver_stuck_webhooks.apply()
    # then: each email is sent, once
    assert sorted(m.subject for m in mailoutbox) == [
        "[Tollgate] Team A reached 50% of its daily budget",
        "[Tollgate] Team B reached 50% of its daily budget",
    ]


def broker_down(*args, **kwargs):
    raise ConnectionRefusedError("the broker is down")
