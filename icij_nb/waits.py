"""Waits: how a manager waits for tasks to be ready, and turns them into outcomes.

A wait on many tasks costs one future and a counter per task (see
:meth:`~icij_nb.ledger.Ledger.wait_ready`). Tasks of an earlier session that are ready
already are read from the store and returned as they are. An outcome is a task's
result, or the ``TaskFailed`` / ``TaskCancelled`` error that a blocking call raises
(or returns, with ``return_exceptions=True``).

Every blocking wait goes through :meth:`Waits.block`, which while it waits:

- handles the kernel's widget messages (:mod:`icij_nb.ui_poll`), so the board answers
  clicks while a cell blocks; other messages keep their place;
- shows one text progress line per group (:mod:`icij_nb.text_progress`) when the
  wait lasts, unless ``text_progress`` is off;
- with ``show_output``, prints the output of the tasks it waits for under the
  waiting cell as it arrives, each line prefixed with the task's name and id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from icij_nb import ui_poll
from icij_nb.capture import original_stream
from icij_nb.errors import TaskCancelled, TaskFailed, WaitTimeout
from icij_nb.ledger import Ledger
from icij_nb.model import Task, TaskState
from icij_nb.output import OutputChunk
from icij_nb.output_log import OutputLog
from icij_nb.runtime import Runtime
from icij_nb.text_progress import Counts, TextProgress

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Waits:
    """Waits on a ledger's tasks.

    Args:
        ledger: the live records.
        load: reads a task of any session (raises UnknownTask).
        runtime: the loop the waits run on.
        outputs: the tasks' output, for ``show_output``.
    """

    def __init__(
        self,
        ledger: Ledger,
        load: Callable[[str], Awaitable[Task]],
        runtime: Runtime,
        outputs: OutputLog,
    ) -> None:
        self._ledger = ledger
        self._load = load
        self._runtime = runtime
        self._outputs = outputs
        self._hooks: list[Callable[[], None]] = []
        #: print the output of the tasks a blocking wait waits for, under its cell
        self.show_output = False
        #: show text progress lines during long blocking waits
        self.text_progress = True

    def block(
        self,
        wait: Coroutine[Any, Any, T],
        task_ids: Sequence[str] = (),
        *,
        show_output: bool | None = None,
    ) -> T:
        """Run a wait on the runtime loop and block until it ends (Ctrl-C stops it).

        Args:
            wait: the coroutine that waits.
            task_ids: the tasks it waits for (progress, live output).
            show_output: print their output as it comes (None: ``show_output``).
        """
        poll = ui_poll.current()
        progress = None
        if self.text_progress and task_ids:
            progress = TextProgress.for_here(lambda: self._counts(task_ids))
        live = show_output if show_output is not None else self.show_output
        unsubscribe = self._follow(task_ids) if live and task_ids else None

        def idle() -> None:
            if poll is not None:
                poll.poll()
            if progress is not None:
                progress.tick()

        try:
            if poll is None and progress is None:
                return self._runtime.run(wait)
            return self._runtime.run(wait, idle=idle)
        finally:
            if poll is not None:
                poll.release()
            if unsubscribe is not None:
                unsubscribe()
            if progress is not None:
                progress.close()
            self._ended()

    def _counts(self, task_ids: Sequence[str]) -> Counts:
        counts: dict[str | None, list[int]] = {}
        for task_id in task_ids:
            task = self._ledger.get(task_id)
            group = task.group if task is not None else None
            entry = counts.setdefault(group, [0, 0])
            entry[1] += 1
            if task is None or task.state.is_ready:
                entry[0] += 1
        return {g: (done, total) for g, (done, total) in counts.items()}

    def _follow(self, task_ids: Sequence[str]) -> Callable[[], None]:
        """Print the output of ``task_ids`` under the waiting cell as it comes."""
        watched = set(task_ids)
        stream = original_stream("stdout")
        parent = getattr(stream, "parent_header", None)  # the waiting cell

        def show(chunk: OutputChunk) -> None:
            if chunk.task_id not in watched or stream is None or not chunk.lines:
                return
            task = self._ledger.get(chunk.task_id)
            name = f"{task.name} {task.id}" if task is not None else chunk.task_id
            text = "".join(f"[{name}] {line}\n" for line in chunk.lines)
            _write_in_cell(stream, parent, text)

        return self._outputs.subscribe(show)

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


def _write_in_cell(stream: Any, parent: Any, text: str) -> None:
    """Write from the runtime thread into the cell whose parent header is ``parent``.

    ipykernel 7 routes a thread's output by the parent it was given
    (``set_thread_parent``); ipykernel 6 by its global parent, which during a
    blocking wait is the waiting cell's.
    """
    set_parent = getattr(stream, "set_thread_parent", None)
    if set_parent is None or not parent:
        stream.write(text)
        stream.flush()
        return
    token = set_parent(parent)
    try:
        stream.write(text)
        stream.flush()
    finally:
        stream.reset_thread_parent(token)
