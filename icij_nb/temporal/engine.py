"""TemporalEngine: a TaskManager's tasks as workflows, started as Datashare does.

The engine owns delivery, retries and state the way Temporal does: a submit starts
one workflow per task (see :mod:`~icij_nb.temporal.contract` for id, type, input,
queue and search attributes), a :class:`~icij_nb.temporal.watch.Watch` turns what the
workflows do into icij_nb's events, and a cancel terminates the workflow with
Datashare's reason ``terminated_by_user``. Temporal retries failed activities itself,
so the engine never reports an error with attempts left, and never requeues.

With ``observe_only=True`` the engine starts nothing: it lists the workflows of the
namespace (Datashare's) every second and follows each one it has not seen, which
the board shows live.

URL: ``temporal://host:port/namespace`` (``?user=<id>`` to start tasks as a
Datashare user); see docs/temporal.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from icij_nb.brokers.base import EventBatch
from icij_nb.errors import BrokerError, BrokerUnavailable, ConfigError, InvalidArguments
from icij_nb.jsonvalues import json_problem
from icij_nb.model import (
    CancelledEvent,
    ManagerEvent,
    Task,
    TaskState,
    WorkerStatus,
)
from icij_nb.temporal.contract import (
    CANCEL_REASON,
    TemporalUrl,
    start_search_attributes,
    task_queue,
    workflow_input,
)
from icij_nb.temporal.namespace import connect_client
from icij_nb.temporal.watch import Watch

if TYPE_CHECKING:
    from temporalio.client import Client

    from icij_nb.app import App
    from icij_nb.engine import Pool, PoolOptions
    from icij_nb.runtime import Runtime

logger = logging.getLogger(__name__)

#: how often observe mode lists the namespace's workflows
LIST_INTERVAL_S: Final = 1.0


class TemporalEngine:
    """The :class:`~icij_nb.engine.Engine` of ``temporal://`` URLs.

    Args:
        app: the tasks it may start (their groups give the task queues).
        url: ``temporal://host:port/namespace[?user=<id>]``.
        observe_only: follow the namespace's workflows without starting any.
        poll_interval_s: the time between two describes of the running tasks.
    """

    kind = "temporal"
    durable = True

    def __init__(
        self,
        app: App,
        url: str | TemporalUrl,
        *,
        observe_only: bool = False,
        poll_interval_s: float = 0.25,
    ) -> None:
        self.app = app
        self.url = url if isinstance(url, TemporalUrl) else TemporalUrl.parse(url)
        self.observe_only = observe_only
        self._poll_interval_s = poll_interval_s
        self._client: Client | None = None
        self._watch: Watch | None = None
        self._inbox: list[ManagerEvent] = []
        self._seen: list[Task] = []
        self._ready = asyncio.Event()
        self._lister: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        following = len(self._watch) if self._watch is not None else 0
        mode = " observe-only" if self.observe_only else ""
        return f"<TemporalEngine {self.url}{mode} following={following}>"

    @property
    def client(self) -> Client:
        """The connected Temporal client (after :meth:`start`)."""
        if self._client is None:
            msg = "the Temporal engine is not started: await engine.start() first"
            raise ConfigError(msg)
        return self._client

    async def start(self) -> None:
        """Connect, check the namespace, and start following workflows."""
        self._ready = asyncio.Event()  # bound to the loop the engine runs on
        self._client = await connect_client(self.url)
        self._watch = Watch(
            self._client, self._emit, poll_interval_s=self._poll_interval_s
        )
        self._watch.start()
        if self.observe_only:
            self._lister = asyncio.create_task(
                self._list_forever(), name="temporal-list"
            )
        else:
            await self._adopt_running()

    async def _adopt_running(self) -> None:
        # Tasks a dead kernel started go on in Temporal: follow the running
        # workflows of this app's task types, so their outcome reaches the store
        # (the manager drops events of tasks it does not know).
        names = set(self.app.task_names)
        query = 'ExecutionStatus="Running"'
        async for execution in self.client.list_workflows(query):
            if execution.workflow_type in names:
                self._follow(
                    execution.id, run_id=execution.run_id, queue=execution.task_queue
                )

    def adopt(self, tasks: Sequence[Task]) -> None:
        """Follow tasks started earlier (by a manager of another kernel)."""
        for task in tasks:
            self._follow(task.id, run_id=None, queue=task_queue(task.group))

    async def close(self) -> None:
        """Stop following workflows; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._lister is not None:
            self._lister.cancel()
            await asyncio.gather(self._lister, return_exceptions=True)
        if self._watch is not None:
            await self._watch.close()
        self._ready.set()

    def _emit(self, event: ManagerEvent) -> None:
        self._inbox.append(event)
        self._ready.set()

    # -- driving ---------------------------------------------------------------

    async def submit(self, tasks: Sequence[Task]) -> None:
        """Start one workflow per task, in order, as Datashare does.

        Raises:
            InvalidArguments: args that JSON cannot carry (nothing started).
            BrokerError: a workflow with the task's id exists already (Temporal
                never reuses one), or the server refused; ``not_queued`` names
                the tasks not started.
        """
        self._refuse_if_observing()
        for task in tasks:
            problem = json_problem(task.args, "the args")
            if problem:
                msg = f"task {task.id} cannot start: {problem}"
                raise InvalidArguments(msg)
        for index, task in enumerate(tasks):
            try:
                await self._start_workflow(task)
            except Exception as exc:
                not_queued = tuple(t.id for t in tasks[index:])
                raise self._start_error(task, exc, not_queued) from exc

    async def _start_workflow(self, task: Task) -> None:
        from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

        queue = task_queue(task.group)
        handle = await self.client.start_workflow(
            task.name,
            workflow_input(task.args, self.url.user_id),
            id=task.id,
            task_queue=queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=start_search_attributes(self.url.user_id),
        )
        self._follow(task.id, run_id=handle.first_execution_run_id, queue=queue)

    def _follow(self, task_id: str, *, run_id: str | None, queue: str) -> None:
        if self._watch is None:
            msg = "the Temporal engine is not started: await engine.start() first"
            raise ConfigError(msg)
        self._watch.follow(task_id, run_id=run_id, queue=queue)

    def _start_error(
        self, task: Task, exc: Exception, not_queued: tuple[str, ...]
    ) -> BrokerError:
        from temporalio.exceptions import WorkflowAlreadyStartedError
        from temporalio.service import RPCError, RPCStatusCode

        if isinstance(exc, WorkflowAlreadyStartedError):
            msg = (
                f"a workflow with id {task.id!r} already exists in namespace "
                f"{self.url.namespace!r}: Temporal never reuses a task id "
                "(REJECT_DUPLICATE, as Datashare starts tasks); submit with another id"
            )
            return BrokerError(msg, not_queued=not_queued)
        if isinstance(exc, RPCError) and exc.status is RPCStatusCode.UNAVAILABLE:
            msg = f"Temporal at {self.url.address} is unavailable: {exc}"
            return BrokerUnavailable(msg, not_queued=not_queued)
        msg = f"Temporal refused to start task {task.id!r}: {exc}"
        return BrokerError(msg, not_queued=not_queued)

    async def requeue(self, tasks: Sequence[Task]) -> None:
        """Temporal retries by itself and never reuses a workflow id: refused.

        Raises:
            BrokerError: always, naming the tasks; submit them again under new ids.
        """
        ids = tuple(t.id for t in tasks)
        msg = (
            f"Temporal cannot run tasks {list(ids)!r} again under the same id "
            "(their workflows exist; Temporal retries failed attempts itself): "
            "submit new tasks with the same args instead"
        )
        raise BrokerError(msg, not_queued=ids)

    async def cancel(self, task: Task, *, requeue: bool) -> list[ManagerEvent]:
        """Terminate the task's workflow with reason ``terminated_by_user``.

        Returns the CancelledEvent at once when the workflow was running; a workflow
        that had closed already keeps its outcome (the watch reports it).
        """
        from temporalio.client import WorkflowExecutionStatus
        from temporalio.service import RPCError, RPCStatusCode

        self._refuse_if_observing()
        if requeue:
            msg = (
                f"Temporal cannot put task {task.id!r} back in its queue: a "
                "terminated workflow never runs again. Cancel it without requeue."
            )
            raise BrokerError(msg)
        handle = self.client.get_workflow_handle(task.id)
        try:
            description = await handle.describe()
            if description.status is not WorkflowExecutionStatus.RUNNING:
                return []
            await handle.terminate(reason=CANCEL_REASON)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return []
            msg = f"Temporal refused to terminate task {task.id!r}: {exc}"
            raise BrokerError(msg) from exc
        if self._watch is not None:
            self._watch.settled(task.id)
        return [CancelledEvent(task.id, requeue=False)]

    async def shutdown_workers(self) -> None:
        """Temporal has no broadcast to workers: stop pools where they run."""
        logger.info("Temporal workers stop with their pools, not on a broadcast")

    def _refuse_if_observing(self) -> None:
        if self.observe_only:
            msg = (
                "this engine only observes the namespace "
                f"{self.url.namespace!r}; connect without observe_only to drive tasks"
            )
            raise ConfigError(msg)

    def waiting_reason(self, task_id: str) -> str | None:
        """Why a task has not started yet (None once started, or if unknown)."""
        return self._watch.waiting_reason(task_id) if self._watch else None

    # -- events ----------------------------------------------------------------

    async def events(self) -> AsyncIterator[EventBatch]:
        """What the workflows did, in batches (nothing to settle: Temporal keeps it)."""
        while not self._closed:
            await self._ready.wait()
            self._ready.clear()
            events, self._inbox = self._inbox, []
            seen, self._seen = self._seen, []
            if events or seen:
                yield EventBatch(events, seen=seen)

    async def heartbeats(self) -> AsyncIterator[list[WorkerStatus]]:
        """Temporal's pollers are not workers with tasks: nothing is reported."""
        await asyncio.Event().wait()
        yield []  # pragma: no cover - never reached

    def pool(self, app: App, options: PoolOptions, *, runtime: Runtime) -> Pool:
        """An unstarted pool of Temporal workers for ``options.group``."""
        from icij_nb.temporal.pool import TemporalPool

        return TemporalPool(app, self.url, options, runtime=runtime)

    # -- observing ---------------------------------------------------------------

    async def _list_forever(self) -> None:
        since: datetime | None = None
        while True:
            try:
                since = await self._list_new(since)
            except Exception as exc:
                logger.info("listing workflows of %s failed: %s", self.url, exc)
            await asyncio.sleep(LIST_INTERVAL_S)

    async def _list_new(self, since: datetime | None) -> datetime | None:
        query = None
        if since is not None:  # a margin: visibility may record starts late
            query = f'StartTime >= "{(since - timedelta(seconds=30)).isoformat()}"'
        newest = since
        async for execution in self.client.list_workflows(query):
            if self._watch is None or execution.id in self._watch:
                continue
            newest = max(newest or execution.start_time, execution.start_time)
            self._seen.append(await self._observed_task(execution))
            self._follow(
                execution.id, run_id=execution.run_id, queue=execution.task_queue
            )
        if self._seen:
            self._ready.set()
        return newest

    async def _observed_task(self, execution: Any) -> Task:
        args = await self._first_input(execution.id, execution.run_id)
        return Task(
            id=execution.id,
            name=execution.workflow_type,
            group=execution.task_queue,
            args=args,
            state=TaskState.QUEUED,
            created_at=execution.start_time,
        )

    async def _first_input(self, workflow_id: str, run_id: str) -> dict[str, Any]:
        handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
        async for event in handle.fetch_history_events(page_size=1):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            if not payloads:
                return {}
            values = await self.client.data_converter.decode(list(payloads))
            first = values[0] if values else None
            return first if isinstance(first, dict) else {"input": first}
        return {}
