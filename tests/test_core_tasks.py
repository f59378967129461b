"""core.tasks.enqueue_on_commit: a task named, sent after commit, never raised into the write."""

import pytest
from celery import shared_task

from core.tasks import enqueue_on_commit

SENT: list = []


@shared_task
def remember(value, *, also=None):
    SENT.append((value, also))


@pytest.fixture(autouse=True)
def _forget():
    SENT.clear()


@pytest.mark.django_db
def test_a_task_named_runs_after_commit_and_eagerly_in_tests(django_capture_on_commit_callbacks):
    # when
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        enqueue_on_commit("tests.test_core_tasks.remember", 1, also="x")
        # then: nothing before the commit
        assert SENT == []
    assert len(callbacks) == 1
    assert SENT == [(1, "x")]


@pytest.mark.django_db
def test_a_broker_that_cannot_be_reached_is_logged_not_raised(
    django_capture_on_commit_callbacks, monkeypatch, caplog
):
    # given
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("the broker is down")

    monkeypatch.setattr(remember, "delay", refuse)
    # when
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_on_commit("tests.test_core_tasks.remember", 2)
    # then
    assert SENT == []
    assert "could not queue tests.test_core_tasks.remember(2,)" in caplog.text


@pytest.mark.django_db
def test_a_name_that_matches_no_task_fails_in_the_caller():
    with pytest.raises(KeyError):
        enqueue_on_commit("tests.test_core_tasks.no_such_task")
