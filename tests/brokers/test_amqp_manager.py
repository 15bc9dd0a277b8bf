"""The task manager over RabbitMQ, where the wire or the broker's state is the
point: what results and retries look like on the wire, events that outlive the
manager, and events acked only once stored. What every backend must do (results,
retries, progress, cancel, timeouts, workers, shutdown) is in ``tests/contract``.

In-kernel pools consume the real broker (a fresh vhost per test). Broker state is
read exactly with passive declares and basic.get on spy queues bound next to the
protocol's queues.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
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


# -- results on the wire -------------------------------------------------------


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
        time.sleep(0.5)  # past the workers' grace period: RUNNING is sent too
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
