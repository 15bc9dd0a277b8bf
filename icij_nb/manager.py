"""TaskManager: submit, watch, wait for, cancel and retry tasks (made by ``connect()``).

The manager holds an :class:`~icij_nb.engine.Engine` (a message broker, or an engine
that owns state) and a :class:`~icij_nb.ledger.Ledger` (the records and their one write
path). On the runtime loop it:

- validates and submits tasks (``submit``/``map``; validation runs in the caller's
  thread, see :mod:`icij_nb.submission`, so bad input fails at once, in the cell);
- consumes the engine's events through an :class:`~icij_nb.events.EventConsumer`,
  which applies them through the ledger;
- turns its own decisions (cancel of a queued task, retry) into ledger events too;
- waits for tasks (:mod:`icij_nb.waits`) and owns the pools of ``start_pool``.

It implements :class:`~icij_nb.view.TaskView`, what handles, the board and the magics
use. Every operation has a blocking form for cells (``tm.gather(hs)``) and an
awaitable twin (``await tm.gather_async(hs)``); blocking calls never run on the
runtime loop, and Ctrl-C cancels the wait.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from icij_nb.app import App
from icij_nb.broker_engine import BrokerEngine
from icij_nb.brokers.base import Broker
from icij_nb.engine import Engine, Pool, PoolOptions
from icij_nb.errors import ConfigError, ManagerClosed, ManagerNotStarted, ObserveOnly
from icij_nb.handles import TaskBatch, TaskHandle
from icij_nb.manager_repr import manager_html, manager_text
from icij_nb.model import Task, TaskState
from icij_nb.output import AttemptOutput, pick_text
from icij_nb.output_log import OutputListener
from icij_nb.records import Listener
from icij_nb.runtime import Runtime, close_at_exit, forget_at_exit, get_runtime
from icij_nb.session import Session
from icij_nb.store import Store
from icij_nb.submission import Submissions
from icij_nb.waits import Waits

if TYPE_CHECKING:
    from icij_nb.board import TaskBoard

T = TypeVar("T")
TaskRef = str | TaskHandle


def _task_id(ref: TaskRef) -> str:
    return ref.id if isinstance(ref, TaskHandle) else ref


class TaskManager:
    """Submits tasks of an app to an engine and keeps their record in a store.

    Build a started one with :func:`~icij_nb.connect` (or construct it and call
    :meth:`start`). Closing it stops its pools (their running tasks are requeued),
    writes pending records and releases the engine.

    Args:
        app: the tasks it may submit.
        broker: a message broker (memory, RabbitMQ); or give ``engine``.
        engine: what runs the tasks, when it is not a plain broker (Temporal).
        store: where the records live.
        runtime: the loop thread (default: this process's).
    """

    def __init__(
        self,
        app: App,
        *,
        broker: Broker | None = None,
        engine: Engine | None = None,
        store: Store,
        runtime: Runtime | None = None,
    ) -> None:
        if (broker is None) == (engine is None):
            msg = "TaskManager needs one of broker= (memory, RabbitMQ) or engine="
            raise ConfigError(msg)
        self.app = app
        if broker is not None:
            engine = BrokerEngine(broker)
        assert engine is not None  # one of the two, checked above
        self.engine: Engine = engine
        self.store = store
        self.id = f"{app.name}-manager-{uuid.uuid4().hex[:12]}"
        self._runtime = runtime or get_runtime()
        self._session = Session(app, engine, store, owner=self.id)
        self._ledger = self._session.ledger
        self._submissions = Submissions(app)
        self._waits = Waits(
            self._ledger, self._session.load, self._runtime, self._session.outputs
        )
        self._pools: list[Pool] = []

    @property
    def broker(self) -> Engine:
        """The engine behind this manager (its repr masks any password)."""
        return self.engine

    @property
    def runtime(self) -> Runtime:
        """The runtime loop this manager's work runs on."""
        return self._runtime

    # -- life -------------------------------------------------------------------

    def _run(
        self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = None
    ) -> T:
        return self._runtime.run(coro, timeout_s=timeout_s)

    async def _wrap(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._runtime.wrap(coro)

    def start(self) -> TaskManager:
        """Connect the engine, open the store, settle what a dead kernel left.

        :func:`~icij_nb.connect` calls it; call it yourself only on a manager you
        constructed. Returns the manager, started.
        """
        self._run(self.start_async())
        return self

    async def start_async(self) -> TaskManager:
        """Awaitable twin of :meth:`start`."""
        await self._wrap(self._start())
        return self

    async def _start(self) -> None:
        await self._session.start()
        close_at_exit(self)

    def close(self, *, timeout_s: float | None = 30.0) -> None:
        """Stop pools (running tasks requeued), flush, disconnect; safe twice."""
        if self._session.closed:
            return
        self._run(self.close_async(), timeout_s=timeout_s)

    async def close_async(self) -> None:
        """Awaitable twin of :meth:`close`."""
        await self._wrap(self._close())

    async def _close(self) -> None:
        forget_at_exit(self)
        await self._session.close(self._pools)
        self._pools.clear()

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._session.closed

    @property
    def can_act(self) -> bool:
        """True when cancel and retry are possible (open, and not observe-only)."""
        return not (self._session.closed or self.engine.observe_only)

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
        if self.engine.observe_only:
            msg = (
                "this manager only observes another task manager's tasks; it "
                "cannot submit, cancel or retry. Connect without observe_only=True "
                "to a vhost of your own for that."
            )
            raise ObserveOnly(msg)

    def _check_open(self) -> None:
        if self._session.closed:
            raise ManagerClosed.of_app(self.app.name)
        if not self._session.started:
            raise ManagerNotStarted.of_app(self.app.name)

    # -- reprs ------------------------------------------------------------------

    def __repr__(self) -> str:
        kind, label, tasks = self.engine.kind, self.store.label, len(self._ledger)
        return manager_text(
            self, app=self.app.name, engine=kind, store=label, tasks=tasks
        )

    def _repr_html_(self) -> str:
        return manager_html(
            self, app=self.app.name, engine=self.engine.kind, store=self.store.label
        )

    # -- submission -------------------------------------------------------------

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
        prepared = self._submissions.prepare(
            name, args, max_retries=max_retries, task_id=task_id
        )
        self._run(self._session.enqueue([prepared]))
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
        prepared = self._submissions.prepare(
            name, args, max_retries=max_retries, task_id=task_id
        )
        await self._wrap(self._session.enqueue([prepared]))
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
        prepared = self._submissions.prepare_many(name, args_list, max_retries)
        self._run(self._session.enqueue(prepared))
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
        prepared = self._submissions.prepare_many(name, args_list, max_retries)
        await self._wrap(self._session.enqueue(prepared))
        return TaskBatch(self, (TaskHandle(self, t.id) for t, _ in prepared))

    # -- subscriptions and workers -------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(tasks)`` with the tasks that changed, after each change.

        The listener runs on the runtime thread with snapshots of the changed tasks;
        it must return quickly (coalesce on its side) and must not block on the
        manager. Its exceptions are logged, never raised. Returns an unsubscribe.
        """
        return self._ledger.subscribe(listener)

    def on_wait_end(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook()`` each time a blocking wait of this manager ends.

        It runs in the thread that waited; boards use it to show final states.
        Returns a function that removes the hook.
        """
        return self._waits.on_end(hook)

    def live_workers(self) -> dict[str | None, int] | None:
        """Live workers per group (no I/O); None when none ever sent a heartbeat."""
        return self._session.workers.alive_by_group()

    def workers(self) -> pd.DataFrame:
        """The workers heard from lately, one row each (no I/O; docs/rabbitmq.md).

        Columns: worker, group, app, host, pid, task (what it runs now, or None),
        last_seen (UTC), alive (heard from within three heartbeats of 5 s).
        """
        return self._session.workers.frame()

    # -- reading --------------------------------------------------------------------

    def peek(self, task_id: str) -> Task | None:
        """The live record of a task of this session, without I/O (or None).

        It changes as events arrive: read it, don't keep it (:meth:`get` copies).
        """
        return self._ledger.get(task_id)

    def live_tasks(self) -> list[Task]:
        """The live records of this session's tasks, without I/O."""
        return self._ledger.live()

    def get(self, task: TaskRef) -> Task:
        """A snapshot of a task's record, from this session or the store.

        Raises:
            UnknownTask: no task with that id.
        """
        task_id = _task_id(task)
        live = self._ledger.get(task_id)
        if live is not None:
            return live.snapshot()
        return self._run(self._session.load(task_id))

    async def get_async(self, task: TaskRef) -> Task:
        """Awaitable twin of :meth:`get`."""
        return await self._wrap(self._session.load(_task_id(task)))

    def errors(self, task: TaskRef) -> list[Any]:
        """The error records of a task, one per failed attempt, oldest first."""
        return self.get(task).errors

    def frame(self) -> pd.DataFrame:
        """Every task in the store as a DataFrame, one row per task.

        Columns (see docs/tasks-table.md): id, name, group, state (ordered
        categorical), progress, attempts, max_attempts, worker, created_at,
        started_at, completed_at (UTC timestamps), duration_s, args, result, error
        (the last error as ``Name: message``, or that it waits for the broker).
        """
        self._check_open()
        return self._run(self._session.frame())

    async def frame_async(self) -> pd.DataFrame:
        """Awaitable twin of :meth:`frame`."""
        self._check_open()
        return await self._wrap(self._session.frame())

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
        return {s: self._ledger.counts.get(s, 0) for s in TaskState}

    @property
    def waiting_for_broker(self) -> int:
        """CREATED tasks of this session waiting in the outbox for the broker."""
        return self._ledger.waiting_for_broker

    def waits_for_broker(self, task: TaskRef) -> bool:
        """True while a task waits in the outbox for the broker (no I/O)."""
        return self._ledger.waits_for_broker(_task_id(task))

    # -- waiting ------------------------------------------------------------------

    def result(self, task: TaskRef, *, timeout_s: float | None = None) -> Any:
        """Block until the task is ready; return its result or raise its failure.

        Raises:
            TaskFailed: it ended in ERROR (``.error`` holds the record).
            TaskCancelled: it was cancelled.
            WaitTimeout: ``timeout_s`` passed first; the task goes on.
        """
        task_id = _task_id(task)
        return self._waits.block(self._waits.result(task_id, timeout_s), [task_id])

    async def result_async(
        self, task: TaskRef, *, timeout_s: float | None = None
    ) -> Any:
        """Awaitable twin of :meth:`result`."""
        return await self._waits.awaited(self._waits.result(_task_id(task), timeout_s))

    def gather(
        self,
        tasks: Iterable[TaskRef],
        *,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
        cancel_on_interrupt: bool = False,
        show_output: bool | None = None,
    ) -> list[Any]:
        """Block until every task is ready; return their results in order.

        Args:
            tasks: handles or task ids.
            timeout_s: give up after this long (WaitTimeout names a pending task).
            return_exceptions: put TaskFailed / TaskCancelled in the list instead of
                raising the first one.
            cancel_on_interrupt: on Ctrl-C (kernel interrupt) also cancel the tasks
                that are not finished; by default only the wait stops.
            show_output: print the tasks' output under the cell as it comes
                (default: :attr:`show_output`).
        """
        task_ids = [_task_id(t) for t in tasks]
        wait = self._waits.gather(task_ids, timeout_s, return_exceptions)
        try:
            return self._waits.block(wait, task_ids, show_output=show_output)
        except KeyboardInterrupt:
            if cancel_on_interrupt:
                self._run(self._session.cancel_many(task_ids, requeue=False))
            raise

    async def gather_async(
        self,
        tasks: Iterable[TaskRef],
        *,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Awaitable twin of :meth:`gather`."""
        task_ids = [_task_id(t) for t in tasks]
        wait = self._waits.gather(task_ids, timeout_s, return_exceptions)
        return await self._waits.awaited(wait)

    def wait(
        self, tasks: Iterable[TaskRef], *, timeout_s: float | None = None
    ) -> list[Task]:
        """Block until every task is ready; return their records.

        Unlike gather it does not raise for failed tasks, only WaitTimeout.
        """
        task_ids = [_task_id(t) for t in tasks]
        self._waits.block(self._waits.ready(task_ids, timeout_s), task_ids)
        return [self.get(i) for i in task_ids]

    async def wait_async(
        self, tasks: Iterable[TaskRef], *, timeout_s: float | None = None
    ) -> list[Task]:
        """Awaitable twin of :meth:`wait`."""
        task_ids = [_task_id(t) for t in tasks]
        await self._waits.awaited(self._waits.ready(task_ids, timeout_s))
        return [await self.get_async(i) for i in task_ids]

    # -- output (docs/output.md) -----------------------------------------------------

    @property
    def show_output(self) -> bool:
        """Blocking waits print their tasks' output under the cell (default False)."""
        return self._waits.show_output

    @show_output.setter
    def show_output(self, value: bool) -> None:
        self._waits.show_output = bool(value)

    def output(self, task: TaskRef, *, attempt: int | None = None) -> str:
        """What a task wrote and logged, one tagged line each; all attempts or one."""
        return pick_text(self._run(self._session.output(_task_id(task))), attempt)

    async def output_async(self, task: TaskRef, *, attempt: int | None = None) -> str:
        """Awaitable twin of :meth:`output`."""
        return pick_text(await self.attempt_outputs_async(task), attempt)

    async def attempt_outputs_async(self, task: TaskRef) -> list[AttemptOutput]:
        """The kept output of each attempt of a task, oldest first."""
        return await self._wrap(self._session.output(_task_id(task)))

    def subscribe_output(self, listener: OutputListener) -> Callable[[], None]:
        """Call ``listener(chunk)`` on the runtime thread for each output chunk."""
        return self._session.outputs.subscribe(listener)

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
        self._run(self._session.cancel(_task_id(task), requeue=requeue))

    async def cancel_async(self, task: TaskRef, *, requeue: bool = False) -> None:
        """Awaitable twin of :meth:`cancel`."""
        self._check_can_send()
        await self._wrap(self._session.cancel(_task_id(task), requeue=requeue))

    def retry(self, task: TaskRef) -> TaskHandle:
        """Run an ERROR or CANCELLED task again: a new attempt under the same id.

        Its error history is kept and its attempts start over.

        Raises:
            InvalidTransition: the task is not ERROR or CANCELLED.
        """
        self._check_can_send()
        task_id = _task_id(task)
        self._run(self._session.retry(task_id))
        return TaskHandle(self, task_id)

    async def retry_async(self, task: TaskRef) -> TaskHandle:
        """Awaitable twin of :meth:`retry`."""
        self._check_can_send()
        task_id = _task_id(task)
        await self._wrap(self._session.retry(task_id))
        return TaskHandle(self, task_id)

    def shutdown_workers(self) -> None:
        """Broadcast a shutdown to every worker of the broker.

        Pools stop; their running tasks are requeued.
        """
        self._check_can_send()
        self._run(self.engine.shutdown_workers())

    # -- pools ----------------------------------------------------------------------

    def start_pool(
        self,
        group: str | None = None,
        *,
        workers: int = 1,
        processes: bool = False,
        concurrency: int | None = None,
        progress_interval_s: float = 0.2,
    ) -> Pool:
        """Start a pool of ``workers`` serving ``group``.

        Args:
            group: the group whose queue the pool serves (None: ungrouped tasks).
            workers: how many tasks run at once.
            processes: run each worker in a process of its own on this machine
                (needs RabbitMQ); cell-defined tasks run there unchanged. By
                default: in this kernel (async tasks on the runtime loop, sync
                ones in the pool's threads).
            concurrency: with ``processes=True``, tasks run at once per process;
                by default 16 when every task of the group is async, else 1
                (:meth:`App.default_concurrency`).
            progress_interval_s: the least time between two progress reports (and
                two output chunks) of one task.

        Raises:
            UnknownGroup: no such group in the app.
            ConfigError: ``processes=True`` with the in-process broker.
        """
        self._check_can_send()
        self.app.group(group)
        options = PoolOptions(
            group, workers, processes, concurrency, progress_interval_s
        )
        pool = self.engine.pool(self.app, options, runtime=self._runtime)
        self._run(pool.start_async())
        self._pools.append(pool)
        return pool

    @property
    def pools(self) -> list[Pool]:
        """The pools running now, in-kernel and process ones."""
        self._pools = [p for p in self._pools if not p.stopped]
        return list(self._pools)
