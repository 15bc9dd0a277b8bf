"""App, TaskGroup and the task registry that ``@app.task`` fills.

An :class:`App` maps task names to :class:`TaskSpec` (the function and its options) and
group names to :class:`TaskGroup` (a queue with its own timeout and cap). The manager
checks submissions against it; workers look functions up in it. Nothing here talks to a
broker.

Example:
    app = nb.App("pipeline")

    @app.task(group="cpu", max_retries=3, recover_from=(ConnectionError,))
    def tokenize(doc: str) -> list[str]:
        return doc.split()
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, overload

from icij_nb.errors import (
    ConfigError,
    DuplicateTask,
    InvalidArguments,
    UnknownGroup,
    UnknownTask,
)
from icij_nb.pipelines import NotebookTask, read_notebook_task, task_function

TaskFunction = Callable[..., Any]

# Names that become RabbitMQ queue names (``TASK.<group>``) and routing keys.
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,200}$")
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
_TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,200}$")


#: tasks a worker process runs at once when every task of its group is async
#: (benchmarks/README.md, "race.py": the throughput of no-op tasks levels off
#: past it, and a task that awaits its broker or I/O is the common case)
DEFAULT_ASYNC_CONCURRENCY: Final = 16


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """A named queue of tasks with its own limits; pools serve one group.

    Args:
        name: the group name (letters, digits, ``_ . : -``); it names the queue.
        timeout_s: the longest any task of the group may run, or None.
        max_task_queue_size: the most tasks the group's queue holds; submitting more
            raises :class:`~icij_nb.errors.TaskQueueFull`. None means no cap. On
            RabbitMQ this is the ``max-length`` of icij-worker's queue policy, and a
            quorum queue takes one task past it before it refuses more.
    """

    name: str
    timeout_s: float | None = None
    max_task_queue_size: int | None = None

    def __post_init__(self) -> None:
        if not _matches(_GROUP_NAME, self.name):
            msg = (
                f"invalid group name {self.name!r}: use letters, digits, '_', '.', "
                "':' or '-', starting with a letter or digit (it names a queue)"
            )
            raise ConfigError(msg)
        _check_positive("timeout_s", self.timeout_s, f"group {self.name!r}")
        cap: object = self.max_task_queue_size
        if cap is not None and (
            not isinstance(cap, int) or isinstance(cap, bool) or cap < 1
        ):
            msg = (
                f"max_task_queue_size of group {self.name!r} must be >= 1 or None, "
                f"got {self.max_task_queue_size!r}"
            )
            raise ConfigError(msg)


def _check_positive(option: str, value: object, where: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        msg = f"{option} of {where} must be a positive number of seconds, got {value!r}"
        raise ConfigError(msg)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A registered task: the function and the options it runs with."""

    name: str
    fn: TaskFunction
    group: TaskGroup | None
    max_retries: int
    recover_from: tuple[type[BaseException], ...]
    timeout_s: float | None
    is_async: bool
    takes_progress: bool
    signature: inspect.Signature = field(repr=False)
    _timeout_s: float | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Read for every task a worker runs: worked out once.
        limits = [t for t in (self.timeout_s, self.group and self.group.timeout_s) if t]
        object.__setattr__(self, "_timeout_s", min(limits) if limits else None)

    @property
    def max_attempts(self) -> int:
        """How many times the task may run: the first attempt plus its retries."""
        return self.max_retries + 1

    @property
    def group_name(self) -> str | None:
        """The group's name, or None for the ungrouped queue."""
        return self.group.name if self.group is not None else None

    @property
    def effective_timeout_s(self) -> float | None:
        """The tighter of the task's and its group's timeouts."""
        return self._timeout_s

    def check_call(self, args: dict[str, Any]) -> None:
        """Raise InvalidArguments if ``args`` do not fit the function's signature."""
        try:
            if self.takes_progress:
                self.signature.bind(**args, progress=None)
            else:
                self.signature.bind(**args)
        except TypeError as exc:
            params = ", ".join(p for p in self.signature.parameters if p != "progress")
            msg = (
                f"arguments {sorted(args)!r} do not fit task {self.name!r}: {exc}. "
                f"It takes: {params or 'no arguments'}."
            )
            raise InvalidArguments(msg) from None


