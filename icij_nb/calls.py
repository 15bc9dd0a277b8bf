"""Calling a task function, the same way in every kind of worker.

- :func:`keyword_args`: a task's args as the function's keyword arguments. icij-worker
  snake-cases every argument name before the call (``nSteps`` becomes ``n_steps``),
  and Datashare sends camelCase names: a name the function takes as it is stays as it
  is; only a name that fits no parameter, and whose snake_case form does, is converted
  (unless the args hold that form too). ``user``, which Datashare adds to every task,
  is dropped unless the function takes it.
- :func:`call_task`: async functions run on the loop; sync ones in an executor, in a
  copy of the caller's context (so what the worker set there, such as the task that
  runs and where its output goes, holds in the thread); the task's timeout applies to
  both.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from icij_nb.app import TaskSpec
from icij_nb.brokers.jsonbody import to_snake_case
from icij_nb.errors import TaskTimeout


class Reporter(Protocol):
    """The ``progress`` callback a task receives, in its two forms."""

    def report_async(self, value: float) -> Awaitable[None]:
        """For async functions: ``await progress(0.5)``."""
        ...

    def report_from_thread(self, value: float) -> None:
        """For sync functions, from the executor's thread: ``progress(0.5)``."""
        ...


def keyword_args(spec: TaskSpec, args: dict[str, Any]) -> dict[str, Any]:
    """A task's args as the keyword arguments of its function (see the module)."""
    params = spec.signature.parameters
    kwargs = {}
    for key, value in args.items():
        if key == "user" and key not in params:
            continue
        name = key
        if key not in params:
            snake = to_snake_case(key)
            if snake in params and snake not in args:
                name = snake
        kwargs[name] = value
    return kwargs


async def call_task(
    spec: TaskSpec,
    kwargs: dict[str, Any],
    *,
    progress: Reporter | None,
    executor: Executor,
    what: str,
) -> Any:
    """Run the task's function with ``kwargs``; return its value.

    Raises:
        TaskTimeout: it ran past ``spec.effective_timeout_s`` (``what`` names the
            task in the message).
    """
    call: Awaitable[Any]
    if spec.is_async:
        if progress is not None:
            kwargs["progress"] = progress.report_async
        call = spec.fn(**kwargs)
    else:
        if progress is not None:
            kwargs["progress"] = progress.report_from_thread
        run: Callable[[], Any] = functools.partial(
            contextvars.copy_context().run, spec.fn, **kwargs
        )
        call = asyncio.get_running_loop().run_in_executor(executor, run)
    timeout_s = spec.effective_timeout_s
    if timeout_s is None:
        return await call
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except TimeoutError:
        msg = f"{what} ran longer than its timeout of {timeout_s:g}s and was stopped"
        raise TaskTimeout(msg) from None
