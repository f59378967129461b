from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Q, Sum

from core.ids import PublicIdField


class CreditAccount(models.Model):
    """A team's prepaid balance. Written only by billing.services.ledger_post."""

    team = models.OneToOneField("teams.Team", on_delete=models.PROTECT, related_name="account")
    # Micro-credits; equals the sum of the account's ledger entries' amount_micros.
    balance_micros = models.BigIntegerField(default=0)
    # Micro-credits an invoiced customer may go below zero; 0 for prepaid.
    overdraft_limit_micros = models.BigIntegerField(default=0)
    # Micro-credits of usage in the current budget period (reset at the period boundary).
    period_spend_micros = models.BigIntegerField(default=0)
    period_started_at = models.DateTimeField(null=True, blank=True)
    # Bumped on every change to the row, so the gateway's Redis copy only moves forward
    # (an older snapshot arriving late can never overwrite a newer one).
    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(overdraft_limit_micros__gte=0), name="overdraft_limit_non_negative"
            ),
            # The last line of defence: no code path may take a balance past its overdraft.
            models.CheckConstraint(
                condition=Q(balance_micros__gte=-F("overdraft_limit_micros")),
                name="balance_within_overdraft",
            ),
        ]

    def __str__(self):
        return f"account of team {self.team_id}"


class LedgerEntry(models.Model):
    """Append-only (a database trigger refuses UPDATE and DELETE): corrections are new entries."""

    class Kind(models.TextChoices):
        GRANT = "grant"
        USAGE = "usage"
        REFUND = "refund"
        ADJUSTMENT = "adjustment"
        ALLOWANCE = "allowance"
        EXPIRY = "expiry"
        JOB = "job"  # the flat price of a completed job (pricing mode per_job)

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Micro-credits, signed: positive credits the account, negative debits it.
    amount_micros = models.BigIntegerField()
    # Micro-credits: the account balance right after this entry.
    balance_after_micros = models.BigIntegerField()
    # Micro-USD the provider charged us for this usage (null for non-usage entries).
    cost_micros = models.BigIntegerField(null=True, blank=True)
    # Unique across the ledger: a retried grant or a re-delivered usage record posts once.
    idempotency_key = models.CharField(max_length=200, unique=True)
    actor = models.CharField(max_length=200)
    reason = models.CharField(max_length=500, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["account", "-id"])]

    def __str__(self):
        return f"{self.kind} {self.amount_micros} ({self.idempotency_key})"


# The counts of separately priced usage a call record carries, as the gateway's usage record
# names them ("cr", ...) and as the columns of UsageRecord and the roll-ups do. "in" and "out"
# (input_tokens, output_tokens) include the token kinds.
USAGE_COUNTS = {
    "cr": "cache_read_tokens",
    "cw": "cache_write_tokens",
    "rs": "reasoning_tokens",
    "ai": "audio_input_tokens",
    "ao": "audio_output_tokens",
    "img": "image_count",
    "ams": "audio_ms",
    "chr": "characters",
}


