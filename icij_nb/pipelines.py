"""Notebooks as tasks: ``app.notebook_task(path)`` registers a notebook papermill runs.

How the pieces fit:

- :func:`register_notebook` (behind :meth:`icij_nb.App.notebook_task`) reads the
  notebook once: it must exist, its kernel must be installed, and its cell tagged
  ``parameters`` names the task's arguments (papermill's own parameter inspection).
  It registers an async task function whose signature lists those names, so a
  misspelt argument fails at submit, in the cell.
- That function checks the argument types against the parameters' defaults, picks the
  output path, and runs papermill in a thread of its own (never on the runtime loop).
  It returns ``{"output_path": ..., "value": ..., "warnings": [...]}``.
- :class:`_NotebookRun` is one papermill run. papermill's stock engine (nbclient)
  executes the notebook; nbclient's cell hooks, passed through papermill's engine
  keyword arguments, report progress (the share of code cells executed), read the
  value of the cell tagged ``result``, note a cell timeout, and stop between cells on
  cancel. A kernel-manager subclass remembers the kernel, so that a cancel can
  interrupt the cell that runs.
- A failure becomes :class:`~icij_nb.errors.PipelineError` with the failing cell's
  index, a source excerpt and the kernel's traceback; papermill has written the
  partial output notebook by then.

:func:`choose_broker` and :func:`stop_notebook` serve the demo notebooks: RabbitMQ
when one answers (else the embedded broker), and a stop with one sentence.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import logging
import math
import os
import queue
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from icij_nb.app import App, TaskGroup
from icij_nb.errors import (
    ConfigError,
    IcijNbError,
    InvalidArguments,
    MissingDependency,
    PipelineError,
)
from icij_nb.worker import current_task_id

logger = logging.getLogger(__name__)

#: the tag of the cell whose last expression is the task's value
RESULT_TAG: Final = "result"
#: where the output notebook goes, beside the input, unless told otherwise
DEFAULT_OUTPUT: Final = "{stem}.{task_id}.ipynb"
#: after a cancel, how long the run gets to stop and write its output notebook
STOP_GRACE_S: Final = 10.0
#: after a cancel, when a kernel that ignores the interrupt is killed
KILL_AFTER_S: Final = 5.0

_TIMEOUT_ENAME: Final = "CellTimeoutError"
_INJECTED_TAG: Final = "injected-parameters"
_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "list": (list,),
    "tuple": (list,),
    "dict": (dict,),
}
_ARTICLES: Final = {"int": "an int", "list": "a list", "tuple": "a list"}

Progress = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class NotebookTask:
    """A notebook registered as a task: what runs, how, and where its output goes.

    ``parameters`` maps each name of the ``parameters`` cell to its default, as
    written there. ``output`` is an absolute path template (``{stem}``, ``{name}``,
    ``{task_id}`` and the notebook's parameters can appear in it).
    """

    name: str
    path: Path
    group: str | None
    parameters: dict[str, str]
    kernel_name: str
    cell_timeout_s: float | None
    cwd: Path
    output: str
    has_parameters_cell: bool
    types: dict[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"<NotebookTask {self.name!r} {self.path.name} group={self.group!r} "
            f"parameters={list(self.parameters)!r} kernel={self.kernel_name!r}>"
        )

    def output_path(self, task_id: str, parameters: Mapping[str, Any]) -> Path:
        """Where the run of task ``task_id`` with ``parameters`` writes its notebook."""
        fields = {**parameters, "stem": self.path.stem, "name": self.name}
        fields["task_id"] = task_id
        try:
            return Path(self.output.format(**fields))
        except (KeyError, IndexError, ValueError) as exc:
            msg = (
                f"the output template {self.output!r} of notebook task {self.name!r} "
                f"names {exc!s}, which is neither a parameter nor one of "
                "{stem}, {name}, {task_id}"
            )
            raise InvalidArguments(msg) from None

    def check_types(self, parameters: Mapping[str, Any]) -> None:
        """Raise InvalidArguments if a value does not have its parameter's type.

        The type is the parameter's annotation or, without one, the type of its
        default (``n = 3`` takes an int; a float also takes an int). Parameters whose
        default is None or not a literal take anything.
        """
        for key, value in parameters.items():
            expected = self.types.get(key)
            if expected is None:
                continue
            allowed = _JSON_TYPES[expected]
            if isinstance(value, allowed) and (
                expected == "bool" or not isinstance(value, bool)
            ):
                continue
            msg = (
                f"parameter {key!r} of notebook {self.path.name!r} takes "
                f"{_ARTICLES.get(expected, 'a ' + expected)} (its default is "
                f"{self.parameters[key]}), got {value!r} "
                f"({type(value).__name__}); nothing ran"
            )
            raise InvalidArguments(msg)


def register_notebook(
    app: App,
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
    """Register the notebook at ``path`` in ``app``; see :meth:`App.notebook_task`."""
    notebook_path = _existing_notebook(path)
    notebook = _read_notebook(notebook_path)
    kernel = _installed_kernel(kernel_name, notebook, notebook_path)
    task_name = name if name is not None else notebook_path.stem
    parameters, types, tagged = _parameters(notebook, kernel)
    if "progress" in parameters:
        msg = (
            f"notebook {notebook_path.name!r} has a parameter named 'progress', "
            "which icij_nb passes to every task; rename it"
        )
        raise ConfigError(msg)
    task = NotebookTask(
        name=task_name,
        path=notebook_path,
        group=group.name if isinstance(group, TaskGroup) else group,
        parameters=parameters,
        kernel_name=kernel,
        cell_timeout_s=_cell_timeout(cell_timeout_s),
        cwd=Path(cwd).resolve() if cwd is not None else notebook_path.parent,
        output=_output_template(output, notebook_path),
        has_parameters_cell=tagged,
        types=types,
    )
    if not task.cwd.is_dir():
        msg = f"cwd {str(task.cwd)!r} of notebook task {task_name!r} is no folder"
        raise ConfigError(msg)
    app.task(
        name=task_name,
        group=group,
        max_retries=max_retries,
        recover_from=recover_from,
        timeout_s=timeout_s,
    )(_task_function(task))
    return task


# -- registration --------------------------------------------------------------------


def _existing_notebook(path: str | os.PathLike[str]) -> Path:
    given = Path(path)
    resolved = given.resolve()
    if resolved.is_file():
        return resolved
    folder = resolved.parent
    found = sorted(p.name for p in folder.glob("*.ipynb")) if folder.is_dir() else []
    where = f"notebooks in {str(folder)!r}: " + (", ".join(found) or "none")
    if not folder.is_dir():
        where = f"there is no folder {str(folder)!r}"
    msg = (
        f"no notebook at {os.fspath(path)!r} (resolved to {str(resolved)!r}, from "
        f"the working directory {os.getcwd()!r}); {where}"
    )
    raise ConfigError(msg)


def _read_notebook(path: Path) -> Any:
    nbformat = _import("nbformat")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for a bad file
        msg = f"{str(path)!r} is not a readable notebook: {type(exc).__name__}: {exc}"
        raise ConfigError(msg) from exc


def installed_kernels() -> list[str]:
    """The names of the Jupyter kernels installed here, sorted."""
    kernelspec = _import("jupyter_client.kernelspec")
    return sorted(kernelspec.KernelSpecManager().find_kernel_specs())


def _installed_kernel(kernel_name: str | None, notebook: Any, path: Path) -> str:
    wanted = kernel_name or notebook.metadata.get("kernelspec", {}).get("name")
    installed = installed_kernels()
    listed = ", ".join(repr(k) for k in installed) or "none"
    if not wanted:
        msg = (
            f"notebook {path.name!r} names no kernel in its metadata; pass "
            f"kernel_name=... (installed kernels: {listed})"
        )
        raise ConfigError(msg)
    if wanted not in installed:
        msg = (
            f"kernel {wanted!r} (for notebook {path.name!r}) is not installed here; "
            f"installed kernels: {listed}. Pass kernel_name= one of them, or install "
            f"it (python -m ipykernel install --user --name {wanted})."
        )
        raise ConfigError(msg)
    return str(wanted)


def _parameters(
    notebook: Any, kernel: str
) -> tuple[dict[str, str], dict[str, str], bool]:
    """Read the cell tagged ``parameters`` with papermill's translator.

    Returns its names with their defaults, the types checked at run time, and
    whether the notebook has such a cell at all.
    """
    cell = next(
        (c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])),
        None,
    )
    if cell is None:
        return {}, {}, False
    translators = _import("papermill.translators").papermill_translators
    spec = notebook.metadata.get("kernelspec", {})
    language = spec.get("language") or notebook.metadata.get("language_info", {}).get(
        "name", "python"
    )
    found = translators.find_translator(kernel, language).inspect(cell)
    parameters = {p.name: p.default for p in found}
    types = {
        p.name: t
        for p in found
        if (t := _checked_type(p.inferred_type_name, p.default)) is not None
    }
    return parameters, types, True


def _checked_type(annotation: str, default: str) -> str | None:
    if annotation and annotation != "None":
        base = annotation.split("[", 1)[0].strip()
        return base if base in _JSON_TYPES else None
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    kind = type(value).__name__
    return kind if kind in _JSON_TYPES else None


def _cell_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    given: object = value
    if isinstance(given, bool) or not isinstance(given, int | float) or given <= 0:
        msg = f"cell_timeout_s must be a positive number of seconds, got {value!r}"
        raise ConfigError(msg)
    return float(value)


def _output_template(output: str | os.PathLike[str] | None, notebook: Path) -> str:
    if output is None:
        return str(notebook.parent / DEFAULT_OUTPUT)
    text = os.fspath(output)
    if not text.endswith(".ipynb"):
        msg = f"output must name an .ipynb file (a template), got {text!r}"
        raise ConfigError(msg)
    return text if os.path.isabs(text) else os.path.join(os.getcwd(), text)


def _task_function(task: NotebookTask) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def run_notebook(
        progress: Progress | None = None, **parameters: Any
    ) -> dict[str, Any]:
        return await _run(task, parameters, progress)

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter(n, keyword, default=None) for n in task.parameters]
    params.append(inspect.Parameter("progress", keyword, default=None))
    if not task.has_parameters_cell:
        # papermill injects the values at the top, with a warning, for any name.
        params.append(inspect.Parameter("parameters", inspect.Parameter.VAR_KEYWORD))
    # The signature the app checks submissions against: the notebook's parameters.
    run_notebook.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_notebook.__name__ = task.name
    # Re-registering the same notebook (a re-run cell) replaces the task.
    run_notebook.__qualname__ = f"notebook_task[{task.path}]"
    return run_notebook


# -- running -----------------------------------------------------------------------


async def _run(
    task: NotebookTask, parameters: dict[str, Any], progress: Progress | None
) -> dict[str, Any]:
    task.check_types(parameters)
    task_id = current_task_id() or f"{task.name}-local-{uuid.uuid4().hex[:12]}"
    output = task.output_path(task_id, parameters)
    reporter = _Reporter(asyncio.get_running_loop(), progress)
    run = _NotebookRun(task, task_id, parameters, output, reporter.report)
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


class _Stopped(Exception):
    """Raised between cells once the run was asked to stop."""


_LOCAL = threading.local()


class _NotebookRun:
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
        papermill = _import("papermill")
        capture = _WarningCapture(threading.get_ident())
        papermill_logger = logging.getLogger("papermill")
        papermill_logger.addHandler(capture)
        _LOCAL.run = self
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            papermill.execute_notebook(
                _escape_braces(str(self.task.path)),
                _escape_braces(str(self.output)),
                parameters=self.parameters or None,
                kernel_name=self.task.kernel_name,
                progress_bar=False,
                request_save_on_cell_execute=True,
                **self._engine_options(),
            )
        except Exception as exc:
            raise self._error(exc) from None
        finally:
            _LOCAL.run = None
            papermill_logger.removeHandler(capture)
            self.warnings = capture.messages
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

    def _engine_options(self) -> dict[str, Any]:
        """Keyword arguments papermill's nbclient engine passes to the client."""
        options: dict[str, Any] = {
            # The kernel starts there; papermill's own cwd= would chdir this process.
            "resources": {"metadata": {"path": str(self.task.cwd)}},
            "kernel_manager_class": _kernel_manager_class(),
            "on_notebook_start": self._on_notebook_start,
            "on_cell_start": self._on_cell_start,
            "on_cell_executed": self._on_cell_executed,
            "on_cell_error": self._on_cell_error,
        }
        timeout_s = self.task.cell_timeout_s
        if timeout_s is not None:
            seconds = math.ceil(timeout_s)  # nbclient takes whole seconds
            options["execution_timeout"] = seconds
            options["interrupt_on_timeout"] = True
            text = f"the cell ran longer than its timeout of {seconds} s"
            options["error_on_timeout"] = {
                "ename": _TIMEOUT_ENAME,
                "evalue": text,
                "traceback": [f"{_TIMEOUT_ENAME}: {text}"],
            }
        return options

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
            raise _Stopped
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
        exceptions = _import("papermill.exceptions")
        nbclient = _import("nbclient.exceptions")
        if isinstance(exc, _Stopped):
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


@cache
def _kernel_manager_class() -> type:
    """AsyncKernelManager that hands its kernel and client to the run of its thread.

    The kernel's own stdout and stderr (startup warnings, a crash message) go to this
    module's logger: inherited, they would land in the output of the cell that runs
    the pool, since ipykernel captures its process's file descriptors.
    """
    from jupyter_client.manager import AsyncKernelManager

    class _RunKernelManager(AsyncKernelManager):
        # AsyncKernelManager's start_kernel is a coroutine; mypy sees the sync base.
        async def start_kernel(self, **kwargs: Any) -> None:  # type: ignore[override]
            kwargs.setdefault("stdout", subprocess.PIPE)
            kwargs.setdefault("stderr", subprocess.STDOUT)
            await super().start_kernel(**kwargs)
            process = getattr(self.provisioner, "process", None)
            if process is not None and process.stdout is not None:
                threading.Thread(
                    target=_log_lines,
                    args=(process.stdout, getattr(_LOCAL, "run", None)),
                    name="icij_nb-kernel-output",
                    daemon=True,
                ).start()

        def client(self, **kwargs: Any) -> Any:
            kernel_client = super().client(**kwargs)
            run = getattr(_LOCAL, "run", None)
            if run is not None:
                run.kernel_manager, run.kernel_client = self, kernel_client
            return kernel_client

    return _RunKernelManager


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


def _log_lines(stream: Any, run: _NotebookRun | None) -> None:
    task_id = run.task_id if run is not None else "?"
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


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = (
            f"notebook tasks need {module.split('.')[0]}: "
            "pip install 'icij_nb[notebook]'"
        )
        raise MissingDependency(msg) from exc


# -- helpers for demo notebooks ------------------------------------------------------

_DEFAULT_AMQP_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
_AMQP_URL_ENV: Final = "ICIJ_NB_AMQP_URL"


def choose_broker(broker: str = "auto", *, timeout_s: float = 1.0) -> str:
    """The broker a notebook connects to: RabbitMQ when one answers, else the embedded.

    Args:
        broker: ``"auto"`` picks ``$ICIJ_NB_AMQP_URL`` (or
            ``amqp://guest:guest@127.0.0.1:5672/``) when a TCP connection to it
            succeeds within ``timeout_s``, and ``"memory"`` otherwise. Any other
            value (``"memory"``, an AMQP URL) is returned unchanged.
        timeout_s: how long to wait for the broker's port.

    Example:
        tm = nb.connect(app, broker=choose_broker("auto"))
    """
    if broker != "auto":
        return broker
    url = os.environ.get(_AMQP_URL_ENV) or _DEFAULT_AMQP_URL
    parts = urlsplit(url)
    try:
        address = (parts.hostname or "127.0.0.1", parts.port or 5672)
        with socket.create_connection(address, timeout=timeout_s):
            return url
    except (OSError, ValueError):
        return "memory"


class NotebookStopped(IcijNbError):
    """A notebook stopped on purpose; IPython shows only its message."""

    def _render_traceback_(self) -> list[str]:
        # IPython (and so Jupyter and papermill) shows these lines instead of a
        # traceback: the one sentence is the whole report.
        return [str(self)]


def stop_notebook(sentence: str) -> None:
    """Stop a notebook here, showing ``sentence`` alone (no traceback).

    Raises:
        NotebookStopped: always. Jupyter stops running the next cells; papermill
            ends the run with a PapermillExecutionError whose traceback is the
            sentence.

    Example:
        try:
            tm = nb.connect(app, broker=broker)
        except nb.BrokerUnavailable as exc:
            stop_notebook(str(exc))
    """
    raise NotebookStopped(sentence)
