"""Budget and low-balance alerts, their email, and signed webhook deliveries.

Evaluation (alerts.tasks.evaluate_alerts, every 30 s) reads settled data: the accounts'
period spend and balance in Postgres. A team is alerted at most once per period per threshold:

- budget_threshold: for each percentage in Team.alert_thresholds, when the period spend
  reaches it of the period budget. The period is the account's current one
  (CreditAccount.period_started_at), so a reset re-arms every threshold.
- low_balance: when the balance is below Team.low_balance_alert_micros. The period is the
  team's budget period; a team without one is alerted at most once per calendar month (UTC)
  per line. A new line value is a new threshold.

"At most once" holds under concurrent evaluators through the unique constraint on
(team, period_start, kind, threshold): the alert row, its webhook deliveries and the queued
email commit together or not at all. Notifications go out after commit, from tasks: an email
to the organization's billing_email and a delivery to each enabled webhook endpoint of the
organization. Emails are sent at least once (a worker dying between sending and recording
may send one twice); webhooks carry a stable delivery id for receivers to deduplicate. A task
that could not be queued (the broker down at commit) is queued again by the sweep
(alerts.tasks.redeliver_stuck_webhooks): deliveries still pending, and emails never tried,
once they are STUCK_AFTER old (an email older than EMAIL_GIVE_UP_AFTER is no longer news).
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from alerts import rules, webhooks
from alerts.models import Alert, WebhookDelivery, WebhookEndpoint
from billing.models import CreditAccount
from billing.periods import period_start
from core.errors import Conflict
from core.money import format_micros
from core.secrets import decrypt, encrypt, generate_secret
from core.tasks import enqueue_on_commit
from orgs.services import apply_changes, audit_deletion, audit_record

logger = logging.getLogger(__name__)

ACTOR = "system:alerts"
EVENT_TYPES = {
    Alert.Kind.BUDGET_THRESHOLD: "budget.threshold_crossed",
    Alert.Kind.LOW_BALANCE: "balance.low",
}
# An attempt holds its delivery this long: more than the task's hard time limit.
ATTEMPT_LEASE = timedelta(seconds=120)
# A pending delivery this far past its due time lost its queued task (a broker restart, a
# worker killed between commit and enqueue): the sweeper queues it again.
STUCK_AFTER = timedelta(minutes=5)
EMAIL_GIVE_UP_AFTER = timedelta(days=1)


# --- webhook endpoints (admin API) ------------------------------------------------------


def webhook_endpoint_create(
    *, actor: str, organization, url: str, description: str = "", enabled: bool = True
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint. Returns it and its signing secret, which is never shown again."""
    rules.validate_webhook({"url": url, "description": description})
    secret = generate_secret(webhooks.SIGNING_PREFIX)
    with transaction.atomic(durable=True):
        endpoint = WebhookEndpoint.objects.create(
            organization=organization,
            url=url,
            description=description,
            enabled=enabled,
            secret_encrypted=encrypt(secret),
        )
        audit_record(
            actor=actor,
            action="webhook.create",
            obj=endpoint,
            organization_id=organization.pk,
            changes={"url": [None, url], "enabled": [None, enabled]},
        )
    return endpoint, secret


def webhook_endpoint_update(*, actor: str, endpoint: WebhookEndpoint, data: dict):
    """Change an endpoint's URL, description or enabled flag."""
    rules.validate_webhook(data)
    with transaction.atomic(durable=True):
        apply_changes(
            obj=endpoint,
            actor=actor,
            action="webhook.update",
            organization_id=endpoint.organization_id,
            data=data,
        )
    return endpoint


def webhook_endpoint_rotate_secret(*, actor: str, endpoint: WebhookEndpoint):
    """Replace the signing secret at once. Returns (endpoint, new secret), shown once."""
    secret = generate_secret(webhooks.SIGNING_PREFIX)
    with transaction.atomic(durable=True):
        apply_changes(
            obj=endpoint,
            actor=actor,
            action="webhook.rotate_secret",
            organization_id=endpoint.organization_id,
            data={"secret_encrypted": encrypt(secret)},
        )
    return endpoint, secret


