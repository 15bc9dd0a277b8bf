"""The task manager over RabbitMQ: submit, results, retries, progress, cancel,
timeouts, workers, shutdown, and events that outlive the manager.

In-kernel pools consume the real broker (a fresh vhost per test). Broker state is
read exactly with passive declares and basic.get on spy queues bound next to the
protocol's queues.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from rabbit import on_broker, queue_counts

import icij_nb as nb
from icij_nb.brokers.amqp import AmqpBroker
from icij_nb.process_pool import serve
from icij_nb.store import read_task
from icij_nb.testing import wait_until

pytestmark = pytest.mark.rabbitmq

WAIT_S = 30.0


# -- helpers: exact broker reads from a thread of their own ----------------------


def stored_state(store: Path, task_id: str) -> nb.TaskState | None:
    """The state a store file holds for a task (None before it is written)."""
    try:
        return read_task(store, task_id).state
    except nb.UnknownTask:
        return None


def bind_spy(vhost, name: str, exchange: str, routing_key: str) -> None:
    """A queue of the test's that gets a copy of what ``exchange`` routes."""

    async def declare(channel: aio_pika.abc.AbstractChannel) -> None:
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, routing_key)

    on_broker(vhost, declare)


def take_all(vhost, name: str) -> list[dict[str, Any]]:
    """Every message of a spy queue (removed from it), as decoded JSON bodies."""

    async def drain(channel: aio_pika.abc.AbstractChannel) -> list[dict[str, Any]]:
        queue = await channel.declare_queue(name, passive=True)
        bodies = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(json.loads(message.body))
        return bodies

    return on_broker(vhost, drain)


@pytest.fixture
def app() -> nb.App:
    return nb.App("amqpapp", groups=(nb.TaskGroup("cpu"),))


# -- submit, map, gather, results ----------------------------------------------


def test_submit_map_and_gather_return_results_through_rabbitmq(app, amqp_connect):
    @app.task(group="cpu")
    def double(n: int) -> int:
        return n * 2

    @app.task(group="cpu")
    async def shout(word: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"word": word.upper(), "nested": [1.5, None, {"k": True}]}

    tm = amqp_connect(app)
    tm.start_pool("cpu", workers=3)

    single = tm.submit("double", {"n": 21})
    batch = tm.map("double", [{"n": i} for i in range(10)])
    other = tm.submit("shout", {"word": "hey"})

    assert single.result(timeout_s=WAIT_S) == 42
    assert batch.results(timeout_s=WAIT_S) == [i * 2 for i in range(10)]
    assert tm.gather([other, single.id], timeout_s=WAIT_S) == [
        {"word": "HEY", "nested": [1.5, None, {"k": True}]},
        42,
    ]
    assert tm.counts[nb.TaskState.DONE] == 12
    record = tm.get(single)
    assert (record.state, record.progress, record.attempts) == (
        nb.TaskState.DONE,
        1.0,
        1,
    )
    assert record.worker_id is not None
    assert record.worker_id.startswith("amqpapp-worker-")


def test_a_none_result_round_trips_and_the_wire_carries_value_null(
    vhost, app, amqp_connect
):
    @app.task(group="cpu")
    def nothing() -> None:
        return None

    tm = amqp_connect(app)
    bind_spy(vhost, "spy-events", "exchangeManagerEvents", "routingKeyManagerEvents")
    tm.start_pool("cpu", workers=1)

    handle = tm.submit("nothing")

    assert handle.result(timeout_s=WAIT_S) is None
    assert tm.get(handle).has_result
    assert tm.frame().set_index("id").loc[handle.id, "state"] == "DONE"
    results = [b for b in take_all(vhost, "spy-events") if b["@type"] == "ResultEvent"]
    assert [(r["taskId"], r["result"]) for r in results] == [
        (handle.id, {"value": None, "@type": "TaskResult"})
    ]


# -- retries -------------------------------------------------------------------


