"""Bad input over RabbitMQ: malformed messages, dead letters, wrong settings, full
queues and secrets. Nothing crashes, what is refused is kept where a person can find
it (exact counts), and errors say what to fix without showing passwords.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import pickle
import urllib.error
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest
from rabbit import on_broker, queue_counts

import icij_nb as nb
from icij_nb.brokers.amqp import AmqpBroker
from icij_nb.testing import wait_until

pytestmark = pytest.mark.rabbitmq

WAIT_S = 30.0


# -- helpers -------------------------------------------------------------------


def publish_raw(vhost, exchange: str, routing_key: str, bodies: list[bytes]) -> None:
    """Publish bodies as they are, persistent, with publisher confirms."""

    async def publish(channel: aio_pika.abc.AbstractChannel) -> None:
        target = await channel.get_exchange(exchange, ensure=True)
        for body in bodies:
            await target.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key,
            )

    on_broker(vhost, publish)


def take_bodies(vhost, queue: str) -> list[bytes]:
    """Every message body of ``queue``, removed from it."""

    async def drain(channel: aio_pika.abc.AbstractChannel) -> list[bytes]:
        q = await channel.declare_queue(queue, passive=True)
        bodies = []
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body)
        return bodies

    return on_broker(vhost, drain)


class Unpickled:
    """Unpickling this creates ``path``: proof that someone ran pickle.loads."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def malformed_bodies(flag: Path, type_tag: str) -> dict[str, bytes]:
    """Bodies no valid message looks like; ``type_tag`` is the right @type."""
    return {
        "not json": b"\x00\xffnot json at all {",
        "wrong @type": json.dumps({"@type": "Bogus", "taskId": "x"}).encode(),
        "missing keys": json.dumps({"@type": type_tag}).encode(),
        "pickle": pickle.dumps(Unpickled(flag)),
        "huge junk": (
            b'{"@type":"' + type_tag.encode() + b'","junk":"' + b"x" * 1_000_000 + b'"}'
        ),
    }


@pytest.fixture
def app() -> nb.App:
    app = nb.App("badapp", groups=(nb.TaskGroup("cpu"),))

    @app.task(group="cpu")
    def double(n: int) -> int:
        return n * 2

    return app


# -- malformed messages --------------------------------------------------------


def test_malformed_manager_events_are_dead_lettered_and_nothing_crashes(
    vhost, app, amqp_connect, tmp_path
):
    flag = tmp_path / "unpickled"
    tm = amqp_connect(app)
    tm.start_pool("cpu", workers=1)
    finished = tm.submit("double", {"n": 1})
    assert finished.result(timeout_s=WAIT_S) == 2
    now = "2026-01-01T00:00:00+00:00"
    refused = malformed_bodies(flag, "ProgressEvent")
    refused["unknown task id"] = json.dumps(
        {
            "taskId": "nobody-knows",
            "createdAt": now,
            "progress": 0.5,
            "@type": "ProgressEvent",
        }
    ).encode()
    late = [
        json.dumps(
            {
                "taskId": finished.id,
                "createdAt": now,
                "progress": 0.5,
                "@type": "ProgressEvent",
            }
        ).encode(),
        json.dumps(
            {
                "taskId": finished.id,
                "createdAt": now,
                "result": {"value": 999, "@type": "TaskResult"},
                "@type": "ResultEvent",
            }
        ).encode(),
    ]

    publish_raw(
        vhost,
        "exchangeManagerEvents",
        "routingKeyManagerEvents",
        [*refused.values(), *late],
    )

    vhost.wait_until(
        lambda: queue_counts(vhost, "MANAGER_EVENT_DLQ")[0] == len(refused),
        timeout_s=WAIT_S,
        what="the refused events in MANAGER_EVENT_DLQ",
    )
    # The manager is alive: a task submitted afterwards completes.
    assert tm.submit("double", {"n": 5}).result(timeout_s=WAIT_S) == 10
    # Events for a finished task change nothing and are not refused.
    record = tm.get(finished)
    assert (record.state, record.result, record.progress) == (
        nb.TaskState.DONE,
        2,
        1.0,
    )
    assert sorted(take_bodies(vhost, "MANAGER_EVENT_DLQ")) == sorted(refused.values())
    assert queue_counts(vhost, "MANAGER_EVENT") == (0, 1)
    assert not flag.exists()
    assert tm.counts[nb.TaskState.DONE] == 2
    assert len(tm.frame()) == 2


