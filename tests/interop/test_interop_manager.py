"""icij_nb's task manager drives real icij-worker 0.20.2 pools.

The pools run ``icij_app.py`` (the ``icij_pool`` fixture: ``icij-worker workers
start``); our manager knows the same names from ``nb_app.py``, whose functions never
run here. Retry counts differ in meaning: our ``max_retries`` counts retries after
the first attempt, the wire's ``maxRetries`` counts attempts, and our manager sends
``maxRetries = max_retries + 1``; the icij worker decides from the message alone
(docs/protocol.md §3.3), so ``max_retries=2`` gives three attempts.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import aio_pika
import nb_app
import pytest
from peers import IcijPool
from rabbit import Vhost

import icij_nb as nb
from icij_nb.testing import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(300)]

WAIT_S = 60.0


@pytest.fixture
def manager(vhost: Vhost) -> Iterator[Callable[[], nb.TaskManager]]:
    """``manager()``: our task manager on the test's vhost, closed at teardown."""
    made: list[nb.TaskManager] = []

    def make() -> nb.TaskManager:
        tm = nb.connect(
            nb_app.app,
            broker=vhost.amqp_url,
            store=":memory:",
            management_url=vhost.management_url,
        )
        made.append(tm)
        return tm

    yield make
    for tm in reversed(made):
        tm.close(timeout_s=30)


def _key() -> str:
    return uuid.uuid4().hex[:12]


def _wait_state(tm: nb.TaskManager, handle: nb.TaskHandle, state: nb.TaskState) -> None:
    wait_until(
        lambda: tm.get(handle).state is state,
        timeout_s=WAIT_S,
        interval_s=0.02,
        what=f"{handle.id} to be {state.value}",
    )


def test_hello_ends_done_with_its_result(icij_pool, manager):
    icij_pool()
    tm = manager()

    handle = tm.submit("hello", {"greeted": "world"})

    assert tm.result(handle, timeout_s=WAIT_S) == "hello world"
    task = tm.get(handle)
    assert (task.state, task.progress, task.errors) == (nb.TaskState.DONE, 1.0, [])
    assert task.attempts == 1


def test_flaky_tasks_retry_as_the_wire_says(icij_pool, manager):
    icij_pool()
    tm = manager()
    # (max_retries, fail_times): attempts allowed = max_retries + 1.
    cases = {
        "fails_fewer_times": (2, 2),  # third attempt succeeds
        "fails_every_time": (2, 3),  # three attempts, three failures
        "override_fewer_retries": (1, 2),  # two attempts, both fail
    }
    handles = {
        label: tm.submit(
            "flaky",
            {"fail_times": fail_times, "key": _key()},
            max_retries=max_retries,
        )
        for label, (max_retries, fail_times) in cases.items()
    }

    records = tm.wait(handles.values(), timeout_s=WAIT_S * 2)
    tasks = dict(zip(handles, records, strict=True))

    fewer = tasks["fails_fewer_times"]
    assert (fewer.state, fewer.result) == (
        nb.TaskState.DONE,
        "succeeded after 2 failures",
    )
    assert [(e.name, e.message, e.cause) for e in fewer.errors] == [
        ("Flaky", "attempt 1 failed", "'root cause'"),
        ("Flaky", "attempt 2 failed", "'root cause'"),
    ]
    assert fewer.attempts == 3

    every = tasks["fails_every_time"]
    assert every.state is nb.TaskState.ERROR
    assert [e.message for e in every.errors] == [
        "attempt 1 failed",
        "attempt 2 failed",
        "attempt 3 failed",
    ]
    assert (every.attempts, every.attempts_left) == (3, 0)
    with pytest.raises(nb.TaskFailed, match="attempt 3 failed"):
        tm.result(handles["fails_every_time"])

    override = tasks["override_fewer_retries"]
    assert override.state is nb.TaskState.ERROR
    assert [e.message for e in override.errors] == [
        "attempt 1 failed",
        "attempt 2 failed",
    ]
    assert override.attempts == 2


