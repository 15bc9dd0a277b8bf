"""The runtime: one daemon thread per process, with its own event loop.

Every connection, consumer and in-kernel worker lives on this loop. Jupyter's own loop
freezes while a cell blocks, so nothing of ours runs there. The public surface offers
each operation twice:

- awaitable: :meth:`Runtime.wrap` runs a coroutine on the runtime loop and returns an
  awaitable for the caller's loop (``await tm.gather_async(...)`` in a cell);
- blocking: :meth:`Runtime.run` waits on a ``concurrent.futures.Future`` from any
  thread but the runtime's own. Ctrl-C (a kernel interrupt) during the wait cancels
  the coroutine and re-raises KeyboardInterrupt.

The thread starts lazily, on first use, and a forked child gets a fresh one. The
thread is a daemon: objects that must finish their work before the interpreter exits
(a manager's pending store writes) register with :func:`close_at_exit`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from icij_nb.errors import IcijNbError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Runtime:
    """A daemon thread running an asyncio loop, and the bridges to it."""

    def __init__(self, name: str = "icij_nb-runtime") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        alive = self._thread is not None and self._thread.is_alive()
        return f"<Runtime {self._name!r} running={alive}>"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The runtime loop, started on first use."""
        loop = self._loop
        if loop is None or self._pid != os.getpid():
            return self._start()
        return loop

    def in_runtime_thread(self) -> bool:
        """True when called from the runtime thread itself."""
        return threading.current_thread() is self._thread

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and self._pid == os.getpid():
                return self._loop
            self._pid = os.getpid()
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._serve, args=(loop, ready), name=self._name, daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            return loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the runtime loop; return its concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], *, timeout_s: float | None = None) -> T:
        """Run ``coro`` on the runtime loop and block until it is done.

        A KeyboardInterrupt (Ctrl-C, kernel interrupt) or the timeout cancels the
        coroutine. Raises ``concurrent.futures.TimeoutError`` on timeout; callers
        turn it into a message that names what they waited for.
        """
        if self.in_runtime_thread():
            coro.close()
            msg = (
                "a blocking icij_nb call was made from the runtime thread (inside an "
                "async task or a subscriber callback); use the *_async method with "
                "await instead"
            )
            raise IcijNbError(msg)
        future = self.submit(coro)
        try:
            return future.result(timeout=timeout_s)
        except (KeyboardInterrupt, concurrent.futures.TimeoutError):
            future.cancel()
            raise

    async def wrap(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` from any loop: on the runtime loop it runs in place."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, callback: Any, *args: Any) -> None:
        """Call ``callback(*args)`` on the runtime loop, from any thread."""
        loop = self.loop
        if self.in_runtime_thread():
            loop.call_soon(callback, *args)
        else:
            loop.call_soon_threadsafe(callback, *args)


_RUNTIME: Runtime | None = None
_RUNTIME_LOCK = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime (created on first call; a forked child gets its own)."""
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None or _RUNTIME._pid != os.getpid():
            _RUNTIME = Runtime()
        return _RUNTIME


class Closable(Protocol):
    """What :func:`close_at_exit` closes."""

    def close(self, *, timeout_s: float | None = ...) -> None:
        """Finish pending work and release resources, within ``timeout_s``."""
        ...


#: objects to close at interpreter exit, with the process that registered them
_AT_EXIT: weakref.WeakKeyDictionary[Closable, int] = weakref.WeakKeyDictionary()


def close_at_exit(obj: Closable) -> None:
    """Close ``obj`` at interpreter exit unless :func:`forget_at_exit` came first."""
    _AT_EXIT[obj] = os.getpid()


def forget_at_exit(obj: Closable) -> None:
    """Undo :func:`close_at_exit` (``obj`` was closed)."""
    _AT_EXIT.pop(obj, None)


def _close_at_exit() -> None:
    for obj, pid in list(_AT_EXIT.items()):
        if pid != os.getpid():  # a forked worker process: not ours
            continue
        try:
            obj.close(timeout_s=10.0)
        except (Exception, concurrent.futures.TimeoutError):
            logger.exception("closing %r at exit failed", obj)


# Not atexit: by then concurrent.futures has stopped every thread executor, the
# store's too, so close() would fail. threading's exit hooks run first (the latest
# registered first). The hook is private, but there since Python 3.9.
getattr(threading, "_register_atexit", atexit.register)(_close_at_exit)
