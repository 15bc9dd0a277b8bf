"""The store interface: what a TaskManager needs from the durable record of its tasks.

A store keeps every task a manager tracks, its errors, and which manager holds it.
The manager owns the live :class:`~icij_nb.model.Task` records on the runtime loop
and hands changed ones to :meth:`Store.put`; the store writes them in batches, off
the loop, and reads them back for ``tm.get`` of an old task and for ``tm.frame()``.
The manager is the only one to decide a task's state: a store writes what it is
given, and its recovery returns decisions (see ``recovery.py``) rather than
changing tasks itself.

Implementations: :class:`~icij_nb.store.sqlite.SqliteStore` (a file beside the
notebook, or in memory). Another database implements the same methods; the manager
and ``connect()`` depend on this Protocol only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import pandas as pd

    from icij_nb.model import ErrorRecord, Task
    from icij_nb.output import AttemptOutput
    from icij_nb.store.recovery import Orphan


@runtime_checkable
class Store(Protocol):
    """The durable record of a manager's tasks.

    Its ``repr`` is short, does no I/O and shows no secret (``<SqliteStore memory
    pending=0>``).
    """

    @property
    def label(self) -> str:
        """Where the records are, safe to show: ``memory``, a path or a URL."""
        ...

    @property
    def is_memory(self) -> bool:
        """True for a store that lives only as long as the process."""
        ...

    async def open(self, *, manager_id: str, broker_kind: str) -> None:
        """Open (creating if needed) the store and register this manager.

        Raises:
            StoreError: the store cannot be opened, or is of another version.
        """
        ...

    async def close(self) -> None:
        """Write what is pending, unregister the manager and close; twice is fine."""
        ...

    def put(self, task: Task, *, args_json: str | None = None) -> None:
        """Mark ``task`` for writing; called on the loop after each change.

        ``args_json`` is the task's args as JSON text when the caller has it.
        """
        ...

    def put_error(self, task_id: str, seq: int, error: ErrorRecord) -> None:
        """Record the error of attempt ``seq`` (0-based) of a task."""
        ...

    def put_output(self, output: AttemptOutput) -> None:
        """Mark an attempt's kept output for writing, with the next batch.

        Called on the loop each time the attempt's tail grows; only its latest
        state per ``(output.task_id, output.run)`` needs writing. The tail is
        bounded (``output.TAIL_CHARS``); write ``output.lines`` joined by newlines,
        ``output.cut`` and ``output.final`` as they are when the batch is written.
        Output is not state: a store may write it less often than tasks.
        """
        ...

    async def load_output(self, task_id: str) -> list[AttemptOutput]:
        """The kept output of every attempt of a task, oldest first (may be [])."""
        ...

    async def flush(self) -> None:
        """Write every pending change now."""
        ...

    async def load(self, task_id: str) -> Task | None:
        """The stored task with that id, with its errors, or None."""
        ...

    async def frame(self) -> pd.DataFrame:
        """Every stored task as the DataFrame of :data:`icij_nb.FRAME_COLUMNS`."""
        ...

    # -- the outbox: tasks recorded while no broker node answered ------------------

    async def outbox_add(self, tasks: Sequence[tuple[Task, str]]) -> None:
        """Write new tasks and mark them waiting to be published, durably, now.

        The tasks are CREATED, each with its args as JSON.
        A manager that dies afterwards leaves them to the next one that opens the
        store: :meth:`recover` claims them like any unfinished task, and
        :meth:`outbox` lists them.
        """
        ...

    def outbox_remove(self, task_ids: Iterable[str]) -> None:
        """Unmark published (or given up) tasks, with their next change.

        In the same write as that change, so a task is never QUEUED and marked.
        """
        ...

    async def outbox(self) -> list[Task]:
        """The marked tasks this manager holds, oldest first, as stored."""
        ...

    async def recover(self, *, durable_broker: bool) -> list[Orphan]:
        """Claim the unfinished tasks of managers that are gone, and say what to do.

        Claiming makes this manager their holder and changes nothing else: the
        tasks come back as stored, each with its decision (``Adopt`` with a broker
        that keeps tasks, ``Lost`` otherwise), for the manager to apply.
        """
        ...
