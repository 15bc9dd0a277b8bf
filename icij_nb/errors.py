"""Every exception icij_nb raises, in one tree.

```
IcijNbError(Exception)
 ├─ ConfigError                  bad app, group or connect() settings
 │   └─ DuplicateTask            a task name registered twice
 ├─ BrokerError
 │   ├─ BrokerUnavailable        the broker cannot be reached
 │   └─ TaskQueueFull            a group's queue is at its max_task_queue_size
 ├─ StoreError                   the task store cannot be opened or written
 ├─ ManagerClosed                an operation on a closed manager or pool
 ├─ ManagerNotStarted            a manager used before start() (connect() starts it)
 ├─ ObserveOnly                  submit, cancel or retry on an observe-only manager
 ├─ InvalidFilter                a board filter, sort or option that cannot apply
 ├─ InvalidArguments             task args or options that cannot be sent
 ├─ InvalidResult                a task returned a value JSON cannot carry
 ├─ InvalidProgress              a task reported progress outside [0, 1]
 ├─ WireError                    a message body that is not a valid icij-worker message
 ├─ TaskTimeout                  an attempt ran past its timeout (also a TimeoutError)
 ├─ TaskError
 │   ├─ UnknownTask              no task with that name or id
 │   ├─ UnknownGroup             no group of that name
 │   ├─ InvalidTransition        cancel/retry of a task in a state that forbids it
 │   ├─ TaskFailed               the task ended in ERROR (remote type + traceback)
 │   ├─ TaskCancelled            the task ended CANCELLED
 │   └─ WaitTimeout              a blocking wait gave up (also a TimeoutError)
 ├─ PipelineError                a notebook run failed (path, failing cell index)
 ├─ NotebookStopped              a demo notebook stopped on purpose (one sentence)
 └─ MissingDependency            an optional package is missing (names the extra)
```

Every message says what happened, shows the bad value, and says what to do. The data
behind the message is kept on the exception (``task_id``, ``state``...), because
widgets and the board show it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from icij_nb.model import ErrorRecord, TaskState


class IcijNbError(Exception):
    """Root of every error raised by icij_nb."""


class ConfigError(IcijNbError):
    """An app, group, pool or connect() setting is invalid."""


class DuplicateTask(ConfigError):
    """A task name is registered twice in one app."""


class BrokerError(IcijNbError):
    """The broker refused or failed an operation.

    ``not_queued`` lists the ids of tasks a failed publish did not queue.
    """

    def __init__(self, msg: str, *, not_queued: tuple[str, ...] = ()) -> None:
        super().__init__(msg)
        self.not_queued = not_queued


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached (wrong URL, credentials, or it is down)."""


class TaskQueueFull(BrokerError):
    """A group's queue holds max_task_queue_size tasks already."""

    def __init__(
        self, msg: str, *, group: str, not_queued: tuple[str, ...] = ()
    ) -> None:
        super().__init__(msg, not_queued=not_queued)
        self.group = group


class StoreError(IcijNbError):
    """The task store cannot be opened, read or written."""


class ManagerClosed(IcijNbError):
    """An operation was asked of a manager or pool that is closed."""


class ManagerNotStarted(IcijNbError):
    """A TaskManager built by hand was used before ``start()``."""


class ObserveOnly(IcijNbError):
    """A manager that only observes was asked to submit, cancel or retry."""


class InvalidFilter(IcijNbError, ValueError):
    """A board filter, sort or option cannot apply (unknown name, bad range)."""


class InvalidArguments(IcijNbError, TypeError):
    """Task arguments, a result or an option cannot travel as JSON or do not fit."""


class InvalidResult(IcijNbError, TypeError):
    """A task returned a value that JSON cannot carry; the attempt fails."""


class InvalidProgress(IcijNbError, ValueError):
    """A task reported progress outside [0, 1]; the attempt fails."""


class WireError(IcijNbError, ValueError):
    """A message body is not a valid icij-worker message (or cannot be made one)."""


class TaskTimeout(IcijNbError, TimeoutError):
    """An attempt ran past its timeout; retryable when TimeoutError is recovered."""


class TaskError(IcijNbError):
    """An error about one task."""

    def __init__(self, msg: str, *, task_id: str | None = None) -> None:
        super().__init__(msg)
        self.task_id = task_id


class UnknownTask(TaskError, KeyError):
    """No task is registered under that name, or no task has that id."""

    def __str__(self) -> str:
        # KeyError would wrap the message in quotes.
        return str(self.args[0])


class UnknownGroup(TaskError, KeyError):
    """No task group has that name."""

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidTransition(TaskError):
    """A cancel or retry was asked for a task in a state where it makes no sense."""

    def __init__(self, msg: str, *, task_id: str, state: TaskState) -> None:
        super().__init__(msg, task_id=task_id)
        self.state = state


class TaskFailed(TaskError):
    """The task ended in ERROR; ``error`` holds the remote type, message and trace."""

    def __init__(self, msg: str, *, task_id: str, error: ErrorRecord | None) -> None:
        super().__init__(msg, task_id=task_id)
        self.error = error


class TaskCancelled(TaskError):
    """The task ended CANCELLED."""


class WaitTimeout(TaskError, TimeoutError):
    """A blocking or awaited wait ran out of time; the task itself goes on."""

    def __init__(
        self, msg: str, *, task_id: str | None, state: TaskState | None
    ) -> None:
        super().__init__(msg, task_id=task_id)
        self.state = state


class PipelineError(IcijNbError):
    """A notebook run failed; ``cell_index`` says where."""

    def __init__(self, msg: str, *, path: str, cell_index: int | None) -> None:
        super().__init__(msg)
        self.path = path
        self.cell_index = cell_index


class NotebookStopped(IcijNbError):
    """A notebook stopped on purpose; IPython shows only its message."""

    def _render_traceback_(self) -> list[str]:
        # IPython (and so Jupyter and papermill) shows these lines instead of a
        # traceback: the one sentence is the whole report.
        return [str(self)]


class MissingDependency(IcijNbError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""
