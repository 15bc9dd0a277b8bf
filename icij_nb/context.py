"""The task a worker is running, as a context variable anyone may read.

The worker sets it around each task function (:func:`running_task`); a function,
sync or async, reads it with :func:`current_task_id`. Notebook tasks name their output
notebook after it. It imports nothing of icij_nb, so any module can depend on it
without depending on the worker.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

#: The id of the task a worker runs in this context; sync functions see it too,
#: through the context their thread runs in.
_CURRENT_TASK_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "icij_nb_current_task_id", default=None
)


def current_task_id() -> str | None:
    """The id of the task whose function calls this, or None outside a task.

    Notebook tasks use it to name their output notebook after the task.
    """
    return _CURRENT_TASK_ID.get()


@contextmanager
def running_task(task_id: str) -> Iterator[None]:
    """Make ``task_id`` the current task inside the ``with`` block."""
    token = _CURRENT_TASK_ID.set(task_id)
    try:
        yield
    finally:
        _CURRENT_TASK_ID.reset(token)
