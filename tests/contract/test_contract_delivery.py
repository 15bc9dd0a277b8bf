"""Contract: delivery per group, late ack and redelivery, workers, shutdown, close.

A task reaches only the pools of its group and waits, QUEUED, while no pool serves
it. A task whose pool stops (or whose worker process is killed) while it runs is
given again and ends DONE once: the broker acknowledges a task only once it ended.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from backends import WAIT_S

import icij_nb as nb
from icij_nb.testing import wait_until


def _wait_running(handle: nb.TaskHandle, what: str = "the task to run") -> None:
    wait_until(
        lambda: handle.state is nb.TaskState.RUNNING, timeout_s=WAIT_S, what=what
    )


def test_tasks_reach_only_the_pools_of_their_group(app, backend):
    @app.task(group="cpu")
    def crunch(n: int) -> int:
        return n

    @app.task(group="io")
    def fetch(n: int) -> int:
        return n

    tm = backend(app)
    cpu = tm.start_pool("cpu", workers=2)
    waiting = tm.submit("fetch", {"n": -1})
    crunched = tm.map("crunch", [{"n": i} for i in range(4)])

    assert crunched.results(timeout_s=WAIT_S) == [0, 1, 2, 3]
    # Every cpu task ran in the cpu pool; the io task is still waiting for a pool.
    cpu_workers = {w.worker_id for w in cpu.workers}
    assert {tm.get(h).worker_id for h in crunched} <= cpu_workers
    assert cpu.done == 4
    assert waiting.state is nb.TaskState.QUEUED
    assert tm.get(waiting).attempts == 0
    if backend.queued is not None:
        assert backend.queued("io") == 1
        assert backend.queued("cpu") == 0

    io = tm.start_pool("io", workers=1)

    assert waiting.result(timeout_s=WAIT_S) == -1
    assert tm.get(waiting).worker_id in {w.worker_id for w in io.workers}
    assert (cpu.done, io.done) == (4, 1)


def test_two_pools_on_one_group_share_the_work(app, backend):
    # Both tasks must run at once to pass the barrier: with one worker per pool,
    # that needs both pools.
    barrier = threading.Barrier(2, timeout=WAIT_S)

    @app.task(group="cpu")
    def meet(i: int) -> int:
        barrier.wait()
        return i

    tm = backend(app)
    one = tm.start_pool("cpu", workers=1)
    two = tm.start_pool("cpu", workers=1)

    assert tm.map("meet", [{"i": 0}, {"i": 1}]).results(timeout_s=WAIT_S) == [0, 1]
    assert (one.done, two.done) == (1, 1)
    assert len(set(tm.frame()["worker"])) == 2


def test_pool_stop_requeues_a_running_task_for_another_pool(app, backend):
    runs: list[str] = []

    @app.task(group="cpu")
    async def resumable() -> str:
        runs.append("started")
        if len(runs) == 1:
            await asyncio.sleep(3600)
        runs.append("finished")
        return "finished"

    tm = backend(app)
    first = tm.start_pool("cpu", workers=1)
    handle = tm.submit("resumable")
    _wait_running(handle, "the first attempt")

    first.stop()

    assert first.stopped
    assert first not in tm.pools
    wait_until(
        lambda: handle.state is nb.TaskState.QUEUED, timeout_s=WAIT_S, what="requeue"
    )
    assert tm.get(handle).attempts == 1
    if backend.queued is not None:
        assert backend.queued("cpu") == 1
    tm.start_pool("cpu", workers=1)
    assert handle.result(timeout_s=WAIT_S) == "finished"
    task = tm.get(handle)
    assert (task.state, task.attempts, task.errors) == (nb.TaskState.DONE, 2, [])
    assert runs == ["started", "started", "finished"]
    if backend.queued is not None:
        assert backend.queued("cpu") == 0


def test_pool_stop_with_finish_running_lets_the_running_task_finish(
    app, backend, release
):
    @app.task
    def held(i: int) -> int:
        if i == 0:
            release.wait(WAIT_S)
        return i

    tm = backend(app)
    pool = tm.start_pool(None, workers=1)
    running = tm.submit("held", {"i": 0})
    _wait_running(running)
    waiting = tm.submit("held", {"i": 1})
    stopper = threading.Thread(
        target=pool.stop, kwargs={"finish_running": True, "timeout_s": WAIT_S}
    )

    stopper.start()
    wait_until(lambda: pool.stopped, timeout_s=WAIT_S, what="the pool to stop")
    assert running.state is nb.TaskState.RUNNING
    release.set()
    stopper.join(WAIT_S)

    assert not stopper.is_alive()
    assert running.result(timeout_s=WAIT_S) == 0
    assert tm.get(running).attempts == 1
    assert waiting.state is nb.TaskState.QUEUED  # the stopped pool took no more
    tm.start_pool(None, workers=1)
    assert waiting.result(timeout_s=WAIT_S) == 1


def _pid_of_worker(worker_id: str | None) -> int:
    """The process id in a worker id (``<app>-worker-<host>-<pid>-<index>``)."""
    assert worker_id is not None
    match = re.search(r"-(\d+)-\d+$", worker_id)
    assert match is not None, worker_id
    return int(match.group(1))


def test_a_killed_worker_process_loses_its_attempt_and_the_task_is_redelivered(
    app, backend
):
    if not backend.processes:
        # A backend without worker processes refuses them clearly, queuing nothing.
        tm = backend(app)
        with pytest.raises(nb.ConfigError, match="worker processes cannot reach"):
            tm.start_pool("cpu", processes=True)
        assert tm.pools == []
        return
    # Files: what the worker processes and this test can both see.
    starts, release = Path("starts.log").absolute(), Path("release").absolute()

    @app.task(group="cpu")
    def hold() -> int:
        with starts.open("a") as log:
            log.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + WAIT_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return os.getpid()

    def started() -> list[int]:
        return [int(p) for p in starts.read_text().split()] if starts.exists() else []

    tm = backend(app)
    pool = tm.start_pool("cpu", workers=2, processes=True)
    handle = tm.submit("hold")
    wait_until(started, timeout_s=WAIT_S, what="the task to start")
    [victim] = started()
    # The attempt is on record once the manager saw it RUNNING (after the
    # workers' grace period); one killed sooner is redelivered all the same.
    wait_until(
        lambda: handle.state is nb.TaskState.RUNNING, timeout_s=WAIT_S, what="RUNNING"
    )

    os.kill(victim, signal.SIGKILL)

    wait_until(
        lambda: len(started()) == 2, timeout_s=WAIT_S, what="the task redelivered"
    )
    release.touch()
    survivor = handle.result(timeout_s=WAIT_S)
    assert survivor != victim
    assert started() == [victim, survivor]
    task = tm.get(handle)
    assert (task.state, task.attempts) == (nb.TaskState.DONE, 2)
    [lost] = task.errors
    assert lost.name == "WorkerLost"
    assert str(victim) in lost.message
    assert _pid_of_worker(task.worker_id) == survivor
    pool.stop()


def test_workers_lists_the_pool_workers_with_group_and_current_task(
    app, backend, release
):
    @app.task(group="cpu")
    def hold() -> None:
        release.wait(WAIT_S)

    tm = backend(app)
    pool = tm.start_pool("cpu", workers=2)
    ids = {w.worker_id for w in pool.workers}

    wait_until(lambda: len(tm.workers()) == 2, timeout_s=WAIT_S, what="two workers")
    frame = tm.workers()
    assert set(frame["worker"]) == ids
    assert set(frame["group"]) == {"cpu"}
    assert set(frame["app"]) == {"contract"}
    assert frame["alive"].all()
    assert frame["task"].isna().all()

    handle = tm.submit("hold")
    wait_until(
        lambda: handle.id in set(tm.workers()["task"]),
        timeout_s=WAIT_S,
        what="a worker to report it runs the task",
    )
    frame = tm.workers()
    assert list(frame.loc[frame["task"] == handle.id, "worker"]) == [
        tm.get(handle).worker_id
    ]
    release.set()
    handle.result(timeout_s=WAIT_S)


def test_shutdown_workers_stops_every_pool_and_requeues_running_tasks(app, backend):
    runs: list[int] = []

    @app.task(group="cpu")
    async def once_slow() -> int:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            await asyncio.sleep(3600)
        return len(runs)

    @app.task(group="io")
    def in_io() -> str:
        return "io"

    tm = backend(app)
    pools = [tm.start_pool("cpu", workers=1), tm.start_pool("io", workers=1)]
    assert tm.submit("in_io").result(timeout_s=WAIT_S) == "io"
    handle = tm.submit("once_slow")
    _wait_running(handle, "the first run")
    wait_until(lambda: len(tm.workers()) == 2, timeout_s=WAIT_S, what="heartbeats")

    tm.shutdown_workers()

    wait_until(
        lambda: all(p.stopped for p in pools), timeout_s=WAIT_S, what="pools to stop"
    )
    wait_until(lambda: not tm.pools, timeout_s=WAIT_S, what="the pools to leave")
    wait_until(
        lambda: handle.state is nb.TaskState.QUEUED,
        timeout_s=WAIT_S,
        what="the running task to be requeued",
    )
    wait_until(
        lambda: tm.workers().empty, timeout_s=WAIT_S, what="no worker in tm.workers()"
    )
    late = tm.submit("in_io")
    assert late.state is nb.TaskState.QUEUED
    if backend.queued is not None:
        assert (backend.queued("cpu"), backend.queued("io")) == (1, 1)

    tm.start_pool("cpu", workers=1)
    tm.start_pool("io", workers=1)
    assert handle.result(timeout_s=WAIT_S) == 2
    assert late.result(timeout_s=WAIT_S) == "io"
    assert runs == [1, 2]


def test_close_stops_the_pools_and_can_be_called_twice(app, backend):
    @app.task
    def fine() -> int:
        return 1

    tm = backend(app)
    pool = tm.start_pool(None, workers=1)
    assert tm.submit("fine").result(timeout_s=WAIT_S) == 1

    tm.close()
    tm.close()

    assert tm.closed
    assert pool.stopped
    with pytest.raises(nb.ManagerClosed, match="is closed"):
        tm.submit("fine")
