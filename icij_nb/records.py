"""TaskRecords: a manager's live task records, and who waits on or listens to them.

All on the runtime loop: the tasks of this session by id, how many are in each
state, the futures of waits (resolved when a task is ready) and the subscribers that
hear of every change (the board). The store holds the durable copy; these are what
handles and reprs read without I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from icij_nb.model import Task, TaskState

logger = logging.getLogger(__name__)

Listener = Callable[[list[Task]], None]


class _Countdown:
    """A wait on several tasks: how many are not ready yet, and its future."""

    __slots__ = ("future", "left")

    def __init__(self, left: int, future: asyncio.Future[None]) -> None:
        self.left, self.future = left, future


class TaskRecords:
    """Live records of tasks by id, with state counts, waiters and listeners."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._counts: Counter[TaskState] = Counter()
        self._waiters: dict[str, list[_Countdown]] = {}
        self._listeners: list[Listener] = []

    def __len__(self) -> int:
        return len(self.tasks)

    def get(self, task_id: str) -> Task | None:
        """The live record of a task, or None."""
        return self.tasks.get(task_id)

    @property
    def counts(self) -> Counter[TaskState]:
        """How many tracked tasks are in each state."""
        return self._counts

    def track(self, task: Task) -> None:
        """Keep ``task`` as the live record of its id."""
        old = self.tasks.get(task.id)
        if old is not None:
            self._counts[old.state] -= 1
        self.tasks[task.id] = task
        self._counts[task.state] += 1

    def untrack(self, task_id: str) -> None:
        """Forget a task (one that was never queued)."""
        task = self.tasks.pop(task_id, None)
        if task is not None:
            self._counts[task.state] -= 1

    def moved(self, task: Task, before: TaskState) -> None:
        """Count a tracked task's change of state from ``before``."""
        if before is not task.state:
            self._counts[before] -= 1
            self._counts[task.state] += 1

    def set_state(self, task: Task, state: TaskState) -> None:
        """Set a tracked task's state, keeping the counts right."""
        before, task.state = task.state, state
        self.moved(task, before)

    # -- waiters ----------------------------------------------------------------

    def wait_ready(self, task_ids: list[str]) -> asyncio.Future[None]:
        """A future resolved once every task of ``task_ids`` is next ready.

        One future for the whole wait, however many tasks: a gather of 100,000
        tasks costs a counter per task, not a future.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        countdown = _Countdown(len(task_ids), future)
        for task_id in task_ids:
            self._waiters.setdefault(task_id, []).append(countdown)
        if not task_ids:
            future.set_result(None)
        return future

    def resolve(self, task_id: str) -> None:
        """Count a task that became ready in every wait on it."""
        for countdown in self._waiters.pop(task_id, ()):
            countdown.left -= 1
            if countdown.left == 0 and not countdown.future.done():
                countdown.future.set_result(None)

    def cancel_waiters(self) -> None:
        """Cancel every wait (the manager closes)."""
        for countdowns in self._waiters.values():
            for countdown in countdowns:
                countdown.future.cancel()
        self._waiters.clear()

    # -- listeners --------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; return a function that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def notify(self, tasks: list[Task]) -> None:
        """Tell every listener which tasks changed (as snapshots)."""
        if not self._listeners or not tasks:
            return
        snapshots = [t.snapshot() for t in tasks]
        for listener in list(self._listeners):
            try:
                listener(snapshots)
            except Exception:
                logger.exception("task listener %r failed", listener)
