from django.db import models
from django.db.models import Q

from core.ids import PublicIdField
from core.models import Stamped


class Team(Stamped):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"  # blocked by the operator (e.g. unpaid): 403 at the gateway
        PAUSED = "paused"  # stopped on purpose by the customer or operator: 403, own error type

    class BudgetPeriod(models.TextChoices):
        NONE = "none"
        DAILY = "daily"  # resets at 00:00 UTC
        WEEKLY = "weekly"  # resets Monday 00:00 UTC
        MONTHLY = "monthly"  # resets on the 1st, 00:00 UTC

    class LimitMode(models.TextChoices):
        HARD = "hard"  # calls past the period budget are refused
        SOFT = "soft"  # calls go through; the thresholds alert

    class PricingMode(models.TextChoices):
        MODEL_PRICES = "model_prices"  # each model's per-token prices (the default)
        COST_MARKUP = "cost_markup"  # provider cost (USD) x credits_per_usd
        PER_TOKENS = "per_tokens"  # price_per_unit for every tokens_per_unit tokens
        PER_JOB = "per_job"  # a flat price per completed job; calls outside a job are refused

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="teams"
    )
    public_id = PublicIdField(prefix="team")
    name = models.CharField(max_length=200)
    external_id = models.CharField(max_length=200, unique=True, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    model_groups = models.ManyToManyField(
        "modelgroups.ModelGroup", blank=True, related_name="teams"
    )

    # Rate limits; null = unlimited.
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    max_parallel_requests = models.PositiveIntegerField(null=True, blank=True)

    budget_period = models.CharField(
        max_length=16, choices=BudgetPeriod.choices, default=BudgetPeriod.NONE
    )
    # Micro-credits a team may spend per period; null = no period budget.
    budget_limit_micros = models.BigIntegerField(null=True, blank=True)
    budget_mode = models.CharField(max_length=8, choices=LimitMode.choices, default=LimitMode.HARD)
    # Percentages of the period budget that alert once per period each.
    alert_thresholds = models.JSONField(default=list, blank=True)
    # Micro-credits: a balance below this alerts once per period (see alerts.services);
    # null = no low-balance alert.
    low_balance_alert_micros = models.BigIntegerField(null=True, blank=True)
    # Micro-credits credited at each period start; null = no allowance.
    allowance_micros = models.BigIntegerField(null=True, blank=True)
    # False: unused allowance expires at the period end (an `expiry` ledger entry).
    allowance_rollover = models.BooleanField(default=False)

    pricing_mode = models.CharField(
        max_length=16, choices=PricingMode.choices, default=PricingMode.MODEL_PRICES
    )
    # cost_markup: micro-credits charged per USD of provider cost.
    credits_per_usd_micros = models.BigIntegerField(null=True, blank=True)
    # per_tokens: price_per_unit_micros for every tokens_per_unit tokens (input + output).
    tokens_per_unit = models.PositiveIntegerField(null=True, blank=True)
    price_per_unit_micros = models.BigIntegerField(null=True, blank=True)
    # per_job: the flat price of a completed job, and optional prices per job type.
    job_price_micros = models.BigIntegerField(null=True, blank=True)
    job_type_prices = models.JSONField(default=dict, blank=True)  # {job type: micro-credits}

    # Response cache: null inherits the model group's setting, 0 turns it off for this team.
    cache_ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    # Percentage of the normal price charged for an answer served from the cache.
    cache_hit_price_percent = models.PositiveSmallIntegerField(default=0)

    # Compliance logging: request and response bodies kept with each call for a period.
    log_bodies = models.BooleanField(default=False)
    log_retention_days = models.PositiveIntegerField(default=30)
    log_redact_patterns = models.JSONField(default=list, blank=True)  # regular expressions

    class Meta(Stamped.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="team_name_unique_in_org"
            ),
            models.CheckConstraint(
                condition=Q(budget_limit_micros__isnull=True) | Q(budget_limit_micros__gte=0),
                name="team_budget_limit_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(allowance_micros__isnull=True) | Q(allowance_micros__gte=0),
                name="team_allowance_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(cache_hit_price_percent__lte=100),
                name="team_cache_hit_price_percent_max_100",
            ),
            models.CheckConstraint(
                condition=Q(low_balance_alert_micros__isnull=True)
                | Q(low_balance_alert_micros__gte=0),
                name="team_low_balance_alert_non_negative",
            ),
        ]

    def __str__(self):
        return self.name


class VirtualKey(Stamped):
    """A customer's gateway credential. Only its hash is stored; the secret is shown once."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        REVOKED = "revoked"
        EXPIRED = "expired"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="keys")
    public_id = PublicIdField(prefix="key")
    name = models.CharField(max_length=200)
    key_prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    # After a rotation the previous secret keeps working until previous_valid_until.
    previous_key_hash = models.CharField(max_length=64, null=True, blank=True, unique=True)
    previous_valid_until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Restriction to a subset of the team's model groups; empty = everything the team may use.
    model_groups = models.ManyToManyField("modelgroups.ModelGroup", blank=True, related_name="+")
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    # Lifetime micro-credits this key may spend; null = bounded only by the team.
    budget_limit_micros = models.BigIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Set when a revoked or expired key's grace (GATEWAY_RETIRED_KEY_GRACE_SECONDS) is over: it
    # has left the gateway's live state and is never published again (it answers as unknown).
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta(Stamped.Meta):
        constraints = [
            models.CheckConstraint(
                condition=Q(budget_limit_micros__isnull=True) | Q(budget_limit_micros__gte=0),
                name="key_budget_limit_non_negative",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.key_prefix}…)"