def webhook_endpoint_delete(*, actor: str, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint and its delivery log; pending deliveries are dropped."""
    with transaction.atomic(durable=True):
        audit_deletion(
            actor=actor,
            action="webhook.delete",
            obj=endpoint,
            organization_id=endpoint.organization_id,
            field="url",
        )
        endpoint.delete()


# --- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossing:
    account: CreditAccount
    kind: str
    threshold: int
    period_start: datetime

    @property
    def key(self) -> tuple:
        return (self.account.team_id, self.period_start, self.kind, self.threshold)


def _crossings(account: CreditAccount, now: datetime) -> list[Crossing]:
    team = account.team
    found = []
    limit = team.budget_limit_micros
    if team.budget_period != "none" and limit and account.period_started_at is not None:
        spend = account.period_spend_micros
        for percent in sorted(set(team.alert_thresholds or ())):
            if spend * 100 >= percent * limit:  # integers: no rounding at the edge
                found.append(
                    Crossing(
                        account, Alert.Kind.BUDGET_THRESHOLD, percent, account.period_started_at
                    )
                )
    line = team.low_balance_alert_micros
    if line is not None and account.balance_micros < line:
        if team.budget_period != "none":
            window = account.period_started_at or period_start(now, team.budget_period)
        else:
            window = period_start(now, "monthly")
        found.append(Crossing(account, Alert.Kind.LOW_BALANCE, line, window))
    return found


def _candidates():
    """Accounts that may have crossed something; _crossings decides. One query for all."""
    low = Q(team__low_balance_alert_micros__isnull=False) & Q(
        balance_micros__lt=F("team__low_balance_alert_micros")
    )
    budget = (
        ~Q(team__budget_period="none")
        & Q(team__budget_limit_micros__gt=0, period_started_at__isnull=False)
        & Q(period_spend_micros__gt=0)
    )
    return CreditAccount.objects.filter(low | budget).select_related("team__organization")


def alerts_evaluate(*, now: datetime | None = None) -> int:
    """Record and notify every threshold crossed and not yet alerted; returns how many."""
    now = now or timezone.now()
    crossings = [c for account in _candidates() for c in _crossings(account, now)]
    if not crossings:
        return 0
    earliest = min(c.period_start for c in crossings)
    existing = set(
        Alert.objects.filter(
            team_id__in={c.account.team_id for c in crossings}, period_start__gte=earliest
        ).values_list("team_id", "period_start", "kind", "threshold")
    )
    created = 0
    for crossing in crossings:
        if crossing.key not in existing and _alert_create(crossing, now) is not None:
            created += 1
    return created


def _alert_data(crossing: Crossing) -> dict:
    account, team = crossing.account, crossing.account.team
    data = {
        "balance_micros": account.balance_micros,
        "period_started_at": account.period_started_at and account.period_started_at.isoformat(),
    }
    if crossing.kind == Alert.Kind.BUDGET_THRESHOLD:
        data |= {
            "threshold_percent": crossing.threshold,
            "budget_period": team.budget_period,
            "budget_limit_micros": team.budget_limit_micros,
            "period_spend_micros": account.period_spend_micros,
        }
    else:
        data["low_balance_alert_micros"] = crossing.threshold
    return data


def alert_figures(alert: Alert) -> dict:
    """The figures at the crossing, money as exact decimal strings (as in the admin API)."""
    return {
        key.removesuffix("_micros"): format_micros(value) if key.endswith("_micros") else value
        for key, value in alert.data.items()
    }


def webhook_payload(alert: Alert) -> dict:
    """The JSON body POSTed to endpoints."""
    return {
        "id": alert.public_id,
        "type": EVENT_TYPES[alert.kind],
        "created_at": alert.created_at.isoformat(),
        "organization": alert.organization.public_id,
        "team": {"id": alert.team.public_id, "name": alert.team.name},
        "data": alert_figures(alert),
    }


def _alert_create(crossing: Crossing, now: datetime) -> Alert | None:
    team = crossing.account.team
    org = team.organization
    try:
        with transaction.atomic(durable=True):
            alert = Alert.objects.create(
                organization=org,
                team=team,
                kind=crossing.kind,
                threshold=crossing.threshold,
                period_start=crossing.period_start,
                data=_alert_data(crossing),
                email_to=org.billing_email,
            )
            payload = webhook_payload(alert)
            deliveries = WebhookDelivery.objects.bulk_create(
                WebhookDelivery(
                    endpoint=endpoint,
                    alert=alert,
                    event_type=payload["type"],
                    payload=payload,
                    next_attempt_at=now,
                )
                for endpoint in WebhookEndpoint.objects.filter(organization=org, enabled=True)
            )
            audit_record(
                actor=ACTOR,
                action=f"alert.{crossing.kind}",
                obj=alert,
                organization_id=org.pk,
                changes={"team": [None, team.public_id], "threshold": [None, crossing.threshold]},
            )
            if alert.email_to:
                enqueue_on_commit("alerts.tasks.send_alert_email", alert.pk)
            for delivery in deliveries:
                enqueue_on_commit("alerts.tasks.deliver_webhook", delivery.pk)
    except IntegrityError:
        return None  # a concurrent evaluator recorded this crossing first
    return alert


# --- email --------------------------------------------------------------------------------


def _email_text(alert: Alert) -> tuple[str, str]:
    team, data = alert.team, alert.data
    balance = format_micros(data["balance_micros"])
    if alert.kind == Alert.Kind.BUDGET_THRESHOLD:
        subject = (
            f"[Tollgate] {team.name} reached {alert.threshold}% of its "
            f"{data['budget_period']} budget"
        )
        body = (
            f"Team {team.name} ({team.public_id}) has spent "
            f"{format_micros(data['period_spend_micros'])} of its "
            f"{format_micros(data['budget_limit_micros'])} {data['budget_period']} budget "
            f"in the period that started {data['period_started_at']}.\n"
            f"Balance: {balance} credits.\n"
        )
    else:
        line = format_micros(alert.threshold)
        subject = f"[Tollgate] {team.name}: balance below {line} credits"
        body = (
            f"The balance of team {team.name} ({team.public_id}) is {balance} credits, "
            f"below the alert line of {line}.\n"
        )
    return subject, body


def alert_email_send(*, alert_id: int) -> bool:
    """Email an alert to its recipient unless already sent; raises on a mail failure."""
    alert = Alert.objects.select_related("team", "organization").get(pk=alert_id)
    if alert.emailed_at is not None or not alert.email_to:
        return False
    subject, body = _email_text(alert)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [alert.email_to])
    Alert.objects.filter(pk=alert.pk).update(emailed_at=timezone.now(), email_error="")
    return True


def alert_email_failed(*, alert_id: int, error: str) -> None:
    """Record why an alert's email could not be sent (its task retries what is retryable)."""
    Alert.objects.filter(pk=alert_id).update(email_error=error[:500])


def alert_emails_lost(*, now: datetime | None = None) -> list[int]:
    """Alerts whose email was never tried, long after they were recorded: its task was lost."""
    now = now or timezone.now()
    return list(
        Alert.objects.filter(
            emailed_at__isnull=True,
            email_error="",
            created_at__lt=now - STUCK_AFTER,
            created_at__gte=now - EMAIL_GIVE_UP_AFTER,
        )
        .exclude(email_to="")
        .order_by("pk")
        .values_list("pk", flat=True)[:1000]
    )


# --- webhook deliveries -------------------------------------------------------------------


def retry_delay(attempts: int) -> int:
    """Seconds before attempt `attempts + 1`: exponential from WEBHOOK_RETRY_BASE_SECONDS."""
    return settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempts - 1)