class App:
    """A registry of tasks by name, and of the groups they run in.

    Args:
        name: the app's name; it is the ``app_id`` of AMQP messages and the prefix of
            worker ids.
        groups: groups to declare up front (more are added by ``@app.task(group=...)``).
    """

    def __init__(self, name: str, *, groups: tuple[TaskGroup, ...] = ()) -> None:
        if not _matches(_APP_NAME, name):
            msg = (
                f"an App needs a name of letters, digits, '_', '.' or '-', got {name!r}"
            )
            raise ConfigError(msg)
        self.name = name
        self._tasks: dict[str, TaskSpec] = {}
        self._groups: dict[str, TaskGroup] = {}
        for group in groups:
            self.add_group(group)

    def __repr__(self) -> str:
        return (
            f"<App {self.name!r} tasks={len(self._tasks)} "
            f"groups={sorted(self._groups)!r}>"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self._tasks.values())

    @property
    def task_names(self) -> list[str]:
        """The registered task names, sorted."""
        return sorted(self._tasks)

    @property
    def groups(self) -> dict[str, TaskGroup]:
        """The declared groups by name (a copy)."""
        return dict(self._groups)

    def add_group(self, group: TaskGroup | str) -> TaskGroup:
        """Declare a group; a name gives a group with no limits.

        Declaring the same name again with other limits raises ConfigError, because
        two definitions of one queue cannot both hold.
        """
        value: object = group
        if isinstance(value, str):
            value = self._groups.get(value) or TaskGroup(value)
        if not isinstance(value, TaskGroup):
            msg = f"group must be a name or a TaskGroup, got {type(value).__name__}"
            raise ConfigError(msg)
        group = value
        known = self._groups.get(group.name)
        if known is not None and known != group:
            msg = (
                f"group {group.name!r} is already declared as {known!r}; "
                f"cannot redeclare it as {group!r}"
            )
            raise ConfigError(msg)
        self._groups[group.name] = group
        return group

    def group(self, name: str | None) -> TaskGroup | None:
        """The group called ``name`` (None is the ungrouped queue).

        Raises:
            UnknownGroup: no such group; the message lists the declared ones.
        """
        if name is None:
            return None
        try:
            return self._groups[name]
        except KeyError:
            known = ", ".join(repr(g) for g in sorted(self._groups)) or "none"
            msg = (
                f"no task group named {name!r} in app {self.name!r}; declared groups: "
                f"{known}. Declare it with @app.task(group=...) or app.add_group()."
            )
            raise UnknownGroup(msg) from None

    def default_concurrency(self, group: str | None) -> int:
        """How many tasks a worker process of ``group`` runs at once by default.

        :data:`DEFAULT_ASYNC_CONCURRENCY` when every task of the group is async
        (short async tasks mostly wait on the broker: one at a time leaves a
        process idle between a result and the next delivery), else 1 (sync tasks
        run in threads and are often CPU-bound).
        """
        specs = [s for s in self._tasks.values() if s.group_name == group]
        if specs and all(s.is_async for s in specs):
            return DEFAULT_ASYNC_CONCURRENCY
        return 1

    def get(self, name: str) -> TaskSpec:
        """The task registered under ``name``.

        Raises:
            UnknownTask: no such task; the message lists the registered names.
        """
        try:
            return self._tasks[name]
        except (KeyError, TypeError):
            known = ", ".join(repr(n) for n in self.task_names) or "none yet"
            msg = (
                f"no task named {name!r} in app {self.name!r}; registered: {known}. "
                "Did you decorate it with @app.task?"
            )
            raise UnknownTask(msg) from None

    @overload
    def task(self, fn: TaskFunction, /) -> TaskFunction: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        group: TaskGroup | str | None = None,
        max_retries: int = 3,
        recover_from: tuple[type[BaseException], ...] = (),
        timeout_s: float | None = None,
    ) -> Callable[[TaskFunction], TaskFunction]: ...

    def task(
        self,
        fn: TaskFunction | None = None,
        /,
        *,
        name: str | None = None,
        group: TaskGroup | str | None = None,
        max_retries: int = 3,
        recover_from: tuple[type[BaseException], ...] = (),
        timeout_s: float | None = None,
    ) -> TaskFunction | Callable[[TaskFunction], TaskFunction]:
        """Register a function as a task; use bare (``@app.task``) or with options.

        Args:
            fn: the function, when used bare.
            name: the task name (default: the function's name).
            group: the group (a name or a TaskGroup) whose pools run it; None is the
                ungrouped queue.
            max_retries: how many times a failure listed in ``recover_from`` is
                retried, after the first attempt. Other exceptions never retry.
            recover_from: exception classes that make a failed attempt retryable.
            timeout_s: the longest one attempt may run (the group's timeout, if
                tighter, wins).

        Returns:
            The function itself, unchanged, so it stays callable in the notebook.
        """

        def register(func: TaskFunction) -> TaskFunction:
            self._register(
                func,
                name=name,
                group=group,
                max_retries=max_retries,
                recover_from=recover_from,
                timeout_s=timeout_s,
            )
            return func

        if fn is not None:
            return register(fn)
        return register

    def _register(
        self,
        fn: TaskFunction,
        *,
        name: str | None,
        group: TaskGroup | str | None,
        max_retries: int,
        recover_from: tuple[type[BaseException], ...],
        timeout_s: float | None,
    ) -> TaskSpec:
        if not callable(_as_object(fn)):
            msg = f"@app.task decorates functions, got {type(fn).__name__}: {fn!r}"
            raise ConfigError(msg)
        task_name = name if name is not None else fn.__name__
        _check_task_name(task_name)
        known = self._tasks.get(task_name)
        if known is not None and not _same_definition(known.fn, fn):
            msg = (
                f"a task named {task_name!r} is already registered in app "
                f"{self.name!r} (by {_qualname(known.fn)}); give this one another "
                "name with @app.task(name=...), or call app.unregister() first."
            )
            raise DuplicateTask(msg)
        where = f"task {task_name!r}"
        _check_retry_options(where, max_retries, recover_from)
        _check_positive("timeout_s", timeout_s, where)
        signature = inspect.signature(fn)
        spec = TaskSpec(
            name=task_name,
            fn=fn,
            group=self.add_group(group) if group is not None else None,
            max_retries=max_retries,
            recover_from=tuple(recover_from),
            timeout_s=timeout_s,
            is_async=inspect.iscoroutinefunction(fn),
            takes_progress="progress" in signature.parameters,
            signature=signature,
        )
        self._tasks[task_name] = spec
        return spec

    def notebook_task(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        group: TaskGroup | str | None = None,
        max_retries: int = 3,
        recover_from: tuple[type[BaseException], ...] = (),
        timeout_s: float | None = None,
        output: str | os.PathLike[str] | None = None,
        kernel_name: str | None = None,
        cell_timeout_s: float | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> NotebookTask:
        """Register a notebook as a task that papermill runs on a worker.

        The args of a submission are the notebook's parameters (its cell tagged
        ``parameters``); the result is ``{"output_path", "value", "warnings"}``,
        where ``value`` is the last expression of the cell tagged ``result``. See
        docs/pipelines.md.

        Args:
            path: the notebook (checked now: it must exist and its kernel be
                installed).
            name: the task name (default: the file name without ``.ipynb``).
            group: the group whose pools run it, as for :meth:`task`.
            max_retries: retries after the first attempt, as for :meth:`task`.
            recover_from: exceptions that make a failed run retryable.
            timeout_s: the longest a whole run may take.
            output: where output notebooks go, a template with ``{stem}``,
                ``{name}``, ``{task_id}`` and the parameters (default: beside the
                notebook, ``{stem}.{task_id}.ipynb``).
            kernel_name: the kernel to run it with (default: the notebook's own).
            cell_timeout_s: the longest one cell may run (whole seconds).
            cwd: the kernel's working directory (default: the notebook's folder).

        Example:
            app.notebook_task("notebooks/clean.ipynb", group="cpu")
            out = await tm.submit("clean", {"path": "a.txt"})
        """
        notebook = read_notebook_task(
            path,
            name=name,
            group=group.name if isinstance(group, TaskGroup) else group,
            output=output,
            kernel_name=kernel_name,
            cell_timeout_s=cell_timeout_s,
            cwd=cwd,
        )
        self.task(
            name=notebook.name,
            group=group,
            max_retries=max_retries,
            recover_from=recover_from,
            timeout_s=timeout_s,
        )(task_function(notebook))
        return notebook

    def unregister(self, name: str) -> None:
        """Forget a task, so that its name can be registered again (a re-run cell)."""
        self.get(name)
        del self._tasks[name]


def _as_object(value: object) -> object:
    # User input is checked at run time whatever its annotation says.
    return value


def _matches(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.match(value) is not None


def _qualname(fn: TaskFunction) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def _same_definition(old: TaskFunction, new: TaskFunction) -> bool:
    # Re-running a notebook cell defines the function again under the same
    # qualified name: that replaces the task instead of failing.
    return _qualname(old) == _qualname(new)


def _check_task_name(name: object) -> None:
    if not isinstance(name, str) or not _TASK_NAME.match(name):
        msg = (
            f"invalid task name {name!r}: use letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or '_'"
        )
        raise ConfigError(msg)


def _check_retry_options(where: str, max_retries: object, recover_from: object) -> None:
    if (
        not isinstance(max_retries, int)
        or isinstance(max_retries, bool)
        or max_retries < 0
    ):
        msg = f"max_retries of {where} must be an int >= 0, got {max_retries!r}"
        raise ConfigError(msg)
    if not isinstance(recover_from, tuple | list) or not all(
        isinstance(e, type) and issubclass(e, BaseException) for e in recover_from
    ):
        msg = (
            f"recover_from of {where} must be a tuple of exception classes, "
            f"got {recover_from!r}"
        )
        raise ConfigError(msg)
