"""What workers do with a task, seen from the manager: progress coalescing, and
timeouts (sync tasks, group timeouts, retryable timeouts). Progress, retries and the
timeout of an async task on every backend are in ``tests/contract``.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import icij_nb as nb
from icij_nb.testing import wait_until
from icij_nb.worker import RUNNING_GRACE_S

# -- progress ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_chatty_progress_is_coalesced(app, make_manager, kind):
    steps = 10_000

    # Each report yields (sleep(0)), so the manager could see every one of them
    # apart: only the worker's coalescing keeps the count low.
    @app.task
    def chatty_sync(progress) -> str:
        for i in range(1, steps + 1):
            progress(i / steps)
            time.sleep(0)
        return "done"

    @app.task
    async def chatty_async(progress) -> str:
        for i in range(1, steps + 1):
            await progress(i / steps)
            await asyncio.sleep(0)
        return "done"

    tm = make_manager(app)
    updates: list[nb.Task] = []
    tm.subscribe(updates.extend)
    tm.start_pool(None, workers=1)
    handle = tm.submit(f"chatty_{kind}")

    assert handle.result(timeout_s=10) == "done"
    wait_until(
        lambda: any(t.state is nb.TaskState.DONE for t in updates),
        what="the DONE update",
    )
    progress_updates = [
        t for t in updates if t.id == handle.id and t.state is nb.TaskState.RUNNING
    ]
    # Without coalescing there are ~10,000 (progress_interval_s=0 shows it).
    assert len(progress_updates) < 200
    assert handle.state is nb.TaskState.DONE
    assert handle.progress == 1.0


# -- RUNNING after a grace period -----------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_task_longer_than_the_grace_period_is_seen_running(
    app, make_manager, release, kind
):
    @app.task
    def held_sync() -> str:
        release.wait(10)
        return "done"

    @app.task
    async def held_async() -> str:
        await asyncio.to_thread(release.wait, 10)
        return "done"

    tm = make_manager(app)
    updates: list[tuple[str, nb.TaskState]] = []
    tm.subscribe(lambda tasks: updates.extend((t.id, t.state) for t in tasks))
    tm.start_pool(None, workers=1)
    handle = tm.submit(f"held_{kind}")

    wait_until(
        lambda: handle.state is nb.TaskState.RUNNING,
        timeout_s=RUNNING_GRACE_S + 5,
        what="RUNNING",
    )
    task = tm.get(handle)
    assert (task.attempts, task.started_at is not None) == (1, True)
    release.set()
    assert handle.result(timeout_s=10) == "done"
    states = [state for task_id, state in updates if task_id == handle.id]
    assert states[-2:] == [nb.TaskState.RUNNING, nb.TaskState.DONE]


def test_a_task_shorter_than_the_grace_period_goes_from_queued_to_done(
    app, make_manager
):
    @app.task
    async def quick() -> int:
        return 1

    tm = make_manager(app)
    updates: list[tuple[str, nb.TaskState]] = []
    tm.subscribe(lambda tasks: updates.extend((t.id, t.state) for t in tasks))
    tm.start_pool(None, workers=1)
    handle = tm.submit("quick")

    assert handle.result(timeout_s=10) == 1
    states = [state for task_id, state in updates if task_id == handle.id]
    assert nb.TaskState.RUNNING not in states
    assert states[-1] is nb.TaskState.DONE
    task = tm.get(handle)
    # The attempt is counted all the same, from its outcome.
    assert (task.attempts, task.started_at is not None) == (1, True)


# -- timeouts ----------------------------------------------------------------------


def test_group_timeout_stops_a_task_without_its_own_timeout(app, make_manager):
    @app.task(group=nb.TaskGroup("slow", timeout_s=0.2))
    async def sleepy() -> None:
        await asyncio.sleep(60)

    tm = make_manager(app)
    tm.start_pool("slow", workers=1)
    handle = tm.submit("sleepy")

    with pytest.raises(nb.TaskFailed):
        handle.result(timeout_s=10)
    (error,) = tm.errors(handle)
    assert error.name == "TaskTimeout"
    assert "timeout of 0.2s" in error.message


def test_sync_task_past_its_timeout_is_reported_at_once(app, make_manager, release):
    finished = threading.Event()

    @app.task(timeout_s=0.2)
    def stuck() -> str:
        release.wait(30)
        finished.set()
        return "too late"

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("stuck")

    with pytest.raises(nb.TaskFailed, match="TaskTimeout"):
        handle.result(timeout_s=10)
    assert not finished.is_set()  # the thread still runs; the worker did not wait
    release.set()
    assert finished.wait(10)
    task = tm.get(handle)
    assert task.state is nb.TaskState.ERROR
    assert task.has_result is False


def test_timeout_error_in_recover_from_makes_timeouts_retryable(app, make_manager):
    calls: list[int] = []

    @app.task(timeout_s=0.2, max_retries=1, recover_from=(TimeoutError,))
    async def slow_then_fast() -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(60)
        return "fast"

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("slow_then_fast")

    assert handle.result(timeout_s=10) == "fast"
    task = tm.get(handle)
    assert task.attempts == 2
    assert [e.name for e in task.errors] == ["TaskTimeout"]