def webhook_delivery_attempt(*, delivery_id: int) -> int | None:
    """Make one attempt at a pending delivery. Returns the seconds until the next attempt
    when one is due, else None (delivered, given up, or another worker holds it)."""
    now = timezone.now()
    # The claim: one conditional UPDATE, so two tasks for one delivery never attempt at once.
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(attempts=F("attempts") + 1, lease_until=now + ATTEMPT_LEASE, updated_at=now)
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        _record(delivery, webhooks.SendResult(False, False, None, "The endpoint is disabled."))
        return None
    result = webhooks.send(
        endpoint.url,
        secret=decrypt(endpoint.secret_encrypted),
        body=orjson.dumps(delivery.payload),
        event_type=delivery.event_type,
        delivery_id=delivery.public_id,
    )
    return _record(delivery, result)


def _record(delivery: WebhookDelivery, result: webhooks.SendResult) -> int | None:
    now = timezone.now()
    fields = {
        "last_status_code": result.status_code,
        "last_error": result.error[:500],
        "lease_until": None,
        "updated_at": now,
    }
    retry_in = None
    if result.ok:
        fields |= {
            "status": WebhookDelivery.Status.SUCCEEDED,
            "delivered_at": now,
            "next_attempt_at": None,
        }
    elif result.retryable and delivery.attempts < settings.WEBHOOK_MAX_ATTEMPTS:
        retry_in = retry_delay(delivery.attempts)
        fields["next_attempt_at"] = now + timedelta(seconds=retry_in)
    else:
        fields |= {"status": WebhookDelivery.Status.FAILED, "next_attempt_at": None}
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    logger.info(
        "webhook delivery %s attempt %d: %s",
        delivery.public_id,
        delivery.attempts,
        "delivered" if result.ok else result.error or "failed",
    )
    return retry_in


