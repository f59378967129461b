"""Push teams and virtual keys to LiteLLM: the worker half of the LiteLLM mirror.

The desired state is ours (Postgres). A change bumps the object's sync record in the change's
own transaction (mirrors/litellm.py); after commit a task pushes the whole object
(team_push, key_push), outside any transaction. A push that fails is retried with backoff by
the periodic sync_due sweep, so changes made while LiteLLM is down queue up and are applied
when it returns: teams before keys, each object in its latest state. Pushes are upserts, and
each object is pushed by one worker at a time (a Redis lock), so a duplicate delivery changes
nothing. full_resync compares everything with LiteLLM and repairs drift both ways.

Secrets: LiteLLM must be given a key's plaintext once, to create the key with the same secret
the customer holds. key_create and key_rotate hand it over Fernet-encrypted (core.secrets);
it stays encrypted in KeySync.secrets_encrypted only until LiteLLM has that key, and is then
wiped. A secret that LiteLLM loses afterwards cannot be restored from our side: the key is
flagged (rotate it to sync again), unless LITELLM_MISSING_KEY_ACTION=recreate, which keeps
the encrypted secret for the key's lifetime so it can be recreated. See docs/litellm.md.
"""

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from redis.exceptions import LockError

from billing.models import key_settled_spend
from core.redis import client as redis_client
from core.secrets import decrypt
from litellm_sync import desired
from litellm_sync.client import (
    LiteLLMClient,
    LiteLLMError,
    LiteLLMRejected,
    LiteLLMUnavailable,
)
from litellm_sync.models import KeySync, SyncState, TeamSync
from livestate.keys import litellm_lock_key
from modelgroups.models import stored_secrets_redactor
from teams.models import Team, VirtualKey

logger = logging.getLogger(__name__)

LOCK_SECONDS = 120  # longer than any push (a few calls, each with its own timeout)
BACKOFF_FIRST_SECONDS = 30
BACKOFF_MAX_SECONDS = 3600
SWEEP_LIMIT = 500

SYNCED, PENDING, FAILED = SyncState.SYNCED, SyncState.PENDING, SyncState.FAILED


# --- pushing ------------------------------------------------------------------------------


def _locked(kind: str, model, sync_id: int, push_once: Callable[[bool], str], force: bool) -> str:
    """Run pushes of one object under its lock until LiteLLM has its latest version.

    A task that finds the lock taken just leaves: the holder checks for newer versions after
    releasing it, so a change committed while it pushed is not lost."""
    lock = redis_client().lock(litellm_lock_key(kind, sync_id), timeout=LOCK_SECONDS)
    outcome = "busy"
    while lock.acquire(blocking=False):
        try:
            outcome = push_once(force)
        finally:
            try:
                lock.release()
            except LockError:
                logger.warning("LiteLLM push of %s %s outlived its lock", kind, sync_id)
        force = False
        behind = model.objects.filter(
            pk=sync_id, synced_version__lt=F("desired_version"), state=PENDING
        ).exists()
        if outcome != "synced" or not behind:
            break
    return outcome


def _backoff(attempts: int) -> timedelta:
    seconds = BACKOFF_FIRST_SECONDS * 2 ** min(attempts - 1, 16)
    return timedelta(seconds=min(seconds, BACKOFF_MAX_SECONDS))


def _failed(model, sync, error: str, *, retryable: bool) -> None:
    # LiteLLM echoes what it was sent, and it may hold upstreams of ours: no stored secret.
    error = stored_secrets_redactor()(error)
    attempts = sync.attempts + 1
    model.objects.filter(pk=sync.pk).update(
        state=FAILED,
        last_error=error[:2000],
        attempts=F("attempts") + 1,
        next_retry_at=timezone.now() + _backoff(attempts) if retryable else None,
    )
    logger.warning("LiteLLM sync of %s failed (attempt %d): %s", sync, attempts, error)


def _synced(model, sync_id: int, version: int, **pushed) -> None:
    model.objects.filter(pk=sync_id, synced_version__lte=version).update(
        synced_version=version,
        # A change committed during the push leaves the record pending: pushed again.
        state=Case(When(desired_version=version, then=Value(SYNCED)), default=Value(PENDING)),
        last_error="",
        attempts=0,
        next_retry_at=None,
        synced_at=timezone.now(),
        **pushed,
    )


