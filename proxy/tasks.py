from celery import shared_task

from proxy import state


@shared_task(ignore_result=True, acks_late=True)
def publish_gateway_state():
    """Rebuild the gateway's Redis snapshots from Postgres (idempotent)."""
    state.publish_all()
