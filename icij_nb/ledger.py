"""Ledger: every task record of a manager, and the one path that changes them.

Whatever moves a task (a worker's event, or a decision of the manager: a submit, the
cancel of a queued task, a retry, a republish that failed, a task adopted while
observing, a task a dead kernel left behind) becomes an event of
:mod:`icij_nb.model` and goes through :meth:`Ledger.apply`:

1. :meth:`~icij_nb.model.Task.apply` changes the record under the state rules;
2. the store is told to write it (and each new error record);
3. waits on tasks that became ready are resolved;
4. listeners (the board) hear of every changed task, once per call.

Nothing else writes a task's state. The ledger also answers reads without I/O (a
task by id, counts per state) and creates records: a new task is tracked as CREATED
before it is published (a worker may answer before the publish returns), and a
record read back from the store is tracked as it was stored.

A CREATED task may also be *waiting for the broker*: recorded in the outbox
(:mod:`icij_nb.outbox`) because no broker node took it. :meth:`Ledger.hold` marks
it so (listeners hear of it); the mark goes once it is recorded QUEUED, becomes
ready, is released (:meth:`Ledger.release`) or forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from icij_nb.model import (
    CancelledEvent,
    Effect,
    ErrorEvent,
    ErrorRecord,
    LedgerEvent,
    QueuedEvent,
    RetryEvent,
    Task,
    TaskState,
    utcnow,
)
from icij_nb.records import Listener, TaskRecords
from icij_nb.store import Store

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=LedgerEvent)


@dataclass(slots=True)
class Applied(Generic[E]):
    """What one :meth:`Ledger.apply` did."""

    #: tasks whose record changed, in the order first changed
    changed: list[Task] = field(default_factory=list)
    #: tasks put back in the queue by the rules (a failed attempt with retries
    #: left, a retry): the engine must queue them again
    requeue: list[Task] = field(default_factory=list)
    #: CANCELLED tasks a worker started anyway (it never heard the cancel): the
    #: engine must tell it again
    stop: list[Task] = field(default_factory=list)
    #: events for tasks the ledger does not hold
    unknown: list[E] = field(default_factory=list)


class Ledger:
    """A manager's task records and their single write path.

    Args:
        store: where every change is written (batched by the store).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._records = TaskRecords()
        #: when tasks now queued again by a retry were retried: a cancel dated
        #: before that is about the message the retry replaced
        self._retried_at: dict[str, datetime] = {}
        #: ids of CREATED tasks that wait in the outbox, in the order held
        self._held: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._records)

    # -- reading (no I/O) -------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        """The live record of a task of this session, or None."""
        return self._records.tasks.get(task_id)

    def live(self) -> list[Task]:
        """Every live record (the objects themselves: read, don't keep)."""
        return list(self._records.tasks.values())

    @property
    def counts(self) -> Counter[TaskState]:
        """How many tracked tasks are in each state."""
        return self._records.counts

    @property
    def waiting_for_broker(self) -> int:
        """How many tracked tasks wait in the outbox for the broker."""
        return len(self._held)

    def waits_for_broker(self, task_id: str) -> bool:
        """True while the task waits in the outbox for the broker."""
        return task_id in self._held

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(snapshots)`` after each change; return an unsubscribe."""
        return self._records.subscribe(listener)

    def wait_ready(self, task_ids: list[str]) -> asyncio.Future[None]:
        """A future resolved once every task of ``task_ids`` is next ready."""
        return self._records.wait_ready(task_ids)

    def cancel_waiters(self) -> None:
        """Cancel every wait (the manager closes)."""
        self._records.cancel_waiters()

    # -- records ------------------------------------------------------------------

    def track(self, task: Task) -> None:
        """Hold ``task`` as it is: a new one (CREATED), or one read from the store."""
        self._records.track(task)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop records of tasks that were never queued (their publish failed)."""
        for task_id in task_ids:
            self._held.pop(task_id, None)
            self._records.untrack(task_id)

    def queued(self, prepared: Sequence[tuple[Task, str]]) -> None:
        """Record published tasks (with their args as JSON) and mark them QUEUED."""
        for task, args_json in prepared:
            self._held.pop(task.id, None)
            self._store.put(task, args_json=args_json)
        self.apply([QueuedEvent(task.id) for task, _ in prepared])

    def hold(self, tasks: Iterable[Task]) -> None:
        """Mark CREATED tracked tasks as waiting for the broker (the outbox)."""
        held = [
            t for t in tasks if self.get(t.id) is t and t.state is TaskState.CREATED
        ]
        for task in held:
            self._held[task.id] = None
        if held:
            self._records.notify(held)

    def release(self, task_ids: Iterable[str]) -> None:
        """Unmark tasks that no longer wait for the broker (a worker answered)."""
        released = []
        for task_id in task_ids:
            if task_id in self._held:
                del self._held[task_id]
                if (task := self.get(task_id)) is not None:
                    released.append(task)
        if released:
            self._records.notify(released)

    def adopt(self, seen: Iterable[Task]) -> None:
        """Track tasks another manager queued (observe-only), as QUEUED."""
        fresh = []
        for message in seen:
            if self.get(message.id) is None:
                message.state = TaskState.CREATED  # a wire copy becomes our record
                self._records.track(message)
                fresh.append(QueuedEvent(message.id))
        self.apply(fresh)

    def placeholder(self, task_id: str) -> Task:
        """Track a task known only by id (observed before it was seen queued)."""
        task = Task(id=task_id, name="?", group=None, args={})
        self._records.track(task)
        self.apply([QueuedEvent(task_id)])
        return task

    # -- the write path -------------------------------------------------------------

    def apply(self, events: Iterable[E]) -> Applied[E]:
        """Apply events in order: rules, store, waits, listeners.

        Events for tasks the ledger does not hold are returned in ``unknown``
        (the caller may find the task in the store, track it, and apply again).
        """
        applied = Applied[E]()
        changed: dict[str, Task] = {}
        tasks = self._records.tasks
        for event in events:
            task = tasks.get(event.task_id)
            if task is None:
                applied.unknown.append(event)
                continue
            if self._retried_at and self._before_retry(task, event):
                continue
            effect = self._apply_one(task, event)
            if effect is Effect.NONE:
                continue
            if effect is Effect.STOP:
                applied.stop.append(task)
                continue
            changed[task.id] = task
            if self._held and task.state is not TaskState.CREATED:
                self._held.pop(task.id, None)  # it left the outbox's hands
            if effect is Effect.REPUBLISH:
                applied.requeue.append(task)
                if isinstance(event, RetryEvent):
                    self._retried_at[task.id] = utcnow()
            elif task.state.is_ready:
                self._records.resolve(task.id)
                self._retried_at.pop(task.id, None)
        if changed:
            applied.changed = list(changed.values())
            self._records.notify(applied.changed)
        return applied

    def _before_retry(self, task: Task, event: LedgerEvent) -> bool:
        # A worker skipping the message of a task cancelled while queued dates its
        # CancelledEvent as the cancel; the task retried since runs anew.
        retried = self._retried_at.get(task.id)
        return (
            retried is not None
            and isinstance(event, CancelledEvent)
            and not event.requeue
            and event.created_at < retried
        )

    def _apply_one(self, task: Task, event: LedgerEvent) -> Effect:
        before, known_errors = task.state, len(task.errors)
        effect = task.apply(event)
        if effect is Effect.NONE or effect is Effect.STOP:
            return effect
        self._records.moved(task, before)
        # Error events, and the WorkerLost record of a redelivery, add records.
        for seq in range(known_errors, len(task.errors)):
            self._store.put_error(task.id, seq, task.errors[seq])
        self._store.put(task)
        return effect

    def fail(self, tasks: Iterable[Task], exc: BaseException) -> None:
        """End tasks in ERROR for a reason found here, not by a worker."""
        record = ErrorRecord.from_exception(exc)
        self.apply(ErrorEvent(t.id, record, attempts_left=0) for t in tasks)
