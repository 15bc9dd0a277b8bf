"""DaemonExecutor: the threads sync task functions run in.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter
exits, so one sync task stuck forever would hang the kernel's shutdown. A pool's
threads here are daemons: at exit they are abandoned, like the task they run (its
delivery is requeued by the broker, or the task is marked lost by the store).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from icij_nb.errors import ManagerClosed

T = TypeVar("T")

_STOP = object()


class DaemonExecutor(Executor):
    """A fixed set of daemon threads running submitted calls in order.

    Args:
        max_workers: how many calls run at once.
        name: the threads' name prefix.
    """

    def __init__(self, max_workers: int, *, name: str = "icij_nb-task") -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._shutdown = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
            for i in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in one of the threads; return its future."""
        future: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                msg = "cannot run a task: the pool's threads are shut down"
                raise ManagerClosed(msg)
            self._jobs.put((future, fn, args, kwargs))
        return future

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
                del result
            # An idle thread must not keep its last call alive until the next one:
            # a store read of 100,000 tasks holds about 90 MB.
            del job, future, fn, args, kwargs

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; the threads end after the calls queued before."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            if cancel_futures:
                self._cancel_queued()
            for _ in self._threads:
                self._jobs.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()

    def _cancel_queued(self) -> None:
        kept = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job[0].cancel()
            else:
                kept.append(job)
        for job in kept:
            self._jobs.put(job)
