"""Queue a Celery task after the caller's transaction commits, naming the task by its name.

By name, so that a service never imports the tasks module that calls it back (no import
circle). The task is looked up in the app's registry and sent with `delay`, so Celery's eager
mode (the tests) still runs it in-process; `send_task` would bypass that.
"""

import logging
from importlib import import_module

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)


def _registered(task_name: str):
    try:
        return current_app.tasks[task_name]
    except KeyError:
        # Not imported yet in this process (a web process imports no tasks module): a task's
        # default name is "<module>.<function>".
        import_module(task_name.rpartition(".")[0])
        return current_app.tasks[task_name]


def enqueue_on_commit(task_name: str, *args, **kwargs) -> None:
    """Send `task_name(*args, **kwargs)` once the current transaction commits.

    Best effort on purpose: the write it follows is committed either way, so a broker that
    cannot be reached is logged, not raised into the caller. Every task queued this way must
    have a periodic sweep that finds the work it left undone and queues it again. A name
    that matches no task fails here, in the caller's transaction, not silently after it."""
    task = _registered(task_name)

    def send():
        try:
            task.delay(*args, **kwargs)
        except Exception:
            logger.exception("could not queue %s%r; its periodic sweep repairs it", task_name, args)

    transaction.on_commit(send)
