from celery import shared_task

from modelgroups import services


# Above HEALTH_PROBE_ROUND_SECONDS (45 s by default) plus the writes that follow the round.
@shared_task(ignore_result=True, acks_late=True, soft_time_limit=90, time_limit=120)
def probe_models():
    """Probe the enabled models that are due and publish their health (claims make a
    duplicate or overlapping run probe nothing twice)."""
    return services.model_health_probe_due()
