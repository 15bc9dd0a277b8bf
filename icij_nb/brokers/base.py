"""The broker interface: how tasks reach workers and events reach the manager.

Two sides use a broker:

- the manager publishes tasks (routed by group), broadcasts cancel and shutdown events
  to every worker, and reads the events workers send back, in batches;
- a worker takes deliveries from its group's queue, settles each one (ack, or nack with
  requeue), publishes events, and listens to broadcasts.

Delivery is at-least-once: a delivery that a worker did not settle before it stopped
goes back to its queue, marked ``redelivered``. Implementations: ``memory`` (in the
process, the embedded default) and ``amqp`` (RabbitMQ, icij-worker's protocol).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from icij_nb.errors import ConfigError
from icij_nb.model import (
    CancelEvent,
    ManagerEvent,
    Task,
    WorkerBroadcast,
    WorkerStatus,
)


async def _never() -> AsyncIterator[list[WorkerStatus]]:
    await asyncio.Event().wait()
    yield []  # pragma: no cover - never reached


async def _nothing_to_settle(rejected: Sequence[ManagerEvent]) -> None:
    return None


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events from workers, and how to settle them once the manager applied them.

    ``settle(rejected)`` acknowledges the batch; the ``rejected`` events (unknown
    task, say) are dead-lettered where the broker can keep them.
    """

    events: list[ManagerEvent]
    settle: Callable[[Sequence[ManagerEvent]], Awaitable[None]] = _nothing_to_settle
    #: tasks seen on their way to workers (observe-only brokers), before events
    seen: list[Task] = field(default_factory=list)


class Delivery(Protocol):
    """One task handed to a worker; it must be settled exactly once."""

    @property
    def task(self) -> Task:
        """The task as published (a copy the worker owns)."""
        ...

    @property
    def redelivered(self) -> bool:
        """True when an earlier delivery of this message was not settled."""
        ...

    @property
    def published_at(self) -> datetime | None:
        """When the manager published this message, if the message says."""
        ...

    async def ack(self) -> None:
        """The task is finished with (done, failed or cancelled for good)."""
        ...

    async def nack(self, *, requeue: bool) -> None:
        """Give the task back to its queue (requeue) or drop it."""
        ...


class Broker(abc.ABC):
    """What the manager and the workers need from a transport."""

    #: short name shown in reprs ("memory", "amqp")
    kind: str = "broker"
    #: True when queued tasks outlive the process that holds the manager.
    durable: bool = False
    #: True when the broker only watches another task manager's traffic.
    observe_only: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook, most need nothing
        """Connect and declare what is needed; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; safe to call twice."""

    # -- manager side ---------------------------------------------------------

    @abc.abstractmethod
    async def publish_tasks(self, tasks: Sequence[Task]) -> None:
        """Queue tasks, each in its group's queue, in order.

        Raises:
            TaskQueueFull: a group's queue is at its cap; tasks before the one that
                did not fit are queued, the rest are not.
            UnknownGroup: no queue serves a task's group.
        """

    @abc.abstractmethod
    async def broadcast(self, event: WorkerBroadcast) -> None:
        """Send a cancel or shutdown event to every worker."""

    @abc.abstractmethod
    def manager_events(self) -> AsyncIterator[EventBatch]:
        """Events from workers, in arrival order, in batches; ends when closed.

        The manager settles each batch after applying it (and, with a durable
        broker, after writing the store), so a crash loses no event.
        """

    # -- worker side ----------------------------------------------------------

    @abc.abstractmethod
    def deliveries(
        self, group: str | None, *, worker_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[Delivery]]:
        """Consume the queue of ``group`` (None: the ungrouped queue).

        Leaving the context requeues whatever this consumer took and did not settle.
        """

    @abc.abstractmethod
    async def publish_event(self, event: ManagerEvent) -> None:
        """Send an event to the manager."""

    async def publish_event_soon(self, event: ManagerEvent) -> asyncio.Future[None]:
        """Send an event without waiting for the broker to confirm it.

        It keeps its place before every event sent after this returns; await the
        returned future for the confirmation.
        """
        sending = asyncio.ensure_future(self.publish_event(event))
        await asyncio.sleep(0)  # its frames take their place in the channel now
        return sending

    @abc.abstractmethod
    def broadcasts(
        self, *, worker_id: str
    ) -> AbstractAsyncContextManager[AsyncIterator[WorkerBroadcast]]:
        """Receive cancel and shutdown events addressed to every worker."""

    async def cancelled_before(self, *, worker_id: str) -> list[CancelEvent]:
        """Cancels of queued tasks sent before now, for a pool about to start.

        A broker whose broadcasts reach only the workers listening at the time
        keeps a log of them; a pool hears it before it takes any task, so a task
        cancelled while no pool served its group never starts.
        """
        return []

    async def publish_heartbeat(  # noqa: B027 - optional: brokers may not carry them
        self, statuses: Sequence[WorkerStatus]
    ) -> None:
        """Tell managers which workers are alive and what they run (best effort)."""

    def heartbeats(self) -> AsyncIterator[list[WorkerStatus]]:
        """Heartbeats of every worker that publishes them; ends when closed."""
        return _never()

    def for_another_process(self) -> Broker:
        """A new, unstarted broker with the same settings, for a worker process.

        Raises:
            ConfigError: this broker lives in one process only (memory).
        """
        msg = (
            f"worker processes cannot reach the {self.kind} broker: it lives in this "
            "process. Connect to RabbitMQ (nb.connect(app, broker='amqp://...')) for "
            "process pools, or start an in-kernel pool (processes=False)."
        )
        raise ConfigError(msg)
