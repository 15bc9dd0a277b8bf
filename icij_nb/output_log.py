"""OutputLog: the output of a manager's tasks, kept per attempt, written to the store.

The ledger's sibling for what is not state. The event consumer hands it the
:class:`~icij_nb.output.OutputChunk` s of each batch before the batch's events; it
adds them to the attempt they belong to (a bounded tail,
:class:`~icij_nb.output.AttemptOutput`), tells the store to write that attempt, and
tells its listeners (live output under a waiting cell, the board's detail view).

It holds at most :data:`MEMORY_CHARS` characters of output in memory: past that the
attempts of the tasks heard from longest ago are dropped from memory (the store has
them). Reads come from memory, else from the store. A task that is ready may still
have output on its way (on RabbitMQ output travels on an exchange of its own, so it
can arrive after the result): a read waits up to :data:`FINAL_WAIT_S` for the last
chunk of its latest attempt. All on the runtime loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

from icij_nb.output import AttemptOutput, OutputChunk
from icij_nb.store import Store

logger = logging.getLogger(__name__)

#: characters of output held in memory for all tasks together (the rest: store)
MEMORY_CHARS: Final = 16 * 1024 * 1024
#: how long a read of a ready task waits for the final chunk of its last attempt
FINAL_WAIT_S: Final = 1.0

OutputListener = Callable[[OutputChunk], None]


class OutputLog:
    """Every attempt's output of a manager's tasks.

    Args:
        store: where each attempt's tail is written.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tasks: OrderedDict[str, dict[str, AttemptOutput]] = OrderedDict()
        self._chars = 0
        self._listeners: list[OutputListener] = []
        self._final: dict[str, asyncio.Event] = {}
        self._gave_up: set[str] = set()

    def take(self, chunks: Iterable[OutputChunk]) -> None:
        """Add chunks to their attempts, write them, tell the listeners."""
        for chunk in chunks:
            attempts = self._tasks.get(chunk.task_id)
            if attempts is None:
                attempts = self._tasks[chunk.task_id] = {}
            else:
                self._tasks.move_to_end(chunk.task_id)
            attempt = attempts.get(chunk.run)
            if attempt is None:
                attempt = attempts[chunk.run] = AttemptOutput.of(chunk)
            before = attempt.chars
            attempt.add(chunk)
            self._chars += attempt.chars - before
            self._store.put_output(attempt)
            if chunk.final and (event := self._final.pop(chunk.run, None)):
                event.set()
            for listener in list(self._listeners):
                try:
                    listener(chunk)
                except Exception:
                    logger.exception("output listener %r failed", listener)
        self._trim()

    def _trim(self) -> None:
        while self._chars > MEMORY_CHARS and len(self._tasks) > 1:
            _, attempts = self._tasks.popitem(last=False)
            self._chars -= sum(a.chars for a in attempts.values())

    def subscribe(self, listener: OutputListener) -> Callable[[], None]:
        """Call ``listener(chunk)`` for each chunk taken; return an unsubscribe."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def attempts(self, task_id: str, *, ready: bool) -> list[AttemptOutput]:
        """Copies of a task's attempts' output, oldest first.

        Args:
            task_id: the task.
            ready: the task is DONE, ERROR or CANCELLED: wait a little for the
                last chunk of its latest attempt if it has not come yet.
        """
        held = self._tasks.get(task_id)
        found = (
            sorted(held.values(), key=lambda a: a.started_at)
            if held is not None
            else await self._store.load_output(task_id)
        )
        if (
            ready
            and found
            and not found[-1].final
            and found[-1].run not in self._gave_up
        ):
            await self._wait_final(found[-1].run)
            held = self._tasks.get(task_id)
            if held is not None:
                found = sorted(held.values(), key=lambda a: a.started_at)
        return [a.copy() for a in found]

    async def _wait_final(self, run: str) -> None:
        event = self._final.setdefault(run, asyncio.Event())
        try:
            async with asyncio.timeout(FINAL_WAIT_S):
                await event.wait()
        except TimeoutError:  # a killed worker never sends it
            self._final.pop(run, None)
            self._gave_up.add(run)