def test_malformed_task_messages_are_dead_lettered_and_the_pool_goes_on(
    vhost, app, amqp_connect, tmp_path
):
    flag = tmp_path / "unpickled"
    tm = amqp_connect(app)
    pool = tm.start_pool("cpu", workers=1)
    refused = malformed_bodies(flag, "Task")

    publish_raw(vhost, "exchangeMainTasks", "cpu", list(refused.values()))

    vhost.wait_until(
        lambda: queue_counts(vhost, "TASK_DLQ")[0] == len(refused),
        timeout_s=WAIT_S,
        what="the refused tasks in TASK_DLQ",
    )
    assert tm.submit("double", {"n": 4}).result(timeout_s=WAIT_S) == 8
    assert sorted(take_bodies(vhost, "TASK_DLQ")) == sorted(refused.values())
    assert queue_counts(vhost, "TASK.cpu") == (0, 1)
    # The manager's copy of dead letters was read and dropped: none is a task.
    vhost.wait_until(
        lambda: queue_counts(vhost, "icij_nb.TASK_DLQ.badapp")[0] == 0,
        what="the manager to read its dead-letter copies",
    )
    assert queue_counts(vhost, "MANAGER_EVENT_DLQ") == (0, 0)
    assert len(tm.frame()) == 1
    assert (pool.done, pool.failed) == (1, 0)
    assert not flag.exists()


def test_events_of_a_task_published_by_someone_else_are_set_aside(
    vhost, app, amqp_connect
):
    tm = amqp_connect(app)
    pool = tm.start_pool("cpu", workers=1)
    stranger = {
        "id": "stranger-1",
        "name": "double",
        "args": {"n": 3},
        "state": "CREATED",
        "createdAt": "2026-01-01T00:00:00+00:00",
        "@type": "Task",
    }

    publish_raw(vhost, "exchangeMainTasks", "cpu", [json.dumps(stranger).encode()])

    # The pool runs it; the manager never submitted it, so its events (the result,
    # after a RUNNING one if it ran past the grace period) are dead-lettered
    # instead of crashing the event loop.
    kinds: list[str] = []

    def result_dead_lettered() -> bool:
        bodies = take_bodies(vhost, "MANAGER_EVENT_DLQ")
        kinds.extend(json.loads(b)["@type"] for b in bodies)
        return "ResultEvent" in kinds

    vhost.wait_until(
        result_dead_lettered,
        timeout_s=WAIT_S,
        what="the stranger's result in MANAGER_EVENT_DLQ",
    )
    assert kinds in (["ResultEvent"], ["ProgressEvent", "ResultEvent"])
    assert pool.done == 1
    with pytest.raises(nb.UnknownTask):
        tm.get("stranger-1")
    assert tm.submit("double", {"n": 2}).result(timeout_s=WAIT_S) == 4


def test_a_task_the_broker_dead_letters_ends_in_error_naming_the_reason(
    vhost, app, amqp_connect
):
    tm = amqp_connect(app)
    handle = tm.submit("double", {"n": 1})  # no pool: it waits in TASK.cpu

    async def reject_one(channel: aio_pika.abc.AbstractChannel) -> str:
        queue = await channel.declare_queue("TASK.cpu", passive=True)
        message = await queue.get(no_ack=False, timeout=10)
        assert message is not None
        await message.reject(requeue=False)
        return json.loads(message.body)["id"]

    assert on_broker(vhost, reject_one) == handle.id

    with pytest.raises(nb.TaskFailed, match="DeadLettered") as failed:
        handle.result(timeout_s=WAIT_S)
    error = failed.value.error
    assert error is not None
    assert error.name == "DeadLettered"
    assert "rejected" in error.message
    assert "TASK.cpu" in error.message
    assert handle.state is nb.TaskState.ERROR
    assert [e.name for e in tm.errors(handle)] == ["DeadLettered"]
    # TASK_DLQ keeps the message for people; the manager consumed its own copy.
    assert queue_counts(vhost, "TASK_DLQ") == (1, 0)
    vhost.wait_until(
        lambda: queue_counts(vhost, "icij_nb.TASK_DLQ.badapp")[0] == 0,
        what="the manager to settle its dead-letter copy",
    )


