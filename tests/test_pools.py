"""In-kernel pools: where task functions run, stopping (requeue or finish), several
pools on one group, and shutdown broadcasts.
"""

from __future__ import annotations

import asyncio
import threading

import icij_nb as nb
from icij_nb.testing import wait_until

RUNTIME_THREAD = "icij_nb-runtime"


def test_sync_tasks_run_in_threads_never_on_the_runtime_loop(app, make_manager):
    @app.task
    def where_sync() -> dict[str, object]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            on_loop = False
        else:
            on_loop = True
        return {"thread": threading.current_thread().name, "on_loop": on_loop}

    @app.task
    async def where_async() -> str:
        return threading.current_thread().name

    tm = make_manager(app)
    tm.start_pool(None, workers=2)
    sync_runs = tm.map("where_sync", [{}] * 4).results(timeout_s=5)
    async_thread = tm.submit("where_async").result(timeout_s=5)

    assert async_thread == RUNTIME_THREAD  # the check below can tell them apart
    for run in sync_runs:
        assert run["thread"] != RUNTIME_THREAD
        assert run["on_loop"] is False


def test_an_awaiting_async_task_does_not_block_the_others(app, make_manager):
    other_done = asyncio.Event()  # both tasks run on the runtime loop

    @app.task
    async def waits_for_other() -> str:
        # It would wait forever if an awaiting task blocked the pool.
        await asyncio.wait_for(other_done.wait(), 10)
        return "saw the other"

    @app.task
    async def other() -> str:
        other_done.set()
        return "other"

    tm = make_manager(app)
    tm.start_pool(None, workers=2)
    first = tm.submit("waits_for_other")
    wait_until(lambda: first.state is nb.TaskState.RUNNING, what="first to run")
    second = tm.submit("other")

    assert tm.gather([first, second], timeout_s=10) == ["saw the other", "other"]


def test_pool_stop_requeues_a_running_task_for_another_pool(app, make_manager):
    attempts: list[str] = []

    @app.task(group="g")
    async def resumable() -> str:
        attempts.append("started")
        if len(attempts) == 1:
            await asyncio.sleep(60)
        return "finished"

    tm = make_manager(app)
    first = tm.start_pool("g", workers=1)
    handle = tm.submit("resumable")
    wait_until(lambda: handle.state is nb.TaskState.RUNNING, what="first attempt")

    first.stop()

    assert first.stopped
    assert first not in tm.pools
    wait_until(lambda: handle.state is nb.TaskState.QUEUED, what="the requeue")
    assert tm.get(handle).attempts == 1
    tm.start_pool("g", workers=1)
    assert handle.result(timeout_s=5) == "finished"
    assert tm.get(handle).attempts == 2
    assert attempts == ["started", "started"]


def test_pool_stop_with_finish_running_lets_the_running_task_finish(
    app, make_manager, release
):
    @app.task
    def held(i: int) -> int:
        if i == 0:
            release.wait(30)
        return i

    tm = make_manager(app)
    pool = tm.start_pool(None, workers=1)
    running = tm.submit("held", {"i": 0})
    wait_until(lambda: running.state is nb.TaskState.RUNNING, what="task to run")
    waiting = tm.submit("held", {"i": 1})
    stopper = threading.Thread(
        target=pool.stop, kwargs={"finish_running": True, "timeout_s": 30}
    )

    stopper.start()
    wait_until(lambda: pool.stopped, what="the pool to begin stopping")
    assert running.state is nb.TaskState.RUNNING
    release.set()
    stopper.join(10)

    assert not stopper.is_alive()
    assert running.result(timeout_s=5) == 0
    assert tm.get(running).attempts == 1
    assert waiting.state is nb.TaskState.QUEUED  # the stopped pool took no more
    tm.start_pool(None, workers=1)
    assert waiting.result(timeout_s=5) == 1


def test_two_pools_on_one_group_share_the_work(app, make_manager):
    # Both tasks must run at once to pass the barrier: with one worker per pool,
    # that needs both pools.
    barrier = threading.Barrier(2, timeout=10)

    @app.task(group="shared")
    def meet(i: int) -> int:
        barrier.wait()
        return i

    tm = make_manager(app)
    one = tm.start_pool("shared", workers=1)
    two = tm.start_pool("shared", workers=1)

    assert tm.map("meet", [{"i": 0}, {"i": 1}]).results(timeout_s=15) == [0, 1]
    assert (one.done, two.done) == (1, 1)
    assert len(set(tm.frame()["worker"])) == 2


def test_shutdown_workers_stops_every_pool(app, make_manager):
    @app.task(group="a")
    def in_a() -> str:
        return "a"

    @app.task(group="b")
    def in_b() -> str:
        return "b"

    tm = make_manager(app)
    pools = [tm.start_pool("a", workers=2), tm.start_pool("b", workers=1)]
    assert tm.submit("in_a").result(timeout_s=5) == "a"

    tm.shutdown_workers()

    wait_until(lambda: all(p.stopped for p in pools), what="pools to stop")
    wait_until(lambda: not tm.pools, what="the manager to forget its pools")
    late = tm.submit("in_b")
    assert late.state is nb.TaskState.QUEUED
    tm.start_pool("b", workers=1)
    assert late.result(timeout_s=5) == "b"
