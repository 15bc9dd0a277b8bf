"""The RabbitMQ broker, speaking icij-worker's AMQP task protocol (aio-pika).

This is the only module that imports aio_pika. It declares icij-worker's topology
exactly (exchanges, queues with their exact arguments, bindings; PROTOCOL §1), sets
the management-API policies icij-worker sets, and moves the JSON bodies of
:mod:`icij_nb.brokers.wire`:

- manager side: tasks go to ``exchangeMainTasks`` with the group as routing key
  (mandatory, persistent, publisher confirms); events come from ``MANAGER_EVENT`` and
  are acknowledged after the manager applied and stored them; events that do not
  parse, or name a task the manager does not know, are rejected into
  ``MANAGER_EVENT_DLQ`` where a person can find them. Tasks RabbitMQ dead-letters
  (``TASK_DLQ``, e.g. after the delivery limit) come back as ERROR events, through a
  durable queue of our own bound to ``exchangeDLQTasks`` (``TASK_DLQ`` keeps its copy).
- observe-only manager: binds private queues to ``exchangeMainTasks`` and
  ``exchangeManagerEvents`` and never consumes ``MANAGER_EVENT``, so another task
  manager (Datashare's) keeps its events while a notebook watches them.
- worker side: consumes ``TASK`` or ``TASK.<group>`` with late acks; a body that does
  not parse is rejected into ``TASK_DLQ`` at once (never left unsettled); each
  worker has its ``WORKER_EVENT-<id>`` queue on the fanout of cancel/shutdown events.

Two message headers of our own, which icij-worker ignores: ``workerId`` on events
(who sent it) and ``publishedAt`` on tasks (tells a retry from the message a cancel
was meant for).
Connections are aio-pika robust connections: they reconnect when RabbitMQ restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from icij_nb.app import App
from icij_nb.brokers import wire
from icij_nb.brokers.base import Broker, Delivery, EventBatch
from icij_nb.brokers.topology import (
    DEFAULT_URL,
    ENV_MANAGEMENT_URL,
    ENV_URL,
    EXCHANGE_DLQ_MANAGER_EVENTS,
    EXCHANGE_DLQ_TASKS,
    EXCHANGE_HEARTBEATS,
    EXCHANGE_MANAGER_EVENTS,
    EXCHANGE_MONITORING,
    EXCHANGE_TASKS,
    EXCHANGE_WORKER_EVENTS,
    MANAGER_EVENT_ARGUMENTS,
    PUBLISHED_AT_HEADER,
    QUEUE_MANAGER_EVENT,
    QUEUE_MANAGER_EVENT_DLQ,
    QUEUE_TASK_DLQ,
    ROUTING_DLQ_MANAGER_EVENTS,
    ROUTING_DLQ_TASKS,
    ROUTING_MANAGER_EVENTS,
    ROUTING_TASKS,
    ROUTING_WORKER_EVENTS,
    TASK_QUEUE_ARGUMENTS,
    WORKER_EVENTS_POLICY,
    WORKER_ID_HEADER,
    ManagementApi,
    management_url_for,
    mask_url,
    task_group_policy,
    task_queue_name,
    task_routing_key,
    vhost_of,
)
from icij_nb.errors import BrokerError, BrokerUnavailable, TaskQueueFull, WireError
from icij_nb.model import (
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
#: how long a worker's event waits for RabbitMQ to come back after a lost connection
EVENT_REPUBLISH_WAIT_S: Final = 300.0
#: what a publish raises when the connection drops under it (the robust connection
#: reconnects by itself meanwhile)
_CONNECTION_LOST: Final = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
)


class _AmqpDelivery:
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
            await _settle(self._message.ack())

    async def nack(self, *, requeue: bool) -> None:
        if not self._settled:
            self._settled = True
            await _settle(self._message.nack(requeue=requeue))


async def _settle(operation: Any) -> None:
    # After a reconnection the channel that delivered a message is gone and the
    # broker has requeued it already: settling it then is impossible and harmless.
    try:
        await operation
    except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
        logger.warning("could not settle a message (%s); the broker requeues it", exc)


class AmqpBroker(Broker):
    """RabbitMQ with icij-worker's protocol.

    Args:
        app: the app whose groups get queues and policies; its name is the
            ``app_id`` of what we publish.
        url: ``amqp://user:password@host:port/vhost``; default ``$ICIJ_NB_AMQP_URL``
            or ``amqp://guest:guest@127.0.0.1:5672/``.
        management_url: the management API (``http://user:password@host:15672``);
            default ``$ICIJ_NB_AMQP_MANAGEMENT_URL`` or derived from ``url``.
        set_policies: PUT icij-worker's policies through the management API.
        observe_only: watch another task manager's vhost: never consume
            ``MANAGER_EVENT``, never publish.
        observe_groups: the groups whose task messages an observer watches
            (default: the app's groups; ungrouped tasks are always watched).
        prefetch: deliveries a worker consumer holds at once.
        connection_timeout_s: how long the first connection may take.
    """

    kind = "amqp"
    durable = True
    late_ack = True

    def __init__(
        self,
        app: App,
        url: str | None = None,
        *,
        management_url: str | None = None,
        set_policies: bool = True,
        observe_only: bool = False,
        observe_groups: Sequence[str] | None = None,
        prefetch: int = 1,
        connection_timeout_s: float = 5.0,
    ) -> None:
        self.app = app
        self.url = url or os.environ.get(ENV_URL) or DEFAULT_URL
        self.vhost = vhost_of(self.url)
        self._management_url = (
            management_url
            or os.environ.get(ENV_MANAGEMENT_URL)
            or management_url_for(self.url)
        )
        self._management = ManagementApi(self._management_url, self.vhost)
        self.set_policies = set_policies
        self.observe_only = observe_only
        self.observe_groups = list(observe_groups or app.groups)
        self.prefetch = prefetch
        self.connection_timeout_s = connection_timeout_s
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._declared_groups: set[str | None] = set()

    def __repr__(self) -> str:
        state = "connected" if self._connection is not None else "not connected"
        mode = " observe-only" if self.observe_only else ""
        return f"<AmqpBroker {mask_url(self.url)}{mode} {state}>"

    def for_another_process(self) -> AmqpBroker:
        """A new, unstarted broker with the same URL and settings."""
        return AmqpBroker(
            self.app,
            self.url,
            management_url=self._management_url,
            set_policies=self.set_policies,
            prefetch=self.prefetch,
            connection_timeout_s=self.connection_timeout_s,
        )

    # -- connection and topology --------------------------------------------------

    async def start(self) -> None:
        if self._connection is not None:
            return
        self._connection = await self._connect()
        try:
            self._publisher = await self._channel(confirms=True)
            await self._declare_common()
            if not self.observe_only:
                for group in [None, *self.app.groups]:
                    await self.declare_task_queue(group)
        except BaseException:
            # A half-started broker would leave its connection to a closed loop.
            await self.close()
            raise

    async def _connect(self) -> AbstractRobustConnection:
        where = f"RabbitMQ at {mask_url(self.url)} (vhost {self.vhost!r})"
        # Built here, not by connect_robust(), so that a failed one can be closed:
        # garbage-collected unclosed, it warns "coroutine ... never awaited".
        connection = aio_pika.RobustConnection(aio_pika.connection.make_url(self.url))
        try:
            try:
                await connection.connect(timeout=self.connection_timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.close()
                raise
            return connection
        except aiormq.exceptions.ProbableAuthenticationError as exc:
            msg = f"{where} refused the credentials: check user and password ({exc})"
            raise BrokerUnavailable(msg) from exc
        except aiormq.exceptions.ConnectionClosed as exc:
            msg = (
                f"{where} closed the connection: {exc}. Does the vhost exist, and "
                "may this user use it?"
            )
            raise BrokerUnavailable(msg) from exc
        except aiormq.exceptions.InvalidFrameError as exc:
            if "Connection.Close" not in str(exc):
                raise _unreachable(where, exc) from exc
            # RabbitMQ closes the connection instead of opening the vhost; its
            # reason (NOT_ALLOWED) is lost in aiormq's error.
            user = unquote(urlsplit(self.url).username or "guest")
            msg = (
                f"{where} refused to open vhost {self.vhost!r} for user {user!r}: the "
                "vhost does not exist, or the user has no permissions on it. Check "
                f"with 'rabbitmqctl list_permissions -p {self.vhost}'."
            )
            raise BrokerUnavailable(msg) from exc
        except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
            raise _unreachable(where, exc) from exc

    async def _channel(self, *, confirms: bool, prefetch: int | None = None) -> Any:
        if self._connection is None:
            msg = "the AMQP broker is not started"
            raise BrokerError(msg)
        channel = await self._connection.channel(
            publisher_confirms=confirms, on_return_raises=confirms
        )
        await channel.set_qos(prefetch_count=prefetch or 1)
        return channel

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def _declare_common(self) -> None:
        channel = self._publisher
        if channel is None:  # pragma: no cover - set in start()
            return
        direct, fanout = aio_pika.ExchangeType.DIRECT, aio_pika.ExchangeType.FANOUT
        for name, kind in (
            (EXCHANGE_TASKS, direct),
            (EXCHANGE_DLQ_TASKS, direct),
            (EXCHANGE_MANAGER_EVENTS, direct),
            (EXCHANGE_DLQ_MANAGER_EVENTS, direct),
            (EXCHANGE_WORKER_EVENTS, fanout),
            (EXCHANGE_MONITORING, direct),
            (EXCHANGE_HEARTBEATS, fanout),
        ):
            try:
                self._exchanges[name] = await channel.declare_exchange(
                    name, kind, durable=True
                )
            except aiormq.exceptions.ChannelAccessRefused as exc:
                raise self._refused(exc, "configure") from exc
        if self.observe_only:
            return
        await self._declare_bound(
            QUEUE_TASK_DLQ, None, EXCHANGE_DLQ_TASKS, ROUTING_DLQ_TASKS
        )
        await self._declare_bound(
            QUEUE_MANAGER_EVENT,
            MANAGER_EVENT_ARGUMENTS,
            EXCHANGE_MANAGER_EVENTS,
            ROUTING_MANAGER_EVENTS,
        )
        await self._declare_bound(
            QUEUE_MANAGER_EVENT_DLQ,
            None,
            EXCHANGE_DLQ_MANAGER_EVENTS,
            ROUTING_DLQ_MANAGER_EVENTS,
        )

    async def _declare_bound(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        exchange: str,
        routing_key: str,
        channel: AbstractChannel | None = None,
    ) -> AbstractQueue:
        channel = channel or self._publisher
        if channel is None:  # pragma: no cover - set in start()
            msg = "the AMQP broker is not started"
            raise BrokerError(msg)
        try:
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise _conflict(name, arguments, exc) from exc
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise self._refused(exc, "configure") from exc
        try:
            await queue.bind(self._exchanges[exchange], routing_key)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            # Binding writes to the queue and reads from the exchange; RabbitMQ
            # names the resource it refused.
            refused = "write" if "access to queue" in str(exc) else "read"
            raise self._refused(exc, refused) from exc
        return queue

    def _refused(self, exc: BaseException, permission: str) -> BrokerError:
        user = urlsplit(self.url).username or "guest"
        msg = (
            f"RabbitMQ at {mask_url(self.url)} refused user {unquote(user)!r} on "
            f"vhost {self.vhost!r}: {exc}. The user lacks the {permission!r} "
            "permission there: grant it (rabbitmqctl set_permissions -p "
            f"{self.vhost} {unquote(user)} '.*' '.*' '.*') or use another user."
        )
        return BrokerError(msg)

    async def declare_task_queue(self, group: str | None) -> None:
        """Declare ``TASK``/``TASK.<group>``, bind it, and set its policy."""
        if group in self._declared_groups:
            return
        await self._declare_bound(
            task_queue_name(group),
            TASK_QUEUE_ARGUMENTS,
            EXCHANGE_TASKS,
            task_routing_key(group),
        )
        if self.set_policies:
            spec = self.app.group(group) if group is not None else None
            cap = spec.max_task_queue_size if spec is not None else None
            await self._management.put_policy(
                f"task-group-policy-{task_queue_name(group)}",
                task_group_policy(group, cap),
            )
        self._declared_groups.add(group)

    # -- manager side -------------------------------------------------------------

    async def publish_tasks(self, tasks: Sequence[Task]) -> None:
        # A group the app got after start (a task defined in a later cell) gets its
        # queue now; unbound, the task would be returned unroutable.
        for group in {t.group for t in tasks} - self._declared_groups:
            await self.declare_task_queue(group)
        exchange = self._exchange(EXCHANGE_TASKS)
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
            app_id=self.app.name,
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
        if isinstance(exc, aiormq.exceptions.PublishError):
            msg = (
                f"no queue is bound for group {task.group!r} on {mask_url(self.url)}: "
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
                f"publishing to {mask_url(self.url)} failed ({exc.__class__.__name__}: "
                f"{exc}): {len(not_queued)} task(s) were not queued"
            )
            error = BrokerError(msg, not_queued=tuple(not_queued))
            error.__cause__ = exc
        return error

    async def broadcast(self, event: WorkerBroadcast) -> None:
        message = aio_pika.Message(
            wire.encode_broadcast(event),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id=self.app.name,
        )
        await self._exchange(EXCHANGE_WORKER_EVENTS).publish(
            message, ROUTING_WORKER_EVENTS, mandatory=False
        )

    async def manager_events(self) -> AsyncIterator[EventBatch]:
        inbox: deque[tuple[ManagerEvent, AbstractIncomingMessage]] = deque()
        ready = asyncio.Event()
        channel = await self._channel(confirms=False, prefetch=2_000)
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
            event = await self._decode_event(message)
            if event is not None:
                inbox.append((event, message))
                ready.set()

        async def on_dead_task(message: AbstractIncomingMessage) -> None:
            event = _dead_letter_event(message)
            if event is None:
                await _settle(message.ack())
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
                        _settler(taken, self.observe_only),
                        seen=fresh,
                    )
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _event_sources(
        self, channel: AbstractChannel
    ) -> list[tuple[AbstractQueue, str]]:
        if self.observe_only:
            # Private queues: the watched manager keeps MANAGER_EVENT to itself.
            events = await channel.declare_queue(exclusive=True, auto_delete=True)
            await events.bind(
                self._exchanges[EXCHANGE_MANAGER_EVENTS], ROUTING_MANAGER_EVENTS
            )
            tasks = await channel.declare_queue(exclusive=True, auto_delete=True)
            for group in [None, *self.observe_groups]:
                await tasks.bind(
                    self._exchanges[EXCHANGE_TASKS], task_routing_key(group)
                )
            return [(tasks, "tasks"), (events, "events")]
        events = await channel.declare_queue(
            QUEUE_MANAGER_EVENT, durable=True, arguments=MANAGER_EVENT_ARGUMENTS
        )
        # A durable queue of ours gets a copy of every dead-lettered task, even
        # while no manager runs; TASK_DLQ keeps the original for people.
        dead = await channel.declare_queue(
            f"icij_nb.TASK_DLQ.{self.app.name}", durable=True
        )
        await dead.bind(self._exchanges[EXCHANGE_DLQ_TASKS], ROUTING_DLQ_TASKS)
        return [(events, "events"), (dead, "dlq")]

    async def _decode_event(
        self, message: AbstractIncomingMessage
    ) -> ManagerEvent | None:
        try:
            event = wire.decode_event(message.body)
        except WireError as exc:
            logger.error(
                "manager event set aside (dead-lettered to %s): %s",
                QUEUE_MANAGER_EVENT_DLQ,
                exc,
            )
            await _settle(message.reject(requeue=False))
            return None
        worker_id = (message.headers or {}).get(WORKER_ID_HEADER)
        if isinstance(worker_id, str):
            return dataclasses.replace(event, worker_id=worker_id)
        return event

    def _exchange(self, name: str) -> AbstractExchange:
        try:
            return self._exchanges[name]
        except KeyError:
            msg = "the AMQP broker is not started; call start() first"
            raise BrokerError(msg) from None

    # -- worker side --------------------------------------------------------------

    @asynccontextmanager
    async def deliveries(
        self, group: str | None, *, worker_id: str
    ) -> AsyncIterator[AsyncIterator[Delivery]]:
        await self.declare_task_queue(group)
        channel = await self._channel(confirms=False, prefetch=self.prefetch)
        queue = await channel.declare_queue(
            task_queue_name(group), durable=True, arguments=TASK_QUEUE_ARGUMENTS
        )
        logger.info(
            "worker %s consumes queue %s on %s",
            worker_id,
            queue.name,
            mask_url(self.url),
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
                        await _settle(message.reject(requeue=False))
                        continue
                    task.group = group
                    yield _AmqpDelivery(message, task)

        try:
            yield consume()
        finally:
            # Closing the channel returns unsettled deliveries to the queue.
            with contextlib.suppress(Exception):
                await channel.close()

    async def publish_event(self, event: ManagerEvent) -> None:
        headers: dict[str, Any] | None = (
            {WORKER_ID_HEADER: event.worker_id} if event.worker_id else None
        )
        message = aio_pika.Message(
            wire.encode_event(event),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id=self.app.name,
            headers=headers,
        )
        # Events are idempotent for the manager: one that may have been sent
        # already is sent again rather than lost with a dropped connection.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EVENT_REPUBLISH_WAIT_S
        while True:
            try:
                await self._exchange(EXCHANGE_MANAGER_EVENTS).publish(
                    message, ROUTING_MANAGER_EVENTS, mandatory=False
                )
                return
            except _CONNECTION_LOST as exc:
                await self._wait_reconnected(exc, deadline - loop.time())

    async def _wait_reconnected(self, lost: BaseException, wait_s: float) -> None:
        connection = self._connection
        if connection is None or wait_s <= 0:
            msg = (
                f"lost the connection to {mask_url(self.url)} (vhost {self.vhost!r}) "
                f"and it did not come back: {lost}"
            )
            raise BrokerUnavailable(msg) from lost
        logger.warning(
            "connection to RabbitMQ lost (%s: %s); publishing again once it is back",
            type(lost).__name__,
            lost,
        )
        try:
            async with asyncio.timeout(wait_s):
                await connection.ready()
        except TimeoutError:
            return  # the next publish fails, and the deadline has passed
        await asyncio.sleep(0.1)  # channels are restored right after the connection

    @asynccontextmanager
    async def broadcasts(
        self, *, worker_id: str
    ) -> AsyncIterator[AsyncIterator[WorkerBroadcast]]:
        channel = await self._channel(confirms=False, prefetch=100)
        name = f"WORKER_EVENT-{worker_id}"
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(self._exchanges[EXCHANGE_WORKER_EVENTS], ROUTING_WORKER_EVENTS)
        if self.set_policies:
            await self._management.put_policy(
                "worker-events-policy", WORKER_EVENTS_POLICY
            )

        async def receive() -> AsyncIterator[WorkerBroadcast]:
            async with queue.iterator() as messages:
                async for message in messages:
                    await _settle(message.ack())
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

    async def publish_heartbeat(self, statuses: Sequence[WorkerStatus]) -> None:
        message = aio_pika.Message(
            wire.encode_heartbeat(statuses),
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            app_id=self.app.name,
            expiration=60,
        )
        await self._exchange(EXCHANGE_HEARTBEATS).publish(message, "", mandatory=False)

    async def heartbeats(self) -> AsyncIterator[list[WorkerStatus]]:
        channel = await self._channel(confirms=False, prefetch=100)
        try:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(self._exchange(EXCHANGE_HEARTBEATS), "")
            async with queue.iterator(no_ack=True) as messages:
                async for message in messages:
                    try:
                        yield wire.decode_heartbeat(message.body)
                    except WireError as exc:
                        logger.warning("worker heartbeat dropped: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def queue_depth(self, group: str | None) -> int:
        channel = await self._channel(confirms=False)
        try:
            queue = await channel.declare_queue(task_queue_name(group), passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()


def _group_of(routing_key: str | None) -> str | None:
    return None if routing_key in (None, ROUTING_TASKS) else routing_key


def _settler(
    taken: list[tuple[ManagerEvent, AbstractIncomingMessage]], observe_only: bool
) -> Any:
    async def settle(rejected: Sequence[ManagerEvent]) -> None:
        rejected_ids = {id(e) for e in rejected}
        kept = []
        for event, message in taken:
            if id(event) in rejected_ids and not observe_only:
                await _settle(message.reject(requeue=False))
            else:
                kept.append(message)
        if kept:
            # One frame for the batch: every earlier delivery of this channel is
            # in this batch or an earlier one (settled in order), or was rejected.
            await _settle(kept[-1].ack(multiple=True))

    return settle


def _header_text(value: object, default: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else default


def _dead_letter_event(message: AbstractIncomingMessage) -> ManagerEvent | None:
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


def _unreachable(where: str, exc: BaseException) -> BrokerUnavailable:
    msg = (
        f"cannot connect to {where}: {exc.__class__.__name__}: {exc}. Is "
        "RabbitMQ running ('rabbitmq-server -detached') and is the URL right?"
    )
    return BrokerUnavailable(msg)


def _conflict(
    name: str, arguments: dict[str, Any] | None, exc: BaseException
) -> BrokerError:
    msg = (
        f"RabbitMQ already has a queue {name!r} declared with other arguments "
        f"({exc}); icij-worker's protocol declares it with {arguments or {}!r}. "
        "Another tool (an older Datashare, say) declared it differently. Delete the "
        "queue if it is empty (rabbitmqctl delete_queue), or use another vhost."
    )
    return BrokerError(msg)
