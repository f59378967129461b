"""Organizations, admin keys and the audit trail."""

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import Conflict, ValidationFailed
from core.secrets import generate_secret, hash_secret, lookup_prefix
from orgs.models import AdminKey, AuditEvent, Organization

ADMIN_KEY_PREFIX = "tga-"


def _jsonable(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def snapshot(obj, fields) -> dict:
    return {f: _jsonable(getattr(obj, f)) for f in fields}


def changed_fields(before: dict, after: dict) -> dict:
    """{field: [before, after]} for the fields whose value changed."""
    return {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}


def audit_record(*, actor: str, action: str, obj, organization_id=None, changes=None) -> AuditEvent:
    """Record one write; call inside the write's transaction so both land or neither does."""
    return AuditEvent.objects.create(
        actor=actor,
        action=action,
        object_type=obj._meta.model_name,
        object_id=obj.public_id,
        organization_id=organization_id,
        changes=changes or {},
    )


def audit_system_event(
    *, actor: str, action: str, object_type: str, object_id: str, changes: dict
) -> AuditEvent:
    """Record something the system did that no row stands for (e.g. the gateway's replay)."""
    return AuditEvent.objects.create(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id[:64],
        changes=changes,
    )


def audit_deletion(*, actor: str, action: str, obj, organization_id=None, field: str = "name"):
    """Record a deletion, with the field that names what is gone; call inside its transaction."""
    return audit_record(
        actor=actor,
        action=action,
        obj=obj,
        organization_id=organization_id,
        changes={field: [getattr(obj, field), None]},
    )


# Hashes and ciphertexts are not secrets, but the audit trail has no use for them.
SENSITIVE_FIELDS = {"key_hash", "previous_key_hash", "api_key_encrypted", "secret_encrypted"}


def apply_changes(*, obj, actor: str, action: str, organization_id, data: dict, extra_changes=None):
    """Set fields on obj, save, and audit exactly what changed. Returns the change set."""
    before = snapshot(obj, data)
    for field, value in data.items():
        setattr(obj, field, value)
    changes = changed_fields(before, snapshot(obj, data))
    for field in changes.keys() & SENSITIVE_FIELDS:
        changes[field] = ["[redacted]", "[redacted]"]
    changes.update(extra_changes or {})
    if changes:
        obj.save()
        audit_record(
            actor=actor, action=action, obj=obj, organization_id=organization_id, changes=changes
        )
    return changes


ORG_FIELDS = ("name", "external_id", "metadata", "status", "billing_email")


def _check_billing_email(value) -> str:
    """Alert emails go to billing_email: an address, or empty for none."""
    value = (value or "").strip()
    if value:
        try:
            validate_email(value)
        except ValidationError:
            raise ValidationFailed(
                f"{value!r} is not an email address.",
                fields={"billing_email": ["Enter an email address, or leave it empty."]},
            ) from None
    return value


def organization_create(
    *,
    actor: str,
    name: str,
    external_id=None,
    metadata=None,
    status=Organization.Status.ACTIVE,
    billing_email: str = "",
) -> tuple[Organization, bool]:
    """Create an organization; with an external_id already used, return that one (idempotent)."""
    billing_email = _check_billing_email(billing_email)
    if external_id:
        existing = Organization.objects.filter(external_id=external_id).first()
        if existing is not None:
            if existing.name != name:
                raise Conflict(
                    f"external_id {external_id!r} already belongs to {existing.public_id} "
                    f"with the name {existing.name!r}.",
                    fields={"external_id": ["Already used by another organization."]},
                )
            return existing, False
    try:
        with transaction.atomic(durable=True):
            org = Organization.objects.create(
                name=name,
                external_id=external_id or None,
                metadata=metadata or {},
                status=status,
                billing_email=billing_email,
            )
            audit_record(
                actor=actor,
                action="organization.create",
                obj=org,
                organization_id=org.pk,
                changes={"name": [None, name]},
            )
    except IntegrityError as exc:
        raise _org_conflict(exc, name) from exc
    return org, True


def organization_update(*, actor: str, org: Organization, data: dict) -> Organization:
    """Change an organization's name, external id, metadata, status or billing email (where
    alert emails go; audited like the rest)."""
    if "billing_email" in data:
        data = {**data, "billing_email": _check_billing_email(data["billing_email"])}
    try:
        with transaction.atomic(durable=True):
            apply_changes(
                obj=org,
                actor=actor,
                action="organization.update",
                organization_id=org.pk,
                data=data,
            )
    except IntegrityError as exc:
        raise _org_conflict(exc, data.get("name", org.name)) from exc
    return org


def organization_delete(*, actor: str, org: Organization) -> None:
    """Delete an organization that has no teams left."""
    with transaction.atomic(durable=True):
        if org.teams.exists():
            raise Conflict(
                f"{org.public_id} still has teams; delete or suspend them first "
                "(teams with credit history cannot be deleted, only suspended)."
            )
        audit_deletion(actor=actor, action="organization.delete", obj=org)
        org.delete()


def _org_conflict(exc: IntegrityError, name: str) -> Conflict:
    if "external_id" in str(exc):
        return Conflict(
            "That external_id is already used by another organization.",
            fields={"external_id": ["Already used."]},
        )
    return Conflict(
        f"An organization named {name!r} already exists.", fields={"name": ["Already used."]}
    )


def admin_key_create(*, actor: str, name: str, organization=None) -> tuple[AdminKey, str]:
    """Mint an admin API key. Returns the key and its secret, which is never retrievable again."""
    secret = generate_secret(ADMIN_KEY_PREFIX)
    with transaction.atomic(durable=True):
        key = AdminKey.objects.create(
            name=name,
            organization=organization,
            key_prefix=lookup_prefix(secret),
            key_hash=hash_secret(secret),
            created_by=actor,
        )
        audit_record(
            actor=actor,
            action="admin_key.create",
            obj=key,
            organization_id=organization.pk if organization else None,
            changes={"name": [None, name]},
        )
    return key, secret


def admin_key_revoke(*, actor: str, key: AdminKey) -> AdminKey:
    """Revoke an admin key; it stops working on the next request."""
    with transaction.atomic(durable=True):
        updated = AdminKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if updated:
            key.refresh_from_db()
            audit_record(
                actor=actor,
                action="admin_key.revoke",
                obj=key,
                organization_id=key.organization_id,
                changes={"revoked_at": [None, key.revoked_at.isoformat()]},
            )
    return key
