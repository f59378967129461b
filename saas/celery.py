import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saas.settings")

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="saas.celery.heartbeat", ignore_result=True)
def heartbeat():
    """Proves the beat -> broker -> worker path is alive; health checks read its timestamp."""
    from django.core.cache import cache
    from django.utils import timezone

    cache.set("tasks:last_run:heartbeat", timezone.now().isoformat(), timeout=None)
