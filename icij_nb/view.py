"""TaskView: what the faces (handles, the board, the magics) may read and do.

The faces depend on this protocol, not on :class:`~icij_nb.manager.TaskManager`, which
implements it. Reads take no I/O unless their name says ``get``/``frame``; actions are
the manager's public calls. Task arguments are ids (the manager also takes handles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from icij_nb.model import ErrorRecord, Task, TaskState
from icij_nb.output import AttemptOutput, OutputChunk

if TYPE_CHECKING:
    import pandas as pd

    from icij_nb.app import App
    from icij_nb.runtime import Runtime


class TaskView(Protocol):
    """A manager's tasks as the faces see them."""

    @property
    def app(self) -> App:
        """The app whose tasks these are."""
        ...

    @property
    def runtime(self) -> Runtime:
        """The runtime loop the manager's work runs on."""
        ...

    @property
    def closed(self) -> bool:
        """True once the manager was closed."""
        ...

    @property
    def can_act(self) -> bool:
        """True when cancel and retry are possible (open, not observe-only)."""
        ...

    @property
    def counts(self) -> dict[TaskState, int]:
        """Tasks of this session in each state, now."""
        ...

    @property
    def waiting_for_broker(self) -> int:
        """Tasks of this session waiting in the outbox for the broker, now."""
        ...

    def waits_for_broker(self, task: str) -> bool:
        """True while the task waits in the outbox for the broker (no I/O)."""
        ...

    def peek(self, task_id: str) -> Task | None:
        """The live record of a task of this session, without I/O (or None)."""
        ...

    def live_tasks(self) -> list[Task]:
        """The live records of this session's tasks (read them, don't keep them)."""
        ...

    def subscribe(self, listener: Callable[[list[Task]], None]) -> Callable[[], None]:
        """Hear of every change (snapshots, on the runtime thread)."""
        ...

    def on_wait_end(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook()`` each time a blocking wait ends; return a remover."""
        ...

    def live_workers(self) -> dict[str | None, int] | None:
        """Live workers per group (None: no worker ever sent a heartbeat)."""
        ...

    def get(self, task: str) -> Task:
        """A snapshot of a task of any session."""
        ...

    async def get_async(self, task: str) -> Task:
        """Awaitable twin of :meth:`get`."""
        ...

    def errors(self, task: str) -> list[ErrorRecord]:
        """One error record per failed attempt, oldest first."""
        ...

    def output(self, task: str, *, attempt: int | None = None) -> str:
        """What a task wrote and logged, tagged lines; every attempt, or one."""
        ...

    async def attempt_outputs_async(self, task: str) -> list[AttemptOutput]:
        """The kept output of each attempt of a task, oldest first."""
        ...

    def subscribe_output(
        self, listener: Callable[[OutputChunk], None]
    ) -> Callable[[], None]:
        """Hear of every output chunk (on the runtime thread)."""
        ...

    async def frame_async(self) -> pd.DataFrame:
        """Every task in the store as a DataFrame."""
        ...

    def result(self, task: str, *, timeout_s: float | None = None) -> Any:
        """Block until the task is ready; its result, or raise its failure."""
        ...

    async def result_async(self, task: str, *, timeout_s: float | None = None) -> Any:
        """Awaitable twin of :meth:`result`."""
        ...

    def gather(
        self,
        tasks: Iterable[str],
        *,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
        cancel_on_interrupt: bool = False,
    ) -> list[Any]:
        """Block until every task is ready; their results in order."""
        ...

    async def gather_async(
        self,
        tasks: Iterable[str],
        *,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Awaitable twin of :meth:`gather`."""
        ...

    def cancel(self, task: str, *, requeue: bool = False) -> None:
        """Cancel a task."""
        ...

    async def cancel_async(self, task: str, *, requeue: bool = False) -> None:
        """Awaitable twin of :meth:`cancel`."""
        ...

    def retry(self, task: str) -> Any:
        """Run an ERROR or CANCELLED task again; return its handle."""
        ...

    async def retry_async(self, task: str) -> Any:
        """Awaitable twin of :meth:`retry`."""
        ...
