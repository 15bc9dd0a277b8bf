"""TaskManager through the public API: submit, map, wait, cancel, retry, subscribe,
the task table and the reprs. Workers and pools run for real, in this process.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import icij_nb as nb
from icij_nb.testing import wait_until, wait_until_async


def test_submit_returns_the_result_of_a_sync_task(app, make_manager):
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("add", {"x": 2, "y": 3})

    assert handle.result(timeout_s=5) == 5
    assert handle.state is nb.TaskState.DONE
    assert tm.result(handle.id, timeout_s=5) == 5
    assert tm.get(handle).result == 5


def test_submit_returns_the_result_of_an_async_task(app, make_manager):
    @app.task(group="io")
    async def greet(name: str) -> str:
        await asyncio.sleep(0)
        return f"hello {name}"

    tm = make_manager(app)
    tm.start_pool("io", workers=1)

    assert tm.submit("greet", {"name": "ada"}).result(timeout_s=5) == "hello ada"


def test_map_results_come_back_in_submission_order(app, make_manager):
    @app.task
    async def late_first(i: int, n: int) -> int:
        # Earlier tasks sleep longer, so they finish last.
        await asyncio.sleep((n - i) * 0.01)
        return i * 10

    tm = make_manager(app)
    tm.start_pool(None, workers=8)
    batch = tm.map("late_first", [{"i": i, "n": 8} for i in range(8)])

    assert isinstance(batch, nb.TaskBatch)
    assert batch.results(timeout_s=5) == [i * 10 for i in range(8)]
    assert tm.gather(reversed(batch), timeout_s=5) == [i * 10 for i in range(7, -1, -1)]


def test_gather_takes_handles_and_ids_and_returns_results_in_order(app, make_manager):
    @app.task
    def echo(value: object) -> object:
        return value

    tm = make_manager(app)
    tm.start_pool(None, workers=3)
    handles = [tm.submit("echo", {"value": v}) for v in ("a", [1, 2], {"k": 1.5})]

    results = tm.gather([handles[0], handles[1].id, handles[2]], timeout_s=5)

    assert results == ["a", [1, 2], {"k": 1.5}]


def test_task_returning_none_has_a_none_result(app, make_manager):
    @app.task
    def nothing() -> None:
        return None

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("nothing")

    assert handle.result(timeout_s=5) is None
    task = tm.get(handle)
    assert task.state is nb.TaskState.DONE
    assert task.has_result is True
    assert task.result is None


def test_wait_returns_records_of_failed_tasks_without_raising(app, make_manager):
    @app.task
    def boom() -> None:
        raise ValueError("bad")

    @app.task
    def fine() -> int:
        return 1

    tm = make_manager(app)
    tm.start_pool(None, workers=2)
    failed, done = tm.wait([tm.submit("boom"), tm.submit("fine")], timeout_s=5)

    assert failed.state is nb.TaskState.ERROR
    assert failed.errors[-1].name == "ValueError"
    assert done.state is nb.TaskState.DONE
    assert done.result == 1


def test_gather_with_return_exceptions_puts_failures_in_the_list(app, make_manager):
    @app.task
    def boom() -> None:
        raise ValueError("bad")

    @app.task
    def fine() -> int:
        return 1

    tm = make_manager(app)
    tm.start_pool(None, workers=2)
    handles = [tm.submit("fine"), tm.submit("boom")]

    results = tm.gather(handles, timeout_s=5, return_exceptions=True)

    assert results[0] == 1
    assert isinstance(results[1], nb.TaskFailed)
    assert results[1].task_id == handles[1].id
    with pytest.raises(nb.TaskFailed, match="ValueError: bad"):
        tm.gather(handles, timeout_s=5)


# -- awaitable forms, from a loop that is not the runtime's ----------------------


async def test_await_handle_from_a_foreign_loop(app, make_manager):
    @app.task
    async def double(x: int) -> int:
        return 2 * x

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("double", {"x": 21})

    assert await handle == 42
    assert await handle.result_async(timeout_s=5) == 42


async def test_await_batch_gives_results_in_order(app, make_manager):
    @app.task
    def square(x: int) -> int:
        return x * x

    tm = make_manager(app)
    tm.start_pool(None, workers=2)
    batch = tm.map("square", [{"x": x} for x in range(5)])

    assert await batch == [0, 1, 4, 9, 16]


async def test_async_twins_submit_map_gather_and_result(app, make_manager):
    @app.task
    async def inc(x: int) -> int:
        return x + 1

    tm = make_manager(app)
    tm.start_pool(None, workers=2)

    handle = await tm.submit_async("inc", {"x": 1})
    batch = await tm.map_async("inc", [{"x": 10}, {"x": 20}])

    assert isinstance(handle, nb.TaskHandle)
    assert await tm.result_async(handle, timeout_s=5) == 2
    assert await tm.gather_async([*batch, handle], timeout_s=5) == [11, 21, 2]
    records = await tm.wait_async(batch, timeout_s=5)
    assert [r.state for r in records] == [nb.TaskState.DONE] * 2
    assert (await tm.get_async(handle)).result == 2


async def test_async_wait_times_out_without_blocking_the_test_loop(app, make_manager):
    @app.task
    def never_runs() -> None:
        pass

    tm = make_manager(app)  # no pool: the task stays queued
    handle = tm.submit("never_runs")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    with pytest.raises(nb.WaitTimeout):
        await handle.result_async(timeout_s=0.3)
    ticker.cancel()
    assert ticks > 1  # the test's own loop kept running during the wait
    await wait_until_async(lambda: handle.state is nb.TaskState.QUEUED, timeout_s=1)


# -- cancel ------------------------------------------------------------------------


def test_cancelled_queued_task_never_starts_when_no_pool_serves_it(app, make_manager):
    ran: list[int] = []

    @app.task(group="later")
    def record(i: int) -> int:
        ran.append(i)
        return i

    tm = make_manager(app)
    handles = [tm.submit("record", {"i": i}) for i in range(3)]

    handles[1].cancel()

    assert handles[1].state is nb.TaskState.CANCELLED
    tm.start_pool("later", workers=1)
    assert tm.gather([handles[0], handles[2]], timeout_s=5) == [0, 2]
    with pytest.raises(nb.TaskCancelled, match="was cancelled"):
        tm.gather(handles, timeout_s=5)
    assert ran == [0, 2]


def test_cancelled_queued_task_behind_a_busy_worker_never_starts(
    app, make_manager, release
):
    ran: list[str] = []

    @app.task
    def step(label: str) -> str:
        ran.append(label)
        if label == "first":
            release.wait(30)
        return label

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    first = tm.submit("step", {"label": "first"})
    wait_until(lambda: first.state is nb.TaskState.RUNNING, what="first to run")
    second = tm.submit("step", {"label": "second"})

    second.cancel()
    release.set()
    third = tm.submit("step", {"label": "third"})

    assert tm.gather([first, third], timeout_s=5) == ["first", "third"]
    assert second.state is nb.TaskState.CANCELLED
    assert ran == ["first", "third"]


def test_cancel_of_a_running_async_task_ends_it_cancelled(app, make_manager):
    stopped = threading.Event()

    @app.task
    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.set()
            raise

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("forever")
    wait_until(lambda: handle.state is nb.TaskState.RUNNING, what="task to run")

    handle.cancel()

    wait_until(lambda: handle.done(), what="the cancel to land")
    assert handle.state is nb.TaskState.CANCELLED
    assert stopped.is_set()
    with pytest.raises(nb.TaskCancelled) as caught:
        handle.result(timeout_s=5)
    assert caught.value.task_id == handle.id


def test_cancel_with_requeue_puts_a_running_task_back_and_it_runs_again(
    app, make_manager
):
    attempts: list[str] = []

    @app.task
    async def second_time_lucky() -> str:
        attempts.append("started")
        if len(attempts) == 1:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                attempts.append("stopped")
                raise
        return "done"

    tm = make_manager(app)
    states: list[nb.TaskState] = []
    tm.subscribe(lambda tasks: states.extend(t.state for t in tasks))
    tm.start_pool(None, workers=1)
    handle = tm.submit("second_time_lucky")
    wait_until(lambda: handle.state is nb.TaskState.RUNNING, what="first attempt")

    handle.cancel(requeue=True)

    assert handle.result(timeout_s=5) == "done"
    assert attempts == ["started", "stopped", "started"]
    assert tm.get(handle).attempts == 2
    assert nb.TaskState.CANCELLED not in states


def test_cancel_with_requeue_of_a_queued_task_leaves_it_queued(app, make_manager):
    @app.task(group="later")
    def fine() -> int:
        return 3

    tm = make_manager(app)
    handle = tm.submit("fine")

    handle.cancel(requeue=True)

    assert handle.state is nb.TaskState.QUEUED
    tm.start_pool("later", workers=1)
    assert handle.result(timeout_s=5) == 3


def test_cancel_of_a_done_task_raises_invalid_transition(app, make_manager):
    @app.task
    def fine() -> int:
        return 1

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("fine")
    handle.result(timeout_s=5)

    with pytest.raises(nb.InvalidTransition) as caught:
        tm.cancel(handle)

    assert f"task {handle.id!r} is already DONE" in str(caught.value)
    assert "only CREATED, QUEUED or RUNNING tasks can be cancelled" in str(caught.value)
    assert caught.value.state is nb.TaskState.DONE
    assert handle.state is nb.TaskState.DONE


# -- retry -------------------------------------------------------------------------


def test_retry_of_a_failed_task_runs_it_again_under_the_same_id(app, make_manager):
    calls: list[int] = []

    @app.task
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return "ok"

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    handle = tm.submit("flaky")
    with pytest.raises(nb.TaskFailed):
        handle.result(timeout_s=5)

    again = tm.retry(handle)

    assert again.id == handle.id
    assert again.result(timeout_s=5) == "ok"
    task = tm.get(handle)
    assert task.state is nb.TaskState.DONE
    assert [e.message for e in task.errors] == ["first call fails"]
    assert len(calls) == 2


def test_retry_of_a_cancelled_task_runs_it(app, make_manager):
    @app.task(group="later")
    def fine() -> int:
        return 7

    tm = make_manager(app)
    handle = tm.submit("fine")
    handle.cancel()
    assert handle.state is nb.TaskState.CANCELLED

    handle.retry()

    assert handle.state is nb.TaskState.QUEUED
    tm.start_pool("later", workers=1)
    assert handle.result(timeout_s=5) == 7


def test_retry_of_a_task_cancelled_while_queued_behind_a_busy_pool_runs_it(
    app, make_manager, release
):
    @app.task
    def step(wait: bool) -> bool:
        if wait:
            release.wait(30)
        return wait

    tm = make_manager(app)
    tm.start_pool(None, workers=1)
    busy = tm.submit("step", {"wait": True})
    wait_until(lambda: busy.state is nb.TaskState.RUNNING, what="busy to run")
    queued = tm.submit("step", {"wait": False})
    queued.cancel()

    queued.retry()
    release.set()

    assert queued.result(timeout_s=5) is False
    assert busy.result(timeout_s=5) is True


def test_retry_of_a_done_or_running_task_raises_invalid_transition(
    app, make_manager, release
):
    @app.task
    def hold(wait: bool) -> bool:
        if wait:
            release.wait(30)
        return wait

    tm = make_manager(app)
    tm.start_pool(None, workers=2)
    done = tm.submit("hold", {"wait": False})
    done.result(timeout_s=5)
    running = tm.submit("hold", {"wait": True})
    wait_until(lambda: running.state is nb.TaskState.RUNNING, what="task to run")

    with pytest.raises(nb.InvalidTransition, match="is DONE; only ERROR or CANCELLED"):
        tm.retry(done)
    with pytest.raises(nb.InvalidTransition, match="is RUNNING; only ERROR or"):
        running.retry()
    release.set()
    assert running.result(timeout_s=5) is True


# -- subscribe ---------------------------------------------------------------------


def test_subscriber_gets_snapshots_of_changed_tasks(app, make_manager, release):
    @app.task
    def held() -> str:
        release.wait(30)
        return "r"

    tm = make_manager(app)
    seen: list[nb.Task] = []
    tm.subscribe(seen.extend)
    tm.start_pool(None, workers=1)
    handle = tm.submit("held")
    wait_until(lambda: handle.state is nb.TaskState.RUNNING, what="task to run")
    release.set()
    handle.result(timeout_s=5)

    wait_until(lambda: seen and seen[-1].state.is_ready, what="the DONE snapshot")
    assert all(isinstance(t, nb.Task) for t in seen)
    assert {t.id for t in seen} == {handle.id}
    # Snapshots: each keeps the state it was sent with.
    assert [t.state for t in seen] == [
        nb.TaskState.QUEUED,
        nb.TaskState.RUNNING,
        nb.TaskState.DONE,
    ]
    assert seen[0].has_result is False
    assert seen[-1].result == "r"


def test_unsubscribe_stops_notifications(app, make_manager):
    @app.task
    def fine() -> int:
        return 1

    tm = make_manager(app)
    first: list[nb.Task] = []
    second: list[nb.Task] = []
    unsubscribe = tm.subscribe(first.extend)
    tm.subscribe(second.extend)
    tm.start_pool(None, workers=1)
    before = tm.submit("fine")
    before.result(timeout_s=5)
    wait_until(
        lambda: any(t.id == before.id and t.state.is_ready for t in first),
        what="the first listener to see the first task DONE",
    )

    unsubscribe()
    unsubscribe()  # harmless twice
    after = tm.submit("fine")
    after.result(timeout_s=5)

    wait_until(
        lambda: any(t.id == after.id and t.state.is_ready for t in second),
        what="the second listener to see the second task DONE",
    )
    assert after.id not in {t.id for t in first}


def test_raising_listener_does_not_break_the_manager(app, make_manager, caplog):
    @app.task
    def fine(i: int) -> int:
        return i

    tm = make_manager(app)
    good: list[nb.Task] = []

    def bad(tasks: list[nb.Task]) -> None:
        raise RuntimeError("listener bug")

    tm.subscribe(bad)
    tm.subscribe(good.extend)
    tm.start_pool(None, workers=2)

    assert tm.map("fine", [{"i": i} for i in range(3)]).results(timeout_s=5) == [
        0,
        1,
        2,
    ]
    wait_until(
        lambda: sum(t.state is nb.TaskState.DONE for t in good) == 3,
        what="the other listener to see every task DONE",
    )
    assert "listener bug" in caplog.text


# -- frame ---------------------------------------------------------------------------


def test_frame_has_one_row_per_task_with_states_results_and_errors(app, make_manager):
    @app.task(group="work")
    def job(kind: str) -> str:
        if kind == "fail":
            raise ValueError("job failed on purpose")
        return f"{kind}-result"

    tm = make_manager(app)
    later = tm.submit("job", {"kind": "never"})
    later.cancel()
    tm.start_pool("work", workers=2)
    ok = tm.submit("job", {"kind": "ok"})
    failed = tm.submit("job", {"kind": "fail"})
    tm.wait([ok, failed], timeout_s=5)

    frame = tm.frame().set_index("id")

    assert list(tm.frame().columns) == list(nb.FRAME_COLUMNS)
    assert len(frame) == 3
    assert frame.loc[ok.id, "state"] == "DONE"
    assert frame.loc[ok.id, "result"] == "ok-result"
    assert frame.loc[ok.id, "args"] == {"kind": "ok"}
    assert frame.loc[ok.id, "group"] == "work"
    assert frame.loc[ok.id, "attempts"] == 1
    assert frame.loc[failed.id, "state"] == "ERROR"
    assert frame.loc[failed.id, "error"] == "ValueError: job failed on purpose"
    assert frame.loc[later.id, "state"] == "CANCELLED"
    assert frame.loc[later.id, "attempts"] == 0


# -- reprs ---------------------------------------------------------------------------


def test_reprs_are_short_live_and_show_no_secrets(app, make_manager, release):
    @app.task(group="cpu")
    def login(password: str, wait: bool) -> bool:
        if wait:
            release.wait(30)
        return True

    tm = make_manager(app)
    pool = tm.start_pool("cpu", workers=2)
    done = tm.submit("login", {"password": "hunter2-secret", "wait": False})
    done.result(timeout_s=5)
    held = tm.submit("login", {"password": "hunter2-secret", "wait": True})
    wait_until(lambda: held.state is nb.TaskState.RUNNING, what="task to run")
    batch = tm.map("login", [{"password": "hunter2-secret", "wait": False}] * 2)
    batch.results(timeout_s=5)

    reprs = {
        "manager": repr(tm),
        "manager_html": tm._repr_html_(),
        "pool": repr(pool),
        "pool_html": pool._repr_html_(),
        "handle": repr(held),
        "handle_html": held._repr_html_(),
        "batch": repr(batch),
    }

    for name, text in reprs.items():
        assert "hunter2" not in text, name
        assert len(text) < 600, name
    assert "tasks=4" in reprs["manager"]
    assert "done=3" in reprs["manager"]
    assert "running=1" in reprs["manager"]
    assert "DONE: <b>3</b>" in reprs["manager_html"]
    assert "running=1" in reprs["pool"]
    assert "done=3" in reprs["pool"]
    assert "RUNNING" in reprs["handle"]
    assert held.id in reprs["handle"]
    assert "RUNNING" in reprs["handle_html"]
    assert reprs["batch"] == "<TaskBatch 2 tasks done=2>"

    release.set()
    held.result(timeout_s=5)
    assert "done=4" in repr(tm)
    assert "running" not in repr(tm)
    assert "DONE" in repr(held)
    pool.stop()
    assert "stopped" in repr(pool)
