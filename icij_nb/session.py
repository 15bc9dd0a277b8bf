"""Session: one manager's engine, store and ledger on the runtime loop.

The :class:`~icij_nb.manager.TaskManager` is the face (blocking calls and their
awaitable twins, checks that run in the caller's thread, reprs, pools); its session
is the core behind it, all on the runtime loop:

- start: connect the engine, open the store, take back what a dead kernel left
  (its tasks adopted with a durable engine, marked lost otherwise), start consuming
  events and heartbeats; close: the reverse, pools first;
- the manager's decisions, each turned into ledger events: a submit (tracked, then
  queued), the cancel of a task (the engine says what settles it at once), a retry;
- with a durable engine, the outbox (:mod:`icij_nb.outbox`): a submit the broker
  does not take is recorded, CREATED, and published when the broker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

import pandas as pd

from icij_nb.app import App
from icij_nb.engine import Engine, Pool
from icij_nb.errors import (
    BrokerError,
    BrokerUnavailable,
    InvalidArguments,
    InvalidTransition,
    UnknownTask,
)
from icij_nb.events import EventConsumer
from icij_nb.frames import mark_waiting
from icij_nb.ledger import Ledger
from icij_nb.model import ErrorEvent, ErrorRecord, RetryEvent, Task, TaskState
from icij_nb.outbox import PUBLISH_SLICE, PUBLISH_TIMEOUT_S, Outbox, broker_down
from icij_nb.output import AttemptOutput
from icij_nb.output_log import OutputLog
from icij_nb.store import Orphan, Store
from icij_nb.submission import Prepared
from icij_nb.worker_registry import WorkerRegistry


class Session:
    """The engine, store and ledger of one manager, and its decisions.

    Args:
        app: the tasks it may run.
        engine: what runs the tasks (unstarted).
        store: where records live (unopened).
        owner: the manager's id (store ownership, logs).
    """

    def __init__(self, app: App, engine: Engine, store: Store, *, owner: str) -> None:
        self.app, self.engine, self.store, self.owner = app, engine, store, owner
        self.ledger = Ledger(store)
        self.outputs = OutputLog(store)
        self.workers = WorkerRegistry(engine.heartbeats)
        self.started = self.closed = False
        self._consumer = EventConsumer(
            self.ledger,
            self.outputs,
            store,
            engine,
            owner=owner,
            closed=lambda: self.closed,
        )
        self._background: list[asyncio.Task[None]] = []
        self.outbox = Outbox(engine, store, self.ledger)

    # -- life -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, open the store, recover, and start consuming; once."""
        if self.started or self.closed:
            return
        await self.engine.start()
        try:
            await self.store.open(manager_id=self.owner, broker_kind=self.engine.kind)
            await self._settle(
                await self.store.recover(durable_broker=self.engine.durable)
            )
        except BaseException:
            # A store that cannot be opened (locked, damaged) must not leave a
            # connection behind: the error is all the caller gets.
            with contextlib.suppress(Exception):
                await self.store.close()
            await self.engine.close()
            raise
        self._background = [
            asyncio.create_task(self._consumer.consume(), name="icij_nb-events"),
            asyncio.create_task(self.workers.watch(), name="icij_nb-workers"),
        ]
        if self.engine.durable and not self.engine.observe_only:
            await self.outbox.reload()
            self._background.append(
                asyncio.create_task(self.outbox.run(), name="icij_nb-outbox")
            )
        self.started = True

    async def _settle(self, orphans: list[Orphan]) -> None:
        """Apply the decisions on tasks a dead kernel left; keep the unfinished."""
        for orphan in orphans:
            self.ledger.track(orphan.task)
        self.ledger.apply(e for o in orphans if (e := o.event()) is not None)
        self.ledger.forget(o.task.id for o in orphans if o.task.state.is_ready)
        self.engine.adopt([o.task for o in orphans if not o.task.state.is_ready])
        if orphans:
            await self.store.flush()

    async def close(self, pools: Sequence[Pool]) -> None:
        """Stop the pools (running tasks requeued), flush, disconnect; once."""
        if self.closed:
            return
        self.closed = True
        for pool in pools:
            await pool.stop_async(finish_running=False)
        for background in self._background:
            background.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.close()
        await self.engine.close()
        self.ledger.cancel_waiters()

    # -- reading --------------------------------------------------------------------

    async def load(self, task_id: str) -> Task:
        """A snapshot of a task of this session, or its record in the store.

        Raises:
            UnknownTask: neither has it.
        """
        live = self.ledger.get(task_id)
        if live is not None:
            return live.snapshot()
        stored = await self.store.load(task_id) if not self.closed else None
        if stored is None:
            msg = f"no task with id {task_id!r} in this manager or its store"
            raise UnknownTask(msg, task_id=task_id)
        return stored

    async def frame(self) -> pd.DataFrame:
        """Every stored task; ``error`` says which wait for the broker."""
        frame = await self.store.frame()
        if self.ledger.waiting_for_broker:
            mark_waiting(frame, self.ledger.waits_for_broker)
        return frame

    async def output(self, task_id: str) -> list[AttemptOutput]:
        """The kept output of each attempt of a task (UnknownTask if none)."""
        task = await self.load(task_id)
        return await self.outputs.attempts(task_id, ready=task.state.is_ready)

    # -- decisions ------------------------------------------------------------------

    async def enqueue(self, prepared: Sequence[Prepared]) -> None:
        """Track new tasks, submit them, and record them QUEUED.

        With a durable engine, tasks the broker does not take (it does not answer)
        wait in the outbox, CREATED, and are published when it does.

        Raises:
            InvalidArguments: a task id in use already; nothing was submitted.
            BrokerError: some were not queued (named by the error); the others are
                recorded. A ``BrokerUnavailable`` only past the outbox's bound.
        """
        tasks = [task for task, _ in prepared]
        for task in tasks:
            if self.ledger.get(task.id) is not None:
                msg = f"a task with id {task.id!r} exists already; choose another id"
                raise InvalidArguments(msg)
        # Tracked (CREATED) before submitting: a worker may answer first. They go
        # out CREATED, as icij-worker's manager sends a first enqueue
        # (docs/protocol.md §2.4).
        for task in tasks:
            self.ledger.track(task)
        if self.engine.durable and len(self.outbox):
            # Behind tasks that wait for the broker already: keep their order.
            await self._hold(prepared, BrokerUnavailable("tasks wait in the outbox"))
            return
        try:
            await self._submit(tasks)
        except BrokerError as exc:
            # Keep the record of what was queued; the error names what was not.
            lost = set(exc.not_queued)
            self.ledger.queued([p for p in prepared if p[0].id not in lost])
            if self.engine.durable and broker_down(exc):
                await self._hold([p for p in prepared if p[0].id in lost], exc)
                return
            self.ledger.forget(lost)
            await self._store_now_if_durable()
            raise
        except BaseException:
            self.ledger.forget(t.id for t in tasks)
            raise
        self.ledger.queued(prepared)
        await self._store_now_if_durable()

    async def _submit(self, tasks: Sequence[Task]) -> None:
        """``engine.submit``; with a durable engine, in slices, each bounded in time.

        Raises:
            BrokerError: with ``not_queued`` naming every task not queued (a
                ``BrokerUnavailable`` when a slice was not confirmed in time).
        """
        if not self.engine.durable:
            await self.engine.submit(tasks)
            return
        for start in range(0, len(tasks), PUBLISH_SLICE):
            part = tasks[start : start + PUBLISH_SLICE]
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    await self.engine.submit(part)
            except TimeoutError as exc:
                msg = f"no publish confirm within {PUBLISH_TIMEOUT_S:g} s"
                not_queued = tuple(t.id for t in tasks[start:])
                raise BrokerUnavailable(msg, not_queued=not_queued) from exc
            except BrokerError as exc:
                if start:
                    rest = tuple(t.id for t in tasks[start + len(part) :])
                    exc.not_queued = (*exc.not_queued, *rest)
                raise

    async def _hold(self, prepared: Sequence[Prepared], cause: BaseException) -> None:
        """Put tasks in the outbox (CREATED, recorded now); forget them if full."""
        try:
            await self.outbox.hold(prepared, cause)
        except BrokerUnavailable:
            self.ledger.forget(t.id for t, _ in prepared)
            await self._store_now_if_durable()
            raise
        await self._store_now_if_durable()

    async def _store_now_if_durable(self) -> None:
        # A queued task outlives this kernel in RabbitMQ: so must its record, at
        # once, or a new manager would refuse the events of a task it never saw.
        if self.engine.durable:
            await self.store.flush()

    async def cancel(self, task_id: str, *, requeue: bool) -> None:
        """Ask the engine to stop a task; apply what settles it at once.

        Raises:
            InvalidTransition: the task is DONE, ERROR or CANCELLED already.
        """
        task = self.ledger.get(task_id) or await self.load(task_id)
        if task.state.is_ready:
            msg = (
                f"task {task_id!r} is already {task.state.value}; only CREATED, "
                "QUEUED or RUNNING tasks can be cancelled"
            )
            raise InvalidTransition(msg, task_id=task_id, state=task.state)
        settled = await self.engine.cancel(task, requeue=requeue)
        if settled and self.ledger.get(task_id) is None:
            self.ledger.track(task)  # a queued task of an earlier session
        self.ledger.apply(settled)

    async def cancel_many(self, task_ids: Iterable[str], *, requeue: bool) -> None:
        """Cancel the tasks of ``task_ids`` that are not finished."""
        for task_id in task_ids:
            task = self.ledger.get(task_id)
            if task is not None and not task.state.is_ready:
                await self.cancel(task_id, requeue=requeue)

    async def retry(self, task_id: str) -> None:
        """Queue an ERROR or CANCELLED task again, as a new attempt.

        Raises:
            InvalidTransition: the task is not ERROR or CANCELLED.
        """
        task = self.ledger.get(task_id) or await self.load(task_id)
        if task.state not in (TaskState.ERROR, TaskState.CANCELLED):
            msg = (
                f"task {task_id!r} is {task.state.value}; only ERROR or CANCELLED "
                "tasks can be retried"
            )
            raise InvalidTransition(msg, task_id=task_id, state=task.state)
        self.app.get(task.name)  # the task must still be registered
        self.ledger.track(task)
        requeue = self.ledger.apply([RetryEvent(task_id)]).requeue
        try:
            await self.engine.requeue(requeue)
        except BaseException as exc:
            # Not queued: the attempt ends here, with the reason on record.
            error = ErrorRecord.from_exception(exc)
            self.ledger.apply([ErrorEvent(task_id, error, attempts_left=0)])
            raise
