"""icij_nb: Jupyter-first task apps, on an in-process broker or RabbitMQ.

Define tasks in cells with ``@app.task``, start pools with ``tm.start_pool``, submit,
and watch the task table (``tm.frame()``).
"""

import typing as _typing

from icij_nb.app import App, TaskGroup, TaskSpec
from icij_nb.brokers.base import Broker
from icij_nb.brokers.memory import MemoryBroker
from icij_nb.connect import connect
from icij_nb.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    DuplicateTask,
    IcijNbError,
    InvalidArguments,
    InvalidFilter,
    InvalidProgress,
    InvalidResult,
    InvalidTransition,
    ManagerClosed,
    ManagerNotStarted,
    MissingDependency,
    ObserveOnly,
    PipelineError,
    StoreError,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskQueueFull,
    TaskTimeout,
    UnknownGroup,
    UnknownTask,
    WaitTimeout,
    WireError,
)
from icij_nb.frames import FRAME_COLUMNS
from icij_nb.handles import TaskBatch, TaskHandle
from icij_nb.manager import TaskManager
from icij_nb.model import ErrorRecord, StackFrame, Task, TaskState
from icij_nb.pools import InKernelPool
from icij_nb.store import TaskStore
from icij_nb.timeline import Timeline, timeline

if _typing.TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__version__ = "0.1.0"


def load_ipython_extension(ipython: "InteractiveShell") -> None:
    """Add the ``%icij`` magics to IPython: ``%load_ext icij_nb`` (see docs/magics.md).

    IPython is imported only now, so ``import icij_nb`` stays cheap. Loading twice is
    harmless.
    """
    from icij_nb.magics import load

    load(ipython)


def unload_ipython_extension(ipython: "InteractiveShell") -> None:
    """Remove the ``%icij`` magics; ``icij_app`` and ``tm`` stay in the notebook."""
    from icij_nb.magics import unload

    unload(ipython)


__all__ = [
    "FRAME_COLUMNS",
    "App",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigError",
    "DuplicateTask",
    "ErrorRecord",
    "IcijNbError",
    "InKernelPool",
    "InvalidArguments",
    "InvalidFilter",
    "InvalidProgress",
    "InvalidResult",
    "InvalidTransition",
    "ManagerClosed",
    "ManagerNotStarted",
    "MemoryBroker",
    "MissingDependency",
    "ObserveOnly",
    "PipelineError",
    "StackFrame",
    "StoreError",
    "Task",
    "TaskBatch",
    "TaskCancelled",
    "TaskError",
    "TaskFailed",
    "TaskGroup",
    "TaskHandle",
    "TaskManager",
    "TaskQueueFull",
    "TaskSpec",
    "TaskState",
    "TaskStore",
    "TaskTimeout",
    "Timeline",
    "UnknownGroup",
    "UnknownTask",
    "WaitTimeout",
    "WireError",
    "__version__",
    "connect",
    "load_ipython_extension",
    "timeline",
    "unload_ipython_extension",
]
