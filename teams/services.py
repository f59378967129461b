"""Teams and their virtual keys."""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import UsageDaily
from billing.services import account_create
from core.errors import Conflict, ValidationFailed
from core.secrets import generate_secret, hash_secret, lookup_prefix
from mirrors.changes import (
    key_changed,
    key_retired,
    retired_key_accounts_due,
    team_changed,
    team_removed,
)
from orgs.services import apply_changes, audit_deletion, audit_record
from teams import rules
from teams.models import Team, VirtualKey

VIRTUAL_KEY_PREFIX = "sk-"
# Fields that live on the credit account but are set through the team.
ACCOUNT_FIELDS = ("overdraft_limit_micros",)


def team_create(*, actor: str, organization, name: str, model_groups=(), **fields) -> Team:
    """Create a team and its credit account."""
    if fields.get("external_id"):
        existing = Team.objects.filter(external_id=fields["external_id"]).first()
        if existing is not None:
            raise Conflict(
                f"external_id {fields['external_id']!r} already belongs to {existing.public_id}.",
                fields={"external_id": ["Already used by another team."]},
            )
    rules.validate_team(fields)
    account_fields = {f: fields.pop(f) for f in ACCOUNT_FIELDS if f in fields}
    fields.setdefault("alert_thresholds", [80, 100])
    try:
        with transaction.atomic(durable=True):
            team = Team.objects.create(organization=organization, name=name, **fields)
            team.model_groups.set(model_groups)
            account = account_create(team=team)
            if account_fields:
                for k, v in account_fields.items():
                    setattr(account, k, v)
                account.save(update_fields=list(account_fields))
            audit_record(
                actor=actor,
                action="team.create",
                obj=team,
                organization_id=organization.pk,
                changes={
                    "name": [None, name],
                    "model_groups": [None, sorted(g.name for g in model_groups)],
                },
            )
            team_changed(team)
    except IntegrityError as exc:
        raise _team_conflict(exc, name, organization) from exc
    return team


def team_update(*, actor: str, team: Team, data: dict, model_groups=None) -> Team:
    """Change a team's settings; model groups and account limits included."""
    rules.validate_team(data, team=team)
    account_data = {f: data.pop(f) for f in ACCOUNT_FIELDS if f in data}
    try:
        with transaction.atomic(durable=True):
            extra = _set_model_groups(team, model_groups)
            if account_data:
                account = team.account
                for field, value in account_data.items():
                    before_value = getattr(account, field)
                    if before_value != value:
                        setattr(account, field, value)
                        extra[field] = [before_value, value]
                account.save(update_fields=[*account_data, "updated_at"])
            changes = apply_changes(
                obj=team,
                actor=actor,
                action="team.update",
                organization_id=team.organization_id,
                data=data,
                extra_changes=extra,
            )
            if changes:
                team_changed(team)
    except IntegrityError as exc:
        if "balance_within_overdraft" in str(exc):
            raise ValidationFailed(
                "The balance is already below minus that overdraft limit; grant credits first.",
                fields={"overdraft_limit": ["Lower than the current debt."]},
            ) from exc
        raise _team_conflict(exc, data.get("name", team.name), team.organization) from exc
    return team


def team_set_status(*, actor: str, team: Team, status: str) -> Team:
    """Suspend, pause or resume a team: its keys stop (or start) working at the gateway."""
    with transaction.atomic(durable=True):
        if apply_changes(
            obj=team,
            actor=actor,
            action=f"team.{status}",
            organization_id=team.organization_id,
            data={"status": status},
        ):
            team_changed(team)
    return team


def team_delete(*, actor: str, team: Team) -> None:
    """Delete a team that never had credit history; otherwise it can only be suspended."""
    with transaction.atomic(durable=True):
        # Raw usage is pruned after its retention; the daily roll-ups keep the history.
        if (
            team.account.entries.exists()
            or team.usage.exists()
            or UsageDaily.objects.filter(team=team).exists()
        ):
            raise Conflict(
                f"{team.public_id} has credit or usage history, which must be kept; "
                "suspend the team instead."
            )
        audit_deletion(
            actor=actor, action="team.delete", obj=team, organization_id=team.organization_id
        )
        team_removed(team)
        team.account.delete()
        team.delete()


