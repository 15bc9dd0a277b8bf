"""The RabbitMQ broker, speaking icij-worker's AMQP task protocol (aio-pika).

:class:`AmqpBroker` is the :class:`~icij_nb.brokers.base.Broker` that
``nb.connect(app, broker="amqp://...")`` builds. It composes four pieces, each in its
own module, over the names of :mod:`icij_nb.brokers.topology` and the JSON bodies
of :mod:`icij_nb.brokers.wire` (the whole wire: docs/protocol.md):

- :class:`~icij_nb.brokers.amqp_connection.AmqpConnection`: the robust connection
  (it reconnects when RabbitMQ restarts), channels, errors in plain words;
- :class:`~icij_nb.brokers.amqp_topology.AmqpTopology`: icij-worker's exchanges,
  queues with their exact arguments, bindings and policies, declared;
- :class:`~icij_nb.brokers.amqp_manager.AmqpManagerSide`: tasks out (confirmed),
  broadcasts, events, dead letters and heartbeats in, observe-only mode;
- :class:`~icij_nb.brokers.amqp_worker.AmqpWorkerSide`: deliveries with late acks,
  events and heartbeats out, broadcasts in.

aio_pika is imported in the ``brokers/amqp*.py`` modules only.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

from icij_nb.app import App
from icij_nb.brokers.amqp_connection import AmqpConnection
from icij_nb.brokers.amqp_manager import AmqpManagerSide
from icij_nb.brokers.amqp_topology import AmqpTopology
from icij_nb.brokers.amqp_worker import AmqpWorkerSide
from icij_nb.brokers.base import Broker, Delivery, EventBatch
from icij_nb.brokers.topology import (
    DEFAULT_URL,
    ENV_MANAGEMENT_URL,
    ENV_URL,
    management_url_for,
    mask_url,
)
from icij_nb.model import (
    CancelEvent,
    ManagerEvent,
    Task,
    WorkerBroadcast,
    WorkerStatus,
)


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
        self.set_policies = set_policies
        self.observe_only = observe_only
        self.observe_groups = list(observe_groups or app.groups)
        self.prefetch = prefetch
        self.connection_timeout_s = connection_timeout_s
        self._connection = AmqpConnection(
            self.url,
            management_url
            or os.environ.get(ENV_MANAGEMENT_URL)
            or management_url_for(self.url),
            connection_timeout_s=connection_timeout_s,
        )
        self.vhost = self._connection.vhost
        self._topology = AmqpTopology(
            self._connection, app, set_policies=set_policies, observe_only=observe_only
        )
        self._manager = AmqpManagerSide(
            self._connection,
            self._topology,
            app,
            observe_only=observe_only,
            observe_groups=self.observe_groups,
        )
        self._worker = AmqpWorkerSide(
            self._connection, self._topology, app, prefetch=prefetch
        )

    def __repr__(self) -> str:
        state = "connected" if self._connection.connected else "not connected"
        mode = " observe-only" if self.observe_only else ""
        return f"<AmqpBroker {mask_url(self.url)}{mode} {state}>"

    def for_another_process(self) -> AmqpBroker:
        """A new, unstarted broker with the same URL and settings."""
        return AmqpBroker(
            self.app,
            self.url,
            management_url=self._connection.management_url,
            set_policies=self.set_policies,
            prefetch=self.prefetch,
            connection_timeout_s=self.connection_timeout_s,
        )

    async def start(self) -> None:
        if self._connection.connected:
            return
        await self._connection.open()
        try:
            await self._topology.declare()
        except BaseException:
            # A half-started broker would leave its connection to a closed loop.
            await self.close()
            raise

    async def close(self) -> None:
        await self._connection.close()

    async def declare_task_queue(self, group: str | None) -> None:
        """Declare ``TASK``/``TASK.<group>``, bind it, and set its policy."""
        await self._topology.declare_task_queue(group)

    # -- manager side -------------------------------------------------------------

    async def publish_tasks(self, tasks: Sequence[Task]) -> None:
        await self._manager.publish_tasks(tasks)

    async def broadcast(self, event: WorkerBroadcast) -> None:
        await self._manager.broadcast(event)

    def manager_events(self) -> AsyncIterator[EventBatch]:
        return self._manager.manager_events()

    def heartbeats(self) -> AsyncIterator[list[WorkerStatus]]:
        return self._manager.heartbeats()

    # -- worker side --------------------------------------------------------------

    def deliveries(
        self, group: str | None, *, worker_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        return self._worker.deliveries(group, worker_id=worker_id)

    async def publish_event(self, event: ManagerEvent) -> None:
        await self._worker.publish_event(event)

    def broadcasts(
        self, *, worker_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[WorkerBroadcast]]:
        return self._worker.broadcasts(worker_id=worker_id)

    async def cancelled_before(self, *, worker_id: str) -> list[CancelEvent]:
        return await self._worker.cancelled_before(worker_id=worker_id)

    async def publish_heartbeat(self, statuses: Sequence[WorkerStatus]) -> None:
        await self._worker.publish_heartbeat(statuses)
