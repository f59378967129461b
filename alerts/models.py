from django.db import models
from django.db.models import Q

from core.ids import PublicIdField
from core.models import Stamped


class Alert(models.Model):
    """A budget threshold or low-balance line a team crossed: at most one per team, period
    and threshold (a unique constraint, so concurrent evaluators cannot both notify)."""

    class Kind(models.TextChoices):
        BUDGET_THRESHOLD = "budget_threshold"
        LOW_BALANCE = "low_balance"

    public_id = PublicIdField(prefix="alert")
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, related_name="+"
    )
    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # budget_threshold: a percentage of the period budget; low_balance: the line, micro-credits.
    threshold = models.BigIntegerField()
    # The period the alert belongs to: it fires again for the same threshold only in another.
    period_start = models.DateTimeField()
    # The figures at the crossing (money as micro-credits), as sent in the webhook payload.
    data = models.JSONField(default=dict)
    email_to = models.CharField(max_length=254, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    email_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "period_start", "kind", "threshold"],
                name="alert_once_per_team_period_threshold",
            ),
        ]

    def __str__(self):
        return f"{self.kind} {self.threshold} of team {self.team_id}"


class WebhookEndpoint(Stamped):
    """Where an organization's alerts are POSTed, signed with the endpoint's secret."""

    public_id = PublicIdField(prefix="wh")
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    # Fernet token (core.secrets.encrypt) of the signing secret: shown once, never returned.
    secret_encrypted = models.TextField()
    enabled = models.BooleanField(default=True)

    def __str__(self):
        return self.url


class WebhookDelivery(Stamped):
    """One event for one endpoint, with its attempts: the delivery log."""

    class Status(models.TextChoices):
        PENDING = "pending"  # not delivered yet; next_attempt_at says when it is retried
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # gave up: a terminal answer, or out of attempts

    public_id = PublicIdField(prefix="whd")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # An attempt in flight holds the delivery until then, so a duplicate task cannot send the
    # same attempt concurrently; a worker that died mid-attempt lets it go when it passes.
    lease_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta(Stamped.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "alert"], name="webhook_delivery_once_per_alert"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhook_delivery_pending",
            ),
        ]

    def __str__(self):
        return f"{self.event_type} to {self.endpoint_id} ({self.status})"