def webhook_delivery_resend(*, actor: str, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a failed delivery again (an operator fixed the receiver): it is pending again with
    a fresh run of attempts, and queued after commit. The same delivery id goes out, so a
    receiver that did get it after all deduplicates it.

    Refused for a delivery that succeeded (it arrived) or is still pending (it is being
    retried already). The reopening is one conditional UPDATE from failed, so two operators
    clicking at once queue it once."""
    with transaction.atomic(durable=True):
        now = timezone.now()
        reopened = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDelivery.Status.FAILED
        ).update(
            status=WebhookDelivery.Status.PENDING,
            attempts=0,
            next_attempt_at=now,
            lease_until=None,
            updated_at=now,
        )
        if not reopened:
            delivery.refresh_from_db()
            if delivery.status == WebhookDelivery.Status.SUCCEEDED:
                raise Conflict(
                    f"Delivery {delivery.public_id} succeeded: the endpoint has it; "
                    "nothing to send again."
                )
            raise Conflict(
                f"Delivery {delivery.public_id} is {delivery.status}: it is retried already; "
                "only a failed delivery can be sent again."
            )
        previous = {"attempts": delivery.attempts, "last_error": delivery.last_error}
        delivery.refresh_from_db()
        audit_record(
            actor=actor,
            action="webhook.redeliver",
            obj=delivery,
            organization_id=delivery.endpoint.organization_id,
            changes={
                "status": [WebhookDelivery.Status.FAILED, WebhookDelivery.Status.PENDING],
                "attempts": [previous["attempts"], 0],
            },
        )
        enqueue_on_commit("alerts.tasks.deliver_webhook", delivery.pk)
    return delivery


def webhook_deliveries_stuck(*, now: datetime | None = None) -> list[int]:
    """Pending deliveries long past due and not in flight: their queued task was lost."""
    now = now or timezone.now()
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=now - STUCK_AFTER
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:1000]
    )
