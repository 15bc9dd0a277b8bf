"""icij_nb's papermill engine: papermill's nbclient engine, watched by one run.

papermill finds engines by name. :func:`register` adds this one as ``"icij_nb"``,
and the package declares it as a ``papermill.engine`` entry point too, so that
``papermill --engine icij_nb`` finds it wherever icij_nb is installed.

A run hands itself to the engine through papermill's engine keyword arguments, as
``icij_nb_run`` (an :class:`EngineRun`). The engine then builds papermill's nbclient
client with the run's options (the cell hooks, the cell timeout, the kernel's working
directory) and a kernel manager of its own, which:

- pipes the kernel's stdout and stderr to this module's logger (inherited, they would
  land in the output of the cell that runs the pool, since ipykernel captures its
  process's file descriptors);
- hands the kernel manager and its client back to the run, so that a cancel can
  interrupt or kill the kernel, and the run can ask the kernel for the value of the
  cell tagged ``result``.

Without a run it is papermill's stock nbclient engine. papermill parameterizes,
executes, records and saves the notebook as it always does.

This module imports papermill: :mod:`icij_nb.pipelines.run` imports it only when a
notebook runs, never at ``import icij_nb``.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from typing import Any, Final, Protocol

import papermill
from jupyter_client.manager import AsyncKernelManager
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger as papermill_logger

logger = logging.getLogger(__name__)

#: the name papermill knows this engine by (``engine_name=``, ``--engine``)
ENGINE_NAME: Final = "icij_nb"


class EngineRun(Protocol):
    """What the engine needs of the run it executes."""

    @property
    def task_id(self) -> str:
        """The task the run belongs to; it names the kernel's log lines."""
        ...

    def client_options(self) -> dict[str, Any]:
        """The options of the nbclient client: cell hooks, timeouts, resources."""
        ...

    def kernel_ready(self, kernel_manager: Any, kernel_client: Any) -> None:
        """Take the kernel's manager and client once the kernel has started."""
        ...


def register() -> None:
    """Make papermill know this engine as ``"icij_nb"`` (again is harmless)."""
    papermill_engines.register(ENGINE_NAME, NotebookEngine)


def execute(
    run: EngineRun,
    input_path: str,
    output_path: str,
    *,
    parameters: dict[str, Any],
    kernel_name: str,
) -> list[str]:
    """Run papermill with this engine for ``run``, in this thread.

    Returns:
        The warnings papermill logged during the run (unknown parameters...).

    Raises:
        Exception: what papermill raises; papermill has saved the output notebook,
            up to the failing cell, by then.
    """
    register()
    capture = _WarningCapture(threading.get_ident())
    papermill_logs = logging.getLogger("papermill")
    papermill_logs.addHandler(capture)
    try:
        papermill.execute_notebook(
            _escape_braces(input_path),
            _escape_braces(output_path),
            parameters=parameters or None,
            kernel_name=kernel_name,
            progress_bar=False,
            request_save_on_cell_execute=True,
            engine_name=ENGINE_NAME,
            icij_nb_run=run,
        )
    finally:
        papermill_logs.removeHandler(capture)
    return capture.messages


# papermill is untyped: its classes are Any to mypy.
class NotebookEngine(NBClientEngine):  # type: ignore[misc]
    """papermill's nbclient engine, with a run's hooks and kernel handling."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        *,
        icij_nb_run: EngineRun | None = None,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: float = 60,
        **kwargs: Any,
    ) -> Any:
        """Execute the notebook ``nb_man`` wraps; see papermill's ``Engine``."""
        if icij_nb_run is None:
            return super().execute_managed_notebook(
                nb_man,
                kernel_name,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
                start_timeout=start_timeout,
                **kwargs,
            )
        kwargs.pop("input_path", None)  # papermill's, not nbclient's
        client = _RunClient(
            nb_man,
            run=icij_nb_run,
            kernel_name=kernel_name,
            startup_timeout=start_timeout,
            log=papermill_logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            **{**kwargs, **icij_nb_run.client_options()},
        )
        return client.execute()


class _RunClient(PapermillNotebookClient):  # type: ignore[misc]
    """papermill's nbclient client whose kernel manager reports to the run."""

    def __init__(self, nb_man: Any, *, run: EngineRun, **kwargs: Any) -> None:
        super().__init__(nb_man, **kwargs)
        self.icij_nb_run = run

    def create_kernel_manager(self) -> AsyncKernelManager:
        self.km = _RunKernelManager(
            self.icij_nb_run, kernel_name=self.kernel_name, config=self.config
        )
        return self.km


class _RunKernelManager(AsyncKernelManager):
    """AsyncKernelManager that logs its kernel's output and hands itself to a run."""

    def __init__(self, run: EngineRun, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.icij_nb_run = run

    # AsyncKernelManager's start_kernel is a coroutine; mypy sees the sync base.
    async def start_kernel(self, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        await super().start_kernel(**kwargs)
        process = getattr(self.provisioner, "process", None)
        if process is not None and process.stdout is not None:
            threading.Thread(
                target=_log_lines,
                args=(process.stdout, self.icij_nb_run.task_id),
                name="icij_nb-kernel-output",
                daemon=True,
            ).start()

    def client(self, **kwargs: Any) -> Any:
        kernel_client = super().client(**kwargs)
        self.icij_nb_run.kernel_ready(self, kernel_client)
        return kernel_client


def _log_lines(stream: Any, task_id: str) -> None:
    with stream:
        for line in iter(stream.readline, b""):
            text = line.decode("utf-8", "replace").rstrip()
            logger.info("kernel of notebook task %s: %s", task_id, text)


class _WarningCapture(logging.Handler):
    """Collects the warnings papermill logs in one thread (one run)."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(logging.WARNING)
        self._thread_id = thread_id
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread_id and record.levelno == logging.WARNING:
            self.messages.append(record.getMessage())


def _escape_braces(path: str) -> str:
    # papermill formats paths with the parameters: braces in ours are literal.
    return path.replace("{", "{{").replace("}", "}}")