# -- wrong settings ------------------------------------------------------------


def test_wrong_credentials_name_host_and_vhost_but_not_the_password(vhost, app):
    url = vhost.amqp_url.replace("guest:guest@", "guest:wr0ng-pa55@")

    with pytest.raises(nb.BrokerUnavailable) as raised:
        nb.connect(app, broker=url, store=":memory:")

    text = str(raised.value)
    assert "127.0.0.1" in text
    assert vhost.name in text
    assert "credentials" in text
    chain = [raised.value, raised.value.__cause__, raised.value.__context__]
    assert all(
        "wr0ng-pa55" not in repr(e) and "wr0ng-pa55" not in str(e) for e in chain
    )
    # The refused connection was closed: collected, it does not warn that its
    # close() was never awaited (filterwarnings=error turns that into a failure).
    del raised, chain
    gc.collect()


def test_an_unknown_vhost_is_a_clear_error(vhost, app):
    missing = f"icij_nb-test-missing-{uuid.uuid4().hex[:8]}"
    url = vhost.amqp_url.rsplit("/", 1)[0] + "/" + missing

    with pytest.raises(nb.BrokerUnavailable, match="vhost") as raised:
        nb.connect(app, broker=url, store=":memory:")

    assert missing in str(raised.value)
    assert "guest:guest" not in str(raised.value)
    del raised
    gc.collect()


def test_an_unreachable_management_api_is_named_and_leaves_nothing_open(vhost, app):
    broker = AmqpBroker(
        app, vhost.amqp_url, management_url="http://guest:mgmt-pa55@127.0.0.1:1"
    )

    with pytest.raises(nb.BrokerUnavailable, match="management API") as raised:
        nb.connect(app, broker=broker, store=":memory:")

    assert "127.0.0.1:1" in str(raised.value)
    assert "mgmt-pa55" not in str(raised.value)
    # The AMQP connection opened before the policy PUT failed was closed again.
    assert "not connected" in repr(broker)


