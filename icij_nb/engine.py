"""The backend seam: what a TaskManager needs from the engine that runs its tasks.

Two kinds of engine sit behind one :class:`Engine` protocol, and the manager never asks
which one it has:

- a **message broker** (the in-process memory broker, RabbitMQ) only moves tasks and
  events; :class:`~icij_nb.broker_engine.BrokerEngine` adapts it, and the manager's
  ledger decides states, retries included (it asks the engine to :meth:`requeue` a
  task that failed with attempts left);
- an engine that **owns delivery, retries and state itself** (Temporal) starts one
  execution per task and reports what its executions do as the same events. It never
  reports an error with attempts left, so the ledger never asks it to requeue.

Either way every change of a task's state reaches the manager as an event of
:mod:`icij_nb.model` on :meth:`Engine.events`, and goes through the one write path of
:class:`~icij_nb.ledger.Ledger`. Local decisions an engine makes at once (a queued task
cancelled before any worker took it) come back from :meth:`Engine.cancel` as events
too.

Pools are the engine's business as well: :meth:`Engine.start_pool` builds a pool of
the kind that engine's workers are (in-kernel, processes), behind :class:`Pool`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from icij_nb.brokers.base import EventBatch
from icij_nb.model import ManagerEvent, Task, WorkerStatus

if TYPE_CHECKING:
    from icij_nb.app import App
    from icij_nb.runtime import Runtime


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """How a pool is asked for: ``tm.start_pool(group, workers=..., ...)``.

    Attributes:
        group: the group whose tasks the pool runs (None: ungrouped tasks).
        workers: in-kernel, how many tasks run at once; with processes, how many
            processes.
        processes: run workers in processes of their own on this machine.
        concurrency: with processes, how many tasks each process runs at once
            (None: the app's default for the group, see
            :meth:`~icij_nb.app.App.default_concurrency`).
        progress_interval_s: the least time between two progress reports of a task.
    """

    group: str | None
    workers: int = 1
    processes: bool = False
    concurrency: int | None = None
    progress_interval_s: float = 0.2


class Pool(Protocol):
    """A running set of workers of one group, however and wherever they run."""

    @property
    def group(self) -> str | None:
        """The group it serves."""
        ...

    @property
    def stopped(self) -> bool:
        """True once it was stopped."""
        ...

    async def start_async(self) -> None:
        """Start the workers; return once they listen for cancels."""
        ...

    def stop(self) -> None:
        """Stop the workers from a cell (running tasks requeued); safe twice."""
        ...

    async def stop_async(self, *, finish_running: bool = False) -> None:
        """Stop the workers (running tasks requeued unless finished first)."""
        ...


class Engine(Protocol):
    """What a manager needs to run tasks: submit, cancel, and hear what happens."""

    #: short name shown in reprs ("memory", "amqp", "temporal")
    kind: str
    #: True when queued tasks outlive the process that holds the manager: records
    #: are then written before a submit returns, and tasks of a dead manager are
    #: adopted rather than marked lost.
    durable: bool
    #: True when the manager only watches tasks another manager drives.
    observe_only: bool

    async def start(self) -> None:
        """Connect; called once before use."""
        ...

    async def close(self) -> None:
        """Release connections; safe to call twice."""
        ...

    async def submit(self, tasks: Sequence[Task]) -> None:
        """Queue new tasks, in order.

        Raises:
            BrokerError: with ``not_queued`` naming the tasks that were not queued.
        """
        ...

    async def requeue(self, tasks: Sequence[Task]) -> None:
        """Queue again tasks the ledger put back (a retry, by rule or by request)."""
        ...

    async def cancel(self, task: Task, *, requeue: bool) -> list[ManagerEvent]:
        """Ask for a task to be stopped; return events that settle it at once.

        A queued task a broker can simply drop ends CANCELLED right away (the event
        returned); a running one ends when its worker reports.
        """
        ...

    async def shutdown_workers(self) -> None:
        """Tell every worker of this engine to stop."""
        ...

    def adopt(self, tasks: Sequence[Task]) -> None:
        """Follow unfinished tasks an earlier manager left (recovered from the store).

        A broker needs nothing: their events come through its queues. An engine
        that reports by watching its executions starts watching these.
        """
        ...

    def events(self) -> AsyncIterator[EventBatch]:
        """What workers report, in order, in batches settled once applied."""
        ...

    def heartbeats(self) -> AsyncIterator[list[WorkerStatus]]:
        """Which workers are alive and what they run (may never yield)."""
        ...

    def pool(self, app: App, options: PoolOptions, *, runtime: Runtime) -> Pool:
        """An unstarted pool of this engine's workers for ``options.group``.

        Raises:
            ConfigError: the engine cannot run such a pool (processes on the
                in-process broker, say).
        """
        ...
