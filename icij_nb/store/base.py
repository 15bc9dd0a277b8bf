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
    import pandas as pd

    from icij_nb.model import ErrorRecord, Task
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

    async def flush(self) -> None:
        """Write every pending change now."""
        ...

    async def load(self, task_id: str) -> Task | None:
        """The stored task with that id, with its errors, or None."""
        ...

    async def frame(self) -> pd.DataFrame:
        """Every stored task as the DataFrame of :data:`icij_nb.FRAME_COLUMNS`."""
        ...

    async def recover(self, *, durable_broker: bool) -> list[Orphan]:
        """Claim the unfinished tasks of managers that are gone, and say what to do.

        Claiming makes this manager their holder and changes nothing else: the
        tasks come back as stored, each with its decision (``Adopt`` with a broker
        that keeps tasks, ``Lost`` otherwise), for the manager to apply.
        """
        ...