def test_progress_shows_running_then_done(icij_pool, manager):
    icij_pool()
    tm = manager()
    # icij's worker publishes one event per progress() call, with a confirm each:
    # many steps spread them over several of our event batches.
    n_steps = 400
    seen: list[tuple[nb.TaskState, float]] = []
    lock = threading.Lock()
    watched: set[str] = set()

    def record(tasks: list[nb.Task]) -> None:
        with lock:
            seen.extend((t.state, t.progress) for t in tasks if t.id in watched)

    task_id = f"with_progress-{_key()}"
    watched.add(task_id)
    tm.subscribe(record)

    handle = tm.submit("with_progress", {"n_steps": n_steps}, task_id=task_id)

    assert tm.result(handle, timeout_s=WAIT_S) == n_steps
    with lock:
        updates = list(seen)
    states = [state for state, _ in updates]
    assert states[-1] is nb.TaskState.DONE
    assert updates[-1][1] == 1.0
    assert nb.TaskState.RUNNING in states
    first_running = states.index(nb.TaskState.RUNNING)
    assert set(states[first_running:-1]) == {nb.TaskState.RUNNING}
    running = [p for state, p in updates if state is nb.TaskState.RUNNING]
    assert any(0.0 < p < 1.0 for p in running), running
    assert running == sorted(running)
    # Each value is one the task reported (i / n_steps), or the start's 0.0.
    assert all(round(p * n_steps) / n_steps == p for p in running)


def test_cancel_of_a_running_task_ends_cancelled(icij_pool, manager):
    icij_pool()
    tm = manager()
    handle = tm.submit("sleepy", {"duration": 120})
    _wait_state(tm, handle, nb.TaskState.RUNNING)

    tm.cancel(handle)

    [task] = tm.wait([handle], timeout_s=WAIT_S)
    assert task.state is nb.TaskState.CANCELLED
    assert task.completed_at is not None
    with pytest.raises(nb.TaskCancelled):
        tm.result(handle)
    # The icij worker settled the cancelled task: it takes the next one.
    assert tm.result(tm.submit("hello", {"greeted": "again"}), timeout_s=WAIT_S) == (
        "hello again"
    )


def test_grouped_pool_runs_a_grouped_task(icij_pool, manager, vhost):
    pool: IcijPool = icij_pool(group="grp")
    tm = manager()

    handle = tm.submit("grouped_hello", {"greeted": "grp"})

    assert tm.result(handle, timeout_s=WAIT_S) == "hello grp"
    assert tm.get(handle).group == "grp"
    assert pool.queue == "TASK.grp"
    assert vhost.consumer_count("TASK") == 0


async def _publish_raw_event(vhost: Vhost, body: bytes) -> None:
    connection = await aio_pika.connect(vhost.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("exchangeManagerEvents")
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(message, "routingKeyManagerEvents")


def test_result_event_without_value_reads_as_none(icij_pool, manager, vhost):
    # icij-worker writes a None result as {"@type": "TaskResult"} without "value",
    # which kills icij's own task manager (docs/protocol.md §6 #1). icij_app.py avoids
    # None results, so the event is hand-made, as icij-worker writes it, for a task
    # that no pool takes (no pool serves "grp" here).
    icij_pool()
    tm = manager()
    handle = tm.submit("grouped_hello", {"greeted": "nobody"})
    created_at = datetime.now(UTC).isoformat()
    body = (
        f'{{"taskId":"{handle.id}","createdAt":"{created_at}",'
        '"result":{"@type":"TaskResult"},"@type":"ResultEvent"}'
    ).encode()

    asyncio.run(_publish_raw_event(vhost, body))

    assert tm.result(handle, timeout_s=WAIT_S) is None
    task = tm.get(handle)
    assert (task.state, task.has_result) == (nb.TaskState.DONE, True)
    # The event was taken and acknowledged, not set aside.
    assert asyncio.run(vhost.message_count("MANAGER_EVENT_DLQ")) == 0
    # And the manager goes on with the icij pool's events.
    after = tm.submit("hello", {"greeted": "after"})
    assert tm.result(after, timeout_s=WAIT_S) == "hello after"
    assert asyncio.run(vhost.message_count("MANAGER_EVENT")) == 0
