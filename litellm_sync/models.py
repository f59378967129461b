from django.db import models
from django.db.models import Q

# Spend rows of calls made through the gateway carry our request id as litellm_call_id.
GATEWAY_ID_PREFIX = "req_"
# Usage records written here for calls made to LiteLLM directly (not through the gateway).
DIRECT_RECORD_PREFIX = "llm_"


class SyncState(models.TextChoices):
    PENDING = "pending"  # a change waits to be pushed
    SYNCED = "synced"  # LiteLLM has the latest desired state
    FAILED = "failed"  # the last push failed: retried at next_retry_at, or needs an operator


class SyncRecord(models.Model):
    """How far LiteLLM is behind one of our objects.

    Every change to the object bumps desired_version in the change's own transaction; a push
    reads the object as it is then, sends the whole of it, and records the version it read in
    synced_version with a conditional UPDATE. So pushes may be retried, duplicated or raced:
    the latest state wins and a stale push can never mark a newer version synced."""

    desired_version = models.BigIntegerField(default=1)
    synced_version = models.BigIntegerField(default=0)
    state = models.CharField(max_length=8, choices=SyncState.choices, default=SyncState.PENDING)
    last_error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)  # consecutive failed pushes
    # When the next automatic retry is due; null with state failed: only a change, the
    # periodic full resync or an operator will try again (the error was not retryable).
    next_retry_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=Q(synced_version__lte=models.F("desired_version")),
                name="%(class)s_synced_not_ahead",
            )
        ]


def _due_index(name: str) -> models.Index:
    """The push worker's queue: the records not in sync, by when they are next tried."""
    return models.Index(fields=["next_retry_at"], condition=~Q(state="synced"), name=name)


class TeamSync(SyncRecord):
    """A team mirrored as a LiteLLM team (team_id = the team's public id)."""

    # Null once the team is deleted here: the row then stands for "delete it in LiteLLM",
    # and goes away when that is done.
    team = models.OneToOneField(
        "teams.Team", null=True, on_delete=models.SET_NULL, related_name="litellm_sync"
    )
    litellm_team_id = models.CharField(max_length=64, unique=True)
    # What the last successful push sent, to notice when usage or the catalog moved it.
    pushed_account_version = models.BigIntegerField(null=True, blank=True)
    pushed_models = models.JSONField(null=True, blank=True)

    class Meta(SyncRecord.Meta):
        indexes = [_due_index("teamsync_due")]

    def __str__(self):
        return f"LiteLLM team {self.litellm_team_id} ({self.state})"


class KeySync(SyncRecord):
    """A virtual key mirrored as LiteLLM keys with the same secret value: its current secret,
    and during a rotation's grace period also the previous one."""

    key = models.OneToOneField(
        "teams.VirtualKey", on_delete=models.CASCADE, related_name="litellm_sync"
    )
    # SHA-256 hashes of the secrets that exist in LiteLLM because we created them.
    litellm_hashes = models.JSONField(default=list, blank=True)
    # {key hash: Fernet token of the secret} for secrets LiteLLM does not have yet. LiteLLM
    # needs the plaintext once, to create the key; the entry is wiped after that first
    # successful push (kept for the key's life only with LITELLM_MISSING_KEY_ACTION=recreate).
    secrets_encrypted = models.JSONField(default=dict, blank=True)
    pushed_models = models.JSONField(null=True, blank=True)

    class Meta(SyncRecord.Meta):
        indexes = [_due_index("keysync_due")]

    def __str__(self):
        return f"LiteLLM copy of key {self.key_id} ({self.state})"


class SpendLog(models.Model):
    """One row of LiteLLM's spend log, pulled by the reconciler (deduplicated on request_id).

    Calls our gateway made carry our request id as call_id (x-litellm-call-id): they are
    matched to our usage records. Any other call reached LiteLLM directly with one of our keys
    and is charged to the team's credits from this row, once (ledger key litellm:<request_id>)."""

    request_id = models.CharField(max_length=255, unique=True)  # LiteLLM's
    call_id = models.CharField(max_length=255, db_index=True)
    key_hash = models.CharField(max_length=64, blank=True)
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    key = models.ForeignKey(
        "teams.VirtualKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=200, blank=True)  # LiteLLM's model group name
    # Micro-USD LiteLLM computed for the call.
    spend_micros = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    status = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField(db_index=True)
    via_gateway = models.BooleanField(default=False)
    # Micro-credits charged for a direct call; null: not charged (a gateway call, no team,
    # or a failed call).
    charged_micros = models.BigIntegerField(null=True, blank=True)
    pulled_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["team", "started_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(spend_micros__gte=0), name="litellm_spend_non_negative"
            ),
        ]

    def __str__(self):
        return self.request_id


class SpendCursor(models.Model):
    """How far LiteLLM's spend log has been read (one row): the next pull starts an overlap
    before it, since LiteLLM writes rows late and filters on the request's start."""

    name = models.CharField(max_length=32, unique=True)
    pulled_until = models.DateTimeField()

    def __str__(self):
        return f"{self.name} until {self.pulled_until}"


class ModelImport(models.Model):
    """A model imported from LiteLLM's /model/info, and the values it was imported with: a
    model whose fields no longer match them was edited here, and is never overwritten by a
    later import unless the admin asks for it by name."""

    model = models.OneToOneField(
        "modelgroups.Model", on_delete=models.CASCADE, related_name="litellm_import"
    )
    litellm_model = models.CharField(max_length=200)
    imported = models.JSONField()  # {field: value} as last written by an import
    imported_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.litellm_model} -> {self.model_id}"