class UsageRecord(models.Model):
    """One metered gateway call: the raw record behind the usage API and usage entries.

    Partitioned by month of created_at (migration 0007, billing.partitions): retention drops
    whole months. The primary key in Postgres is (id, created_at); Django addresses rows by
    id, which one sequence keeps unique. The settler posts a batch's records per team as one
    ledger entry; the call's own charge is its price_micros."""

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"  # the gateway or the upstream failed (after every fallback)
        REJECTED = "rejected"  # the upstream refused the request itself (a 4xx, passed on)
        # Its gateway died (or restarted) mid-call: charged for what the client had received.
        INTERRUPTED = "interrupted"

    # Unique with created_at (the gateway's timestamp of the call, the same on every delivery
    # of its record): a unique key on a partitioned table must include the partition key.
    request_id = models.CharField(max_length=64)
    # No index of their own: (organization, created_at) and (team, created_at) below lead with
    # them, and every index costs each settled call an insert.
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    team = models.ForeignKey(
        "teams.Team", on_delete=models.PROTECT, related_name="usage", db_index=False
    )
    key = models.ForeignKey(
        "teams.VirtualKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage"
    )
    model = models.CharField(max_length=200)  # the model that served the call
    model_group = models.CharField(max_length=200, blank=True)
    input_tokens = models.BigIntegerField(default=0)  # all of them, the kinds below included
    output_tokens = models.BigIntegerField(default=0)  # all of them, the kinds below included
    # What the call used of each separately priced kind (the gateway's "cr", "cw", ... keys).
    # A database default too: a settler of the release before writes none of them.
    cache_read_tokens = models.BigIntegerField(default=0, db_default=0)
    cache_write_tokens = models.BigIntegerField(default=0, db_default=0)
    reasoning_tokens = models.BigIntegerField(default=0, db_default=0)
    audio_input_tokens = models.BigIntegerField(default=0, db_default=0)
    audio_output_tokens = models.BigIntegerField(default=0, db_default=0)
    image_count = models.BigIntegerField(default=0, db_default=0)  # images generated
    audio_ms = models.BigIntegerField(default=0, db_default=0)  # audio transcribed, milliseconds
    characters = models.BigIntegerField(default=0, db_default=0)  # speech input characters
    cost_micros = models.BigIntegerField(default=0)  # micro-USD paid to the provider
    price_micros = models.BigIntegerField(default=0)  # micro-credits charged to the team
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OK)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    cache_hit = models.BooleanField(default=False)  # answered from the response cache
    job = models.ForeignKey(
        "billing.Job", null=True, blank=True, on_delete=models.PROTECT, related_name="calls"
    )
    # The usage entry that debited this call (with the batch's other calls of the team); none
    # when nothing was charged. No database constraint: entries are never deleted (append-only)
    # and the settler writes both in one transaction, so a per-row check would only cost.
    ledger_entry = models.ForeignKey(
        LedgerEntry,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="calls",
    )
    # Who the call was for (the OpenAI `user` field, or Messages' metadata.user_id) and the
    # caller's tags (metadata.tags, x-tollgate-tags): proxy/attribution.py bounds both.
    end_user = models.CharField(max_length=256, blank=True, default="", db_default="")
    tags = ArrayField(models.CharField(max_length=64), blank=True, default=list)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "created_at"], name="usage_record_unique_call"
            )
        ]
        indexes = [
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["organization", "created_at"]),
        ]

    def __str__(self):
        return self.request_id


class Job(models.Model):
    """A customer's business operation: the calls made for it are priced and reported together.

    Opened and closed by the gateway in Redis (where admission checks it); this row is the
    settled, durable copy written by the usage settler from the same stream."""

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"  # left open past GATEWAY_JOB_TTL_SECONDS

    public_id = PublicIdField(prefix="job")
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+"
    )
    team = models.ForeignKey("teams.Team", on_delete=models.PROTECT, related_name="jobs")
    key = models.ForeignKey(
        "teams.VirtualKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    job_type = models.CharField(max_length=100)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    # per_job pricing: the flat price reserved at opening, and what closing charged.
    fee_micros = models.BigIntegerField(default=0)
    charged_micros = models.BigIntegerField(default=0)
    created_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["team", "-id"])]

    def __str__(self):
        return self.public_id


class CallLog(models.Model):
    """Compliance logging: a call's request and response bodies, redacted, kept until expiry."""

    request_id = models.CharField(max_length=64, unique=True)
    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="+")
    request_body = models.TextField()
    response_body = models.TextField()
    truncated = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return self.request_id


class UsageRollup(models.Model):
    """Usage summed per bucket and (organization, team, key, model, model group).

    Written only by billing.rollups (a whole team-hour recomputed from raw records at a time);
    the usage API reads these plus the raw records of team-hours still pending."""

    period_start = models.DateTimeField()  # UTC start of the hour (hourly) or day (daily)
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, related_name="+"
    )
    team = models.ForeignKey("teams.Team", on_delete=models.PROTECT, related_name="+")
    key = models.ForeignKey(
        "teams.VirtualKey", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model = models.CharField(max_length=200)
    model_group = models.CharField(max_length=200, blank=True)
    requests = models.BigIntegerField()
    errors = models.BigIntegerField()  # calls whose status is not ok
    cache_hits = models.BigIntegerField()
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    # Sums of the records' columns of the same names (a database default for the roll-up
    # worker of the release before).
    cache_read_tokens = models.BigIntegerField(default=0, db_default=0)
    cache_write_tokens = models.BigIntegerField(default=0, db_default=0)
    reasoning_tokens = models.BigIntegerField(default=0, db_default=0)
    audio_input_tokens = models.BigIntegerField(default=0, db_default=0)
    audio_output_tokens = models.BigIntegerField(default=0, db_default=0)
    image_count = models.BigIntegerField(default=0, db_default=0)
    audio_ms = models.BigIntegerField(default=0, db_default=0)
    characters = models.BigIntegerField(default=0, db_default=0)
    cost_micros = models.BigIntegerField()  # micro-USD paid to providers
    price_micros = models.BigIntegerField()  # micro-credits charged

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.period_start:%Y-%m-%d %H:00} team {self.team_id} {self.model}"