def test_a_queue_declared_with_other_arguments_is_a_clear_conflict(vhost, app):
    async def declare_classic(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.declare_queue("TASK.cpu", durable=True)

    on_broker(vhost, declare_classic)
    broker = AmqpBroker(app, vhost.amqp_url)

    with pytest.raises(nb.BrokerError) as raised:
        nb.connect(app, broker=broker, store=":memory:")

    text = str(raised.value)
    assert "TASK.cpu" in text
    assert "406" in text or "PRECONDITION_FAILED" in text
    assert "x-queue-type" in text
    assert "another vhost" in text
    assert not isinstance(raised.value, nb.TaskQueueFull)
    assert "not connected" in repr(broker)
    # The queue someone else declared is left as it was.
    assert (vhost.queue("TASK.cpu") or {})["type"] == "classic"


def test_a_full_group_queue_refuses_the_task_that_does_not_fit(vhost, amqp_connect):
    app = nb.App("fullapp", groups=(nb.TaskGroup("cpu", max_task_queue_size=2),))

    @app.task(group="cpu")
    def double(n: int) -> int:
        return n * 2

    tm = amqp_connect(app)
    # RabbitMQ's quorum queues refuse publishes once they are *over* max-length,
    # so a cap of 2 holds 3 tasks (documented in RabbitMQ's quorum queue guide).
    kept = [tm.submit("double", {"n": n}) for n in (1, 2, 3)]

    with pytest.raises(nb.TaskQueueFull) as raised:
        tm.submit("double", {"n": 4}, task_id="refused")

    assert raised.value.group == "cpu"
    assert "TASK.cpu" in str(raised.value)
    assert "max_task_queue_size" in str(raised.value)
    assert raised.value.not_queued == ("refused",)
    assert tm.counts[nb.TaskState.QUEUED] == 3
    assert [h.state for h in kept] == [nb.TaskState.QUEUED] * 3
    with pytest.raises(nb.UnknownTask):
        tm.get("refused")
    assert queue_counts(vhost, "TASK.cpu") == (3, 0)
    assert len(tm.frame()) == 3
    # A map that does not fit keeps none of what was refused, and says which.
    with pytest.raises(nb.TaskQueueFull) as refused_map:
        tm.map("double", [{"n": n} for n in range(5)])
    assert len(refused_map.value.not_queued) == 5
    assert tm.counts[nb.TaskState.QUEUED] == 3
    assert queue_counts(vhost, "TASK.cpu") == (3, 0)
    # Once a pool drains the queue, those that fit run.
    tm.start_pool("cpu", workers=1)
    assert tm.gather(kept, timeout_s=WAIT_S) == [2, 4, 6]


# -- secrets -------------------------------------------------------------------


@pytest.fixture
def secret_user(rabbitmq, vhost) -> Iterator[tuple[str, str]]:
    """A user of the test vhost with a distinctive password (policymaker tag, so
    it may set policies); deleted at teardown."""
    user, password = f"icij-nb-test-{uuid.uuid4().hex[:8]}", "s3cr3t-xyz"
    rabbitmq.api(
        "PUT",
        f"/api/users/{quote(user)}",
        {"password": password, "tags": "policymaker"},
    )
    rabbitmq.api(
        "PUT",
        f"/api/permissions/{vhost.quoted}/{quote(user)}",
        {"configure": ".*", "write": ".*", "read": ".*"},
    )
    yield user, password
    try:
        rabbitmq.api("DELETE", f"/api/users/{quote(user)}")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


def test_the_password_never_shows_in_reprs_errors_or_logs(vhost, secret_user, caplog):
    user, password = secret_user
    url = vhost.amqp_url.replace("guest:guest@", f"{user}:{password}@")
    app = nb.App("secretapp", groups=(nb.TaskGroup("cpu"),))

    @app.task(group="cpu", max_retries=1, recover_from=(ValueError,))
    def flaky(fail: bool) -> str:
        if fail:
            raise ValueError(f"failing on purpose near {url.split('@')[1]}")
        return "ok"

    @app.task(group="cpu")
    async def hang() -> None:
        await asyncio.sleep(3600)

    caplog.set_level(logging.DEBUG)
    tm = nb.connect(app, broker=url, store=":memory:")
    try:
        pool = tm.start_pool("cpu", workers=2)
        good, bad = (
            tm.submit("flaky", {"fail": False}),
            tm.submit("flaky", {"fail": True}),
        )
        hung = tm.submit("hang")
        assert good.result(timeout_s=WAIT_S) == "ok"
        with pytest.raises(nb.TaskFailed):
            bad.result(timeout_s=WAIT_S)
        wait_until(
            lambda: hung.state is nb.TaskState.RUNNING,
            timeout_s=WAIT_S,
            what="hang to run",
        )
        tm.cancel(hung)
        with pytest.raises(nb.TaskCancelled):
            hung.result(timeout_s=WAIT_S)
        shown = [repr(tm), repr(tm.broker), repr(pool), tm._repr_html_()]
        with pytest.raises(nb.BrokerUnavailable) as refused:
            nb.connect(
                app,
                broker=url,
                store=":memory:",
                management_url=f"http://{user}:{password}@127.0.0.1:1",
            )
        shown.append(str(refused.value))
    finally:
        tm.close(timeout_s=30)

    assert all(password not in text for text in shown), shown
    assert f"{user}:***@" in repr(tm.broker)
    assert all(password not in r.getMessage() for r in caplog.records)
    assert password not in caplog.text
    # The logs did mention the (masked) broker URL: the check above means something.
    assert f"{user}:***@" in caplog.text
