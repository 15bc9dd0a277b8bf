"""The task function of a notebook task: what a worker calls to run the notebook.

:func:`task_function` builds the async function :meth:`icij_nb.App.notebook_task`
registers: its signature lists the notebook's parameters, so that a misspelt
argument fails at submit, in the cell. Called, it checks the argument types against
the parameters' defaults, names the output notebook after the current task, and runs
a :class:`~icij_nb.pipelines.run.NotebookRun` in a thread of its own (never on the
runtime loop). Progress crosses from that thread to the task's loop; a cancel or the
task's timeout stops the run and waits for papermill to write the partial output
notebook. It returns ``{"output_path": ..., "value": ..., "warnings": [...]}``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from icij_nb.context import current_task_id
from icij_nb.pipelines.notebook_task import NotebookTask
from icij_nb.pipelines.run import NotebookRun

logger = logging.getLogger(__name__)

#: after a cancel, how long the run gets to stop and write its output notebook
STOP_GRACE_S: Final = 10.0

Progress = Callable[[float], Awaitable[None]]


def task_function(task: NotebookTask) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The async function that runs ``task``; the notebook's parameters are its args.

    A misspelt argument fails at submit, since the app checks submissions against
    this function's signature.
    """

    async def run_notebook_task(
        progress: Progress | None = None, **parameters: Any
    ) -> dict[str, Any]:
        return await run_notebook(task, parameters, progress)

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter(n, keyword, default=None) for n in task.parameters]
    params.append(inspect.Parameter("progress", keyword, default=None))
    if not task.has_parameters_cell:
        # papermill injects the values at the top, with a warning, for any name.
        params.append(inspect.Parameter("parameters", inspect.Parameter.VAR_KEYWORD))
    # The signature the app checks submissions against: the notebook's parameters.
    run_notebook_task.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_notebook_task.__name__ = task.name
    # Re-registering the same notebook (a re-run cell) replaces the task.
    run_notebook_task.__qualname__ = f"notebook_task[{task.path}]"
    return run_notebook_task


async def run_notebook(
    task: NotebookTask, parameters: dict[str, Any], progress: Progress | None
) -> dict[str, Any]:
    """Run ``task`` with ``parameters`` and return its result dict.

    Raises:
        InvalidArguments: a parameter has the wrong type; nothing ran.
        PipelineError: the run failed; its output notebook is written.
    """
    task.check_types(parameters)
    task_id = current_task_id() or f"{task.name}-local-{uuid.uuid4().hex[:12]}"
    output = task.output_path(task_id, parameters)
    reporter = _Reporter(asyncio.get_running_loop(), progress)
    run = NotebookRun(task, task_id, parameters, output, reporter.report)
    done = asyncio.wrap_future(run.start())
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        # A cancel or the task's timeout: interrupt the kernel, and give papermill
        # time to write the partial output notebook before the task reports.
        run.stop()
        await asyncio.wait([done], timeout=STOP_GRACE_S)
        raise
    finally:
        reporter.closed = True


class _Reporter:
    """Carries progress from the run's thread to the task's loop, until closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, progress: Progress | None):
        self._loop, self._progress = loop, progress
        self._sending: set[asyncio.Future[None]] = set()
        self.closed = False

    def report(self, fraction: float) -> None:
        if self._progress is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._send, fraction)
        except RuntimeError:  # the loop is closed: nobody waits for the task
            logger.debug("notebook progress %.2f dropped: loop closed", fraction)

    def _send(self, fraction: float) -> None:
        if self.closed or self._progress is None:
            return  # the task has reported its outcome: no progress after it
        sent = asyncio.ensure_future(self._progress(fraction))
        self._sending.add(sent)
        sent.add_done_callback(self._sending.discard)
