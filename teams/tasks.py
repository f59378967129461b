from celery import shared_task

from teams import services


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=50, time_limit=60)
def expire_keys():
    """Expire keys past their expiry, end rotation grace periods and retire revoked and expired
    keys past their grace (idempotent)."""
    services.keys_expire_due()
    services.key_grace_periods_end_due()
    services.keys_retire_due()
