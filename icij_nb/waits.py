"""Waits: how a manager waits for tasks to be ready, and turns them into outcomes.

A wait on many tasks costs one future and a counter per task (see
:meth:`~icij_nb.ledger.Ledger.wait_ready`). Tasks of an earlier session that are ready
already are read from the store and returned as they are. An outcome is a task's
result, or the ``TaskFailed`` / ``TaskCancelled`` error that a blocking call raises
(or returns, with ``return_exceptions=True``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from icij_nb.errors import TaskCancelled, TaskFailed, WaitTimeout
from icij_nb.ledger import Ledger
from icij_nb.model import Task, TaskState
from icij_nb.runtime import Runtime

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Waits:
    """Waits on a ledger's tasks.

    Args:
        ledger: the live records.
        load: reads a task of any session (raises UnknownTask).
        runtime: the loop the waits run on.
    """

    def __init__(
        self,
        ledger: Ledger,
        load: Callable[[str], Awaitable[Task]],
        runtime: Runtime,
    ) -> None:
        self._ledger = ledger
        self._load = load
        self._runtime = runtime
        self._hooks: list[Callable[[], None]] = []

    def block(self, wait: Coroutine[Any, Any, T]) -> T:
        """Run a wait on the runtime loop and block until it ends (Ctrl-C stops it)."""
        try:
            return self._runtime.run(wait)
        finally:
            self._ended()

    async def awaited(self, wait: Coroutine[Any, Any, T]) -> T:
        """Await a wait from any loop."""
        try:
            return await self._runtime.wrap(wait)
        finally:
            self._ended()

    def on_end(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook()`` each time a wait ends; return a function that removes it."""
        self._hooks.append(hook)

        def remove() -> None:
            if hook in self._hooks:
                self._hooks.remove(hook)

        return remove

    def _ended(self) -> None:
        # Not from the runtime thread: hooks block on it.
        if not self._hooks or self._runtime.in_runtime_thread():
            return
        for hook in list(self._hooks):
            try:
                hook()
            except Exception:
                logger.exception("after-wait hook %r failed", hook)

    async def ready(
        self, task_ids: Sequence[str], timeout_s: float | None
    ) -> dict[str, Task]:
        """Wait until every task is ready; return the records read from the store.

        Those are tasks of an earlier session that were ready already (a new
        kernel re-attaching to them by id); the others are the ledger's own.
        """
        waiting: list[str] = []
        stored: dict[str, Task] = {}
        for task_id in task_ids:
            task = self._ledger.get(task_id)
            if task is None:
                task = await self._load(task_id)  # raises UnknownTask
                if task.state.is_ready:
                    stored[task_id] = task
                else:
                    self._ledger.track(task)
            if not task.state.is_ready:
                waiting.append(task_id)
        if not waiting:
            return stored
        ready = self._ledger.wait_ready(waiting)
        try:
            async with asyncio.timeout(timeout_s):
                await ready
        except TimeoutError:
            raise self._timeout_error(task_ids, timeout_s) from None
        finally:
            ready.cancel()
        return stored

    async def result(self, task_id: str, timeout_s: float | None) -> Any:
        """The result of a task once ready, or raise its failure."""
        stored = await self.ready([task_id], timeout_s)
        outcome = self._outcome(task_id, stored)
        if isinstance(outcome, TaskFailed | TaskCancelled):
            raise outcome
        return outcome

    async def gather(
        self, task_ids: list[str], timeout_s: float | None, return_exceptions: bool
    ) -> list[Any]:
        """The outcomes of tasks once all are ready, in order."""
        stored = await self.ready(task_ids, timeout_s)
        outcomes = [self._outcome(i, stored) for i in task_ids]
        if not return_exceptions:
            for outcome in outcomes:
                if isinstance(outcome, TaskFailed | TaskCancelled):
                    raise outcome
        return outcomes

    def _timeout_error(
        self, task_ids: Sequence[str], timeout_s: float | None
    ) -> WaitTimeout:
        pending = [
            t
            for t in (self._ledger.get(i) for i in task_ids)
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
        task = stored.get(task_id) or self._ledger.get(task_id)
        assert task is not None, "ready() tracked or stored every task it waited for"
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