def team_push(sync_id: int, *, force: bool = False) -> str:
    """Push one team's whole desired state (or its deletion) to LiteLLM. Returns synced,
    failed, skipped (already there), busy (another worker has it) or gone."""
    return _locked("team", TeamSync, sync_id, lambda f: _team_push_once(sync_id, f), force)


def _to_push(model, sync_id: int, force: bool, *related: str):
    """(the sync record to push, "") or (None, why there is nothing to push): gone, or
    skipped (LiteLLM has its desired version already)."""
    sync = model.objects.select_related(*related).filter(pk=sync_id).first()
    if sync is None:
        return None, "gone"
    if not force and sync.synced_version >= sync.desired_version:
        return None, "skipped"
    return sync, ""


def _team_push_once(sync_id: int, force: bool) -> str:
    sync, skip = _to_push(TeamSync, sync_id, force, "team__organization", "team__account")
    if skip:
        return skip
    version = sync.desired_version
    team = sync.team
    try:
        with LiteLLMClient() as client:
            if team is None:
                client.team_delete([sync.litellm_team_id])  # its keys go with it
                TeamSync.objects.filter(pk=sync.pk, desired_version=version).delete()
                return "synced"
            account_version = team.account.version  # read with the balance the body uses
            info = client.team_info(sync.litellm_team_id)
            body = desired.team_body(team, spend=info.spend if info else 0.0)
            if info is None:
                try:
                    client.team_new(body)
                except LiteLLMRejected as exc:
                    if not exc.already_exists:
                        raise
                    client.team_update(body)  # an earlier attempt made it; its answer was lost
            else:
                client.team_update(body)
    except LiteLLMError as exc:
        _failed(TeamSync, sync, str(exc), retryable=isinstance(exc, LiteLLMUnavailable))
        return "failed"
    _synced(
        TeamSync,
        sync.pk,
        version,
        pushed_account_version=account_version,
        pushed_models=body["models"],
    )
    return "synced"


def key_push(sync_id: int, *, force: bool = False) -> str:
    """Push one key's LiteLLM copies: create the missing ones with their secret, update the
    rest, delete the retired ones. Returns like team_push."""
    return _locked("key", KeySync, sync_id, lambda f: _key_push_once(sync_id, f), force)


class _Flag(Exception):
    """LiteLLM lacks a key we cannot (re)create: an operator must act (rotate the key)."""


def _ensure_team(team: Team) -> None:
    """A key is created in its team: push the team first when LiteLLM may not have it."""
    sync, _ = TeamSync.objects.get_or_create(
        team=team, defaults={"litellm_team_id": team.public_id}
    )
    if sync.state == SYNCED and sync.synced_version >= sync.desired_version:
        return
    if team_push(sync.pk, force=True) == "failed":
        sync.refresh_from_db()
        raise LiteLLMUnavailable(f"waiting for its team to sync ({sync.last_error})")


def _generate(client: LiteLLMClient, secret: str, key_hash: str, body: dict) -> None:
    try:
        client.key_generate({"key": secret, **body})
    except LiteLLMRejected as exc:
        if not exc.already_exists:
            raise
        # The alias is taken. By this very key, when an earlier attempt made it but its
        # answer was lost (the retry-safe mint recipe); by another key, it is terminal.
        info = client.key_info(key_hash)
        if info is None or info.status == "deleted":
            raise
        client.key_update({"key": key_hash, **body})