def test_retryable_errors_are_republished_with_fewer_retries_left(
    vhost, app, amqp_connect
):
    attempts: list[int] = []

    @app.task(group="cpu", max_retries=3, recover_from=(ValueError,))
    def flaky(key: str) -> int:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ValueError(f"attempt {len(attempts)} of {key} failed")
        return len(attempts)

    tm = amqp_connect(app)
    bind_spy(vhost, "spy-tasks", "exchangeMainTasks", "cpu")
    tm.start_pool("cpu", workers=1)

    handle = tm.submit("flaky", {"key": "k1"})

    assert handle.result(timeout_s=WAIT_S) == 3
    record = tm.get(handle)
    assert (record.attempts, record.max_attempts, record.attempts_left) == (3, 4, 2)
    assert [(e.name, e.message) for e in tm.errors(handle)] == [
        ("ValueError", "attempt 1 of k1 failed"),
        ("ValueError", "attempt 2 of k1 failed"),
    ]
    # The manager republished the task twice, each time with one retry less.
    sent = take_all(vhost, "spy-tasks")
    assert [(m["id"], m["state"], m["retriesLeft"], m["maxRetries"]) for m in sent] == [
        (handle.id, "CREATED", 4, 4),
        (handle.id, "QUEUED", 3, 4),
        (handle.id, "QUEUED", 2, 4),
    ]
    assert ["progress" in m for m in sent] == [False, True, True]
    assert [m.get("progress") for m in sent[1:]] == [0.0, 0.0]


def test_retries_stop_when_attempts_run_out_or_the_error_is_not_retryable(
    app, amqp_connect
):
    @app.task(group="cpu", max_retries=1, recover_from=(ValueError,))
    def always_fails() -> None:
        raise ValueError("still broken")

    @app.task(group="cpu", max_retries=5, recover_from=(ValueError,))
    def fatal() -> None:
        raise KeyError("not retryable")

    tm = amqp_connect(app)
    tm.start_pool("cpu", workers=2)

    exhausted = tm.submit("always_fails")
    not_retried = tm.submit("fatal")

    with pytest.raises(nb.TaskFailed, match="still broken") as failed:
        exhausted.result(timeout_s=WAIT_S)
    assert failed.value.error is not None
    assert failed.value.error.name == "ValueError"
    with pytest.raises(nb.TaskFailed, match="not retryable"):
        not_retried.result(timeout_s=WAIT_S)
    assert [e.name for e in tm.errors(exhausted)] == ["ValueError", "ValueError"]
    assert tm.get(exhausted).attempts == 2
    assert [e.name for e in tm.errors(not_retried)] == ["KeyError"]
    assert tm.get(not_retried).attempts == 1
    assert tm.counts[nb.TaskState.ERROR] == 2


# -- progress ------------------------------------------------------------------


def test_progress_reports_reach_the_manager_while_the_task_runs(
    app, amqp_connect, release
):
    @app.task(group="cpu")
    def steps(progress: Callable[[float], None]) -> str:
        progress(0.5)
        release.wait(WAIT_S)
        return "done"

    tm = amqp_connect(app)
    seen: list[tuple[nb.TaskState, float]] = []
    tm.subscribe(lambda tasks: seen.extend((t.state, t.progress) for t in tasks))
    tm.start_pool("cpu", workers=1)

    handle = tm.submit("steps")
    wait_until(
        lambda: (handle.state, handle.progress) == (nb.TaskState.RUNNING, 0.5),
        timeout_s=WAIT_S,
        what="progress 0.5 while running",
    )
    release.set()

    assert handle.result(timeout_s=WAIT_S) == "done"
    assert handle.progress == 1.0
    assert (nb.TaskState.RUNNING, 0.5) in seen
    assert seen[-1] == (nb.TaskState.DONE, 1.0)


# -- cancel --------------------------------------------------------------------


def test_cancel_stops_a_running_task_and_the_worker_goes_on(app, amqp_connect):
    started = threading.Event()

    @app.task(group="cpu")
    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    @app.task(group="cpu")
    def quick(n: int) -> int:
        return n

    tm = amqp_connect(app)
    tm.start_pool("cpu", workers=1)

    handle = tm.submit("hang")
    wait_until(
        lambda: handle.state is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what="hang to run",
    )
    tm.cancel(handle)

    with pytest.raises(nb.TaskCancelled):
        handle.result(timeout_s=WAIT_S)
    assert handle.state is nb.TaskState.CANCELLED
    assert tm.get(handle).completed_at is not None
    assert tm.submit("quick", {"n": 7}).result(timeout_s=WAIT_S) == 7
    with pytest.raises(nb.InvalidTransition):
        tm.cancel(handle)


