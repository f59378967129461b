from django.db import models

from core.ids import PublicIdField
from core.models import Stamped


class Organization(Stamped):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    public_id = PublicIdField(prefix="org")
    name = models.CharField(max_length=200, unique=True)
    # The operator's own id for this customer: lets their system create idempotently.
    external_id = models.CharField(max_length=200, unique=True, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Where budget and low-balance alerts of the organization's teams are emailed; blank: none.
    billing_email = models.EmailField(blank=True)

    def __str__(self):
        return self.name


class AdminKey(models.Model):
    """A named credential for the admin API; platform-wide, or scoped to one organization."""

    public_id = PublicIdField(prefix="ak")
    name = models.CharField(max_length=200)
    # Scoped keys see and change only their organization's teams, keys, credits and usage.
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="admin_keys"
    )
    key_prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEvent(models.Model):
    """Append-only record of every write: who did what to which object, before and after."""

    actor = models.CharField(max_length=200)  # "master", "admin_key:ak_…", "user:alice", "system"
    action = models.CharField(max_length=100)  # "team.create", "credits.grant", …
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    # Lets org-scoped admins read their own organization's trail and nothing else.
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changes = models.JSONField(default=dict, blank=True)  # {field: [before, after]}
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self):
        return f"{self.actor} {self.action} {self.object_id}"
