from celery import shared_task

from mirrors import gateway as gateway_state


@shared_task(ignore_result=True, acks_late=True)
def publish_gateway_state():
    """Rebuild the gateway's Redis snapshots from Postgres (idempotent)."""
    gateway_state.publish_all()
