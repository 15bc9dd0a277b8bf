"""The task manager's side of the RabbitMQ broker: tasks out, events in.

:class:`AmqpManagerSide` publishes tasks to ``exchangeMainTasks`` with the group as
routing key (mandatory, persistent, publisher confirms, a ``publishedAt`` header;
docs/protocol.md §2.2), broadcasts cancel and shutdown events on the
``exchangeWorkerEvents`` fanout, and reads what comes back, in batches:

- worker events from ``MANAGER_EVENT``, acknowledged only once the manager applied
  and stored them; an event that does not parse, or that names a task the manager
  does not know, is rejected into ``MANAGER_EVENT_DLQ`` where a person can find it;
- tasks RabbitMQ dead-lettered (the delivery limit, say), through a durable queue
  of our own bound to ``exchangeDLQTasks`` (``TASK_DLQ`` keeps its copy), turned
  into ERROR events that say why (docs/protocol.md §3.7);
- observe-only: private queues bound to ``exchangeMainTasks`` and
  ``exchangeManagerEvents``, never ``MANAGER_EVENT``, so the task manager that owns
  the vhost (Datashare's) keeps its events while a notebook watches them;
- worker heartbeats, from icij_nb's own fanout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Final

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from icij_nb.app import App
from icij_nb.brokers import wire
from icij_nb.brokers.amqp_connection import AmqpConnection, settle
from icij_nb.brokers.amqp_topology import AmqpTopology
from icij_nb.brokers.base import EventBatch
from icij_nb.brokers.topology import (
    EXCHANGE_DLQ_TASKS,
    EXCHANGE_HEARTBEATS,
    EXCHANGE_MANAGER_EVENTS,
    EXCHANGE_TASKS,
    EXCHANGE_WORKER_EVENTS,
    MANAGER_EVENT_ARGUMENTS,
    PUBLISHED_AT_HEADER,
    QUEUE_CANCELS,
    QUEUE_MANAGER_EVENT,
    QUEUE_MANAGER_EVENT_DLQ,
    ROUTING_DLQ_TASKS,
    ROUTING_MANAGER_EVENTS,
    ROUTING_TASKS,
    ROUTING_WORKER_EVENTS,
    WORKER_ID_HEADER,
    mask_url,
    task_queue_name,
    task_routing_key,
)
from icij_nb.errors import BrokerError, TaskQueueFull, WireError
from icij_nb.model import (
    CancelEvent,
    ErrorEvent,
    ErrorRecord,
    ManagerEvent,
    Task,
    WorkerBroadcast,
    WorkerStatus,
    utcnow,
)

logger = logging.getLogger(__name__)

#: tasks published concurrently, awaiting their confirms together
PUBLISH_CHUNK: Final = 500
#: deliveries the event consumer holds at once
EVENT_PREFETCH: Final = 2_000

#: events of one batch, each with the message that brought it
_Taken = list[tuple[ManagerEvent, AbstractIncomingMessage]]


def dead_letter_queue_name(app_name: str) -> str:
    """The durable queue of ours that copies every dead-lettered task of an app."""
    return f"icij_nb.TASK_DLQ.{app_name}"


class AmqpManagerSide:
    """Publishes tasks and broadcasts; reads events, dead letters and heartbeats.

    Args:
        connection: the broker's connection.
        topology: the declared exchanges and task queues.
        app: its name is the ``app_id`` of what we publish.
        observe_only: read through private queues, never settle for the owner.
        observe_groups: the groups whose task messages an observer watches.
    """

    def __init__(
        self,
        connection: AmqpConnection,
        topology: AmqpTopology,
        app: App,
        *,
        observe_only: bool,
        observe_groups: Sequence[str],
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._app = app
        self._observe_only = observe_only
        self._observe_groups = list(observe_groups)

    # -- out: tasks and broadcasts ----------------------------------------------------

    async def publish_tasks(self, tasks: Sequence[Task]) -> None:
        """Publish ``tasks`` in chunks, each awaiting its confirms together."""
        # A group the app got after start (a task defined in a later cell) gets its
        # queue now; unbound, the task would be returned unroutable.
        for group in {t.group for t in tasks}:
            await self._topology.declare_task_queue(group)
        exchange = self._topology.exchange(EXCHANGE_TASKS)
        published_at = wire.format_datetime(utcnow())
        for start in range(0, len(tasks), PUBLISH_CHUNK):
            chunk = tasks[start : start + PUBLISH_CHUNK]
            outcomes = await asyncio.gather(
                *(self._publish_task(exchange, t, published_at) for t in chunk),
                return_exceptions=True,
            )
            failed = [
                (t, o) for t, o in zip(chunk, outcomes, strict=True) if o is not None
            ]
            if failed:
                raise self._publish_failure(tasks[start + len(chunk) :], failed)

    async def _publish_task(
        self, exchange: AbstractExchange, task: Task, published_at: str
    ) -> None:
        message = aio_pika.Message(
            wire.encode_task(task),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id=self._app.name,
            # Tells a retry from the message a cancel was meant for (icij-worker
            # ignores headers).
            headers={PUBLISHED_AT_HEADER: published_at},
        )
        await exchange.publish(message, task_routing_key(task.group), mandatory=True)

    def _publish_failure(
        self, not_tried: Sequence[Task], failed: list[tuple[Task, BaseException]]
    ) -> BrokerError:
        not_queued = [t.id for t, _ in failed] + [t.id for t in not_tried]
        task, exc = failed[0]
        url = mask_url(self._connection.url)
        if isinstance(exc, aiormq.exceptions.PublishError):
            msg = (
                f"no queue is bound for group {task.group!r} on {url}: "
                f"{len(not_queued)} task(s) were not queued. Declare the group in "
                "the app, or start a pool for it."
            )
            error: BrokerError = BrokerError(msg, not_queued=tuple(not_queued))
        elif isinstance(exc, aiormq.exceptions.DeliveryError):
            msg = (
                f"the queue {task_queue_name(task.group)} is full (its "
                f"max_task_queue_size): {len(not_queued)} task(s) were not queued. "
                "Wait for workers to take some, or raise the cap."
            )
            error = TaskQueueFull(
                msg, group=task.group or "", not_queued=tuple(not_queued)
            )
        else:
            msg = (
                f"publishing to {url} failed ({exc.__class__.__name__}: "
                f"{exc}): {len(not_queued)} task(s) were not queued"
            )
            error = BrokerError(msg, not_queued=tuple(not_queued))
            error.__cause__ = exc
        return error

    async def broadcast(self, event: WorkerBroadcast) -> None:
        """Send a cancel or shutdown event to every worker of the vhost.

        A cancel that ends a task (no requeue) goes to the cancel log first, so a
        pool that starts later still hears it (docs/protocol.md §1.7).
        """
        message = aio_pika.Message(
            wire.encode_broadcast(event),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id=self._app.name,
        )
        if isinstance(event, CancelEvent) and not event.requeue:
            await self._connection.publisher.default_exchange.publish(
                message, QUEUE_CANCELS, mandatory=False
            )
        await self._topology.exchange(EXCHANGE_WORKER_EVENTS).publish(
            message, ROUTING_WORKER_EVENTS, mandatory=False
        )

    # -- in: events, dead letters, observed tasks -------------------------------------

    async def manager_events(self) -> AsyncIterator[EventBatch]:
        """Events (and, observing, tasks seen) in batches, until closed."""
        inbox: deque[tuple[ManagerEvent, AbstractIncomingMessage]] = deque()
        ready = asyncio.Event()
        channel = await self._connection.channel(
            confirms=False, prefetch=EVENT_PREFETCH
        )
        queues = await self._event_sources(channel)

        seen: list[Task] = []

        async def on_task(message: AbstractIncomingMessage) -> None:
            try:
                task = wire.decode_task(message.body)
            except WireError as exc:
                logger.warning("observed task message that does not parse: %s", exc)
                return
            task.group = _group_of(message.routing_key)
            seen.append(task)
            ready.set()

        async def on_event(message: AbstractIncomingMessage) -> None:
            event = await _decode_event(message)
            if event is not None:
                inbox.append((event, message))
                ready.set()

        async def on_dead_task(message: AbstractIncomingMessage) -> None:
            event = dead_letter_event(message)
            if event is None:
                await settle(message.ack())
                return
            inbox.append((event, message))
            ready.set()

        handlers = {"dlq": on_dead_task, "tasks": on_task, "events": on_event}
        for queue, kind in queues:
            await queue.consume(handlers[kind], no_ack=kind == "tasks")
        try:
            while True:
                await ready.wait()
                ready.clear()
                taken = list(inbox)
                inbox.clear()
                fresh, seen[:] = list(seen), []
                if taken or fresh:
                    yield EventBatch(
                        [e for e, _ in taken],
                        _settler(taken, self._observe_only),
                        seen=fresh,
                    )
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _event_sources(
        self, channel: AbstractChannel
    ) -> list[tuple[AbstractQueue, str]]:
        exchange = self._topology.exchange
        if self._observe_only:
            # Private queues: the watched manager keeps MANAGER_EVENT to itself.
            events = await channel.declare_queue(exclusive=True, auto_delete=True)
            await events.bind(exchange(EXCHANGE_MANAGER_EVENTS), ROUTING_MANAGER_EVENTS)
            tasks = await channel.declare_queue(exclusive=True, auto_delete=True)
            for group in [None, *self._observe_groups]:
                await tasks.bind(exchange(EXCHANGE_TASKS), task_routing_key(group))
            return [(tasks, "tasks"), (events, "events")]
        events = await channel.declare_queue(
            QUEUE_MANAGER_EVENT, durable=True, arguments=MANAGER_EVENT_ARGUMENTS
        )
        # A durable queue of ours gets a copy of every dead-lettered task, even
        # while no manager runs; TASK_DLQ keeps the original for people.
        dead = await channel.declare_queue(
            dead_letter_queue_name(self._app.name), durable=True
        )
        await dead.bind(exchange(EXCHANGE_DLQ_TASKS), ROUTING_DLQ_TASKS)
        return [(events, "events"), (dead, "dlq")]

    async def heartbeats(self) -> AsyncIterator[list[WorkerStatus]]:
        """Heartbeats of every icij_nb worker on the vhost, until closed."""
        channel = await self._connection.channel(confirms=False, prefetch=100)
        try:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(self._topology.exchange(EXCHANGE_HEARTBEATS), "")
            async with queue.iterator(no_ack=True) as messages:
                async for message in messages:
                    try:
                        yield wire.decode_heartbeat(message.body)
                    except WireError as exc:
                        logger.warning("worker heartbeat dropped: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()


async def _decode_event(message: AbstractIncomingMessage) -> ManagerEvent | None:
    try:
        event = wire.decode_event(message.body)
    except WireError as exc:
        logger.error(
            "manager event set aside (dead-lettered to %s): %s",
            QUEUE_MANAGER_EVENT_DLQ,
            exc,
        )
        await settle(message.reject(requeue=False))
        return None
    worker_id = (message.headers or {}).get(WORKER_ID_HEADER)
    if isinstance(worker_id, str):
        return dataclasses.replace(event, worker_id=worker_id)
    return event


def _group_of(routing_key: str | None) -> str | None:
    return None if routing_key in (None, ROUTING_TASKS) else routing_key


def _settler(
    taken: _Taken, observe_only: bool
) -> Callable[[Sequence[ManagerEvent]], Awaitable[None]]:
    async def settle_batch(rejected: Sequence[ManagerEvent]) -> None:
        rejected_ids = {id(e) for e in rejected}
        kept = []
        for event, message in taken:
            if id(event) in rejected_ids and not observe_only:
                await settle(message.reject(requeue=False))
            else:
                kept.append(message)
        if kept:
            # One frame for the batch: every earlier delivery of this channel is
            # in this batch or an earlier one (settled in order), or was rejected.
            await settle(kept[-1].ack(multiple=True))

    return settle_batch


def _header_text(value: object, default: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else default


def dead_letter_event(message: AbstractIncomingMessage) -> ManagerEvent | None:
    """The ERROR event for a task RabbitMQ dead-lettered (None: it does not parse)."""
    try:
        task = wire.decode_task(message.body)
    except WireError as exc:
        logger.error("a dead-lettered task that does not parse was dropped: %s", exc)
        return None
    headers = message.headers or {}
    reason = _header_text(headers.get("x-first-death-reason"), "rejected")
    queue = _header_text(headers.get("x-first-death-queue"), "its queue")
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else None
    count = first.get("count") if isinstance(first, dict) else None
    count = count if isinstance(count, int) else 1
    text = (
        f"RabbitMQ dead-lettered this task from {queue} ({reason}, {count} time(s)): "
        "no worker could run it. Check that a pool for its group runs and knows "
        "this task name; the message is kept in TASK_DLQ."
    )
    if reason == "delivery_limit":
        text = (
            f"RabbitMQ gave up on this task after its delivery limit in {queue}: "
            "workers took it and never finished it (unknown name, or a crash each "
            "time). The message is kept in TASK_DLQ."
        )
    return ErrorEvent(
        task.id, ErrorRecord(name="DeadLettered", message=text), attempts_left=0
    )
