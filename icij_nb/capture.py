"""Capture: what a running task writes to stdout and stderr, and what it logs.

:func:`install` replaces ``sys.stdout`` and ``sys.stderr`` once per process with
routers, and adds one handler to the root logger. A worker runs each task function
inside :func:`capturing`, which sets a context variable to the task's
:class:`TaskCapture`:

- a write or a log record made where the variable is set (the task's thread for a
  sync function, the task's own asyncio task for an async one, and what they start)
  goes to that task's capture, never to another's: async tasks running at once on one
  loop each have their own context;
- anywhere else (a cell, the kernel, the runtime loop) the router passes the write to
  the stream it replaced, untouched, and a log record goes where Python would have
  sent it (``logging.lastResort`` when no other handler takes it).

A capture keeps a bounded tail (``output.TAIL_CHARS``; a line longer than
``output.LINE_CHARS`` keeps its end), and sends what it collected at most once per
``interval_s`` as an :class:`~icij_nb.output.OutputChunk`, from the worker's loop;
the last chunk, marked final, goes when the task ends. A task that writes nothing
costs one context variable set and reset.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TextIO

from icij_nb.output import LINE_CHARS, TAIL_CHARS, OutputChunk, clean, tag

_CURRENT: contextvars.ContextVar[TaskCapture | None] = contextvars.ContextVar(
    "icij_nb_task_capture", default=None
)
#: callbacks the captures schedule run in this context, where no task is current
_NO_TASK = contextvars.Context()


class TaskCapture:
    """The output of one attempt of a task, collected from any thread.

    Args:
        task_id: the task.
        run: the attempt's id.
        worker_id: the worker running it.
        started_at: when the attempt started.
        send: called on the loop with each chunk to send.
        loop: the worker's loop.
        interval_s: the least time between two chunks.
    """

    def __init__(
        self,
        task_id: str,
        run: str,
        worker_id: str,
        started_at: datetime,
        *,
        send: Callable[[OutputChunk], None],
        loop: asyncio.AbstractEventLoop,
        interval_s: float = 0.2,
    ) -> None:
        self.task_id, self.run, self.worker_id = task_id, run, worker_id
        self.started_at = started_at
        self._send, self._loop, self._interval_s = send, loop, interval_s
        self._lock = threading.Lock()
        self._partial: dict[str, str] = {}
        self._lines: deque[str] = deque()
        self._chars = 0
        self._cut = 0
        self._armed = False
        self._closed = False
        #: True once the task wrote anything
        self.wrote = False

    def write(self, stream: str, text: str) -> None:
        """Add ``text`` written to ``stream`` (``stdout`` or ``stderr``)."""
        with self._lock:
            if self._closed:
                return
            self.wrote = True
            buffered = self._partial.get(stream, "") + text
            if "\n" in buffered:
                *full, buffered = buffered.split("\n")
                for line in full:
                    self._push(tag(stream, clean(line)))
            if len(buffered) > LINE_CHARS:
                self._cut += len(buffered) - LINE_CHARS
                buffered = buffered[-LINE_CHARS:]
            self._partial[stream] = buffered
            arm = not self._armed
            self._armed = True
        if arm:
            self._loop.call_soon_threadsafe(self._arm, context=_NO_TASK)

    def write_line(self, stream: str, line: str) -> None:
        """Add one whole line (a log record) under ``stream``'s tag."""
        for part in line.split("\n"):
            self.write(stream, part + "\n")

    def _push(self, line: str) -> None:
        if len(line) > LINE_CHARS:
            self._cut += len(line) - LINE_CHARS
            line = line[-LINE_CHARS:]
        self._lines.append(line)
        self._chars += len(line) + 1
        while self._chars > TAIL_CHARS and len(self._lines) > 1:
            dropped = self._lines.popleft()
            self._chars -= len(dropped) + 1
            self._cut += len(dropped) + 1

    def _arm(self) -> None:
        self._loop.call_later(self._interval_s, self.flush, context=_NO_TASK)

    def _take(self, *, final: bool) -> OutputChunk | None:
        with self._lock:
            self._armed = False
            if final:
                self._closed = True
                for stream, rest in self._partial.items():
                    if rest:
                        self._push(tag(stream, clean(rest)))
                self._partial.clear()
            if not self._lines and not self._cut and not final:
                return None
            lines, cut = tuple(self._lines), self._cut
            self._lines.clear()
            self._chars = self._cut = 0
        return OutputChunk(
            self.task_id,
            self.run,
            self.worker_id,
            self.started_at,
            lines=lines,
            cut=cut,
            final=final,
        )

    def flush(self) -> None:
        """Send what was written since the last chunk (on the loop)."""
        chunk = self._take(final=False)
        if chunk is not None:
            self._send(chunk)

    def close(self) -> OutputChunk | None:
        """The final chunk, or None when the task wrote nothing; later writes drop."""
        if not self.wrote:
            with self._lock:
                self._closed = True
                if not self.wrote:
                    return None
        return self._take(final=True)


@contextmanager
def capturing(capture: TaskCapture) -> Iterator[None]:
    """Send what this context writes and logs to ``capture``."""
    token = _CURRENT.set(capture)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class _Router:
    """Stands for ``sys.stdout`` or ``sys.stderr``: sends a task's writes to it."""

    def __init__(self, stream: str, original: TextIO) -> None:
        self.stream, self.original = stream, original

    def write(self, text: Any) -> int:
        capture = _CURRENT.get()
        if capture is None:
            return self.original.write(text)
        if not isinstance(text, str):
            text = str(text)
        capture.write(self.stream, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _CURRENT.get() is None:
            self.original.flush()

    def isatty(self) -> bool:
        return _CURRENT.get() is None and self.original.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class _LogRouter(logging.Handler):
    """The root logger's handler: a task's records go to its capture."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = _CURRENT.get()
        if capture is None:
            self._as_python_would(record)
            return
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a record whose message cannot be formatted
            text = str(record.msg)
        capture.write_line(f"{record.levelname} {record.name}", text)

    def _as_python_would(self, record: logging.LogRecord) -> None:
        # Only this handler: Python would have used its last resort (stderr).
        last = logging.lastResort
        if last is None or record.levelno < last.level:
            return
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return
            if not logger.propagate:
                break
            logger = logger.parent
        last.handle(record)


_INSTALLED: dict[str, Any] = {}
_INSTALL_LOCK = threading.Lock()


def install() -> None:
    """Route stdout, stderr and logging through captures (once; again if replaced)."""
    with _INSTALL_LOCK:
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if current is None or isinstance(current, _Router):
                continue
            setattr(sys, name, _Router(name, current))
        handler = _INSTALLED.get("handler")
        if handler is None:
            handler = _INSTALLED["handler"] = _LogRouter()
        root = logging.getLogger()
        if handler not in root.handlers:
            root.addHandler(handler)


def ensure_installed() -> None:
    """:func:`install` again if someone replaced ``sys.stdout`` or ``sys.stderr``."""
    if not isinstance(sys.stdout, _Router) or not isinstance(sys.stderr, _Router):
        install()


def original_stream(name: str) -> TextIO | None:
    """The stream ``sys.<name>`` stood for before :func:`install` (or itself)."""
    current = getattr(sys, name, None)
    if isinstance(current, _Router):
        return current.original
    return current


def current_capture() -> TaskCapture | None:
    """The capture of the task running in this context, if any."""
    return _CURRENT.get()
