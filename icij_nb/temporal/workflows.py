"""icij_nb tasks as Temporal workflows and activities, the way Datashare reads them.

Each task of a group gets a workflow type named after the task (what Datashare
starts) that runs one activity of the same name on the same task queue:

- the workflow takes one dict (the args; ``user`` and other keys Datashare adds are
  dropped unless the function takes them), and returns the activity's value as
  ``json/plain`` (None allowed);
- the activity calls the function (async ones on the loop, sync ones in the pool's
  threads), under the task's timeout, heartbeating every second so that a
  terminated workflow stops it (Temporal cancels it at its next heartbeat);
- ``progress(x)`` sends datashare-python's ``update_progress`` signal
  (``{run_id, activity_id, progress, weight}``, coalesced); the workflow upserts
  ``Progress`` and ``MaxProgress`` and ends with ``Progress = MaxProgress``;
- options map to Temporal's (docs/temporal.md): ``timeout_s`` is enforced in the
  activity (TaskTimeout) with a start-to-close timeout a little longer as a safety
  net; ``max_retries`` and ``recover_from`` decide whether a failed attempt raises a
  retryable or a non-retryable ``ApplicationError(type=<exception class>)``;
  a killed worker's attempt times out on its heartbeat and is retried, up to
  :data:`CRASH_ALLOWANCE` more times than the task's own attempts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any, Final

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from icij_nb.app import App, TaskSpec
from icij_nb.calls import call_task, keyword_args
from icij_nb.errors import InvalidArguments, InvalidProgress
from icij_nb.jsonvalues import json_problem
from icij_nb.temporal.contract import PROGRESS_SIGNAL, progress_keys

logger = logging.getLogger(__name__)

#: a dead worker is noticed after this long without a heartbeat
HEARTBEAT_TIMEOUT: Final = timedelta(seconds=5)
#: how often a running activity heartbeats (the SDK sends fewer to the server)
HEARTBEAT_EVERY_S: Final = 1.0
#: the start-to-close timeout of tasks without a timeout of their own
NO_TIMEOUT: Final = timedelta(days=30)
#: attempts Temporal may add for attempts lost with their worker (heartbeat timeouts)
CRASH_ALLOWANCE: Final = 3


def retry_policy(spec: TaskSpec) -> RetryPolicy:
    """How Temporal retries a task's activity."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=0.2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=spec.max_attempts + CRASH_ALLOWANCE,
    )


def start_to_close(spec: TaskSpec) -> timedelta:
    """The activity's start-to-close timeout: the task's, plus a margin."""
    timeout_s = spec.effective_timeout_s
    return NO_TIMEOUT if timeout_s is None else timedelta(seconds=timeout_s + 10)


class TaskWorkflow:
    """What every task's workflow does; :func:`workflow_class` names one per task."""

    #: the task (activity) name, its timeout and retry policy, set per subclass
    task_name: str = ""
    timeout: timedelta = NO_TIMEOUT
    retry: RetryPolicy = RetryPolicy()

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str], tuple[float, float]] = {}

    async def run_task(self, args: dict[str, Any]) -> Any:
        value = await workflow.execute_activity(
            self.task_name,
            args,
            start_to_close_timeout=self.timeout,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=self.retry,
        )
        total = sum(w for _, w in self._parts.values()) or 1.0
        self._upsert(total, total)
        return value

    @workflow.signal(name=PROGRESS_SIGNAL)
    def update_progress(self, signal: dict[str, Any]) -> None:
        """datashare-python's progress signal: keep each activity's share."""
        key = (str(signal.get("run_id")), str(signal.get("activity_id")))
        weight = float(signal.get("weight") or 1.0)
        self._parts[key] = (float(signal.get("progress") or 0.0) * weight, weight)
        self._upsert(
            sum(p for p, _ in self._parts.values()),
            sum(w for _, w in self._parts.values()),
        )

    @staticmethod
    def _upsert(progress: float, maximum: float) -> None:
        progress_key, max_key = progress_keys()
        workflow.upsert_search_attributes(
            [progress_key.value_set(progress), max_key.value_set(maximum)]
        )


def workflow_class(spec: TaskSpec) -> type:
    """The workflow type Datashare starts for ``spec``: one activity, progress kept."""

    async def run(self: TaskWorkflow, args: dict[str, Any]) -> Any:
        return await self.run_task(args)

    # The SDK wants a run method defined on the class itself, and no local class.
    class_name = f"TaskWorkflow_{spec.name}"
    run.__qualname__ = f"{class_name}.run"
    cls = type(
        class_name,
        (TaskWorkflow,),
        {
            "run": workflow.run(run),
            "task_name": spec.name,
            "timeout": start_to_close(spec),
            "retry": retry_policy(spec),
        },
    )
    return workflow.defn(name=spec.name, sandboxed=False)(cls)


