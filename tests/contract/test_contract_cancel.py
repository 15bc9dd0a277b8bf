"""Contract: cancel of queued and running tasks, with and without requeue."""

from __future__ import annotations

import asyncio
import threading

import pytest
from backends import WAIT_S

import icij_nb as nb
from icij_nb.testing import wait_until


def _wait_running(handle: nb.TaskHandle, what: str = "the task to run") -> None:
    wait_until(
        lambda: handle.state is nb.TaskState.RUNNING, timeout_s=WAIT_S, what=what
    )


def test_cancelled_queued_task_never_starts_when_no_pool_serves_it(app, backend):
    ran: list[int] = []

    @app.task(group="io")
    def record(i: int) -> int:
        ran.append(i)
        return i

    tm = backend(app)
    handles = [tm.submit("record", {"i": i}) for i in range(3)]

    handles[1].cancel()

    assert handles[1].state is nb.TaskState.CANCELLED
    assert tm.get(handles[1]).completed_at is not None
    tm.start_pool("io", workers=1)
    assert tm.gather([handles[0], handles[2]], timeout_s=WAIT_S) == [0, 2]
    with pytest.raises(nb.TaskCancelled, match="was cancelled"):
        tm.gather(handles, timeout_s=WAIT_S)
    assert ran == [0, 2]
    assert handles[1].state is nb.TaskState.CANCELLED
    assert tm.get(handles[1]).attempts == 0


def test_a_task_cancelled_while_queued_never_holds_a_pool_started_later(app, backend):
    finished: list[str] = []

    @app.task(group="io")
    async def slow(tag: str) -> str:
        await asyncio.sleep(WAIT_S)
        finished.append(tag)
        return tag

    @app.task(group="io")
    def quick() -> str:
        return "quick"

    tm = backend(app)
    cancelled = tm.submit("slow", {"tag": "cancelled"})
    cancelled.cancel()
    after = tm.submit("quick")
    tm.start_pool("io", workers=1)

    # The one worker gets to the task behind it: the cancelled one did not hold it.
    assert after.result(timeout_s=WAIT_S) == "quick"
    with pytest.raises(nb.TaskCancelled):
        cancelled.result(timeout_s=WAIT_S)
    assert finished == []


def test_cancelled_queued_task_behind_a_busy_worker_never_starts(app, backend, release):
    ran: list[str] = []

    @app.task(group="cpu")
    def step(tag: str) -> str:
        ran.append(tag)
        if tag == "blocker":
            release.wait(WAIT_S)
        return tag

    tm = backend(app)
    tm.start_pool("cpu", workers=1)
    blocker = tm.submit("step", {"tag": "blocker"})
    _wait_running(blocker, "the blocker to run")
    victim = tm.submit("step", {"tag": "victim"})
    if backend.queued is not None:
        assert backend.queued("cpu") == 1

    victim.cancel()

    assert victim.state is nb.TaskState.CANCELLED
    release.set()
    after = tm.submit("step", {"tag": "after"})
    assert tm.gather([blocker, after], timeout_s=WAIT_S) == ["blocker", "after"]
    # The worker took the victim before "after", and skipped it.
    assert ran == ["blocker", "after"]
    assert victim.state is nb.TaskState.CANCELLED
    with pytest.raises(nb.TaskCancelled):
        victim.result(timeout_s=WAIT_S)
    if backend.queued is not None:
        assert backend.queued("cpu") == 0


def test_cancel_of_a_running_task_stops_it_and_the_worker_goes_on(app, backend):
    stopped = threading.Event()

    @app.task(group="cpu")
    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.set()
            raise

    @app.task(group="cpu")
    def quick(n: int) -> int:
        return n

    tm = backend(app)
    tm.start_pool("cpu", workers=1)
    handle = tm.submit("forever")
    _wait_running(handle)

    tm.cancel(handle)

    with pytest.raises(nb.TaskCancelled) as caught:
        handle.result(timeout_s=WAIT_S)
    assert caught.value.task_id == handle.id
    assert handle.state is nb.TaskState.CANCELLED
    assert stopped.wait(WAIT_S)  # the function itself was stopped
    assert tm.get(handle).completed_at is not None
    assert tm.submit("quick", {"n": 7}).result(timeout_s=WAIT_S) == 7
    with pytest.raises(nb.InvalidTransition):
        tm.cancel(handle)


def test_cancel_with_requeue_sends_a_running_task_back_and_it_completes(app, backend):
    runs: list[str] = []

    @app.task(group="cpu")
    async def second_time_lucky() -> str:
        runs.append("started")
        if len(runs) == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                runs.append("stopped")
                raise
        return "done"

    @app.task(group="cpu")
    def quick(n: int) -> int:
        return n

    tm = backend(app)
    states: list[tuple[str, nb.TaskState]] = []
    tm.subscribe(lambda tasks: states.extend((t.id, t.state) for t in tasks))
    pool = tm.start_pool("cpu", workers=1)
    handle = tm.submit("second_time_lucky")
    _wait_running(handle, "the first attempt")

    handle.cancel(requeue=True)

    assert handle.result(timeout_s=WAIT_S) == "done"
    assert runs == ["started", "stopped", "started"]
    assert tm.get(handle).attempts == 2
    # Listeners get one snapshot per task per batch of events, so the QUEUED
    # between the two runs may be folded into the second RUNNING; never CANCELLED.
    mine = [s for i, s in states if i == handle.id]
    assert nb.TaskState.CANCELLED not in mine
    assert mine[-1] is nb.TaskState.DONE
    # The same single worker is free: later tasks still run.
    assert tm.map("quick", [{"n": i} for i in range(3)]).results(timeout_s=WAIT_S) == [
        0,
        1,
        2,
    ]
    assert pool.done == 4
    if backend.queued is not None:
        assert backend.queued("cpu") == 0


def test_cancel_with_requeue_of_a_queued_task_leaves_it_queued(app, backend):
    @app.task(group="io")
    def fine() -> int:
        return 3

    tm = backend(app)
    handle = tm.submit("fine")

    handle.cancel(requeue=True)

    assert handle.state is nb.TaskState.QUEUED
    tm.start_pool("io", workers=1)
    assert handle.result(timeout_s=WAIT_S) == 3


def test_cancel_of_a_done_task_raises_invalid_transition(app, backend):
    @app.task
    def fine() -> int:
        return 1

    tm = backend(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("fine")
    handle.result(timeout_s=WAIT_S)

    with pytest.raises(nb.InvalidTransition) as caught:
        tm.cancel(handle)

    assert f"task {handle.id!r} is already DONE" in str(caught.value)
    assert "only CREATED, QUEUED or RUNNING tasks can be cancelled" in str(caught.value)
    assert caught.value.state is nb.TaskState.DONE
    assert handle.state is nb.TaskState.DONE
