"""LiteLLM sync tasks: each takes ids, loads rows and calls one service; all idempotent."""

from celery import shared_task

from litellm_sync import push, spend
from litellm_sync.client import enabled


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=100, time_limit=120)
def push_team(sync_id: int):
    """Push one team to LiteLLM (a duplicate delivery finds it synced and does nothing)."""
    if enabled():
        push.team_push(sync_id)


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=100, time_limit=120)
def push_key(sync_id: int):
    """Push one key's LiteLLM copies (idempotent like push_team)."""
    if enabled():
        push.key_push(sync_id)


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=100, time_limit=120)
def refresh_models():
    """After a catalog change: re-push teams and keys whose LiteLLM models changed."""
    if enabled():
        push.models_refresh()
        push.sync_due()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=240, time_limit=300)
def sync_due():
    """Pending pushes, retries whose backoff is over, budgets that moved with usage."""
    if enabled():
        return push.sync_due()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=540, time_limit=600)
def full_resync():
    """Compare everything with LiteLLM and repair drift both ways."""
    if enabled():
        return push.full_resync()


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=100, time_limit=120)
def pull_spend():
    """Pull LiteLLM's new spend-log rows; charge direct calls once (safe to overlap)."""
    if enabled():
        return spend.spend_pull()
