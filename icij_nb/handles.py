"""TaskHandle and TaskBatch: what ``submit`` and ``map`` return.

A handle names one task by id and reads its live state from the manager (no I/O). It
blocks with ``result()`` and awaits with ``await handle``. A batch is a list of handles
with the same two forms for all of them.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from icij_nb.model import ErrorRecord, Task, TaskState

if TYPE_CHECKING:
    from icij_nb.view import TaskView


class TaskHandle:
    """A submitted task: its live state, and ways to wait for, cancel or retry it.

    Example:
        h = tm.submit("tokenize", {"doc": "a b"})
        tokens = await h            # or h.result(timeout_s=60) to block the cell
    """

    __slots__ = ("_view", "id")

    def __init__(self, view: TaskView, task_id: str) -> None:
        self._view = view
        self.id = task_id

    def __repr__(self) -> str:
        task = self._view.peek(self.id)
        if task is None:
            return f"<TaskHandle {self.id!r} (not in this session)>"
        return (
            f"<TaskHandle {self.id!r} {task.state.value} progress={task.progress:.0%}>"
        )

    def _repr_html_(self) -> str:
        task = self._view.peek(self.id)
        if task is None:
            return f"<code>{html.escape(self.id)}</code>"
        return task_html(task)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TaskHandle)
            and other.id == self.id
            and other._view is self._view
        )

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def task(self) -> Task:
        """A snapshot of the task's record."""
        return self._view.get(self.id)

    @property
    def state(self) -> TaskState:
        """The current state."""
        return self._view.get(self.id).state

    @property
    def progress(self) -> float:
        """The last reported progress, 0.0 to 1.0."""
        return self._view.get(self.id).progress

    def done(self) -> bool:
        """True once the task is DONE, ERROR or CANCELLED."""
        return self.state.is_ready

    def result(self, *, timeout_s: float | None = None) -> Any:
        """Block until the task is ready and return its result.

        Raises:
            TaskFailed: it ended in ERROR (the error record is attached).
            TaskCancelled: it was cancelled.
            WaitTimeout: ``timeout_s`` passed first; the task goes on.
        """
        return self._view.result(self.id, timeout_s=timeout_s)

    async def result_async(self, *, timeout_s: float | None = None) -> Any:
        """Awaitable twin of :meth:`result`."""
        return await self._view.result_async(self.id, timeout_s=timeout_s)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result_async().__await__()

    def cancel(self, *, requeue: bool = False) -> None:
        """Cancel the task (a queued one never starts); see TaskManager.cancel."""
        self._view.cancel(self.id, requeue=requeue)

    def retry(self) -> TaskHandle:
        """Run an ERROR or CANCELLED task again, as a new attempt."""
        self._view.retry(self.id)
        return self

    def errors(self) -> list[ErrorRecord]:
        """One error record per failed attempt, oldest first."""
        return self._view.errors(self.id)


class TaskBatch(list[TaskHandle]):
    """Handles returned by ``map``: a list, plus ways to wait for all of them."""

    def __init__(self, view: TaskView, handles: Iterable[TaskHandle]) -> None:
        super().__init__(handles)
        self._view = view

    def __repr__(self) -> str:
        counts = self.counts()
        parts = " ".join(f"{s.value.lower()}={n}" for s, n in counts.items() if n)
        return f"<TaskBatch {len(self)} tasks {parts}>".replace("  ", " ")

    def counts(self) -> dict[TaskState, int]:
        """How many of the batch's tasks are in each state, now."""
        found = Counter(
            t.state for t in (self._view.peek(h.id) for h in self) if t is not None
        )
        return {state: found.get(state, 0) for state in TaskState}

    def results(
        self, *, timeout_s: float | None = None, return_exceptions: bool = False
    ) -> list[Any]:
        """Block until all are ready; their results in order (see gather)."""
        return self._view.gather(
            [h.id for h in self],
            timeout_s=timeout_s,
            return_exceptions=return_exceptions,
        )

    def __await__(self) -> Generator[Any, None, list[Any]]:
        return self._view.gather_async([h.id for h in self]).__await__()


def task_html(task: Task) -> str:
    """A one-row HTML summary of a task (no I/O)."""
    colour = STATE_COLOURS.get(task.state, "#888")
    name = html.escape(task.name)
    group = html.escape(task.group or "-")
    return (
        f"<span><code>{html.escape(task.id)}</code> {name} [{group}] "
        f'<b style="color:{colour}">{task.state.value}</b> '
        f"{task.progress:.0%}</span>"
    )


STATE_COLOURS = {
    TaskState.CREATED: "#888888",
    TaskState.QUEUED: "#6c757d",
    TaskState.RUNNING: "#0d6efd",
    TaskState.ERROR: "#dc3545",
    TaskState.DONE: "#198754",
    TaskState.CANCELLED: "#fd7e14",
}
