"""BrokerEngine: a message broker (memory, RabbitMQ) seen as an :class:`Engine`.

A broker only moves messages: tasks to workers, events back, cancels and shutdowns to
every worker. This adapter gives it the engine's shape. The manager's ledger decides
every state; the broker's part of a decision is a message (a task queued again, a
cancel broadcast). A queued task that is cancelled ends here and now: workers are
told never to start it, and the :class:`~icij_nb.model.CancelledEvent` that settles
it is returned to the manager.

Pools of a broker are :class:`~icij_nb.pools.InKernelPool` (workers on the runtime
loop) or :class:`~icij_nb.process_pool.ProcessPool` (worker processes, for brokers
that other processes reach).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from icij_nb.app import App
from icij_nb.brokers.base import Broker, EventBatch
from icij_nb.engine import Pool, PoolOptions
from icij_nb.model import (
    CancelEvent,
    CancelledEvent,
    ManagerEvent,
    ShutdownEvent,
    Task,
    TaskState,
    WorkerStatus,
)
from icij_nb.pools import InKernelPool
from icij_nb.process_pool import ProcessPool
from icij_nb.runtime import Runtime


class BrokerEngine:
    """The :class:`~icij_nb.engine.Engine` of a message broker.

    Args:
        broker: the broker, unstarted; the engine starts and closes it.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.kind = broker.kind
        self.durable = broker.durable
        self.observe_only = broker.observe_only

    def __repr__(self) -> str:
        return repr(self.broker)

    async def start(self) -> None:
        """Connect the broker."""
        await self.broker.start()

    async def close(self) -> None:
        """Close the broker; safe to call twice."""
        await self.broker.close()

    async def submit(self, tasks: Sequence[Task]) -> None:
        """Publish new tasks, each to its group's queue."""
        await self.broker.publish_tasks(tasks)

    async def requeue(self, tasks: Sequence[Task]) -> None:
        """Publish again tasks the ledger put back in the queue."""
        await self.broker.publish_tasks(tasks)

    async def cancel(self, task: Task, *, requeue: bool) -> list[ManagerEvent]:
        """Broadcast the cancel; a queued task ends CANCELLED at once."""
        await self.broker.broadcast(CancelEvent(task.id, requeue=requeue))
        if task.state is TaskState.RUNNING or requeue:
            return []  # its worker reports how it stopped
        return [CancelledEvent(task.id, requeue=False)]

    def adopt(self, tasks: Sequence[Task]) -> None:
        """Nothing to do: events of adopted tasks come through the broker's queues."""

    async def shutdown_workers(self) -> None:
        """Broadcast a shutdown to every worker."""
        await self.broker.broadcast(ShutdownEvent())

    def events(self) -> AsyncIterator[EventBatch]:
        """The broker's manager events."""
        return self.broker.manager_events()

    def heartbeats(self) -> AsyncIterator[list[WorkerStatus]]:
        """The heartbeats of pools that publish them."""
        return self.broker.heartbeats()

    def pool(self, app: App, options: PoolOptions, *, runtime: Runtime) -> Pool:
        """An in-kernel pool, or with ``processes=True`` a pool of processes.

        Raises:
            ConfigError: processes on a broker other processes cannot reach.
        """
        if not options.processes:
            return InKernelPool(
                app,
                self.broker,
                group=options.group,
                workers=options.workers,
                runtime=runtime,
                progress_interval_s=options.progress_interval_s,
            )
        self.broker.for_another_process()  # fails early for the memory broker
        return ProcessPool(
            app,
            lambda app: self.broker.for_another_process(),
            group=options.group,
            processes=options.workers,
            workers_per_process=options.concurrency
            or app.default_concurrency(options.group),
        )