def _key_push_once(sync_id: int, force: bool) -> str:
    sync, skip = _to_push(KeySync, sync_id, force, "key__team__organization", "key__team__account")
    if skip:
        return skip
    version = sync.desired_version
    key = sync.key
    now = timezone.now()
    copies = {c.key_hash: c for c in desired.key_copies(key, now=now)}
    made, removed, used_secrets = [], [], []
    # Secrets held when the push started that are no longer wanted (retired before LiteLLM
    # got them); one a rotation adds during the push is not among them.
    retired = [h for h in sync.secrets_encrypted if h not in copies]
    keep_secrets = settings.LITELLM_MISSING_KEY_ACTION == "recreate"
    flag = ""
    try:
        if copies:
            _ensure_team(key.team)
        spent = (
            key_settled_spend(key.team_id).get(key.pk, 0)
            if key.budget_limit_micros is not None
            else 0
        )
        with LiteLLMClient() as client:
            for key_hash in sync.litellm_hashes:
                if key_hash not in copies:
                    client.key_delete([key_hash])  # revoked, expired, or a grace period over
                    removed.append(key_hash)
            for key_hash, copy in copies.items():
                info = client.key_info(key_hash)
                live = info is not None and info.status != "deleted"
                body = desired.key_body(
                    key, copy, spend=info.spend if live else 0.0, key_spent=spent, now=now
                )
                if live:
                    client.key_update({"key": key_hash, **body})
                else:
                    token = sync.secrets_encrypted.get(key_hash)
                    if token is None:
                        flag = (
                            "deleted in LiteLLM outside Tollgate"
                            if key_hash in sync.litellm_hashes
                            else "LiteLLM does not have this key"
                        ) + "; its secret is not kept, so rotate the key to sync it again."
                        continue
                    _generate(client, decrypt(token), key_hash, body)
                    if key_hash in sync.litellm_hashes:
                        logger.warning("recreated %s in LiteLLM (deleted there)", sync)
                made.append(key_hash)
                if not keep_secrets:
                    used_secrets.append(key_hash)
    except LiteLLMError as exc:
        _record_key_progress(sync.pk, made, removed, used_secrets + retired)
        _failed(KeySync, sync, str(exc), retryable=isinstance(exc, LiteLLMUnavailable))
        return "failed"
    _record_key_progress(sync.pk, made, removed, used_secrets + retired)
    if flag:
        _failed(KeySync, sync, flag, retryable=False)
        return "failed"
    _synced(KeySync, sync.pk, version, pushed_models=desired.key_models(key))
    return "synced"


def _record_key_progress(sync_id, made, removed, wiped) -> None:
    """What LiteLLM now has, and the secrets to forget, merged into the row under its lock
    (a rotation may be adding a new secret meanwhile)."""
    with transaction.atomic():
        sync = KeySync.objects.select_for_update().get(pk=sync_id)
        hashes = [h for h in sync.litellm_hashes if h not in removed]
        hashes += [h for h in made if h not in hashes]
        secrets = {
            h: token
            for h, token in sync.secrets_encrypted.items()
            if h not in wiped and h not in removed
        }
        if hashes != sync.litellm_hashes or secrets != sync.secrets_encrypted:
            sync.litellm_hashes, sync.secrets_encrypted = hashes, secrets
            sync.save(update_fields=["litellm_hashes", "secrets_encrypted", "updated_at"])


# --- sweeps ---------------------------------------------------------------------------------


def budgets_refresh(*, now=None) -> int:
    """Teams whose credits moved since their last push (usage, period resets), and their keys
    with a budget, become pending: their LiteLLM budgets are pushed again (at most every
    LITELLM_BUDGET_REFRESH_SECONDS: a busy team's balance moves with every settlement)."""
    now = now or timezone.now()
    stale = TeamSync.objects.filter(
        team__isnull=False,
        state=SYNCED,
        synced_at__lte=now - timedelta(seconds=settings.LITELLM_BUDGET_REFRESH_SECONDS),
    ).exclude(pushed_account_version=F("team__account__version"))
    team_ids = list(stale.values_list("team_id", flat=True))
    if not team_ids:
        return 0
    bump = {"desired_version": F("desired_version") + 1, "state": PENDING, "next_retry_at": None}
    TeamSync.objects.filter(team_id__in=team_ids).update(**bump)
    KeySync.objects.filter(
        key__team_id__in=team_ids,
        key__budget_limit_micros__isnull=False,
        key__status=VirtualKey.Status.ACTIVE,
    ).update(**bump)
    return len(team_ids)


