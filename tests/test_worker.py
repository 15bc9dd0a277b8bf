"""What workers do with a task, seen from the manager: progress (and its coalescing),
retries and timeouts.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import icij_nb as nb
from icij_nb.testing import wait_until

# -- progress ----------------------------------------------------------------------


def test_async_task_progress_is_visible_while_it_runs(app, make_manager, release):
    @app.task
    async def halfway(progress) -> str:
        await progress(0.5)
        await asyncio.to_thread(release.wait, 30)
        return "ok"

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("halfway")

    wait_until(lambda: handle.progress == 0.5, what="progress 0.5")
    assert handle.state is nb.TaskState.RUNNING
    release.set()
    assert handle.result(timeout_s=5) == "ok"
    assert handle.progress == 1.0


def test_sync_task_progress_is_visible_while_it_runs(app, make_manager, release):
    @app.task
    def quarter(progress) -> str:
        progress(0.25)
        release.wait(30)
        return "ok"

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("quarter")

    wait_until(lambda: handle.progress == 0.25, what="progress 0.25")
    assert handle.state is nb.TaskState.RUNNING
    assert "progress=25%" in repr(handle)
    release.set()
    assert handle.result(timeout_s=5) == "ok"


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


# -- retries -----------------------------------------------------------------------


def test_recoverable_error_is_retried_up_to_max_retries(app, make_manager):
    calls: list[int] = []

    @app.task(max_retries=2, recover_from=(ConnectionError,))
    def unreachable() -> None:
        calls.append(len(calls) + 1)
        raise ConnectionError(f"refused on call {len(calls)}")

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("unreachable")

    with pytest.raises(nb.TaskFailed, match="after 3 attempt"):
        handle.result(timeout_s=5)
    task = tm.get(handle)
    assert calls == [1, 2, 3]
    assert task.attempts == 3
    assert task.max_attempts == 3
    assert task.state is nb.TaskState.ERROR
    errors = tm.errors(handle)
    assert [e.name for e in errors] == ["ConnectionError"] * 3
    assert [e.message for e in errors] == [f"refused on call {i}" for i in (1, 2, 3)]


def test_errors_not_in_recover_from_are_not_retried(app, make_manager):
    calls: list[int] = []

    @app.task(max_retries=5, recover_from=(ConnectionError,))
    def broken() -> None:
        calls.append(1)
        raise ValueError("not a connection problem")

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("broken")

    with pytest.raises(nb.TaskFailed, match="ValueError: not a connection problem"):
        handle.result(timeout_s=5)
    assert len(calls) == 1
    assert tm.get(handle).attempts == 1
    assert len(tm.errors(handle)) == 1


def test_success_on_a_later_attempt_ends_done_and_keeps_earlier_errors(
    app, make_manager
):
    calls: list[int] = []

    @app.task(max_retries=3, recover_from=(ConnectionError,))
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return "third time"

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("flaky")

    assert handle.result(timeout_s=5) == "third time"
    task = tm.get(handle)
    assert task.state is nb.TaskState.DONE
    assert task.attempts == 3
    assert [e.message for e in task.errors] == ["attempt 1 failed", "attempt 2 failed"]


@pytest.mark.parametrize(("max_retries", "attempts"), [(0, 1), (1, 2)])
def test_max_retries_given_at_submit_overrides_the_task_setting(
    app, make_manager, max_retries, attempts
):
    calls: list[int] = []

    @app.task(max_retries=5, recover_from=(ConnectionError,))
    def unreachable() -> None:
        calls.append(1)
        raise ConnectionError("refused")

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("unreachable", max_retries=max_retries)

    with pytest.raises(nb.TaskFailed):
        handle.result(timeout_s=5)
    assert len(calls) == attempts
    assert tm.get(handle).max_attempts == attempts
    assert len(tm.errors(handle)) == attempts


# -- timeouts ----------------------------------------------------------------------


def test_async_task_past_its_timeout_ends_in_error_with_task_timeout(app, make_manager):
    @app.task(timeout_s=0.2)
    async def sleepy() -> None:
        await asyncio.sleep(60)

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("sleepy")

    with pytest.raises(nb.TaskFailed, match="TaskTimeout") as caught:
        handle.result(timeout_s=10)
    error = caught.value.error
    assert error is not None
    assert error.name == "TaskTimeout"
    assert "timeout of 0.2s" in error.message
    assert tm.get(handle).attempts == 1  # TimeoutError is not in recover_from


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
