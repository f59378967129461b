"""LiteLLM's copy of our teams and keys: record, in the caller's transaction, that it is behind.

A change bumps the object's sync record (its desired version) in the change's own
transaction; after commit its push is queued by task name (litellm_sync.tasks, which runs the
push worker, litellm_sync/push.py). If the broker cannot be reached the record is still
pending, and the periodic sync_due sweep pushes it. Nothing here speaks to LiteLLM.
"""

from django.db.models import F

from core.secrets import encrypt, hash_secret
from core.tasks import enqueue_on_commit
from litellm_sync.client import enabled
from litellm_sync.models import KeySync, SyncState, TeamSync


def _bump(model, lookup: dict, defaults: dict | None = None):
    sync, created = model.objects.get_or_create(**lookup, defaults=defaults or {})
    if not created:
        model.objects.filter(pk=sync.pk).update(
            desired_version=F("desired_version") + 1, state=SyncState.PENDING, next_retry_at=None
        )
    return sync


def team_changed(team) -> None:
    """LiteLLM's copy of this team is now behind; it is pushed after commit. Called before
    deleting a team too: the push then deletes it in LiteLLM, with its keys (its sync record
    stays behind, team-less, until that is done)."""
    if not enabled():
        return
    sync = _bump(TeamSync, {"team": team}, {"litellm_team_id": team.public_id})
    enqueue_on_commit("litellm_sync.tasks.push_team", sync.pk)


def key_changed(key, *, secret: str | None = None) -> None:
    """LiteLLM's copy of this key is now behind. `secret`: a new plaintext (key_create,
    key_rotate), held encrypted until LiteLLM has it."""
    if not enabled():
        return
    sync = _bump(KeySync, {"key": key})
    if secret:
        locked = KeySync.objects.select_for_update().get(pk=sync.pk)
        locked.secrets_encrypted[hash_secret(secret)] = encrypt(secret)
        locked.save(update_fields=["secrets_encrypted", "updated_at"])
    enqueue_on_commit("litellm_sync.tasks.push_key", sync.pk)


def catalog_changed() -> None:
    """Models or model groups changed: after commit, re-push the teams and keys whose LiteLLM
    model list is no longer what was pushed (compared: a change that moves no model list
    pushes nothing of its own)."""
    if not enabled():
        return
    enqueue_on_commit("litellm_sync.tasks.refresh_models")


def account_moved(account, *, by_usage: bool) -> None:
    """LiteLLM's budget mirrors the team's credits (see mirrors.changes.account_moved)."""
    if by_usage:
        return  # litellm_sync.push.budgets_refresh follows the account's version
    team_changed(account.team)