def test_cancel_of_a_queued_task_means_it_never_runs(vhost, app, amqp_connect, release):
    ran: list[str] = []

    @app.task(group="cpu")
    def record(tag: str) -> str:
        ran.append(tag)
        if tag == "blocker":
            release.wait(WAIT_S)
        return tag

    tm = amqp_connect(app)
    tm.start_pool("cpu", workers=1)
    blocker = tm.submit("record", {"tag": "blocker"})
    wait_until(
        lambda: blocker.state is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what="the blocker to run",
    )
    victim = tm.submit("record", {"tag": "victim"})
    assert queue_counts(vhost, "TASK.cpu")[0] == 1

    tm.cancel(victim)

    assert victim.state is nb.TaskState.CANCELLED
    release.set()
    after = tm.submit("record", {"tag": "after"})
    assert after.result(timeout_s=WAIT_S) == "after"
    # The worker took the victim's message before "after" and skipped it.
    assert ran == ["blocker", "after"]
    assert victim.state is nb.TaskState.CANCELLED
    assert queue_counts(vhost, "TASK.cpu")[0] == 0
    with pytest.raises(nb.TaskCancelled):
        victim.result(timeout_s=1)


def test_cancel_with_requeue_sends_a_running_task_back_and_it_completes(
    vhost, app, amqp_connect
):
    runs: list[int] = []

    @app.task(group="cpu")
    async def once_slow() -> int:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            await asyncio.sleep(3600)
        return len(runs)

    @app.task(group="cpu")
    def quick(n: int) -> int:
        return n

    tm = amqp_connect(app)
    states: list[tuple[str, nb.TaskState]] = []
    tm.subscribe(lambda tasks: states.extend((t.id, t.state) for t in tasks))
    pool = tm.start_pool("cpu", workers=1)

    handle = tm.submit("once_slow")
    wait_until(
        lambda: handle.state is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what="the first run",
    )
    tm.cancel(handle, requeue=True)

    assert handle.result(timeout_s=WAIT_S) == 2
    assert runs == [1, 2]
    mine = [s for i, s in states if i == handle.id]
    running = nb.TaskState.RUNNING
    assert mine[mine.index(running) :].count(nb.TaskState.QUEUED) >= 1
    assert tm.get(handle).attempts == 2
    # The same single worker is free: later tasks still run.
    assert tm.map("quick", [{"n": i} for i in range(3)]).results(timeout_s=WAIT_S) == [
        0,
        1,
        2,
    ]
    assert pool.done == 4
    assert queue_counts(vhost, "TASK.cpu")[0] == 0


# -- timeouts ------------------------------------------------------------------


def test_a_task_over_its_timeout_fails_and_the_worker_goes_on(app, amqp_connect):
    @app.task(group="cpu", timeout_s=0.5)
    async def too_slow() -> None:
        await asyncio.sleep(3600)

    @app.task(group="cpu")
    def quick(n: int) -> int:
        return n

    tm = amqp_connect(app)
    tm.start_pool("cpu", workers=1)

    handle = tm.submit("too_slow")

    with pytest.raises(nb.TaskFailed, match="timeout") as failed:
        handle.result(timeout_s=WAIT_S)
    assert failed.value.error is not None
    assert failed.value.error.name == "TaskTimeout"
    assert handle.state is nb.TaskState.ERROR
    assert tm.submit("quick", {"n": 1}).result(timeout_s=WAIT_S) == 1


# -- workers and shutdown ------------------------------------------------------


def test_workers_lists_the_pool_workers_with_group_and_current_task(
    app, amqp_connect, release
):
    @app.task(group="cpu")
    def hold() -> None:
        release.wait(WAIT_S)

    tm = amqp_connect(app)
    pool = tm.start_pool("cpu", workers=2)
    ids = {w.worker_id for w in pool.workers}

    wait_until(
        lambda: len(tm.workers()) == 2,
        timeout_s=WAIT_S,
        what="two workers in tm.workers()",
    )
    frame = tm.workers()
    assert set(frame["worker"]) == ids
    assert set(frame["group"]) == {"cpu"}
    assert set(frame["app"]) == {"amqpapp"}
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


def test_shutdown_workers_stops_the_pool_and_requeues_its_running_task(
    vhost, app, amqp_connect
):
    runs: list[int] = []

    @app.task(group="cpu")
    async def once_slow() -> int:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            await asyncio.sleep(3600)
        return len(runs)

    tm = amqp_connect(app)
    pool = tm.start_pool("cpu", workers=1)
    handle = tm.submit("once_slow")
    wait_until(
        lambda: handle.state is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what="the first run",
    )
    wait_until(lambda: len(tm.workers()) == 1, timeout_s=WAIT_S, what="a heartbeat")

    tm.shutdown_workers()

    wait_until(lambda: pool not in tm.pools, timeout_s=WAIT_S, what="the pool to stop")
    assert pool.stopped
    wait_until(
        lambda: handle.state is nb.TaskState.QUEUED,
        timeout_s=WAIT_S,
        what="the running task to be requeued",
    )
    vhost.wait_until(
        lambda: queue_counts(vhost, "TASK.cpu") == (1, 0),
        what="the task back in TASK.cpu, with no consumer",
    )
    wait_until(
        lambda: tm.workers().empty,
        timeout_s=WAIT_S,
        what="the stopped worker to leave tm.workers()",
    )

    tm.start_pool("cpu", workers=1)
    assert handle.result(timeout_s=WAIT_S) == 2
    assert runs == [1, 2]


