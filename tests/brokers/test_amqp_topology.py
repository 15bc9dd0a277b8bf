"""The RabbitMQ broker declares icij-worker's topology exactly (docs/protocol.md §1)
and publishes what icij-worker publishes (docs/protocol.md §2.2, §2.4): checked on a
real broker, in a fresh vhost per test, through the management API and raw AMQP reads.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from rabbit import queue_counts

import icij_nb as nb
from icij_nb.brokers.topology import PUBLISHED_AT_HEADER

pytestmark = pytest.mark.rabbitmq

TASK_ARGS = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": "exchangeDLQTasks",
    "x-dead-letter-routing-key": "routingKeyDLQTasks",
}
MANAGER_EVENT_ARGS = {
    "x-dead-letter-exchange": "exchangeDLQManagerEvents",
    "x-dead-letter-routing-key": "routingKeyDLQManagerEvents",
}
# The keys of a first enqueue (docs/protocol.md §2.4), with the retry settings
# icij_nb always sends.
FIRST_ENQUEUE_KEYS = {
    "@type",
    "id",
    "name",
    "args",
    "state",
    "createdAt",
    "maxRetries",
    "retriesLeft",
}


@pytest.fixture
def two_group_app() -> nb.App:
    app = nb.App(
        "topoapp",
        groups=(nb.TaskGroup("cpu", max_task_queue_size=5), nb.TaskGroup("gpu")),
    )

    @app.task(group="cpu", max_retries=2)
    def crunch(n: int) -> int:
        return n * 2

    @app.task(group="gpu")
    async def render(n: int) -> int:
        return n + 1

    return app


@pytest.fixture
async def raw_channel(vhost) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(vhost.amqp_url, timeout=10)
    async with connection:
        yield await connection.channel()


def _protocol_queues(vhost) -> dict[str, dict[str, Any]]:
    return {
        q["name"]: {
            "type": q["type"],
            "durable": q["durable"],
            "exclusive": q["exclusive"],
            "auto_delete": q["auto_delete"],
            "arguments": q["arguments"],
        }
        for q in vhost.queues()
        if not q["exclusive"]
    }


def _policies(vhost) -> dict[str, dict[str, Any]]:
    return {
        p["name"]: {k: p[k] for k in ("pattern", "definition", "apply-to", "priority")}
        for p in vhost.policies()
    }


def _task_policy(pattern: str, **extra: Any) -> dict[str, Any]:
    return {
        "pattern": pattern,
        "definition": {"overflow": "reject-publish", "delivery-limit": 10, **extra},
        "apply-to": "queues",
        "priority": 1000,
    }


def test_connect_declares_the_exchanges_of_the_protocol(
    vhost, amqp_connect, two_group_app
):
    amqp_connect(two_group_app)

    exchanges = {
        x["name"]: (x["type"], x["durable"], x["auto_delete"], x["internal"])
        for x in vhost.exchanges()
    }
    assert exchanges == {
        "exchangeMainTasks": ("direct", True, False, False),
        "exchangeDLQTasks": ("direct", True, False, False),
        "exchangeManagerEvents": ("direct", True, False, False),
        "exchangeDLQManagerEvents": ("direct", True, False, False),
        "exchangeWorkerEvents": ("fanout", True, False, False),
        "exchangeMonitoring": ("direct", True, False, False),
        # icij_nb's own heartbeat and output fanouts, which icij-worker peers
        # never see.
        "exchangeIcijNbWorkers": ("fanout", True, False, False),
        "exchangeIcijNbOutput": ("fanout", True, False, False),
    }
    assert all(x["arguments"] == {} for x in vhost.exchanges())


def test_connect_declares_the_queues_with_exact_arguments(
    vhost, amqp_connect, two_group_app
):
    amqp_connect(two_group_app)

    durable = {"durable": True, "exclusive": False, "auto_delete": False}
    assert _protocol_queues(vhost) == {
        "TASK": {"type": "quorum", **durable, "arguments": TASK_ARGS},
        "TASK.cpu": {"type": "quorum", **durable, "arguments": TASK_ARGS},
        "TASK.gpu": {"type": "quorum", **durable, "arguments": TASK_ARGS},
        "TASK_DLQ": {"type": "classic", **durable, "arguments": {}},
        "MANAGER_EVENT": {
            "type": "classic",
            **durable,
            "arguments": MANAGER_EVENT_ARGS,
        },
        "MANAGER_EVENT_DLQ": {"type": "classic", **durable, "arguments": {}},
        # The manager's durable copy of dead-lettered tasks (TASK_DLQ keeps its own).
        "icij_nb.TASK_DLQ.topoapp": {"type": "classic", **durable, "arguments": {}},
        # icij_nb's own log of cancels, for pools that start later.
        "ICIJ_NB_CANCELS": {
            "type": "stream",
            **durable,
            "arguments": {
                "x-queue-type": "stream",
                "x-max-age": "7D",
                "x-max-length-bytes": 50_000_000,
            },
        },
    }
    # The only other queues are the manager's private heartbeat and output queues.
    private = [q for q in vhost.queues() if q["exclusive"]]
    assert [(q["durable"], q["auto_delete"]) for q in private] == [(False, True)] * 2


def test_connect_binds_each_queue_to_its_exchange_and_key(
    vhost, amqp_connect, two_group_app
):
    amqp_connect(two_group_app)

    private = {q["name"] for q in vhost.queues() if q["exclusive"]}
    bindings = {
        (b["source"], b["routing_key"], b["destination"])
        for b in vhost.bindings()
        if b["destination"] not in private
    }
    assert bindings == {
        ("exchangeMainTasks", "routingKeyMainTasks", "TASK"),
        ("exchangeMainTasks", "cpu", "TASK.cpu"),
        ("exchangeMainTasks", "gpu", "TASK.gpu"),
        ("exchangeDLQTasks", "routingKeyDLQTasks", "TASK_DLQ"),
        ("exchangeDLQTasks", "routingKeyDLQTasks", "icij_nb.TASK_DLQ.topoapp"),
        ("exchangeManagerEvents", "routingKeyManagerEvents", "MANAGER_EVENT"),
        (
            "exchangeDLQManagerEvents",
            "routingKeyDLQManagerEvents",
            "MANAGER_EVENT_DLQ",
        ),
    }
    assert {b["source"] for b in vhost.bindings() if b["destination"] in private} == {
        "exchangeIcijNbWorkers",
        "exchangeIcijNbOutput",
    }


def test_connect_sets_the_task_group_policies_with_the_group_cap(
    vhost, amqp_connect, two_group_app
):
    amqp_connect(two_group_app)

    assert _policies(vhost) == {
        "task-group-policy-TASK": _task_policy("^TASK$"),
        "task-group-policy-TASK.cpu": _task_policy(r"^TASK\.cpu$", **{"max-length": 5}),
        "task-group-policy-TASK.gpu": _task_policy(r"^TASK\.gpu$"),
    }
    # The broker applies them: each task queue is governed by its own policy.
    vhost.wait_until(
        lambda: (
            {q: (vhost.queue(q) or {}).get("policy") for q in ("TASK", "TASK.cpu")}
            == {
                "TASK": "task-group-policy-TASK",
                "TASK.cpu": "task-group-policy-TASK.cpu",
            }
        ),
        what="the task-group policies to apply",
    )


def test_a_pool_adds_its_worker_event_queue_and_policy(
    vhost, amqp_connect, two_group_app
):
    tm = amqp_connect(two_group_app)
    assert "worker-events-policy" not in _policies(vhost)

    pool = tm.start_pool("cpu", workers=2)

    vhost.wait_until(
        lambda: queue_counts(vhost, "TASK.cpu")[1] == 2, what="two TASK.cpu consumers"
    )
    assert _policies(vhost)["worker-events-policy"] == {
        "pattern": "WORKER_EVENT-*",
        "definition": {"expires": 600000},
        "apply-to": "queues",
        "priority": 1000,
    }
    # One broadcast queue per pool, named after its first worker, as icij names them.
    worker_queues = {
        name: spec
        for name, spec in _protocol_queues(vhost).items()
        if name.startswith("WORKER_EVENT-")
    }
    assert worker_queues == {
        f"WORKER_EVENT-{pool.workers[0].worker_id}": {
            "type": "classic",
            "durable": True,
            "exclusive": False,
            "auto_delete": False,
            "arguments": {},
        }
    }
    assert (
        "exchangeWorkerEvents",
        "routingKeyWorkerEvents",
        f"WORKER_EVENT-{pool.workers[0].worker_id}",
    ) in {(b["source"], b["routing_key"], b["destination"]) for b in vhost.bindings()}
    assert queue_counts(vhost, "TASK.gpu")[1] == 0
    assert queue_counts(vhost, "TASK")[1] == 0


async def test_a_queued_task_message_is_persistent_with_app_id_and_the_icij_keys(
    vhost, amqp_connect, two_group_app, raw_channel
):
    tm = amqp_connect(two_group_app)
    handle = await tm.submit_async("crunch", {"n": 21})

    assert await vhost.message_count("TASK.cpu") == 1
    queue = await raw_channel.declare_queue("TASK.cpu", passive=True)
    message = await queue.get(no_ack=False, timeout=10)
    assert message is not None
    await message.reject(requeue=True)

    assert message.exchange == "exchangeMainTasks"
    assert message.routing_key == "cpu"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.app_id == "topoapp"
    assert message.content_type is None
    # Only icij_nb's publish time (icij-worker ignores headers); quorum queues add
    # their own x-delivery-count.
    headers = {k for k in message.headers or {} if not k.startswith("x-")}
    assert headers == {PUBLISHED_AT_HEADER}
    assert str(message.headers[PUBLISHED_AT_HEADER]).endswith("+00:00")
    body = json.loads(message.body)
    assert set(body) == FIRST_ENQUEUE_KEYS
    assert body["@type"] == "Task"
    assert body["id"] == handle.id
    assert (body["name"], body["args"]) == ("crunch", {"n": 21})
    assert body["state"] == "CREATED"
    # max_retries=2: three attempts, icij's maxRetries counts attempts.
    assert (body["maxRetries"], body["retriesLeft"]) == (3, 3)
    assert body["createdAt"].endswith("+00:00")
    # icij-worker's encoding: compact separators, "@type" last.
    assert message.body.decode().endswith('"@type":"Task"}')
    assert b", " not in message.body
    assert handle.state is nb.TaskState.QUEUED
    assert await vhost.message_count("TASK.cpu") == 1


async def test_events_and_broadcasts_are_persistent_and_carry_app_id(
    vhost, amqp_connect, two_group_app, raw_channel
):
    tm = amqp_connect(two_group_app)
    events_spy = await raw_channel.declare_queue(exclusive=True)
    await events_spy.bind("exchangeManagerEvents", "routingKeyManagerEvents")
    broadcast_spy = await raw_channel.declare_queue(exclusive=True)
    await broadcast_spy.bind("exchangeWorkerEvents", "routingKeyWorkerEvents")
    tm.start_pool("cpu", workers=1)

    handle = await tm.submit_async("crunch", {"n": 4})
    assert await handle.result_async(timeout_s=30) == 8
    queued = await tm.submit_async("render", {"n": 1})  # no gpu pool: stays queued
    await tm.cancel_async(queued)

    # The result, after a RUNNING progress event if the task ran past the grace
    # period.
    events = await vhost.wait_until_async(
        lambda: _take_until(events_spy, "ResultEvent"), what="the result event"
    )
    kinds = [json.loads(m.body)["@type"] for m in events]
    assert kinds in (["ResultEvent"], ["ProgressEvent", "ResultEvent"])
    worker_id = tm.get(handle).worker_id
    for message in events:
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.app_id == "topoapp"
        assert message.headers == {"workerId": worker_id}
    broadcasts = await vhost.wait_until_async(
        lambda: _take(broadcast_spy, 1), what="the cancel broadcast"
    )
    (cancel,) = broadcasts
    assert cancel.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert cancel.app_id == "topoapp"
    assert json.loads(cancel.body) == {
        "taskId": queued.id,
        "createdAt": json.loads(cancel.body)["createdAt"],
        "requeue": False,
        "@type": "CancelEvent",
    }


_TAKEN: dict[int, list[Any]] = {}


async def _take_until(queue: aio_pika.abc.AbstractQueue, kind: str) -> list[Any] | None:
    """Accumulate messages of a spy queue; return them once one is of ``kind``."""
    got = _TAKEN.setdefault(id(queue), [])
    while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
        got.append(message)
    return got if any(json.loads(m.body)["@type"] == kind for m in got) else None


async def _take(queue: aio_pika.abc.AbstractQueue, n: int) -> list[Any] | None:
    """Accumulate messages of a spy queue; return them once there are ``n``."""
    got = _TAKEN.setdefault(id(queue), [])
    while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
        got.append(message)
    if len(got) > n:
        msg = f"expected {n} messages, got {len(got)}"
        raise AssertionError(msg)
    return got if len(got) == n else None
