"""The workers' side of the RabbitMQ broker: deliveries in, events out.

:class:`AmqpWorkerSide` consumes ``TASK`` or ``TASK.<group>`` with late acks
(:class:`AmqpDelivery` settles each message once); a body that does not parse is
rejected into ``TASK_DLQ`` at once, never left unsettled (docs/protocol.md §3.4).
Events go to ``exchangeManagerEvents`` with a ``workerId`` header, and are sent
again once a lost connection comes back. Each worker has its
``WORKER_EVENT-<id>`` queue on the fanout of cancel and shutdown broadcasts,
deleted when it leaves if empty. Heartbeats and the output of running tasks go
out on icij_nb's own fanouts (docs/protocol.md §2.11, §2.13).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from icij_nb.app import App
from icij_nb.brokers import wire
from icij_nb.brokers.amqp_connection import AmqpConnection, settle
from icij_nb.brokers.amqp_topology import AmqpTopology
from icij_nb.brokers.base import Delivery
from icij_nb.brokers.topology import (
    EXCHANGE_HEARTBEATS,
    EXCHANGE_MANAGER_EVENTS,
    EXCHANGE_OUTPUT,
    EXCHANGE_WORKER_EVENTS,
    LOG_MARK_HEADER,
    PUBLISHED_AT_HEADER,
    QUEUE_CANCELS,
    QUEUE_TASK_DLQ,
    ROUTING_MANAGER_EVENTS,
    ROUTING_WORKER_EVENTS,
    TASK_QUEUE_ARGUMENTS,
    WORKER_ID_HEADER,
    mask_url,
    task_queue_name,
)
from icij_nb.errors import WireError
from icij_nb.model import (
    CancelEvent,
    ManagerEvent,
    Task,
    WorkerBroadcast,
    WorkerStatus,
)
from icij_nb.output import OutputChunk

logger = logging.getLogger(__name__)

#: how long a worker's event waits for RabbitMQ to come back after a lost connection
EVENT_REPUBLISH_WAIT_S: Final = 300.0
#: how long a heartbeat lives in a queue nobody reads (``expiration``, seconds)
HEARTBEAT_EXPIRATION_S: Final = 60
#: how long a starting pool reads the cancel log at most
CANCEL_LOG_WAIT_S: Final = 10.0


def worker_event_queue_name(worker_id: str) -> str:
    """The queue of one worker on the broadcast fanout: ``WORKER_EVENT-<id>``."""
    return f"WORKER_EVENT-{worker_id}"


class AmqpDelivery:
    """One task message handed to a worker; settled at most once."""

    __slots__ = ("_message", "_settled", "task")

    def __init__(self, message: AbstractIncomingMessage, task: Task) -> None:
        self._message, self.task, self._settled = message, task, False

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    @property
    def published_at(self) -> datetime | None:
        value = (self._message.headers or {}).get(PUBLISHED_AT_HEADER)
        if not isinstance(value, str):
            return None
        try:
            return wire.parse_datetime(value)
        except WireError:
            return None

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            await settle(self._message.ack())

    async def nack(self, *, requeue: bool) -> None:
        if not self._settled:
            self._settled = True
            await settle(self._message.nack(requeue=requeue))


class AmqpWorkerSide:
    """Takes a group's deliveries, publishes events and heartbeats, hears broadcasts.

    Args:
        connection: the broker's connection.
        topology: the declared exchanges and task queues.
        app: its name is the ``app_id`` of what we publish.
        prefetch: deliveries a worker consumer holds at once.
    """

    def __init__(
        self,
        connection: AmqpConnection,
        topology: AmqpTopology,
        app: App,
        *,
        prefetch: int,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._app = app
        self._prefetch = prefetch

    @asynccontextmanager
    async def deliveries(
        self, group: str | None, *, worker_id: str
    ) -> AsyncIterator[AsyncIterator[Delivery]]:
        """Consume the queue of ``group``; leaving requeues what is unsettled."""
        await self._topology.declare_task_queue(group)
        channel = await self._connection.channel(
            confirms=False, prefetch=self._prefetch
        )
        queue = await channel.declare_queue(
            task_queue_name(group), durable=True, arguments=TASK_QUEUE_ARGUMENTS
        )
        logger.info(
            "worker %s consumes queue %s on %s",
            worker_id,
            queue.name,
            mask_url(self._connection.url),
        )

        async def consume() -> AsyncIterator[Delivery]:
            async with queue.iterator() as messages:
                async for message in messages:
                    try:
                        task = wire.decode_task(message.body)
                    except WireError as exc:
                        logger.error(
                            "task message on %s set aside (dead-lettered to %s): %s",
                            queue.name,
                            QUEUE_TASK_DLQ,
                            exc,
                        )
                        await settle(message.reject(requeue=False))
                        continue
                    task.group = group
                    yield AmqpDelivery(message, task)

        try:
            yield consume()
        finally:
            # Closing the channel returns unsettled deliveries to the queue.
            with contextlib.suppress(Exception):
                await channel.close()

    async def publish_event(self, event: ManagerEvent) -> None:
        """Send ``event`` to the manager, waiting out a lost connection."""
        headers: dict[str, Any] | None = (
            {WORKER_ID_HEADER: event.worker_id} if event.worker_id else None
        )
        message = aio_pika.Message(
            wire.encode_event(event),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id=self._app.name,
            headers=headers,
        )

        async def publish() -> None:
            await self._topology.exchange(EXCHANGE_MANAGER_EVENTS).publish(
                message, ROUTING_MANAGER_EVENTS, mandatory=False
            )

        # Events are idempotent for the manager: one that may have been sent
        # already is sent again rather than lost with a dropped connection.
        await self._connection.publish_through_outages(
            publish, wait_s=EVENT_REPUBLISH_WAIT_S
        )

    @asynccontextmanager
    async def broadcasts(
        self, *, worker_id: str
    ) -> AsyncIterator[AsyncIterator[WorkerBroadcast]]:
        """Cancel and shutdown events, through this worker's own queue."""
        channel = await self._connection.channel(confirms=False, prefetch=100)
        name = worker_event_queue_name(worker_id)
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(
            self._topology.exchange(EXCHANGE_WORKER_EVENTS), ROUTING_WORKER_EVENTS
        )
        await self._topology.set_worker_events_policy()

        async def receive() -> AsyncIterator[WorkerBroadcast]:
            async with queue.iterator() as messages:
                async for message in messages:
                    await settle(message.ack())
                    try:
                        yield wire.decode_broadcast(message.body)
                    except WireError as exc:
                        logger.error("worker event on %s dropped: %s", name, exc)

        try:
            yield receive()
        finally:
            with contextlib.suppress(Exception):
                await queue.delete(if_unused=False, if_empty=True)
            with contextlib.suppress(Exception):
                await channel.close()

    async def cancelled_before(self, *, worker_id: str) -> list[CancelEvent]:
        """The cancels of queued tasks logged before now (docs/protocol.md §1.7).

        Reads the cancel log from its start up to a marker this call appends, so
        every cancel a manager logged before the call is in the list.
        """
        channel = await self._connection.channel(confirms=False, prefetch=1_000)
        mark = f"{worker_id}-{uuid.uuid4().hex}"
        heard: list[CancelEvent] = []
        reached = asyncio.Event()

        async def read(message: AbstractIncomingMessage) -> None:
            await settle(message.ack())  # a stream consumer acks to get more credit
            marked = (message.headers or {}).get(LOG_MARK_HEADER)
            if marked is not None:
                if marked == mark:
                    reached.set()
                return
            try:
                event = wire.decode_broadcast(message.body)
            except WireError as exc:
                logger.error("cancel log entry dropped: %s", exc)
                return
            if isinstance(event, CancelEvent):
                heard.append(event)

        try:
            queue = await channel.get_queue(QUEUE_CANCELS, ensure=False)
            await queue.consume(read, arguments={"x-stream-offset": "first"})
            await self._connection.publisher.default_exchange.publish(
                aio_pika.Message(b"{}", headers={LOG_MARK_HEADER: mark}), QUEUE_CANCELS
            )
            async with asyncio.timeout(CANCEL_LOG_WAIT_S):
                await reached.wait()
        except TimeoutError:
            logger.warning(
                "worker %s: read %d cancel(s) of the cancel log, not all, in %.0fs",
                worker_id,
                len(heard),
                CANCEL_LOG_WAIT_S,
            )
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return heard

    async def publish_heartbeat(self, statuses: Sequence[WorkerStatus]) -> None:
        """Tell managers which workers are alive (not persistent, expires)."""
        await self._publish_transient(
            EXCHANGE_HEARTBEATS, wire.encode_heartbeat(statuses)
        )

    async def publish_output(self, chunks: Sequence[OutputChunk]) -> None:
        """Send tasks' output to managers (not persistent, expires, no confirm)."""
        await self._publish_transient(EXCHANGE_OUTPUT, wire.encode_output(chunks))

    async def _publish_transient(self, exchange: str, body: bytes) -> None:
        # icij_nb's own fanouts: best effort, gone when no manager reads them.
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            app_id=self._app.name,
            expiration=HEARTBEAT_EXPIRATION_S,
        )
        await self._topology.exchange(exchange).publish(message, "", mandatory=False)
