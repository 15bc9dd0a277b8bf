"""The ledger: the one write path of task state (rules, store, waits, listeners)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from icij_nb.ledger import Ledger
from icij_nb.model import (
    CancelledEvent,
    ProgressEvent,
    QueuedEvent,
    ResultEvent,
    RetryEvent,
    Task,
    TaskState,
    utcnow,
)
from icij_nb.store import SqliteStore


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(SqliteStore(":memory:"))


def track(ledger: Ledger, task_id: str = "t-1") -> Task:
    task = Task(id=task_id, name="t", group=None, args={})
    ledger.track(task)
    ledger.apply([QueuedEvent(task_id)])
    return task


async def test_apply_writes_resolves_and_notifies_once_per_call(ledger):
    heard: list[list[str]] = []
    ledger.subscribe(lambda tasks: heard.append([t.state.value for t in tasks]))
    task = track(ledger)
    ready = ledger.wait_ready([task.id])

    applied = ledger.apply(
        [ProgressEvent(task.id, 0.0, worker_id="w"), ResultEvent(task.id, 3)]
    )

    assert applied.changed == [task]
    assert ready.done()
    assert heard == [["QUEUED"], ["DONE"]]
    assert ledger.counts[TaskState.DONE] == 1


def test_events_of_unknown_tasks_come_back_untouched(ledger):
    event = ResultEvent("nobody", 1)
    assert ledger.apply([event]).unknown == [event]


def test_a_cancel_older_than_a_retry_is_about_the_replaced_message(ledger):
    task = track(ledger)
    cancelled_at = utcnow()
    ledger.apply([CancelledEvent(task.id, requeue=False, created_at=cancelled_at)])
    assert ledger.apply([RetryEvent(task.id)]).requeue == [task]

    # The worker that skips the old message dates its report as the cancel.
    stale = CancelledEvent(task.id, requeue=False, created_at=cancelled_at)
    assert ledger.apply([stale]).changed == []
    assert task.state is TaskState.QUEUED

    # A cancel made after the retry still ends the task.
    fresh = CancelledEvent(
        task.id, requeue=False, created_at=utcnow() + timedelta(seconds=1)
    )
    assert ledger.apply([fresh]).changed == [task]
    assert task.state is TaskState.CANCELLED