# -- events outlive the manager ------------------------------------------------


class ServeThread:
    """``serve()`` (what a worker process runs) on a loop in a thread of its own,
    with its own AmqpBroker: workers with no manager in this process."""

    def __init__(self, app: nb.App, url: str, group: str, workers: int) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._main = asyncio.current_task()
            self._ready.set()
            await serve(app, AmqpBroker(app, url), group=group, workers=workers)

        def run() -> None:
            try:
                asyncio.run(main())
            except asyncio.CancelledError:
                pass
            except BaseException as exc:
                self.error = exc
                self._ready.set()

        self._thread = threading.Thread(target=run, name="serve", daemon=True)
        self._thread.start()
        assert self._ready.wait(WAIT_S)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float = WAIT_S) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "serve() did not stop"

    def stop(self) -> None:
        if self._thread.is_alive() and self._loop is not None and self._main:
            self._loop.call_soon_threadsafe(self._main.cancel)
        self.join()


def test_events_wait_in_manager_event_until_a_manager_connects_again(
    vhost, app, amqp_connect, tmp_path
):
    @app.task(group="cpu")
    def square(n: int) -> int:
        return n * n

    store = tmp_path / "tasks.sqlite3"
    first = amqp_connect(app, store=store)
    ids = [first.submit("square", {"n": n}).id for n in range(3)]
    first.close()
    assert queue_counts(vhost, "TASK.cpu") == (3, 0)

    workers = ServeThread(app, vhost.amqp_url, "cpu", workers=2)
    try:
        # Nobody consumes MANAGER_EVENT: each task's RUNNING and result events wait.
        vhost.wait_until(
            lambda: queue_counts(vhost, "MANAGER_EVENT") == (6, 0),
            timeout_s=WAIT_S,
            what="two events per task in MANAGER_EVENT",
        )
        assert queue_counts(vhost, "TASK.cpu")[0] == 0
        assert [stored_state(store, i) for i in ids] == [nb.TaskState.QUEUED] * 3

        second = amqp_connect(app, store=store)

        assert second.gather(ids, timeout_s=WAIT_S) == [0, 1, 4]
        assert second.counts[nb.TaskState.DONE] == 3
        assert [second.get(i).attempts for i in ids] == [1, 1, 1]
        vhost.wait_until(
            lambda: queue_counts(vhost, "MANAGER_EVENT")[0] == 0,
            what="MANAGER_EVENT to drain",
        )
        second.shutdown_workers()
        workers.join()
    finally:
        workers.stop()
    assert workers.error is None
    assert queue_counts(vhost, "MANAGER_EVENT_DLQ") == (0, 0)


def test_the_manager_acks_an_event_only_once_the_store_holds_it(
    vhost, app, amqp_connect, release, tmp_path
):
    @app.task(group="cpu")
    def held() -> str:
        release.wait(WAIT_S)
        return "kept"

    store = tmp_path / "tasks.sqlite3"
    tm = amqp_connect(app, store=store)
    tm.start_pool("cpu", workers=1)
    handle = tm.submit("held")
    wait_until(
        lambda: stored_state(store, handle.id) is nb.TaskState.RUNNING,
        timeout_s=WAIT_S,
        what="RUNNING in the store file",
    )

    # Another process holds the store: the manager cannot write the result.
    lock = sqlite3.connect(store, isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        release.set()
        wait_until(
            lambda: handle.state is nb.TaskState.DONE,
            timeout_s=WAIT_S,
            what="the manager to apply the result",
        )
        # Applied in memory, but not stored: the result event stays unacked.
        vhost.wait_until(
            lambda: (
                (vhost.queue("MANAGER_EVENT") or {}).get("messages_unacknowledged") == 1
            ),
            timeout_s=WAIT_S,
            what="the result event to stay unacknowledged while the store is locked",
        )
        assert stored_state(store, handle.id) is nb.TaskState.RUNNING
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_until(
        lambda: stored_state(store, handle.id) is nb.TaskState.DONE,
        timeout_s=WAIT_S,
        what="the result in the store file once it is free",
    )
    assert read_task(store, handle.id).result == "kept"