def _one_row_per_group(name: str) -> models.UniqueConstraint:
    # A NULL key (a call without a key) is one group, not one group per row.
    return models.UniqueConstraint(
        fields=["team", "period_start", "organization", "key", "model", "model_group"],
        name=name,
        nulls_distinct=False,
    )


class UsageHourly(UsageRollup):
    class Meta:
        constraints = [_one_row_per_group("usage_hourly_unique_group")]
        indexes = [models.Index(fields=["organization", "period_start"])]


class UsageDaily(UsageRollup):
    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "period_start", "organization", "key", "model", "model_group"],
                name="usage_daily_unique_group",
                nulls_distinct=False,
            )
        ]
        indexes = [models.Index(fields=["organization", "period_start"])]


class UsageRollupPending(models.Model):
    """A team-hour whose raw records changed since it was last rolled up.

    Marked by a database trigger in the same transaction as any insert into (or update of)
    billing_usagerecord, so "not pending" always means "the roll-up rows are exact"."""

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()  # UTC start of the hour
    marked_at = models.DateTimeField()  # the last change; informational

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "hour"], name="usage_rollup_pending_unique")
        ]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self):
        return f"team {self.team_id} {self.hour:%Y-%m-%d %H:00}"


class RefusalHourly(models.Model):
    """Calls the gateway refused (answered with an error) per hour and (team, key, model asked,
    reason): moved here from the gateways' per-minute Redis counts by billing.refusals, each
    minute bucket added once. No team (and no organization) for calls whose key was not
    recognised (missing or invalid). Refusals are statistics, not money: they go with their
    team or key."""

    period_start = models.DateTimeField()  # UTC start of the hour
    organization = models.ForeignKey(
        "orgs.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    key = models.ForeignKey(
        "teams.VirtualKey", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    model = models.CharField(max_length=200, blank=True)  # as asked; empty when not read yet
    reason = models.CharField(max_length=64)  # the error's code, e.g. budget_exceeded
    count = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period_start", "team", "key", "model", "reason"],
                name="refusal_hourly_unique_group",
                nulls_distinct=False,
            ),
            models.CheckConstraint(condition=Q(count__gte=0), name="refusal_hourly_count_gte_0"),
        ]
        indexes = [
            models.Index(fields=["team", "period_start"]),
            models.Index(fields=["organization", "period_start"]),
        ]

    def __str__(self):
        return f"{self.reason} x{self.count} team {self.team_id} {self.period_start:%Y-%m-%d %H:00}"


class RefusalBucketDrained(models.Model):
    """A claimed Redis bucket of refusal counts whose counts are in RefusalHourly: inserted in
    the same transaction as the counts, so a worker that dies after the commit and before the
    bucket's deletion cannot add it again (billing.refusals). Kept past the buckets' expiry."""

    bucket = models.CharField(max_length=200, unique=True)
    drained_at = models.DateTimeField(db_index=True)

    def __str__(self):
        return self.bucket


def key_settled_spend(team_id: int) -> dict[int, int]:
    """Micro-credits each of the team's keys has been charged, as settled in Postgres.

    A read over two of this module's tables that the gateway mirror needs to rebuild an
    account (mirrors sit below the selectors), so it lives with the models."""
    spend: dict[int, int] = {}
    for key_id, total in (
        UsageRecord.objects.filter(team_id=team_id, key__isnull=False)
        .values_list("key")
        .annotate(total=Sum("price_micros"))
    ):
        spend[key_id] = total
    for key_id, total in (
        Job.objects.filter(team_id=team_id, key__isnull=False)
        .values_list("key")
        .annotate(total=Sum("charged_micros"))
    ):
        spend[key_id] = spend.get(key_id, 0) + total
    return spend