def _team_conflict(exc, name, organization) -> Conflict:
    if "external_id" in str(exc):
        return Conflict(
            "That external_id is already used by another team.",
            fields={"external_id": ["Already used."]},
        )
    return Conflict(
        f"{organization.public_id} already has a team named {name!r}.",
        fields={"name": ["Already used in this organization."]},
    )


def _set_model_groups(obj, model_groups) -> dict:
    """Replace obj's model groups if they differ; returns the audit change, if any."""
    if model_groups is None:
        return {}
    before = sorted(obj.model_groups.values_list("name", flat=True))
    after = sorted(g.name for g in model_groups)
    if before == after:
        return {}
    obj.model_groups.set(model_groups)
    return {"model_groups": [before, after]}


def _check_key_groups(team: Team, model_groups) -> None:
    allowed = set(team.model_groups.values_list("pk", flat=True))
    outside = [g.name for g in model_groups if g.pk not in allowed]
    if outside:
        raise ValidationFailed(
            "A key can only be restricted to model groups its team has: "
            + ", ".join(sorted(outside))
            + " not assigned to the team.",
            fields={"model_groups": ["Not assigned to the team."]},
        )


def _new_secret() -> tuple[str, str, str]:
    secret = generate_secret(VIRTUAL_KEY_PREFIX)
    return secret, lookup_prefix(secret), hash_secret(secret)


def key_create(*, actor: str, team: Team, name: str, model_groups=(), **fields):
    """Mint a virtual key. Returns (key, secret); the secret is never retrievable again."""
    rules.validate_key(fields)
    _check_key_groups(team, model_groups)
    if fields.get("expires_at") and fields["expires_at"] <= timezone.now():
        raise ValidationFailed(
            "expires_at is in the past.", fields={"expires_at": ["In the past."]}
        )
    secret, prefix, digest = _new_secret()
    with transaction.atomic(durable=True):
        key = VirtualKey.objects.create(
            team=team, name=name, key_prefix=prefix, key_hash=digest, **fields
        )
        key.model_groups.set(model_groups)
        audit_record(
            actor=actor,
            action="key.create",
            obj=key,
            organization_id=team.organization_id,
            changes={"name": [None, name]},
        )
        key_changed(key, secret=secret)
    return key, secret


def key_update(*, actor: str, key: VirtualKey, data: dict, model_groups=None) -> VirtualKey:
    """Rename a key, change its limits, expiry or model restriction."""
    rules.validate_key(data)
    if key.status == VirtualKey.Status.REVOKED:
        raise Conflict(f"{key.public_id} is revoked; revoked keys cannot be changed.")
    if model_groups is not None:
        _check_key_groups(key.team, model_groups)
    if data.get("expires_at") and data["expires_at"] <= timezone.now():
        raise ValidationFailed(
            "expires_at is in the past; revoke the key to stop it now.",
            fields={"expires_at": ["In the past."]},
        )
    with transaction.atomic(durable=True):
        extra = _set_model_groups(key, model_groups)
        if apply_changes(
            obj=key,
            actor=actor,
            action="key.update",
            organization_id=key.team.organization_id,
            data=data,
            extra_changes=extra,
        ):
            key_changed(key)
    return key


def key_revoke(*, actor: str, key: VirtualKey) -> VirtualKey:
    """Revoke a key now; any previous secret in its grace period stops too."""
    with transaction.atomic(durable=True):
        apply_changes(
            obj=key,
            actor=actor,
            action="key.revoke",
            organization_id=key.team.organization_id,
            data={
                "status": VirtualKey.Status.REVOKED,
                "revoked_at": timezone.now(),
                "previous_valid_until": None,
            },
        )
        key_changed(key)
    return key


