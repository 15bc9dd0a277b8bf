"""Following workflows and turning what they do into icij_nb's events.

A :class:`Watch` follows each workflow it is given, two ways at once:

- one long poll per workflow for its close event (``handle.result()``, what
  Datashare's completion listener does): a result becomes a ``ResultEvent``, a
  failure an ``ErrorEvent`` (``attempts_left=0``: Temporal retried already), a
  TERMINATED or CANCELED workflow a ``CancelledEvent``. A server that goes away
  only delays this: the poll is made again until the server answers.
- a describe loop, a few workflows per tick, oldest news first: the first time an
  activity of the workflow is seen started, a ``ProgressEvent`` makes the task
  RUNNING; later ticks report ``Progress / MaxProgress`` as progress. While nothing
  started, :meth:`Watch.waiting_reason` says why (no worker polls the queue, or the
  workflow task keeps failing, e.g. no worker registers the workflow type).

Temporal has no QUEUED status (a started workflow is RUNNING at once): icij_nb shows
QUEUED until a worker took the task, which is what the board's counts mean on every
backend. A task that finishes before any tick saw it started gets its RUNNING event
just before its outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from icij_nb.model import (
    CancelledEvent,
    ErrorEvent,
    ManagerEvent,
    ProgressEvent,
    ResultEvent,
)
from icij_nb.temporal.contract import error_record, progress_of

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowExecutionDescription

logger = logging.getLogger(__name__)

#: how many workflows one describe tick looks at, at most
DESCRIBES_PER_TICK: Final = 8
#: how many close-event long polls run at once (more wait their turn)
MAX_LONG_POLLS: Final = 512
#: PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
_STARTED: Final = 2
#: how long the reason a task waits is trusted before asking again
_QUEUE_INFO_S: Final = 2.0


@dataclass(slots=True)
class _Followed:
    task_id: str
    run_id: str | None
    queue: str
    started: bool = False
    closed: bool = False
    progress: float | None = None
    worker: str | None = None
    attempt: int = 1
    described_at: float = 0.0
    waiting: str | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Watch:
    """Follows workflows of one namespace and emits their events.

    Args:
        client: a connected Temporal client.
        emit: called with each event, on the loop, in order per task.
        poll_interval_s: the time between two describe ticks.
    """

    def __init__(
        self,
        client: Client,
        emit: Callable[[ManagerEvent], None],
        *,
        poll_interval_s: float = 0.25,
    ) -> None:
        self._client = client
        self._emit = emit
        self._interval = poll_interval_s
        self._followed: dict[str, _Followed] = {}
        self._polls = asyncio.Semaphore(MAX_LONG_POLLS)
        self._ticker: asyncio.Task[None] | None = None
        self._queue_info: dict[str, tuple[float, bool]] = {}

    def __len__(self) -> int:
        return sum(1 for f in self._followed.values() if not f.closed)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._followed

    def start(self) -> None:
        """Start the describe loop."""
        self._ticker = asyncio.create_task(self._tick_forever(), name="temporal-watch")

    async def close(self) -> None:
        """Stop following everything."""
        tasks = [f.watcher for f in self._followed.values() if f.watcher is not None]
        if self._ticker is not None:
            tasks.append(self._ticker)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def follow(self, task_id: str, *, run_id: str | None, queue: str) -> None:
        """Follow a workflow until it closes."""
        if task_id in self._followed:
            return
        followed = _Followed(task_id, run_id, queue)
        self._followed[task_id] = followed
        followed.watcher = asyncio.create_task(
            self._await_close(followed), name=f"temporal-result-{task_id}"
        )

    def settled(self, task_id: str) -> None:
        """The task ended here (a cancel the engine settled): emit nothing more."""
        followed = self._followed.get(task_id)
        if followed is not None:
            followed.closed = True

    def is_started(self, task_id: str) -> bool:
        """True once an activity of the task was seen started (or it closed)."""
        followed = self._followed.get(task_id)
        return followed is not None and (followed.started or followed.closed)

    def waiting_reason(self, task_id: str) -> str | None:
        """Why a followed task has not started yet, when the watch can tell."""
        followed = self._followed.get(task_id)
        if followed is None or followed.started or followed.closed:
            return None
        return followed.waiting

    # -- close events ------------------------------------------------------------

    async def _await_close(self, followed: _Followed) -> None:
        from temporalio.service import RPCError

        handle = self._client.get_workflow_handle(
            followed.task_id, run_id=followed.run_id
        )
        pause = 0.2
        while True:
            try:
                async with self._polls:
                    value = await handle.result(follow_runs=False)
            except RPCError as exc:  # the server is away: ask again when it is back
                logger.info("waiting for %s: %s", followed.task_id, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            except Exception as exc:
                self._close(followed, exc)
                return
            self._close(followed, None, value=value)
            return

    def _close(
        self, followed: _Followed, exc: BaseException | None, *, value: Any = None
    ) -> None:
        from temporalio.client import WorkflowFailureError
        from temporalio.exceptions import CancelledError, TerminatedError

        if followed.closed:
            return
        followed.closed = True
        task_id, worker = followed.task_id, followed.worker
        if exc is None:
            self._running(followed)
            self._emit(ResultEvent(task_id, value, worker_id=worker))
            return
        cause = exc.cause if isinstance(exc, WorkflowFailureError) else exc
        if isinstance(cause, TerminatedError | CancelledError):
            self._emit(CancelledEvent(task_id, requeue=False, worker_id=worker))
            return
        self._running(followed)
        record = error_record(cause)
        self._emit(ErrorEvent(task_id, record, attempts_left=0, worker_id=worker))

    def _running(self, followed: _Followed) -> None:
        if not followed.started:
            followed.started = True
            self._emit(ProgressEvent(followed.task_id, 0.0, worker_id=followed.worker))

    # -- describe ticks ----------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._tick()
            except Exception as exc:
                logger.info("describing workflows failed: %s", exc)

    async def _tick(self) -> None:
        open_ = [f for f in self._followed.values() if not f.closed]
        if not open_:
            self._forget_closed()
            return
        waiting = [f for f in open_ if not f.started]
        running = sorted((f for f in open_ if f.started), key=lambda f: f.described_at)
        half = DESCRIBES_PER_TICK // 2
        picked = (
            waiting[:half] + running[: DESCRIBES_PER_TICK - min(len(waiting), half)]
        )
        picked += waiting[half : half + DESCRIBES_PER_TICK - len(picked)]
        await asyncio.gather(*(self._describe(f) for f in picked))

    def _forget_closed(self) -> None:
        if len(self._followed) > 10_000:
            for task_id in [t for t, f in self._followed.items() if f.closed]:
                del self._followed[task_id]

    async def _describe(self, followed: _Followed) -> None:
        from temporalio.service import RPCError

        handle = self._client.get_workflow_handle(
            followed.task_id, run_id=followed.run_id
        )
        try:
            description = await handle.describe()
        except RPCError as exc:
            followed.waiting = f"Temporal does not answer: {exc}"
            return
        followed.described_at = time.monotonic()
        if followed.closed:
            return
        self._read(followed, description)
        if not followed.started:
            followed.waiting = await self._why_waiting(followed, description)

    def _read(
        self, followed: _Followed, description: WorkflowExecutionDescription
    ) -> None:
        from temporalio.api.enums.v1 import PendingActivityState

        activities = description.raw_description.pending_activities
        started = [
            a
            for a in activities
            if a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            or a.attempt > 1  # scheduled again: an attempt ran already
        ]
        if started:
            self._seen_attempt(followed, started[-1])
        progress = progress_of(description.typed_search_attributes)
        if not followed.started and not started and not progress:
            return
        self._running(followed)
        if progress is not None and progress != followed.progress:
            followed.progress = progress
            if progress > 0:
                self._emit(
                    ProgressEvent(followed.task_id, progress, worker_id=followed.worker)
                )

    def _seen_attempt(self, followed: _Followed, pending: Any) -> None:
        # A new attempt after a heartbeat timeout: the worker died holding the
        # task. Reported as a restart (progress 0.0 from another worker), which the
        # ledger records as a lost attempt.
        identity = pending.last_worker_identity or None
        if identity is None or pending.state != _STARTED:
            return
        lost = (
            followed.started
            and pending.attempt > followed.attempt
            and pending.last_failure.HasField("timeout_failure_info")
            and identity != followed.worker
        )
        followed.attempt = max(followed.attempt, pending.attempt)
        if lost:
            followed.progress = 0.0
            self._emit(ProgressEvent(followed.task_id, 0.0, worker_id=identity))
        followed.worker = identity

    async def _why_waiting(
        self, followed: _Followed, description: WorkflowExecutionDescription
    ) -> str:
        pending = description.raw_description.pending_workflow_task
        if description.raw_description.HasField("pending_workflow_task") and (
            pending.attempt > 1
        ):
            return (
                f"its workflow task failed {pending.attempt - 1} time(s) on task queue "
                f"{followed.queue!r}: no worker there registers workflow type "
                f"{description.workflow_type!r}, or its workflow code fails"
            )
        if not await self._queue_polled(followed.queue):
            return f"no worker polls task queue {followed.queue!r}"
        return "waiting for a free worker"

    async def _queue_polled(self, queue: str) -> bool:
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        now = time.monotonic()
        known = self._queue_info.get(queue)
        if known is not None and now - known[0] < _QUEUE_INFO_S:
            return known[1]
        response = await self._client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self._client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        polled = len(response.pollers) > 0
        self._queue_info[queue] = (now, polled)
        return polled
