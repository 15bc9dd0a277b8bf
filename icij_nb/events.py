"""EventApplier: how a manager turns worker events into task records.

It reads batches of events from the broker, applies each to its task by precedence
(:meth:`~icij_nb.model.Task.apply`), writes the store, wakes waits, tells listeners,
republishes retries, and settles the batch: with a durable broker only once the store
holds the batch's effect, so a crash loses no event. Batches that arrive close
together share one store write. Events for tasks it cannot find are rejected into the
broker's dead letters, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from icij_nb.brokers.base import Broker, EventBatch
from icij_nb.model import (
    Effect,
    ErrorRecord,
    ManagerEvent,
    Task,
    TaskState,
    utcnow,
)
from icij_nb.records import TaskRecords
from icij_nb.store.base import Store

logger = logging.getLogger(__name__)

#: how long applied events wait to share a store write before they are acked
COMMIT_DELAY_S: Final = 0.005
#: events applied per loop turn; between turns pools, the board and waits run
EVENTS_PER_TURN: Final = 2_000


class EventApplier:
    """Applies worker events to a manager's records and store.

    Args:
        records: the manager's live records.
        store: where records are written.
        broker: where events come from and retries go.
        owner: the manager's id, for the log.
        closed: tells whether the manager is closing (the store then is too).
    """

    def __init__(
        self,
        records: TaskRecords,
        store: Store,
        broker: Broker,
        *,
        owner: str,
        closed: Callable[[], bool],
    ) -> None:
        self._records, self._store, self._broker = records, store, broker
        self._owner = owner
        self._closed = closed
        self._to_settle: list[tuple[EventBatch, list[ManagerEvent]]] = []
        self._commit_due = asyncio.Event()

    async def consume(self) -> None:
        """Apply every batch the broker delivers until cancelled."""
        committer = asyncio.create_task(self._commit(), name="icij_nb-commit")
        try:
            async for batch in self._broker.manager_events():
                try:
                    self._adopt_seen(batch.seen)
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
            if self._broker.durable:
                await self._store.flush()
            for batch, rejected in pending:
                await batch.settle(rejected)
        except Exception:
            logger.exception("manager %s: settling events failed", self._owner)

    def _adopt_seen(self, seen: list[Task]) -> None:
        # Observe-only: tasks another manager queued, seen on their way.
        fresh = [t for t in seen if self._records.get(t.id) is None]
        for task in fresh:
            task.state = TaskState.QUEUED
            self._records.track(task)
            self._store.put(task)
        self._records.notify(fresh)

    def _placeholder(self, task_id: str) -> Task | None:
        """A record for an event of a task queued before we watched, or None."""
        if not self._broker.observe_only:
            return None
        task = Task(id=task_id, name="?", group=None, args={}, state=TaskState.QUEUED)
        self._records.track(task)
        return task

    async def _stored_record(self, task_id: str) -> Task | None:
        """The stored record of a task of an earlier session, or None.

        A manager killed after storing an event but before acknowledging it leaves
        the event to the next manager, and workers may report late on a task an
        earlier session finished: such events apply to the stored record.
        """
        if self._broker.observe_only or self._closed():
            return None
        stored = await self._store.load(task_id)
        if stored is not None and not stored.state.is_ready:
            self._records.track(stored)
        return stored

    async def _find(self, task_id: str) -> Task | None:
        task = self._records.get(task_id) or self._placeholder(task_id)
        if task is None:
            task = await self._stored_record(task_id)
        return task

    async def apply(self, batch: list[ManagerEvent]) -> list[ManagerEvent]:
        """Apply events in order; return those for tasks nobody knows."""
        changed: dict[str, Task] = {}
        republish: list[Task] = []
        rejected: list[ManagerEvent] = []
        for count, event in enumerate(batch, 1):
            if count % EVENTS_PER_TURN == 0:
                await asyncio.sleep(0)  # a big batch must not hold the loop
            task = self._records.get(event.task_id) or await self._find(event.task_id)
            if task is None:
                logger.warning(
                    "manager %s: %s for unknown task %r set aside (dead-lettered)",
                    self._owner,
                    type(event).__name__,
                    event.task_id,
                )
                rejected.append(event)
                continue
            effect = self._apply_one(task, event)
            if effect is Effect.NONE:
                continue
            changed[task.id] = task
            if effect is Effect.REPUBLISH:
                republish.append(task)
            elif task.state.is_ready:
                self._records.resolve(task.id)
        # Listeners hear of every change before a waiting cell can resume (a
        # republish may suspend), so boards refreshed after a wait are final.
        if changed:
            self._records.notify(list(changed.values()))
        if republish:
            await self._republish(republish)
        return rejected

    def _apply_one(self, task: Task, event: ManagerEvent) -> Effect:
        before, known_errors = task.state, len(task.errors)
        effect = task.apply(event, late_ack=self._broker.late_ack)
        if effect is Effect.NONE:
            return effect
        self._records.moved(task, before)
        # Error events, and the WorkerLost record of a redelivery, add records.
        for seq in range(known_errors, len(task.errors)):
            self._store.put_error(task.id, seq, task.errors[seq])
        self._store.put(task)
        return effect

    async def _republish(self, tasks: list[Task]) -> None:
        try:
            await self._broker.publish_tasks(tasks)
        except Exception as exc:
            logger.exception(
                "manager %s: republishing %d task(s) failed", self._owner, len(tasks)
            )
            for task in tasks:
                self.fail_locally(task, exc)
            self._records.notify(tasks)

    def fail_locally(self, task: Task, exc: BaseException) -> None:
        """End a task in ERROR for a reason found here, not by a worker."""
        record = ErrorRecord.from_exception(exc)
        task.errors.append(record)
        task.completed_at, task.attempts_left = utcnow(), 0
        self._records.set_state(task, TaskState.ERROR)
        self._store.put_error(task.id, len(task.errors) - 1, record)
        self._store.put(task)
        self._records.resolve(task.id)