def key_rotate(*, actor: str, key: VirtualKey, grace_seconds: int):
    """Issue a new secret; the old one keeps working for grace_seconds. Returns (key, secret)."""
    rules.validate_grace_seconds(grace_seconds)
    if key.status != VirtualKey.Status.ACTIVE:
        raise Conflict(f"{key.public_id} is {key.status}; only active keys can be rotated.")
    secret, prefix, digest = _new_secret()
    with transaction.atomic(durable=True):
        locked = VirtualKey.objects.select_for_update().get(pk=key.pk)
        grace_until = timezone.now() + timedelta(seconds=grace_seconds) if grace_seconds else None
        # Without a grace the old secret stops now: its Redis entry must go, or the gateway
        # would keep answering it from the old snapshot until the next full publish.
        retired = [h for h in (locked.key_hash, locked.previous_key_hash) if h]
        apply_changes(
            obj=locked,
            actor=actor,
            action="key.rotate",
            organization_id=key.team.organization_id,
            data={
                "previous_key_hash": locked.key_hash if grace_until else None,
                "previous_valid_until": grace_until,
                "key_prefix": prefix,
                "key_hash": digest,
            },
        )
        key_changed(locked, secret=secret, retired=retired)
    locked.team = key.team
    return locked, secret


KEY_LIFECYCLE_ACTOR = "system:key_lifecycle"


def keys_expire_due(*, now=None, limit: int = 1000) -> int:
    """Mark active keys past their expires_at as expired; returns how many.

    The gateway already refuses them by time; this makes the status, the audit trail and the
    API say so. Each key is claimed with SKIP LOCKED and re-checked, so two workers expire it
    once."""
    now = now or timezone.now()
    due = VirtualKey.objects.filter(status=VirtualKey.Status.ACTIVE, expires_at__lte=now)
    return _sweep_keys(due, limit, action="key.expire", data={"status": VirtualKey.Status.EXPIRED})


def key_grace_periods_end_due(*, now=None, limit: int = 1000) -> int:
    """Forget the previous secret of keys whose rotation grace is over; returns how many."""
    now = now or timezone.now()
    due = VirtualKey.objects.filter(previous_key_hash__isnull=False).filter(
        Q(previous_valid_until__lte=now) | Q(previous_valid_until__isnull=True)
    )
    return _sweep_keys(
        due,
        limit,
        action="key.grace_end",
        data={"previous_key_hash": None, "previous_valid_until": None},
    )


def keys_retire_due(*, now=None, limit: int = 1000) -> int:
    """Retire revoked and expired keys past GATEWAY_RETIRED_KEY_GRACE_SECONDS; returns how many.

    Until then the gateway answers them with their precise 401 (key_revoked, key_expired);
    after, they leave its live state everywhere and answer as unknown keys. Key accounts that
    were still busy when their key retired are retried every round."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.GATEWAY_RETIRED_KEY_GRACE_SECONDS)
    due = VirtualKey.objects.filter(retired_at__isnull=True).filter(
        Q(status=VirtualKey.Status.REVOKED, revoked_at__lte=cutoff)
        | Q(status=VirtualKey.Status.EXPIRED, expires_at__lte=cutoff)
    )
    done = _sweep_keys(due, limit, action="key.retire", data={"retired_at": now})
    retired_key_accounts_due()
    return done


def _sweep_keys(due, limit: int, *, action: str, data: dict) -> int:
    done = 0
    for pk in list(due.order_by("pk").values_list("pk", flat=True)[:limit]):
        with transaction.atomic(durable=True):
            key = (
                due.filter(pk=pk)
                .select_related("team")
                .select_for_update(skip_locked=True, of=("self",))
                .first()
            )
            if key is None:
                continue  # another worker has it, or it changed meanwhile
            retired = [key.previous_key_hash] if "previous_key_hash" in data else []
            apply_changes(
                obj=key,
                actor=KEY_LIFECYCLE_ACTOR,
                action=action,
                organization_id=key.team.organization_id,
                data=dict(data),
            )
            if "retired_at" in data:
                key_retired(key)
            else:
                key_changed(key, retired=retired)
        done += 1
    return done
