"""TaskManager through the public API on the in-process broker: the awaitable
forms, retry and subscribe rules, the task table and the reprs. Workers and pools
run for real, in this process. What every backend must do (submit, map, gather,
wait, cancel, retry, events in order) is in ``tests/contract``.
"""

from __future__ import annotations

import asyncio

import pytest

import icij_nb as nb
from icij_nb.broker_engine import BrokerEngine
from icij_nb.testing import wait_until, wait_until_async
from icij_nb.view import TaskView

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


# -- retry -------------------------------------------------------------------------


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


def test_a_manager_built_by_hand_refuses_work_until_started(app):
    @app.task
    def double(x: int) -> int:
        return 2 * x

    tm = nb.TaskManager(
        app, broker=nb.MemoryBroker(app), store=nb.TaskStore(":memory:")
    )
    with pytest.raises(nb.ManagerNotStarted, match=r"tm\.start\(\)"):
        tm.submit("double", {"x": 1})
    assert tm.start() is tm
    try:
        tm.start_pool(None)
        assert tm.submit("double", {"x": 21}).result(timeout_s=10) == 42
    finally:
        tm.close()


def test_a_manager_needs_a_broker_or_an_engine_but_not_both(app):
    with pytest.raises(nb.ConfigError, match="one of broker="):
        nb.TaskManager(app, store=nb.TaskStore(":memory:"))
    broker = nb.MemoryBroker(app)
    with pytest.raises(nb.ConfigError, match="one of broker="):
        nb.TaskManager(
            app,
            broker=broker,
            engine=BrokerEngine(broker),
            store=nb.TaskStore(":memory:"),
        )


def test_the_manager_is_the_view_the_faces_depend_on(app, make_manager):
    tm = make_manager(app)
    # Structural: every member of TaskView exists on the manager with its kind.
    for name, member in vars(TaskView).items():
        if name.startswith("_"):
            continue
        assert hasattr(tm, name), name
        if not isinstance(member, property):  # a method: a method on the manager too
            assert callable(getattr(tm, name)), name
    # (mypy checks the signatures where the manager hands itself to a handle or a
    # board, both typed with TaskView)
    assert tm.can_act
    assert tm.live_workers() is None
