"""In-kernel pools: where task functions run (threads for sync tasks, the runtime
loop for async ones). Stopping (requeue or finish), several pools on one group and
shutdown broadcasts, on every backend, are in ``tests/contract``.
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
