import os

from celery import Celery
from celery.signals import task_success

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="saas.celery.heartbeat", ignore_result=True)
def heartbeat():
    """Proves the beat -> broker -> worker path is alive (its success is recorded like every
    periodic task's, below)."""


@task_success.connect
def _record_heartbeat(sender=None, **kwargs):
    from ops import heartbeats

    heartbeats.task_succeeded(sender.name)