class TaskRunner:
    """Runs an app's task functions as activities, for one pool.

    Args:
        app: where task functions are looked up.
        executor: runs sync task functions.
        progress_interval_s: the least time between two progress signals of a task.
    """

    def __init__(
        self, app: App, *, executor: Executor, progress_interval_s: float = 0.5
    ) -> None:
        self.app = app
        self._executor = executor
        self._interval = max(progress_interval_s, 0.2)
        self.running: set[str] = set()
        self.done = 0
        self.failed = 0

    def workflows(self, specs: list[TaskSpec]) -> list[type]:
        """The workflow types of ``specs``."""
        return [workflow_class(spec) for spec in specs]

    def activities(self, specs: list[TaskSpec]) -> list[Callable[..., Any]]:
        """One activity per task, named after it."""
        return [self._activity(spec) for spec in specs]

    def _activity(self, spec: TaskSpec) -> Callable[..., Any]:
        async def run_task(args: dict[str, Any]) -> Any:
            return await self.run(spec, args)

        run_task.__name__ = run_task.__qualname__ = f"run_task[{spec.name}]"
        return activity.defn(name=spec.name)(run_task)

    async def run(self, spec: TaskSpec, args: dict[str, Any]) -> Any:
        """One attempt of a task, inside its activity."""
        info = activity.info()
        self.running.add(info.activity_id)
        beat = asyncio.create_task(_heartbeat_forever())
        progress = _ProgressSignal(self._interval) if spec.takes_progress else None
        try:
            value = await self._call(spec, args, progress)
        except asyncio.CancelledError:
            if activity.is_worker_shutdown():  # back to Temporal, for another worker
                msg = f"worker {info.task_queue!r} stopped while running the task"
                raise ApplicationError(msg, type="WorkerLost") from None
            raise
        except Exception as exc:
            self.failed += 1
            raise _failure(spec, exc, info.attempt) from exc
        finally:
            beat.cancel()
            if progress is not None:
                progress.close()
            self.running.discard(info.activity_id)
        problem = json_problem(value, "the result")
        if problem:
            self.failed += 1
            msg = f"task {spec.name!r} returned a value JSON cannot carry: {problem}"
            raise ApplicationError(msg, type="InvalidResult", non_retryable=True)
        self.done += 1
        return value

    async def _call(
        self, spec: TaskSpec, args: dict[str, Any], progress: _ProgressSignal | None
    ) -> Any:
        kwargs = keyword_args(spec, args)
        spec.check_call(kwargs)
        return await call_task(
            spec,
            kwargs,
            progress=progress,
            executor=self._executor,
            what=f"task {spec.name!r}",
        )


def _failure(spec: TaskSpec, exc: Exception, attempt: int) -> ApplicationError:
    retryable = (
        isinstance(exc, spec.recover_from)
        and not isinstance(exc, InvalidArguments)
        and attempt < spec.max_attempts
    )
    return ApplicationError(
        str(exc) or type(exc).__name__,
        type=type(exc).__name__,
        non_retryable=not retryable,
    )


async def _heartbeat_forever() -> None:
    # Not at once: a short task then ends without a heartbeat's round trip.
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY_S)
        activity.heartbeat()


class _ProgressSignal:
    """The ``progress`` callback of a task: coalesced ``update_progress`` signals."""

    def __init__(self, interval_s: float) -> None:
        info = activity.info()
        self._handle = activity.client().get_workflow_handle(
            info.workflow_id or "", run_id=info.workflow_run_id
        )
        self._ids = {"run_id": info.workflow_run_id, "activity_id": info.activity_id}
        self._loop = asyncio.get_running_loop()
        self._interval = interval_s
        self._latest: float | None = None
        self._sender: asyncio.Task[None] | None = None

    @staticmethod
    def check(value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0.0 <= value <= 1.0
        ):
            msg = f"progress must be a number in [0, 1], got {value!r}"
            raise InvalidProgress(msg)
        return float(value)

    def update(self, value: float) -> None:
        self._latest = value
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        while self._latest is not None:
            value, self._latest = self._latest, None
            signal = {**self._ids, "progress": value, "weight": 1.0}
            try:
                await self._handle.signal(PROGRESS_SIGNAL, signal)
            except Exception as exc:  # progress is best effort; the task goes on
                logger.info("progress of %s not sent: %s", self._ids, exc)
            await asyncio.sleep(self._interval)

    async def report_async(self, value: float) -> None:
        self.update(self.check(value))

    def report_from_thread(self, value: float) -> None:
        self._loop.call_soon_threadsafe(self.update, self.check(value))

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