def models_refresh() -> int:
    """Teams and keys whose LiteLLM model list differs from the one pushed become pending."""
    bump = {"desired_version": F("desired_version") + 1, "state": PENDING, "next_retry_at": None}
    changed = 0
    for sync in TeamSync.objects.filter(team__isnull=False).select_related("team"):
        if desired.team_models(sync.team) != sync.pushed_models:
            changed += TeamSync.objects.filter(pk=sync.pk).update(**bump)
    for sync in KeySync.objects.filter(key__status=VirtualKey.Status.ACTIVE).select_related("key"):
        if desired.key_models(sync.key) != sync.pushed_models:
            changed += KeySync.objects.filter(pk=sync.pk).update(**bump)
    return changed


def _push_all(model, sync_ids, push) -> dict:
    counts: dict[str, int] = {}
    for sync_id in sync_ids:
        outcome = push(sync_id, force=True)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "failed" and _retrying(model, sync_id):
            counts["stopped"] = 1  # LiteLLM is unreachable: the rest would fail the same way
            break
    return counts


def _retrying(model, sync_id: int) -> bool:
    return model.objects.filter(pk=sync_id, next_retry_at__isnull=False).exists()


def sync_due(*, limit: int = SWEEP_LIMIT) -> dict:
    """Push every pending record, and every failed one whose retry is due: teams first,
    then keys, oldest first. Stops early while LiteLLM is unreachable."""
    budgets_refresh()
    due = Q(state=PENDING) | Q(state=FAILED, next_retry_at__lte=timezone.now())
    teams = list(TeamSync.objects.filter(due).order_by("pk").values_list("pk", flat=True)[:limit])
    result = {"teams": _push_all(TeamSync, teams, team_push)}
    if "stopped" not in result["teams"]:
        keys = list(KeySync.objects.filter(due).order_by("pk").values_list("pk", flat=True)[:limit])
        result["keys"] = _push_all(KeySync, keys, key_push)
    return result


def full_resync() -> dict:
    """Compare every team and key with LiteLLM and repair it: create records for objects
    that have none (the integration was switched on later), push everything whole (a key
    deleted in LiteLLM is recreated or flagged, edits made there are overwritten), and delete
    keys we manage that nothing here accounts for."""
    for team in Team.objects.filter(litellm_sync__isnull=True):
        TeamSync.objects.get_or_create(team=team, defaults={"litellm_team_id": team.public_id})
    for key in VirtualKey.objects.filter(
        litellm_sync__isnull=True, status=VirtualKey.Status.ACTIVE
    ):
        KeySync.objects.get_or_create(key=key)
    models_refresh()
    teams = list(TeamSync.objects.order_by("pk").values_list("pk", flat=True))
    result = {"teams": _push_all(TeamSync, teams, team_push)}
    if "stopped" in result["teams"]:
        return result
    keys = list(KeySync.objects.order_by("pk").values_list("pk", flat=True))
    result["keys"] = _push_all(KeySync, keys, key_push)
    if "stopped" not in result["keys"]:
        try:
            result["orphans_deleted"] = _delete_orphans()
        except LiteLLMError as exc:
            logger.warning("LiteLLM orphan sweep failed: %s", stored_secrets_redactor()(str(exc)))
    return result


def _delete_orphans() -> int:
    """Keys LiteLLM holds for our teams, marked as ours, that no key here accounts for
    (e.g. a copy whose record was lost): deleted. Keys made in LiteLLM by hand are left."""
    known = set()
    for hashes in KeySync.objects.values_list("litellm_hashes", flat=True):
        known.update(hashes)
    known.update(VirtualKey.objects.values_list("key_hash", flat=True))
    deleted = 0
    with LiteLLMClient() as client:
        for team_id in TeamSync.objects.filter(team__isnull=False).values_list(
            "litellm_team_id", flat=True
        ):
            page, orphans = 1, []
            while True:
                listing = client.key_list(team_id=team_id, page=page)
                orphans += [
                    k.key_hash
                    for k in listing["keys"]
                    if k.metadata.get("managed_by") == desired.MANAGED_BY
                    and k.key_hash not in known
                ]
                if page >= listing["total_pages"]:
                    break
                page += 1
            if orphans:
                client.key_delete(orphans)
                logger.warning("deleted %d orphan LiteLLM keys of %s", len(orphans), team_id)
                deleted += len(orphans)
    return deleted
