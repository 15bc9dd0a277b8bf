"""A TaskManager on Temporal with an icij_nb Temporal pool: the task lifecycle.

Every test has a group (so a task queue) of its own on the session's dev server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import icij_nb as nb
from icij_nb.errors import BrokerError, TaskFailed
from icij_nb.model import TaskState
from icij_nb.testing import wait_until

pytestmark = pytest.mark.temporal


def make_app(group: str, started: threading.Event | None = None) -> nb.App:
    app = nb.App("tapp")
    calls: dict[str, int] = {"flaky": 0}

    @app.task(group=group)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(group=group, max_retries=0)
    def boom(why: str) -> None:
        raise ValueError(why)

    @app.task(group=group)
    async def steps(n: int, progress: Any) -> str:
        for i in range(n):
            await progress(i / n)
            await asyncio.sleep(0.4)
        return "stepped"

    @app.task(group=group)
    async def sleepy(s: float) -> str:
        if started is not None:
            started.set()
        await asyncio.sleep(s)
        return "woke"

    @app.task(group=group, max_retries=2, recover_from=(ConnectionError,))
    def flaky(fails: int) -> int:
        calls["flaky"] += 1
        if calls["flaky"] <= fails:
            raise ConnectionError(f"attempt {calls['flaky']} failed")
        return calls["flaky"]

    @app.task(group=group)
    def not_json() -> object:
        return {1, 2}

    return app


def test_tasks_run_to_done_with_results(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    tm.start_pool(group, workers=2)
    handles = tm.map("add", [{"a": i, "b": 1} for i in range(10)])
    assert tm.gather(handles, timeout_s=60) == list(range(1, 11))
    task = tm.get(handles[0].id)
    assert task.state is TaskState.DONE
    assert task.progress == 1.0
    assert task.attempts == 1


def test_error_is_reported_with_the_exception_class(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    tm.start_pool(group)
    handle = tm.submit("boom", {"why": "broken input"})
    with pytest.raises(TaskFailed) as info:
        handle.result(timeout_s=60)
    error = info.value.error
    assert error is not None
    assert error.name == "ValueError"
    assert error.message == "broken input"
    assert any(frame.name == "boom" for frame in error.stacktrace)
    assert tm.get(handle.id).state is TaskState.ERROR


def test_progress_is_read_from_the_search_attributes(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    tm.start_pool(group, progress_interval_s=0.2)
    seen: set[float] = set()
    handle = tm.submit("steps", {"n": 5})
    while not handle.done():
        seen.add(handle.progress)
        time.sleep(0.05)
    assert handle.result(timeout_s=1) == "stepped"
    assert any(0.0 < p < 1.0 for p in seen), seen
    assert tm.get(handle.id).progress == 1.0


def test_a_task_waits_queued_until_a_pool_serves_its_group(
    make_tm: Any, group: str
) -> None:
    tm = make_tm(make_app(group))
    handle = tm.submit("add", {"a": 1, "b": 2})
    reason = wait_until(
        lambda: tm.engine.waiting_reason(handle.id), timeout_s=10, what="a reason"
    )
    assert f"no worker polls task queue {group.lower()!r}" in reason
    assert handle.state is TaskState.QUEUED
    tm.start_pool(group)
    assert handle.result(timeout_s=60) == 3


def test_cancel_of_a_queued_task_means_it_never_runs(make_tm: Any, group: str) -> None:
    started = threading.Event()
    tm = make_tm(make_app(group, started))
    handle = tm.submit("sleepy", {"s": 0.1})
    tm.cancel(handle)
    wait_until(lambda: handle.state is TaskState.CANCELLED, timeout_s=10)
    tm.start_pool(group)
    after = tm.submit("add", {"a": 1, "b": 1})
    assert after.result(timeout_s=60) == 2
    assert not started.is_set()
    assert handle.state is TaskState.CANCELLED


def test_cancel_of_a_running_task_stops_it(make_tm: Any, group: str) -> None:
    started = threading.Event()
    tm = make_tm(make_app(group, started))
    pool = tm.start_pool(group)
    handle = tm.submit("sleepy", {"s": 60})
    assert started.wait(30)
    wait_until(lambda: handle.state is TaskState.RUNNING, timeout_s=10)
    tm.cancel(handle)
    assert handle.state is TaskState.CANCELLED
    # Temporal tells the activity at its next heartbeat: the slot frees up.
    wait_until(lambda: pool.running == 0, timeout_s=15, what="the activity to stop")


def test_recoverable_errors_are_retried_by_temporal(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    tm.start_pool(group)
    assert tm.submit("flaky", {"fails": 2}).result(timeout_s=60) == 3


def test_retries_stop_after_max_retries(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    tm.start_pool(group)
    handle = tm.submit("flaky", {"fails": 10})
    with pytest.raises(TaskFailed) as info:
        handle.result(timeout_s=60)
    assert info.value.error is not None
    assert info.value.error.name == "ConnectionError"
    assert info.value.error.message == "attempt 3 failed"


def test_a_second_group_has_its_own_queue_and_pool(make_tm: Any, group: str) -> None:
    other = group + "-b"
    app = make_app(group)

    @app.task(group=other)
    def double(x: int) -> int:
        return 2 * x

    tm = make_tm(app)
    tm.start_pool(other)
    doubled = tm.submit("double", {"x": 21})
    added = tm.submit("add", {"a": 1, "b": 1})
    assert doubled.result(timeout_s=60) == 42
    assert added.state is TaskState.QUEUED
    tm.start_pool(group)
    assert added.result(timeout_s=60) == 2


def test_a_result_json_cannot_carry_fails_the_task(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    tm.start_pool(group)
    with pytest.raises(TaskFailed) as info:
        tm.submit("not_json").result(timeout_s=60)
    assert info.value.error is not None
    assert info.value.error.name == "InvalidResult"


def test_a_task_id_that_exists_is_refused(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    tm.start_pool(group)
    first = tm.submit("add", {"a": 1, "b": 1}, task_id=f"dup-{group}")
    assert first.result(timeout_s=60) == 2
    other = make_tm(make_app(group))
    with pytest.raises(BrokerError, match="already exists"):
        other.submit("add", {"a": 2, "b": 2}, task_id=f"dup-{group}")


def test_args_json_cannot_carry_are_refused(make_tm: Any, group: str) -> None:
    tm = make_tm(make_app(group))
    with pytest.raises(nb.InvalidArguments):
        tm.submit("add", {"a": {1, 2}, "b": 1})


def test_a_new_kernel_adopts_tasks_an_earlier_one_started(
    make_tm: Any, group: str, tmp_path: Any
) -> None:
    store = tmp_path / "tasks.sqlite3"
    first = make_tm(make_app(group), store=store)
    handle = first.submit("sleepy", {"s": 2})
    first.close()
    workers = make_tm(make_app(group))
    workers.start_pool(group)
    second = make_tm(make_app(group), store=store)
    assert second.result(handle.id, timeout_s=60) == "woke"
    assert second.get(handle.id).state is TaskState.DONE


def test_a_new_kernel_settles_tasks_that_finished_while_none_was_open(
    make_tm: Any, group: str, tmp_path: Any
) -> None:
    store = tmp_path / "tasks.sqlite3"
    first = make_tm(make_app(group), store=store)
    handle = first.submit("add", {"a": 2, "b": 3})
    first.close()
    # The task runs and ends while no manager of that store is open; an observer
    # of the namespace says when it ended.
    observer = make_tm(make_app(group), observe_only=True)
    workers = make_tm(make_app(group))
    workers.start_pool(group)
    wait_until(
        lambda: (
            (t := observer.peek(handle.id)) is not None and t.state is TaskState.DONE
        ),
        timeout_s=60,
        what="the task to end",
    )
    second = make_tm(make_app(group), store=store)
    assert second.result(handle.id, timeout_s=60) == 5
    assert second.get(handle.id).state is TaskState.DONE
