"""Contract: what subscribers and handles see, in order: states and progress."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from backends import WAIT_S

import icij_nb as nb
from icij_nb.testing import wait_until

ORDER = {nb.TaskState.QUEUED: 0, nb.TaskState.RUNNING: 1, nb.TaskState.DONE: 2}


def test_subscriber_gets_snapshots_queued_running_done_in_order(app, backend, release):
    @app.task
    def held() -> str:
        release.wait(WAIT_S)
        return "r"

    tm = backend(app)
    seen: list[nb.Task] = []
    tm.subscribe(seen.extend)
    tm.start_pool(None, workers=1)
    handle = tm.submit("held")
    wait_until(
        lambda: handle.state is nb.TaskState.RUNNING, timeout_s=WAIT_S, what="run"
    )
    release.set()
    handle.result(timeout_s=WAIT_S)

    wait_until(
        lambda: seen and seen[-1].state.is_ready,
        timeout_s=WAIT_S,
        what="the DONE snapshot",
    )
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


def test_states_never_go_backwards_and_progress_only_grows(app, backend):
    @app.task(group="cpu")
    async def stepwise(progress: Callable[[float], Awaitable[None]], i: int) -> int:
        for step in (0.25, 0.5, 0.75):
            await progress(step)
            await asyncio.sleep(0)
        return i

    tm = backend(app)
    seen: list[nb.Task] = []
    tm.subscribe(seen.extend)
    tm.start_pool("cpu", workers=2, progress_interval_s=0)
    batch = tm.map("stepwise", [{"i": i} for i in range(6)])

    assert batch.results(timeout_s=WAIT_S) == list(range(6))
    wait_until(
        lambda: sum(t.state is nb.TaskState.DONE for t in seen) == 6,
        timeout_s=WAIT_S,
        what="a DONE snapshot of every task",
    )
    for handle in batch:
        mine = [t for t in seen if t.id == handle.id]
        ranks = [ORDER[t.state] for t in mine]
        assert ranks == sorted(ranks), [t.state for t in mine]
        assert (mine[0].state, mine[-1].state) == (
            nb.TaskState.QUEUED,
            nb.TaskState.DONE,
        )
        progress = [t.progress for t in mine]
        assert progress == sorted(progress), progress
        assert progress[-1] == 1.0
        assert [t.state for t in mine].count(nb.TaskState.DONE) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_progress_is_visible_while_the_task_runs(app, backend, release, kind):
    @app.task(group="cpu")
    def halfway_sync(progress: Callable[[float], None]) -> str:
        progress(0.5)
        release.wait(WAIT_S)
        return "ok"

    @app.task(group="cpu")
    async def halfway_async(progress: Callable[[float], Awaitable[None]]) -> str:
        await progress(0.5)
        await asyncio.to_thread(release.wait, WAIT_S)
        return "ok"

    tm = backend(app)
    seen: list[tuple[nb.TaskState, float]] = []
    tm.subscribe(lambda tasks: seen.extend((t.state, t.progress) for t in tasks))
    tm.start_pool("cpu", workers=1)
    handle = tm.submit(f"halfway_{kind}")

    wait_until(
        lambda: (handle.state, handle.progress) == (nb.TaskState.RUNNING, 0.5),
        timeout_s=WAIT_S,
        what="progress 0.5 while running",
    )
    assert "progress=50%" in repr(handle)
    release.set()

    assert handle.result(timeout_s=WAIT_S) == "ok"
    assert handle.progress == 1.0
    wait_until(
        lambda: seen and seen[-1] == (nb.TaskState.DONE, 1.0),
        timeout_s=WAIT_S,
        what="the DONE snapshot",
    )
    assert (nb.TaskState.RUNNING, 0.5) in seen
