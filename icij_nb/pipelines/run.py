"""One papermill run of a notebook task, in a daemon thread of its own.

A :class:`NotebookRun` runs papermill with icij_nb's engine
(:mod:`icij_nb.pipelines.engine`) and is that engine's run: it gives nbclient its
options and cell hooks, and takes the kernel once it has started. The hooks report
progress (the share of code cells executed), read the value of the cell tagged
``result`` from the kernel, note a cell timeout, and stop between cells once
:meth:`NotebookRun.stop` was called; ``stop`` also interrupts the running cell, and
kills the kernel if it ignores the interrupt. A failure becomes
:class:`~icij_nb.errors.PipelineError` with the failing cell's index (in the user's
notebook), a source excerpt and the kernel's traceback; papermill has written the
partial output notebook by then.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import math
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final

from icij_nb.errors import PipelineError
from icij_nb.pipelines.notebook_task import NotebookTask, installed_kernels, require

logger = logging.getLogger(__name__)

#: the tag of the cell whose last expression is the task's value
RESULT_TAG: Final = "result"
#: after a cancel, when a kernel that ignores the interrupt is killed
KILL_AFTER_S: Final = 5.0

_TIMEOUT_ENAME: Final = "CellTimeoutError"
_INJECTED_TAG: Final = "injected-parameters"


class Stopped(Exception):
    """Raised between cells once the run was asked to stop."""


class NotebookRun:
    """One papermill run of a notebook task, in a daemon thread of its own."""

    def __init__(
        self,
        task: NotebookTask,
        task_id: str,
        parameters: dict[str, Any],
        output: Path,
        report: Callable[[float], None],
    ) -> None:
        self.task, self.task_id, self.parameters = task, task_id, parameters
        self.output, self._report = output, report
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self.kernel_manager: Any = None
        self.kernel_client: Any = None
        self.user_index: list[int | None] = []
        self.total = self.executed = 0
        self.current: int | None = None
        self.current_source = ""
        self.timed_out: int | None = None
        self.value: Any = None
        self.value_problem: tuple[int, str] | None = None
        self.warnings: list[str] = []

    def start(self) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        threading.Thread(
            target=self._main,
            args=(future,),
            name=f"icij_nb-notebook-{self.task_id}",
            daemon=True,
        ).start()
        return future

    def _main(self, future: Future[dict[str, Any]]) -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(self._execute())
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            self._ended.set()
            try:
                _close_thread_loop()
            except Exception:
                logger.warning(
                    "closing the loop of a notebook run failed", exc_info=True
                )

    def stop(self) -> None:
        """Stop at the next cell and interrupt the running one; kill it if need be."""
        self._stopping.set()
        self._signal(signal.SIGINT)
        timer = threading.Timer(KILL_AFTER_S, self._signal, args=(signal.SIGKILL,))
        timer.daemon = True
        timer.start()

    def _signal(self, signum: int) -> None:
        provisioner = getattr(self.kernel_manager, "provisioner", None)
        process = getattr(provisioner, "process", None)
        if self._ended.is_set() or process is None or process.poll() is not None:
            return
        logger.info("notebook task %s: signal %d to its kernel", self.task_id, signum)
        process.send_signal(signum)

    def _execute(self) -> dict[str, Any]:
        require("papermill")  # an extra: say which one when it is missing
        # Here, not at the top: the engine imports papermill, which a bare
        # ``import icij_nb`` must not.
        from icij_nb.pipelines import engine

        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self.warnings = engine.execute(
                self,
                str(self.task.path),
                str(self.output),
                parameters=self.parameters,
                kernel_name=self.task.kernel_name,
            )
        except Exception as exc:
            raise self._error(exc) from None
        if self.value_problem is not None:
            index, problem = self.value_problem
            msg = (
                f"notebook {self.task.path.name!r} ran, but the value of its cell "
                f"tagged {RESULT_TAG!r} (cell {index}) cannot travel as JSON: "
                f"{problem}. Output notebook: {self.output}"
            )
            raise PipelineError(msg, path=str(self.output), cell_index=index)
        return {
            "output_path": str(self.output),
            "value": self.value,
            "warnings": self.warnings,
        }

    # What the engine asks of its run (engine.EngineRun).

    def client_options(self) -> dict[str, Any]:
        """The nbclient options of this run: cell hooks, timeouts, the kernel's cwd."""
        options: dict[str, Any] = {
            # The kernel starts there; papermill's own cwd= would chdir this process.
            "resources": {"metadata": {"path": str(self.task.cwd)}},
            "on_notebook_start": self._on_notebook_start,
            "on_cell_start": self._on_cell_start,
            "on_cell_executed": self._on_cell_executed,
            "on_cell_error": self._on_cell_error,
        }
        timeout_s = self.task.cell_timeout_s
        if timeout_s is not None:
            seconds = math.ceil(timeout_s)  # nbclient takes whole seconds
            options["timeout"] = seconds
            options["interrupt_on_timeout"] = True
            text = f"the cell ran longer than its timeout of {seconds} s"
            options["error_on_timeout"] = {
                "ename": _TIMEOUT_ENAME,
                "evalue": text,
                "traceback": [f"{_TIMEOUT_ENAME}: {text}"],
            }
        return options

    def kernel_ready(self, kernel_manager: Any, kernel_client: Any) -> None:
        """Keep the kernel, for :meth:`stop` and for reading the result's value."""
        self.kernel_manager, self.kernel_client = kernel_manager, kernel_client

    # nbclient's hooks; they run in this run's thread, on nbclient's loop.

    def _on_notebook_start(self, notebook: Any, **_: Any) -> None:
        injected = 0
        for cell in notebook.cells:
            if _INJECTED_TAG in cell.metadata.get("tags", []):
                injected += 1
                self.user_index.append(None)
            else:
                self.user_index.append(len(self.user_index) - injected)
        self.total = sum(
            1 for c in notebook.cells if c.cell_type == "code" and c.source.strip()
        )

    def _on_cell_start(self, cell: Any, cell_index: int, **_: Any) -> None:
        if self._stopping.is_set():
            raise Stopped
        self.current, self.current_source = cell_index, cell.source

    async def _on_cell_executed(
        self, cell: Any, cell_index: int, execute_reply: dict[str, Any], **_: Any
    ) -> None:
        self.executed += 1
        self._report(min(1.0, self.executed / max(self.total, 1)))
        content = execute_reply.get("content", {})
        tags = cell.metadata.get("tags", [])
        if RESULT_TAG in tags and content.get("status") == "ok":
            await self._read_value(cell_index, content.get("execution_count"))

    def _on_cell_error(
        self, cell: Any, cell_index: int, execute_reply: dict[str, Any], **_: Any
    ) -> None:
        if execute_reply.get("content", {}).get("ename") == _TIMEOUT_ENAME:
            self.timed_out = cell_index

    async def _read_value(self, cell_index: int, count: int | None) -> None:
        """Ask the kernel for the result cell's value, as JSON (IPython kernels)."""
        client = self.kernel_client
        expression = f"__import__('json').dumps(Out.get({count}), allow_nan=False)"
        msg_id = client.execute(
            "", silent=True, store_history=False, user_expressions={"v": expression}
        )
        index = self._user_cell(cell_index)
        where = index if index is not None else cell_index
        try:
            while True:
                reply = await client.get_shell_msg(timeout=60)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        except queue.Empty:
            self.value_problem = (where, "the kernel did not answer within 60 s")
            return
        found = reply["content"].get("user_expressions", {}).get("v", {})
        if found.get("status") != "ok":
            self.value_problem = (where, f"{found.get('ename')}: {found.get('evalue')}")
            return
        self.value = json.loads(ast.literal_eval(found["data"]["text/plain"]))

    def _user_cell(self, index: int | None) -> int | None:
        """The index of a cell in the user's notebook (None: papermill's cell)."""
        if index is None or index >= len(self.user_index):
            return index
        return self.user_index[index]

    # errors

    def _error(self, exc: Exception) -> Exception:
        exceptions = require("papermill.exceptions")
        nbclient = require("nbclient.exceptions")
        if isinstance(exc, Stopped):
            return exc
        if isinstance(exc, exceptions.PapermillExecutionError):
            timed_out = exc.cell_index == self.timed_out
            detail = exceptions.strip_color("\n".join(exc.traceback))
            if not detail.strip():
                detail = f"{exc.ename}: {exc.evalue}"
            return self._cell_error(exc.cell_index, exc.source, detail, timed_out)
        if isinstance(exc, nbclient.CellTimeoutError):
            return self._cell_error(self.current, self.current_source, "", True)
        if isinstance(exc, nbclient.DeadKernelError):
            source = self.current_source
            return self._cell_error(self.current, source, "the kernel died", False)
        if type(exc).__name__ == "NoSuchKernel":
            listed = ", ".join(repr(k) for k in installed_kernels()) or "none"
            msg = (
                f"kernel {self.task.kernel_name!r} of notebook task {self.task.name!r} "
                f"is not installed on this worker; installed kernels: {listed}"
            )
            return PipelineError(msg, path=str(self.output), cell_index=None)
        msg = (
            f"notebook {self.task.path.name!r} could not run: "
            f"{type(exc).__name__}: {exc}"
        )
        return PipelineError(msg, path=str(self.output), cell_index=None)

    def _cell_error(
        self, index: int | None, source: str | None, detail: str, timed_out: bool
    ) -> PipelineError:
        cell = self._user_cell(index)
        where = f"cell {cell}" if cell is not None else "the injected parameters cell"
        what = "failed"
        if timed_out:
            seconds = math.ceil(self.task.cell_timeout_s or 0)
            what = f"timed out (cell timeout {seconds} s; the kernel was interrupted)"
        lines = [f"notebook {self.task.path.name!r} {what} in {where} (0-based)."]
        if source:
            lines += ["The cell:", _excerpt(source)]
        if detail:
            lines += ["Traceback from the kernel:", _tail(detail)]
        lines.append(f"The output notebook, up to that cell: {self.output}")
        return PipelineError("\n".join(lines), path=str(self.output), cell_index=cell)


def _close_thread_loop() -> None:
    """Close the loop nbclient's blocking calls made for this thread, if any."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # none was made
        return
    if loop.is_running() or loop.is_closed():
        return
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    asyncio.set_event_loop(None)


def _excerpt(source: str, max_lines: int = 8, width: int = 120) -> str:
    lines = source.splitlines() or [""]
    shown = [
        "    | " + (line if len(line) <= width else line[: width - 1] + "…")
        for line in lines[:max_lines]
    ]
    if len(lines) > max_lines:
        shown.append(f"    | … ({len(lines) - max_lines} more lines)")
    return "\n".join(shown)


def _tail(text: str, max_lines: int = 60) -> str:
    lines = text.strip().splitlines()
    if len(lines) > max_lines:
        lines = ["…", *lines[-max_lines:]]
    return "\n".join("    " + line for line in lines)
