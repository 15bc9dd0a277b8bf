"""icij-worker's topology, declared on RabbitMQ: exchanges, queues, bindings, policies.

:mod:`icij_nb.brokers.topology` names everything a peer must agree on
(docs/protocol.md §1); :class:`AmqpTopology` declares it on the publisher channel
of an :class:`~icij_nb.brokers.amqp_connection.AmqpConnection`, with exactly
icij-worker's arguments, PUTs icij-worker's policies through the management API,
and keeps the declared exchanges for both sides of the broker to publish on and
bind to. A queue someone declared with other arguments, or a permission the user
lacks, becomes a :class:`~icij_nb.errors.BrokerError` that says what to do.
"""

from __future__ import annotations

from typing import Any, Final

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractExchange, AbstractQueue

from icij_nb.app import App
from icij_nb.brokers.amqp_connection import AmqpConnection
from icij_nb.brokers.topology import (
    CANCELS_ARGUMENTS,
    EXCHANGE_DLQ_MANAGER_EVENTS,
    EXCHANGE_DLQ_TASKS,
    EXCHANGE_HEARTBEATS,
    EXCHANGE_MANAGER_EVENTS,
    EXCHANGE_MONITORING,
    EXCHANGE_TASKS,
    EXCHANGE_WORKER_EVENTS,
    MANAGER_EVENT_ARGUMENTS,
    QUEUE_CANCELS,
    QUEUE_MANAGER_EVENT,
    QUEUE_MANAGER_EVENT_DLQ,
    QUEUE_TASK_DLQ,
    ROUTING_DLQ_MANAGER_EVENTS,
    ROUTING_DLQ_TASKS,
    ROUTING_MANAGER_EVENTS,
    TASK_QUEUE_ARGUMENTS,
    WORKER_EVENTS_POLICY,
    task_group_policy,
    task_queue_name,
    task_routing_key,
)
from icij_nb.errors import BrokerError

_DIRECT, _FANOUT = aio_pika.ExchangeType.DIRECT, aio_pika.ExchangeType.FANOUT
#: every exchange icij_nb declares, with its type (docs/protocol.md §1.1)
EXCHANGES: Final[tuple[tuple[str, aio_pika.ExchangeType], ...]] = (
    (EXCHANGE_TASKS, _DIRECT),
    (EXCHANGE_DLQ_TASKS, _DIRECT),
    (EXCHANGE_MANAGER_EVENTS, _DIRECT),
    (EXCHANGE_DLQ_MANAGER_EVENTS, _DIRECT),
    (EXCHANGE_WORKER_EVENTS, _FANOUT),
    (EXCHANGE_MONITORING, _DIRECT),
    (EXCHANGE_HEARTBEATS, _FANOUT),
)


class AmqpTopology:
    """What one broker declared on its connection, and the exchanges it got.

    Args:
        connection: the connection whose publisher channel declares.
        app: the app whose groups get task queues and policies.
        set_policies: PUT icij-worker's policies through the management API.
        observe_only: declare the exchanges only: the queues belong to the task
            manager being watched.
    """

    def __init__(
        self,
        connection: AmqpConnection,
        app: App,
        *,
        set_policies: bool,
        observe_only: bool,
    ) -> None:
        self._connection = connection
        self._app = app
        self._set_policies = set_policies
        self._observe_only = observe_only
        self._exchanges: dict[str, AbstractExchange] = {}
        self._declared_groups: set[str | None] = set()

    def exchange(self, name: str) -> AbstractExchange:
        """The declared exchange ``name``.

        Raises:
            BrokerError: the broker is not started.
        """
        try:
            return self._exchanges[name]
        except KeyError:
            msg = "the AMQP broker is not started; call start() first"
            raise BrokerError(msg) from None

    async def declare(self) -> None:
        """Declare the exchanges, then (unless observing) the queues of every group."""
        channel = self._connection.publisher
        for name, kind in EXCHANGES:
            try:
                self._exchanges[name] = await channel.declare_exchange(
                    name, kind, durable=True
                )
            except aiormq.exceptions.ChannelAccessRefused as exc:
                raise self._connection.refused(exc, "configure") from exc
        if self._observe_only:
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
        await self._declare(QUEUE_CANCELS, CANCELS_ARGUMENTS)
        for group in [None, *self._app.groups]:
            await self.declare_task_queue(group)

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
        if self._set_policies:
            spec = self._app.group(group) if group is not None else None
            cap = spec.max_task_queue_size if spec is not None else None
            await self._connection.management.put_policy(
                f"task-group-policy-{task_queue_name(group)}",
                task_group_policy(group, cap),
            )
        self._declared_groups.add(group)

    async def set_worker_events_policy(self) -> None:
        """PUT ``worker-events-policy`` (expiry of ``WORKER_EVENT-<id>`` queues)."""
        if self._set_policies:
            await self._connection.management.put_policy(
                "worker-events-policy", WORKER_EVENTS_POLICY
            )

    async def _declare_bound(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        exchange: str,
        routing_key: str,
    ) -> AbstractQueue:
        queue = await self._declare(name, arguments)
        try:
            await queue.bind(self.exchange(exchange), routing_key)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            # Binding writes to the queue and reads from the exchange; RabbitMQ
            # names the resource it refused.
            refused = "write" if "access to queue" in str(exc) else "read"
            raise self._connection.refused(exc, refused) from exc
        return queue

    async def _declare(
        self, name: str, arguments: dict[str, Any] | None
    ) -> AbstractQueue:
        channel = self._connection.publisher
        try:
            return await channel.declare_queue(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise _conflict(name, arguments, exc) from exc
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise self._connection.refused(exc, "configure") from exc


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
