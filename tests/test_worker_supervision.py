"""The Celery worker keeps working through a broker restart, and is started again if it dies.

A real worker (scripts/supervise.sh, as scripts/run.sh runs it) against a throwaway
redis-server broker with persistence on, which is killed (-9) and restarted."""

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from celery import Celery
from django.conf import settings
from kombu.exceptions import OperationalError

from livestate.keys import TASKS_LAST_SUCCESS
from tests.helpers.api import MASTER
from tests.helpers.servers import RedisServer
from tests.helpers.waiting import eventually

TASK = "saas.celery.heartbeat"  # does nothing; its success is recorded in Redis


def start_worker(broker: RedisServer) -> subprocess.Popen:
    database = settings.DATABASES["default"]
    env = {
        **os.environ,
        "ENV_FILE": os.devnull,
        "DEBUG": "true",
        "DATABASE_URL": (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
            f"{database['NAME']}"
        ),
        "REDIS_URL": broker.url,
        "CELERY_BROKER_URL": broker.url,
        "MASTER_KEY": MASTER,
    }
    base = Path(settings.BASE_DIR)
    celery = [str(base / ".venv" / "bin" / "celery"), "-A", "saas", "worker"]
    options = ["--concurrency", "1", "--without-heartbeat", "--without-mingle", "--without-gossip"]
    return subprocess.Popen(  # noqa: S603 - our own command line
        [str(base / "scripts" / "supervise.sh"), *celery, "--loglevel", "WARNING", *options],
        cwd=base,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def runs_a_task(broker: RedisServer, timeout: float) -> None:
    """Queue the task (again, until the worker takes it) and wait for its recorded success."""
    client = redis.Redis.from_url(broker.url, socket_timeout=10)
    app = Celery(broker=broker.url, set_as_current=False)  # the tests keep saas.celery
    unreachable = (redis.RedisError, OSError, OperationalError)  # a broker just restarted

    def cleared():
        try:
            return client.hdel(TASKS_LAST_SUCCESS, TASK) >= 0
        except unreachable:
            return False

    def ran():
        try:
            app.send_task(TASK)
            return client.hget(TASKS_LAST_SUCCESS, TASK)
        except unreachable:
            return None

    try:
        eventually(cleared, timeout=timeout, interval=0.5, what="the broker answering")
        eventually(ran, timeout=timeout, interval=1.0, what="the worker running a task")
    finally:
        app.close()
        client.close()


def worker_pid(supervisor: subprocess.Popen) -> int:
    out = subprocess.run(  # noqa: S603
        ["/usr/bin/pgrep", "-P", str(supervisor.pid), "-f", "celery"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return int(out[0]) if out else 0


def test_the_worker_runs_tasks_after_a_broker_restart_and_is_restarted_if_it_dies(db):
    broker = RedisServer(persistent=True).start()
    supervisor = start_worker(broker)
    try:
        runs_a_task(broker, timeout=30)
        # when: the broker is killed and comes back 3 s later
        broker.kill()
        time.sleep(3)
        broker.restart()
        # then: the worker (reconnected, or started again by its supervisor) runs tasks
        runs_a_task(broker, timeout=30)
        # when: the worker itself dies (as kombu's restore-on-reconnect crash kills it)
        first = worker_pid(supervisor)
        assert first
        os.kill(first, signal.SIGKILL)
        # then: its supervisor starts another, which runs tasks
        eventually(lambda: worker_pid(supervisor) not in (0, first), timeout=10)
        runs_a_task(broker, timeout=30)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait(5)
        broker.stop()
