"""EventConsumer: how a manager takes in what its engine reports.

It reads batches of events from the engine (:meth:`~icij_nb.engine.Engine.events`),
finds the task of each (a live record, a record of an earlier session in the store, or
a placeholder when observing), applies them through the
:class:`~icij_nb.ledger.Ledger`, asks the engine to queue again what the rules put
back, and settles the batch: with a durable engine only once the store holds the
batch's effect, so a crash loses no event. Batches that arrive close together share
one store write. Events for tasks it cannot find are rejected into the engine's dead
letters, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from icij_nb.brokers.base import EventBatch
from icij_nb.engine import Engine
from icij_nb.ledger import Ledger
from icij_nb.model import ManagerEvent, Task
from icij_nb.store import Store

logger = logging.getLogger(__name__)

#: how long applied events wait to share a store write before they are acked
COMMIT_DELAY_S: Final = 0.005
#: events applied per loop turn; between turns pools, the board and waits run
EVENTS_PER_TURN: Final = 2_000


class EventConsumer:
    """Applies an engine's events to a manager's ledger.

    Args:
        ledger: the manager's records and their write path.
        store: the ledger's store, flushed before a durable batch is settled.
        engine: where events come from and requeued tasks go.
        owner: the manager's id, for the log.
        closed: tells whether the manager is closing (the store then is too).
    """

    def __init__(
        self,
        ledger: Ledger,
        store: Store,
        engine: Engine,
        *,
        owner: str,
        closed: Callable[[], bool],
    ) -> None:
        self._ledger, self._store, self._engine = ledger, store, engine
        self._owner = owner
        self._closed = closed
        self._to_settle: list[tuple[EventBatch, list[ManagerEvent]]] = []
        self._commit_due = asyncio.Event()

    async def consume(self) -> None:
        """Apply every batch the engine delivers until cancelled."""
        committer = asyncio.create_task(self._commit(), name="icij_nb-commit")
        try:
            async for batch in self._engine.events():
                try:
                    self._ledger.adopt(batch.seen)
                    rejected = await self.apply(batch.events)
                except Exception:
                    logger.exception(
                        "manager %s: applying a batch of events failed", self._owner
                    )
                    rejected = []
                self._to_settle.append((batch, rejected))
                self._commit_due.set()
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await self._settle_applied()

    async def _commit(self) -> None:
        while True:
            await self._commit_due.wait()
            await asyncio.sleep(COMMIT_DELAY_S)
            self._commit_due.clear()
            await self._settle_applied()

    async def _settle_applied(self) -> None:
        pending, self._to_settle = self._to_settle, []
        if not pending:
            return
        try:
            if self._engine.durable:
                await self._store.flush()
            for batch, rejected in pending:
                await batch.settle(rejected)
        except Exception:
            logger.exception("manager %s: settling events failed", self._owner)

    async def _stored_record(self, task_id: str) -> Task | None:
        """The stored record of a task of an earlier session, or None.

        A manager killed after storing an event but before acknowledging it leaves
        the event to the next manager, and workers may report late on a task an
        earlier session finished: such events apply to the stored record.
        """
        if self._engine.observe_only or self._closed():
            return None
        stored = await self._store.load(task_id)
        if stored is not None and not stored.state.is_ready:
            self._ledger.track(stored)
        return stored

    async def _find(self, task_id: str) -> Task | None:
        if self._engine.observe_only:
            return self._ledger.placeholder(task_id)
        return await self._stored_record(task_id)

    async def apply(self, batch: list[ManagerEvent]) -> list[ManagerEvent]:
        """Apply events in order; return those for tasks nobody knows."""
        rejected: list[ManagerEvent] = []
        requeue: list[Task] = []
        start = 0
        while start < len(batch):
            if start:
                await asyncio.sleep(0)  # a big batch must not hold the loop
            chunk = batch[start : start + EVENTS_PER_TURN]
            start += EVENTS_PER_TURN
            applied = self._ledger.apply(chunk)
            requeue += applied.requeue
            for task in applied.stop:
                await self._stop(task)
            for event in applied.unknown:
                rejected += await self._apply_unknown(event, requeue)
        if requeue:
            await self._requeue(requeue)
        return rejected

    async def _apply_unknown(
        self, event: ManagerEvent, requeue: list[Task]
    ) -> list[ManagerEvent]:
        """Apply an event of a task not held live, if the task can be found."""
        task = await self._find(event.task_id)
        if task is None:
            logger.warning(
                "manager %s: %s for unknown task %r set aside (dead-lettered)",
                self._owner,
                type(event).__name__,
                event.task_id,
            )
            return [event]
        if self._ledger.get(task.id) is task:
            requeue += self._ledger.apply([event]).requeue
        else:  # a finished task of an earlier session: its late result is kept
            self._apply_stored(task, event)
        return []

    def _apply_stored(self, task: Task, event: ManagerEvent) -> None:
        self._ledger.track(task)
        self._ledger.apply([event])
        self._ledger.forget([task.id])

    async def _stop(self, task: Task) -> None:
        # A worker that started after the cancel of a queued task (a pool started
        # later) never heard it: say it again, so the worker stops the function.
        logger.info(
            "manager %s: task %s runs though cancelled; stopping it",
            self._owner,
            task.id,
        )
        try:
            await self._engine.cancel(task, requeue=False)
        except Exception:
            logger.exception(
                "manager %s: stopping task %s failed", self._owner, task.id
            )

    async def _requeue(self, tasks: list[Task]) -> None:
        try:
            await self._engine.requeue(tasks)
        except Exception as exc:
            logger.exception(
                "manager %s: republishing %d task(s) failed", self._owner, len(tasks)
            )
            self._ledger.fail(tasks, exc)
