"""TaskManager: submit, watch, wait for, cancel and retry tasks (made by ``connect()``).

The manager is the single writer of task records. On the runtime loop it:

- validates and publishes tasks (``submit``/``map``; validation runs in the caller's
  thread so bad input fails at once, in the cell);
- consumes worker events in batches through its :class:`~icij_nb.events.EventApplier`,
  which applies them by precedence (:meth:`~icij_nb.model.Task.apply`), republishes
  retries, writes the store, resolves waiting handles and notifies subscribers (the
  board) through the live :class:`~icij_nb.records.TaskRecords`;
- broadcasts cancel and shutdown events;
- owns the in-kernel pools started with :meth:`TaskManager.start_pool`.

Every operation has a blocking form for cells (``tm.gather(hs)``) and an awaitable
twin with the ``_async`` suffix (``await tm.gather_async(hs)``); handles are awaitable
themselves. Blocking calls never run on the runtime loop, so they cannot deadlock it,
and Ctrl-C cancels the wait.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from icij_nb.app import App, TaskSpec
from icij_nb.brokers.base import Broker
from icij_nb.errors import (
    BrokerError,
    InvalidArguments,
    InvalidTransition,
    ManagerClosed,
    TaskCancelled,
    TaskFailed,
    UnknownTask,
    WaitTimeout,
)
from icij_nb.events import EventApplier
from icij_nb.handles import TaskBatch, TaskHandle
from icij_nb.jsonvalues import check_args
from icij_nb.model import (
    CancelEvent,
    ShutdownEvent,
    Task,
    TaskState,
    utcnow,
)
from icij_nb.pools import InKernelPool
from icij_nb.process_pool import ProcessPool
from icij_nb.records import Listener, TaskRecords
from icij_nb.runtime import Runtime, get_runtime
from icij_nb.store import Orphan, Store
from icij_nb.worker_registry import WorkerRegistry

if TYPE_CHECKING:
    from icij_nb.board import TaskBoard

logger = logging.getLogger(__name__)

T = TypeVar("T")
TaskRef = str | TaskHandle


def _task_id(ref: TaskRef) -> str:
    return ref.id if isinstance(ref, TaskHandle) else ref


class TaskManager:
    """Submits tasks of an app through a broker and keeps their record in a store.

    Build one with :func:`connect`. Closing it stops its pools (their running tasks
    are requeued), writes pending records and releases the broker.
    """

    def __init__(
        self,
        app: App,
        *,
        broker: Broker,
        store: Store,
        runtime: Runtime | None = None,
    ) -> None:
        self.app = app
        self.broker = broker
        self.store = store
        self.id = f"{app.name}-manager-{uuid.uuid4().hex[:12]}"
        self._runtime = runtime or get_runtime()
        self._records = TaskRecords()
        # The live records by id: handles and the board read them without I/O.
        self._tasks = self._records.tasks
        self._pools: list[InKernelPool | ProcessPool] = []
        self._checked_calls: set[tuple[str, frozenset[str]]] = set()
        self._events = EventApplier(
            self._records, store, broker, owner=self.id, closed=lambda: self._closed
        )
        self._registry = WorkerRegistry(broker)
        self._workers = self._registry.heard
        self._consumer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        #: called (no arguments) when a blocking wait ends: boards show final states
        self._after_wait: list[Callable[[], None]] = []
        self._started = False
        self._pid = os.getpid()

    # -- life -------------------------------------------------------------------

    def _run(
        self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = None
    ) -> T:
        return self._runtime.run(coro, timeout_s=timeout_s)

    async def _wrap(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._runtime.wrap(coro)

    async def _settle_orphans(self, orphans: list[Orphan]) -> None:
        # Tasks of a dead kernel, claimed by this manager: apply each decision
        # (a lost task gets its TaskLost error event), then track what is unfinished.
        for orphan in orphans:
            task, event = orphan.task, orphan.event()
            if event is not None:
                task.apply(event)
                self.store.put_error(task.id, len(task.errors) - 1, task.errors[-1])
                self.store.put(task)
            if not task.state.is_ready:
                self._records.track(task)
        if orphans:
            await self.store.flush()

    async def _start(self) -> None:
        await self.broker.start()
        try:
            await self.store.open(manager_id=self.id, broker_kind=self.broker.kind)
            orphans = await self.store.recover(durable_broker=self.broker.durable)
            await self._settle_orphans(orphans)
        except BaseException:
            # A store that cannot be opened (locked, damaged) must not leave a
            # connection behind: the error is all the caller gets.
            with contextlib.suppress(Exception):
                await self.store.close()
            await self.broker.close()
            raise
        self._consumer = asyncio.create_task(
            self._events.consume(), name="icij_nb-events"
        )
        self._watcher = asyncio.create_task(
            self._registry.watch(), name="icij_nb-workers"
        )
        self._started = True
        _OPEN.add(self)

    def close(self, *, timeout_s: float | None = 30.0) -> None:
        """Stop pools (requeueing their running tasks), flush the store, disconnect.

        Safe to call twice.
        """
        if self._closed:
            return
        self._run(self.close_async(), timeout_s=timeout_s)

    async def close_async(self) -> None:
        """Awaitable twin of :meth:`close`."""
        await self._wrap(self._close())

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        for pool in list(self._pools):
            if isinstance(pool, ProcessPool):
                await asyncio.to_thread(pool.stop)
            else:
                await pool._stop(finish_running=False)
        for background in (self._consumer, self._watcher):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        await self.store.close()
        await self.broker.close()
        self._records.cancel_waiters()

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    def __enter__(self) -> TaskManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> TaskManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close_async()

    def _check_can_send(self) -> None:
        self._check_open()
        if self.broker.observe_only:
            msg = (
                "this manager only observes another task manager's vhost; it "
                "cannot submit, cancel or retry. Connect without observe_only=True "
                "to a vhost of your own for that."
            )
            raise ManagerClosed(msg)

    def _check_open(self) -> None:
        if self._closed:
            msg = (
                f"the task manager of app {self.app.name!r} is closed; "
                "nothing was submitted. Call nb.connect(app) for a new one."
            )
            raise ManagerClosed(msg)

    # -- reprs ------------------------------------------------------------------

    def __repr__(self) -> str:
        counts = " ".join(
            f"{s.value.lower()}={n}"
            for s, n in sorted(self._records.counts.items())
            if n
        )
        state = " closed" if self._closed else ""
        return (
            f"<TaskManager {self.app.name!r}{state} broker={self.broker.kind} "
            f"store={_store_label(self.store)} pools={len(self._pools)} "
            f"tasks={len(self._tasks)}{' ' + counts if counts else ''}>"
        )

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<td>{s.value}: <b>{self._records.counts.get(s, 0)}</b></td>"
            for s in TaskState
        )
        pools = ", ".join(repr(p) for p in self._pools) or "none"
        return (
            f"<div><b>TaskManager</b> <code>{self.app.name}</code> "
            f"({self.broker.kind} broker, store {_store_label(self.store)})"
            f"<table><tr>{cells}</tr></table><small>pools: {_html(pools)}</small>"
            "</div>"
        )

    # -- submission -------------------------------------------------------------

    def _prepare(
        self,
        name: str,
        args: dict[str, Any] | None,
        *,
        max_retries: int | None,
        task_id: str | None,
    ) -> tuple[Task, str]:
        spec = self.app.get(name)
        checked = check_args(args, task_name=name)
        key = (name, frozenset(checked))
        if key not in self._checked_calls:
            spec.check_call(checked)
            self._checked_calls.add(key)
        max_attempts = _max_attempts(spec, max_retries)
        task = Task(
            id=task_id if task_id is not None else f"{name}-{_uuid4_hex()}",
            name=name,
            group=spec.group_name,
            args=checked,
            max_attempts=max_attempts,
            attempts_left=max_attempts,
        )
        return task, json.dumps(checked)

    def submit(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        max_retries: int | None = None,
        task_id: str | None = None,
    ) -> TaskHandle:
        """Queue one task; return its handle at once (the task runs later).

        Args:
            name: a task registered in the app.
            args: keyword arguments for the function, a JSON-compatible dict.
            max_retries: overrides the task's own setting for this submission.
            task_id: a caller-chosen id (default ``<name>-<uuid hex>``).

        Raises:
            UnknownTask: no task of that name (the message lists the registered ones).
            InvalidArguments: args that JSON cannot carry or that the function
                does not take.
            TaskQueueFull: the group's queue is at its cap.
            ManagerClosed: the manager was closed.

        Example:
            h = tm.submit("tokenize", {"doc": "a b c"})
        """
        self._check_can_send()
        prepared = self._prepare(name, args, max_retries=max_retries, task_id=task_id)
        self._run(self._enqueue([prepared]))
        return TaskHandle(self, prepared[0].id)

    async def submit_async(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        max_retries: int | None = None,
        task_id: str | None = None,
    ) -> TaskHandle:
        """Awaitable twin of :meth:`submit`."""
        self._check_can_send()
        prepared = self._prepare(name, args, max_retries=max_retries, task_id=task_id)
        await self._wrap(self._enqueue([prepared]))
        return TaskHandle(self, prepared[0].id)

    def map(
        self,
        name: str,
        args_list: Iterable[dict[str, Any]],
        *,
        max_retries: int | None = None,
    ) -> TaskBatch:
        """Queue one task per args dict; return their handles in order.

        Every args dict is checked before any task is queued, so bad input queues
        nothing. Raises as :meth:`submit`.

        Example:
            batch = tm.map("tokenize", [{"doc": d} for d in docs])
            tokens = batch.results()        # or: await batch
        """
        self._check_can_send()
        prepared = self._prepare_many(name, args_list, max_retries)
        self._run(self._enqueue(prepared))
        return TaskBatch(self, (TaskHandle(self, t.id) for t, _ in prepared))

    async def map_async(
        self,
        name: str,
        args_list: Iterable[dict[str, Any]],
        *,
        max_retries: int | None = None,
    ) -> TaskBatch:
        """Awaitable twin of :meth:`map`."""
        self._check_can_send()
        prepared = self._prepare_many(name, args_list, max_retries)
        await self._wrap(self._enqueue(prepared))
        return TaskBatch(self, (TaskHandle(self, t.id) for t, _ in prepared))

    def _prepare_many(
        self, name: str, args_list: Iterable[dict[str, Any]], max_retries: int | None
    ) -> list[tuple[Task, str]]:
        if isinstance(args_list, dict | str | bytes):
            msg = (
                f"map({name!r}, ...) takes a list of args dicts, one per task, got a "
                f"{type(args_list).__name__}; for one task use submit()"
            )
            raise InvalidArguments(msg)
        prepared = []
        for index, args in enumerate(args_list):
            try:
                prepared.append(
                    self._prepare(name, args, max_retries=max_retries, task_id=None)
                )
            except InvalidArguments as exc:
                msg = f"args_list[{index}]: {exc}; no task was submitted"
                raise InvalidArguments(msg) from None
        return prepared

    async def _enqueue(self, prepared: Sequence[tuple[Task, str]]) -> None:
        self._check_open()
        tasks = []
        for task, _ in prepared:
            if task.id in self._tasks:
                msg = f"a task with id {task.id!r} exists already; choose another id"
                raise InvalidArguments(msg)
            # Published as CREATED, as icij's manager does a first enqueue (§2.4).
            task.state = TaskState.CREATED
            tasks.append(task)
        # Tracked before publishing: a worker may answer before publish returns.
        for task in tasks:
            self._records.track(task)
        try:
            await self.broker.publish_tasks(tasks)
        except BrokerError as exc:
            # Keep the record of what was queued; the error names what was not.
            lost = set(exc.not_queued)
            for task_id in lost:
                self._records.untrack(task_id)
            self._mark_queued([t for t in tasks if t.id not in lost])
            self._record_new([p for p in prepared if p[0].id not in lost])
            await self._store_now_if_durable()
            raise
        except BaseException:
            for task in tasks:
                self._records.untrack(task.id)
            raise
        self._mark_queued(tasks)
        self._record_new(prepared)
        await self._store_now_if_durable()

    async def _store_now_if_durable(self) -> None:
        # A queued task outlives this kernel in RabbitMQ: so must its record, at
        # once, or a new manager would refuse the events of a task it never saw.
        if self.broker.durable:
            await self.store.flush()

    def _mark_queued(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            if task.state is TaskState.CREATED:  # else a worker answered already
                self._records.set_state(task, TaskState.QUEUED)

    def _record_new(self, prepared: Sequence[tuple[Task, str]]) -> None:
        for task, args_json in prepared:
            self.store.put(task, args_json=args_json)
        self._records.notify([t for t, _ in prepared])

    # -- subscriptions and workers -------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(tasks)`` with the tasks that changed, after each change.

        The listener runs on the runtime thread with snapshots of the changed tasks;
        it must return quickly (coalesce on its side) and must not block on the
        manager. Its exceptions are logged, never raised.

        Returns:
            A function that unsubscribes it.
        """
        return self._records.subscribe(listener)

    def workers(self) -> pd.DataFrame:
        """The workers heard from lately, one row each (no I/O).

        Columns: worker, group, app, host, pid, task (what it runs now, or None),
        last_seen (UTC), alive (heard from within three heartbeats). Pools send a
        heartbeat every 5 s, on an exchange icij-worker peers ignore; icij-worker's
        own workers send none and do not appear here.
        """
        return self._registry.frame()

    # -- reading --------------------------------------------------------------------

    def _peek(self, task_id: str) -> Task | None:
        """The live record of a task of this session, without I/O (or None)."""
        return self._tasks.get(task_id)

    def get(self, task: TaskRef) -> Task:
        """A snapshot of a task's record, from this session or the store.

        Raises:
            UnknownTask: no task with that id.
        """
        task_id = _task_id(task)
        live = self._tasks.get(task_id)
        if live is not None:
            return live.snapshot()
        return self._run(self._get(task_id))

    async def get_async(self, task: TaskRef) -> Task:
        """Awaitable twin of :meth:`get`."""
        return await self._wrap(self._get(_task_id(task)))

    async def _get(self, task_id: str) -> Task:
        live = self._tasks.get(task_id)
        if live is not None:
            return live.snapshot()
        stored = await self.store.load(task_id) if not self._closed else None
        if stored is None:
            msg = f"no task with id {task_id!r} in this manager or its store"
            raise UnknownTask(msg, task_id=task_id)
        return stored

    def errors(self, task: TaskRef) -> list[Any]:
        """The error records of a task, one per failed attempt, oldest first."""
        return self.get(task).errors

    def frame(self) -> pd.DataFrame:
        """Every task in the store as a DataFrame, one row per task.

        Columns (see docs/tasks-table.md): id, name, group, state (ordered
        categorical), progress, attempts, max_attempts, worker, created_at,
        started_at, completed_at (UTC timestamps), duration_s, args, result, error
        (the last error as ``Name: message``).
        """
        self._check_open()
        return self._run(self.store.frame())

    async def frame_async(self) -> pd.DataFrame:
        """Awaitable twin of :meth:`frame`."""
        self._check_open()
        return await self._wrap(self.store.frame())

    def board(self, **filters: Any) -> TaskBoard:
        """A live task board of this manager (needs ipywidgets: ``icij_nb[notebook]``).

        Takes the keyword arguments of :class:`~icij_nb.board.TaskBoard` (group,
        states, name, text, page_size, refresh_s).

        Example:
            board = tm.board(group="cpu")
            board                       # the cell's last expression shows it
        """
        from icij_nb.board import TaskBoard  # lazily: ipywidgets is an extra

        self._check_open()
        return TaskBoard(self, **filters)

    @property
    def counts(self) -> dict[TaskState, int]:
        """Tasks of this session in each state, now."""
        return {s: self._records.counts.get(s, 0) for s in TaskState}

    # -- waiting ------------------------------------------------------------------

    async def _wait_ready(
        self, task_ids: Sequence[str], timeout_s: float | None
    ) -> dict[str, Task]:
        """Wait until every task is ready; return the records read from the store.

        Those are tasks of an earlier session that were ready already (a new
        kernel re-attaching to them by id); the others are this manager's own.
        """
        waiting: list[str] = []
        stored: dict[str, Task] = {}
        for task_id in task_ids:
            task = self._tasks.get(task_id)
            if task is None:
                task = await self._get(task_id)  # raises UnknownTask
                if task.state.is_ready:
                    stored[task_id] = task
                else:
                    self._records.track(task)
            if not task.state.is_ready:
                waiting.append(task_id)
        if not waiting:
            return stored
        ready = self._records.wait_ready(waiting)
        try:
            async with asyncio.timeout(timeout_s):
                await ready
        except TimeoutError:
            raise self._timeout_error(task_ids, timeout_s) from None
        finally:
            ready.cancel()
        return stored

    def _timeout_error(
        self, task_ids: Sequence[str], timeout_s: float | None
    ) -> WaitTimeout:
        pending = [
            t
            for t in (self._tasks.get(i) for i in task_ids)
            if t and not t.state.is_ready
        ]
        first = pending[0] if pending else None
        if first is None:  # pragma: no cover - only when all finished at the deadline
            msg = f"the wait of {timeout_s}s ran out"
            return WaitTimeout(msg, task_id=None, state=None)
        others = f" and {len(pending) - 1} other task(s)" if len(pending) > 1 else ""
        msg = (
            f"gave up after {timeout_s:g}s waiting for task {first.id!r} "
            f"({first.name}), still {first.state.value}{others}; the task goes on. "
            "Wait longer, or start a pool for its group if none runs."
        )
        return WaitTimeout(msg, task_id=first.id, state=first.state)

    def _outcome(self, task_id: str, stored: dict[str, Task]) -> Any:
        task = stored.get(task_id) or self._tasks[task_id]
        if task.state is TaskState.DONE:
            return task.result
        if task.state is TaskState.ERROR:
            last = task.errors[-1] if task.errors else None
            detail = f"{last.name}: {last.message}" if last else "no error record"
            msg = (
                f"task {task.id!r} ({task.name}) failed after {task.attempts} "
                f"attempt(s): {detail}"
            )
            if last is not None and last.stacktrace:
                msg += "\n" + last.format()
            return TaskFailed(msg, task_id=task.id, error=last)
        return TaskCancelled(
            f"task {task.id!r} ({task.name}) was cancelled", task_id=task.id
        )

    async def _result(self, task_id: str, timeout_s: float | None) -> Any:
        stored = await self._wait_ready([task_id], timeout_s)
        outcome = self._outcome(task_id, stored)
        if isinstance(outcome, TaskFailed | TaskCancelled):
            raise outcome
        return outcome

    def result(self, task: TaskRef, *, timeout_s: float | None = None) -> Any:
        """Block until the task is ready; return its result or raise its failure.

        Raises:
            TaskFailed: it ended in ERROR (``.error`` holds the record).
            TaskCancelled: it was cancelled.
            WaitTimeout: ``timeout_s`` passed first; the task goes on.
        """
        try:
            return self._run(self._result(_task_id(task), timeout_s))
        finally:
            self._waited()

    async def result_async(
        self, task: TaskRef, *, timeout_s: float | None = None
    ) -> Any:
        """Awaitable twin of :meth:`result`."""
        try:
            return await self._wrap(self._result(_task_id(task), timeout_s))
        finally:
            self._waited()

    async def _gather(
        self, task_ids: list[str], timeout_s: float | None, return_exceptions: bool
    ) -> list[Any]:
        stored = await self._wait_ready(task_ids, timeout_s)
        outcomes = [self._outcome(i, stored) for i in task_ids]
        if not return_exceptions:
            for outcome in outcomes:
                if isinstance(outcome, TaskFailed | TaskCancelled):
                    raise outcome
        return outcomes

    def gather(
        self,
        tasks: Iterable[TaskRef],
        *,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
        cancel_on_interrupt: bool = False,
    ) -> list[Any]:
        """Block until every task is ready; return their results in order.

        Args:
            tasks: handles or task ids.
            timeout_s: give up after this long (WaitTimeout names a pending task).
            return_exceptions: put TaskFailed / TaskCancelled in the list instead of
                raising the first one.
            cancel_on_interrupt: on Ctrl-C (kernel interrupt) also cancel the tasks
                that are not finished; by default only the wait stops.
        """
        task_ids = [_task_id(t) for t in tasks]
        try:
            return self._run(self._gather(task_ids, timeout_s, return_exceptions))
        except KeyboardInterrupt:
            if cancel_on_interrupt:
                self._run(self._cancel_many(task_ids, requeue=False))
            raise
        finally:
            self._waited()

    async def gather_async(
        self,
        tasks: Iterable[TaskRef],
        *,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Awaitable twin of :meth:`gather`."""
        task_ids = [_task_id(t) for t in tasks]
        try:
            return await self._wrap(
                self._gather(task_ids, timeout_s, return_exceptions)
            )
        finally:
            self._waited()

    def wait(
        self, tasks: Iterable[TaskRef], *, timeout_s: float | None = None
    ) -> list[Task]:
        """Block until every task is ready; return their records.

        Unlike gather it does not raise for failed tasks, only WaitTimeout.
        """
        task_ids = [_task_id(t) for t in tasks]
        try:
            self._run(self._wait_ready(task_ids, timeout_s))
        finally:
            self._waited()
        return [self.get(i) for i in task_ids]

    async def wait_async(
        self, tasks: Iterable[TaskRef], *, timeout_s: float | None = None
    ) -> list[Task]:
        """Awaitable twin of :meth:`wait`."""
        task_ids = [_task_id(t) for t in tasks]
        try:
            await self._wrap(self._wait_ready(task_ids, timeout_s))
        finally:
            self._waited()
        return [await self.get_async(i) for i in task_ids]

    def _waited(self) -> None:
        """A wait ended: run the after-wait hooks (boards render the final state).

        Not from the runtime thread: hooks block on it.
        """
        if not self._after_wait or self._runtime.in_runtime_thread():
            return
        for hook in list(self._after_wait):
            try:
                hook()
            except Exception:
                logger.exception("after-wait hook %r failed", hook)

    # -- cancel and retry -----------------------------------------------------------

    def cancel(self, task: TaskRef, *, requeue: bool = False) -> None:
        """Cancel a task: a queued one never starts, a running one is stopped.

        Args:
            task: a handle or task id.
            requeue: put a running task back in its queue instead of ending it
                CANCELLED (a queued one just stays queued).

        Raises:
            InvalidTransition: the task is already DONE, ERROR or CANCELLED.
        """
        self._check_can_send()
        self._run(self._cancel(_task_id(task), requeue=requeue))

    async def cancel_async(self, task: TaskRef, *, requeue: bool = False) -> None:
        """Awaitable twin of :meth:`cancel`."""
        self._check_can_send()
        await self._wrap(self._cancel(_task_id(task), requeue=requeue))

    async def _cancel(self, task_id: str, *, requeue: bool) -> None:
        task = self._tasks.get(task_id) or await self._get(task_id)
        if task.state.is_ready:
            msg = (
                f"task {task_id!r} is already {task.state.value}; only CREATED, "
                "QUEUED or RUNNING tasks can be cancelled"
            )
            raise InvalidTransition(msg, task_id=task_id, state=task.state)
        if task.state is TaskState.RUNNING or requeue:
            await self.broker.broadcast(CancelEvent(task_id, requeue=requeue))
            return
        # Queued: end it here, and tell workers never to start it.
        task.completed_at = utcnow()
        self._records.set_state(task, TaskState.CANCELLED)
        self.store.put(task)
        self._records.resolve(task_id)
        self._records.notify([task])
        await self.broker.broadcast(CancelEvent(task_id, requeue=False))

    async def _cancel_many(self, task_ids: Iterable[str], *, requeue: bool) -> None:
        for task_id in task_ids:
            task = self._tasks.get(task_id)
            if task is not None and not task.state.is_ready:
                await self._cancel(task_id, requeue=requeue)

    def retry(self, task: TaskRef) -> TaskHandle:
        """Run an ERROR or CANCELLED task again: a new attempt under the same id.

        Its error history is kept and its attempts start over.

        Raises:
            InvalidTransition: the task is not ERROR or CANCELLED.
        """
        self._check_can_send()
        task_id = _task_id(task)
        self._run(self._retry(task_id))
        return TaskHandle(self, task_id)

    async def retry_async(self, task: TaskRef) -> TaskHandle:
        """Awaitable twin of :meth:`retry`."""
        self._check_can_send()
        task_id = _task_id(task)
        await self._wrap(self._retry(task_id))
        return TaskHandle(self, task_id)

    async def _retry(self, task_id: str) -> None:
        task = self._tasks.get(task_id) or await self._get(task_id)
        if task.state not in (TaskState.ERROR, TaskState.CANCELLED):
            msg = (
                f"task {task_id!r} is {task.state.value}; only ERROR or CANCELLED "
                "tasks can be retried"
            )
            raise InvalidTransition(msg, task_id=task_id, state=task.state)
        self.app.get(task.name)  # the task must still be registered
        self._records.track(task)
        task.progress, task.completed_at = 0.0, None
        task.attempts_left = task.max_attempts
        self._records.set_state(task, TaskState.QUEUED)
        self.store.put(task)
        await self.broker.publish_tasks([task])
        self._records.notify([task])

    def shutdown_workers(self) -> None:
        """Broadcast a shutdown to every worker of the broker.

        Pools stop; their running tasks are requeued.
        """
        self._check_can_send()
        self._run(self.broker.broadcast(ShutdownEvent()))

    # -- pools ----------------------------------------------------------------------

    def start_pool(
        self,
        group: str | None = None,
        *,
        workers: int = 1,
        processes: bool = False,
        concurrency: int = 1,
        progress_interval_s: float = 0.2,
    ) -> InKernelPool | ProcessPool:
        """Start a pool of ``workers`` serving ``group``.

        Args:
            group: the group whose queue the pool serves (None: ungrouped tasks).
            workers: how many tasks run at once.
            processes: run each worker in its own process on this machine (needs
                RabbitMQ); tasks defined in notebook cells run there unchanged.
                By default workers run in this kernel: async tasks on the runtime
                loop, sync ones in the pool's threads.
            concurrency: with ``processes=True``, how many tasks each process runs
                at once (async tasks share its loop, sync ones its threads).
            progress_interval_s: the least time between two progress reports of
                one task.

        Raises:
            UnknownGroup: no such group in the app.
            ConfigError: ``processes=True`` with the in-process broker.
        """
        self._check_can_send()
        self.app.group(group)
        if processes:
            return self._start_process_pool(group, workers, concurrency)
        pool = InKernelPool(
            self.app,
            self.broker,
            group=group,
            workers=workers,
            runtime=self._runtime,
            progress_interval_s=progress_interval_s,
            on_stop=self._pools.remove,
        )
        self._run(pool._start())
        self._pools.append(pool)
        return pool

    def _start_process_pool(
        self, group: str | None, workers: int, concurrency: int
    ) -> ProcessPool:
        self.broker.for_another_process()  # fails early for the memory broker
        process_pool = ProcessPool(
            self.app,
            lambda app: self.broker.for_another_process(),
            group=group,
            processes=workers,
            workers_per_process=concurrency,
            on_stop=self._pools.remove,
        )
        process_pool.start()
        self._pools.append(process_pool)
        return process_pool

    @property
    def pools(self) -> list[InKernelPool | ProcessPool]:
        """The pools running now, in-kernel and process ones."""
        return list(self._pools)


def _uuid4_hex() -> str:
    """``uuid.uuid4().hex``, three times faster (ids are made per task in ``map``)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def _max_attempts(spec: TaskSpec, max_retries: int | None) -> int:
    if max_retries is None:
        return spec.max_attempts
    value: object = max_retries
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        msg = f"max_retries must be an int >= 0, got {max_retries!r}"
        raise InvalidArguments(msg)
    return max_retries + 1


def _store_label(store: Store) -> str:
    return store.label


def _html(text: str) -> str:
    import html

    return html.escape(text)


# Managers still open at interpreter exit get closed, so pending records are
# written: the runtime thread is a daemon and would otherwise die mid-write.
_OPEN: weakref.WeakSet[TaskManager] = weakref.WeakSet()


def _close_open_managers() -> None:
    for manager in list(_OPEN):
        if manager._pid != os.getpid():  # a forked worker process: not ours
            continue
        try:
            manager.close(timeout_s=10.0)
        except (Exception, concurrent.futures.TimeoutError):
            logger.exception("closing %r at exit failed", manager)


# Not atexit: by then concurrent.futures has stopped every thread executor, the
# store's too, so close() would fail. threading's exit hooks run first (the latest
# registered first). The hook is private, but there since Python 3.9.
getattr(threading, "_register_atexit", atexit.register)(_close_open_managers)
